"""Transfer across backbones: the matrix's diagonal is the white-box result of ``sec4sr run`` (same seed, same
trials, utterance by utterance); an ensemble's loss and gradient are the average of its members'; the CLI prints
the matrix with intervals and refuses bad input in one line."""

from __future__ import annotations

import json

import pytest
import torch

from sec4sr_core import hookimpl
from sec4sr_core.base.errors import ParameterError
from sec4sr_core.cli import main
from sec4sr_core.sdk.oracle import make_oracle
from sec4sr_core.sdk.losses import resolve_loss
from sec4sr_core.sdk.system import DefendedSystem, SpeakerSystem
from sec4sr_core.study.config import StudyConfig
from sec4sr_core.study.runner import Study
from sec4sr_core.study.transfer import EnsembleSystem, parse_sources, transfer

#: two backbones that need no training: GE2E and the core tests' toy model (registered inline, enrolls in moments)
MODELS = ["ge2e", "toy"]
ATTACK = "pgd:steps=3,epsilon=0.002,step_size=0.0008"


class _ToyPlugin:
    @hookimpl
    def register_models(self, register):
        from tests.core.helpers import ToyModel

        register(ToyModel)


@pytest.fixture(autouse=True, scope="module")
def toy_backbone():
    from tests.core.helpers import inline_plugin

    with inline_plugin(_ToyPlugin(), "e2-transfer-toy"):
        yield


def _config(tmp_path, **kw) -> StudyConfig:
    return StudyConfig(limit=4, length_s=1.0, batch_size=2, out=tmp_path / "run", save_audio=False, metrics=[],
                       gradient_check=False, **kw)


def _white_box(tmp_path, model: str) -> dict[str, int]:
    cfg = _config(tmp_path, model=model, attacks=[ATTACK])
    study = Study(cfg, progress=False)
    study.run()
    rows = study.store.rows("WHERE setting='non-adaptive' AND defense='none'", study=study.study_id)
    return {r["utterance"]: int(r["success"]) for r in rows}


def test_diagonal_equals_the_white_box_result_of_run(tmp_path):
    result = transfer(MODELS, ATTACK, _config(tmp_path))
    assert result.sources == MODELS and result.targets == MODELS
    for m in MODELS:
        white = _white_box(tmp_path / m, m)
        diag = dict(zip(result.utterances, result.success[m][m]))
        assert diag == white
    doc = result.as_dict()
    cell = doc["matrix"][MODELS[0]][MODELS[1]]
    assert cell["n"] == 4 and cell["ci"][0] <= cell["success"] <= cell["ci"][1]
    assert set(doc["benign"]) == set(MODELS) and all(doc["benign"][t]["n"] == 4 for t in MODELS)


def _toy_systems():
    from tests.core.helpers import ToyModel

    systems = []
    for k in range(3):
        m = ToyModel().eval()
        with torch.no_grad():
            m.proj.weight.add_(0.3 * k * torch.randn(m.proj.weight.shape, generator=torch.Generator().manual_seed(k)))
        enrolled = torch.randn(3, m.proj.weight.shape[0], generator=torch.Generator().manual_seed(10 + k))
        systems.append(SpeakerSystem(m, "csi-e", ["a", "b", "c"], enrolled))
    return systems


def test_ensemble_loss_and_gradient_are_the_members_average():
    systems = _toy_systems()
    x = 0.3 * torch.randn(4, 1, 160, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 2, 0])
    loss_fn = resolve_loss("margin", "csi-e")
    ens = EnsembleSystem(systems)
    oracle = make_oracle(ens, "white-box", n=4, eot=ens.eot(1))
    loss, grad, scores, _ = oracle.loss_and_grad(x, loss_fn, y)
    losses, grads, all_scores = [], [], []
    for s in systems:
        o = make_oracle(DefendedSystem(s), "white-box", n=4)
        l1, g1, s1, _ = o.loss_and_grad(x, loss_fn, y)
        losses.append(l1), grads.append(g1), all_scores.append(s1)
    assert torch.allclose(loss, torch.stack(losses).mean(0), atol=1e-6)
    assert torch.allclose(grad, torch.stack(grads).mean(0), atol=1e-6)
    assert torch.allclose(scores, torch.stack(all_scores).mean(0), atol=1e-6)
    assert int(oracle.queries[0]) == 3  # one probe, three members
    with pytest.raises(ParameterError):
        ens(x[:2])  # 2 rows for 3 members: not an oracle's repeated batch


def test_ensemble_for_sv_shifts_each_member_by_its_threshold():
    systems = _toy_systems()[:2]
    sv = [SpeakerSystem(s.model, "sv", s.speakers, s.enrolled, th) for s, th in zip(systems, (0.1, -0.2))]
    ens = EnsembleSystem(sv)
    x = 0.3 * torch.randn(2, 1, 160, generator=torch.Generator().manual_seed(1))
    claims = torch.tensor([0, 2])
    out = ens(torch.cat([x, x]), claims=torch.cat([claims, claims]))
    assert ens.threshold == 0.0
    for k, s in enumerate(sv):
        assert torch.allclose(out[2 * k: 2 * k + 2], s(x, claims=claims) - s.threshold)
        assert torch.equal(ens.decide(out[2 * k: 2 * k + 2]), s.decide(s(x, claims=claims)))


def test_sources_parse_and_refuse():
    assert parse_sources(["a", "b"], ["a+b"]) == [("a", ["a"]), ("b", ["b"]), ("a+b", ["a", "b"])]
    with pytest.raises(ParameterError):
        parse_sources(["a", "b"], ["a+c"])
    with pytest.raises(ParameterError):
        parse_sources(["a", "b"], ["a"])


def test_cli_prints_the_matrix_and_writes_json(tmp_path, capsys):
    out = tmp_path / "tr"
    rc = main(["transfer", "--models", ",".join(MODELS), "--ensemble", "+".join(MODELS), "--attack", "fgsm",
               "--limit", "2", "--length", "1", "--out", str(out)])
    text = capsys.readouterr().out
    assert rc == 0
    assert "source \\ target" in text and "+".join(MODELS) in text and "[" in text and "(no attack)" in text
    doc = json.loads((out / "transfer.json").read_text())
    assert set(doc["matrix"]) == {*MODELS, "+".join(MODELS)}
    assert all(doc["matrix"][s][t]["n"] == 2 for s in doc["matrix"] for t in MODELS)


@pytest.mark.parametrize("argv, needle", [
    (["transfer", "--models", "ge2e,ge2e", "--attack", "fgsm"], "twice"),
    (["transfer", "--models", "ge2e", "--attack", "nope"], "nope"),
    (["transfer", "--models", "ge2e", "--ensemble", "ge2e+ecapa", "--attack", "fgsm"], "ecapa"),
    (["transfer", "--models", "", "--attack", "fgsm"], "at least one"),
])
def test_cli_bad_input_is_one_error_line(argv, needle, capsys, tmp_path):
    rc = main(argv + ["--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error:") and needle in err and len(err.strip().splitlines()) == 1
