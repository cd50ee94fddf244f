"""Study configs: TOML with systems, attack/defense tables and settings; errors are one clear line; AdvT rows load
(and, when missing, train) the backbone's variant."""

from __future__ import annotations

import sys
import types

import pytest
import torch

from sec4sr_core import Defense, hookimpl
from sec4sr_core.sdk import ModelVariantDefense, TrainingOptions
from sec4sr_core.cli import main
from sec4sr_core.cli.commands.run import load_toml, make_config
from sec4sr_core.base.errors import ParameterError, Sec4srError
from sec4sr_core.plugins.manager import register_plugin, unregister_plugin
from sec4sr_core.study.runner import Study, StudyConfig, build_row

from .conftest import WEAK_PGD


def test_toml_with_systems_and_component_tables(tmp_path):
    p = tmp_path / "s.toml"
    p.write_text("""
name = "t"
attacks = ["fgsm-like", { name = "pgd", steps = 3, epsilon = 0.001 }]
defenses = ["qt:q=512", [{ name = "qt", q = 256 }, "qt:q=1024"], "none"]
settings = ["adaptive", "non-adaptive", "adaptive"]
seed = 3
[[systems]]
model = "ge2e"
task = "sv"
threshold = 0.5
[[systems]]
model = "ge2e"
task = "csi-e"
label = "ge2e-closed"
""")
    cfg = make_config(load_toml(str(p)))
    assert cfg.attacks == ["fgsm-like", "pgd:steps=3,epsilon=0.001"]
    assert cfg.defenses == ["qt:q=512", "qt:q=256+qt:q=1024"]  # 'none' is implicit
    assert cfg.settings == ["adaptive", "non-adaptive"]
    specs = cfg.system_specs()
    assert [(s.model, s.task.value, s.threshold, s.label) for s in specs] == [
        ("ge2e", "sv", 0.5, None), ("ge2e", "csi-e", None, "ge2e-closed")]
    # no systems: the single model/task system
    assert [(s.model, s.task.value) for s in StudyConfig(model="ge2e", task="osi").system_specs()] == [("ge2e", "osi")]


@pytest.mark.parametrize("text, message", [
    ("attacks = ['pgd']\nbogus = 1\n", "bogus: unknown key"),
    ("attacks = ['pgd', 'pgd']\n", "listed twice"),
    ("limit = 0\n", "limit"),
    ("settings = ['sometimes']\n", "settings"),
    ("[[systems]]\nmodel='ge2e'\n[[systems]]\nmodel='ge2e'\n", "same label and task"),
    ("attacks = [{ steps = 3 }]\n", "needs a 'name'"),
])
def test_bad_configs_are_one_line_errors(tmp_path, capsys, text, message):
    p = tmp_path / "bad.toml"
    p.write_text(text)
    assert main(["run", str(p), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: study config") and message in err and err.count("\n") == 1


def test_invalid_toml_and_unknown_components_fail_fast(tmp_path, capsys):
    p = tmp_path / "broken.toml"
    p.write_text("attacks = [\n")
    assert main(["run", str(p)]) == 2
    assert "invalid TOML" in capsys.readouterr().err
    assert main(["run", "--attack", "pgdd", "--out", str(tmp_path / "o")]) == 2
    assert "unknown attack 'pgdd'" in capsys.readouterr().err
    assert not (tmp_path / "o" / "results.sqlite").exists()


# ---------------------------------------------------------------------------------------------------------------
# adversarially trained rows
# ---------------------------------------------------------------------------------------------------------------


class AdvT(ModelVariantDefense):
    """Test stand-in for the `advt` model-variant defense."""

    name = "test-advt"

    def variant_tag(self, rest_slug: str = "") -> str:
        return "test-advt" + (f"-{rest_slug}" if rest_slug else "")

    def training_options(self, rest: str = "") -> TrainingOptions:
        return TrainingOptions(adversarial="pgd:steps=1", defense=rest or None)

    def forward(self, x):  # never applied: the row runs on the variant checkpoint instead
        raise AssertionError("a model-variant defense must not be applied to the input")


class AdvTPlugin:
    @hookimpl
    def register_defenses(self, register):
        register(AdvT)


@pytest.fixture
def advt_plugin(study_plugin):
    register_plugin(AdvTPlugin(), name="study-advt-plugin")
    yield
    unregister_plugin("study-advt-plugin")


def test_build_row_splits_the_variant_from_the_rest(advt_plugin):
    row = build_row("test-advt+qt:q=512")
    assert row.variant == "test-advt-qt_q512" and row.rest == "qt:q=512"
    assert [d.name for d in row.defenses] == ["qt"]
    assert build_row("qt:q=512").variant is None
    with pytest.raises(ParameterError, match="two model-variant parts"):
        build_row("test-advt+test-advt")


def test_advt_rows_train_the_missing_variant_and_run_on_it(advt_plugin, tmp_path, monkeypatch, ge2e_system,
                                                          one_thread):
    from sec4sr_core.compose.factories import load_model
    from sec4sr_core.sdk.modelstore import save_checkpoint

    calls = []

    def train_variant(model_spec, dataset_spec="embedded", adversarial=None, defense=None, seed=0, *, device="cpu",
                      tag="", ratio=0.5, eot=1):
        """Fake training: the natural weights with the output layer perturbed, saved under the variant tag."""
        model = model_spec
        calls.append({"model": model, "dataset": dataset_spec, "tag": tag, "rest": defense or "", "seed": seed,
                      "adversarial": adversarial})
        m = load_model(model)
        g = torch.Generator().manual_seed(len(calls))
        with torch.no_grad():
            m.linear.weight.add_(0.05 * torch.randn(m.linear.weight.shape, generator=g))
        save_checkpoint(m, tag=tag)

    monkeypatch.setitem(sys.modules, "sec4sr_core.study.training", types.SimpleNamespace(train_variant=train_variant))
    cfg = StudyConfig(attacks=[WEAK_PGD], defenses=["test-advt", "test-advt+qt:q=512"], limit=2, length_s=0.5,
                      out=tmp_path / "o", metrics=["l2"])
    summary = Study(cfg, progress=False).run()
    assert [(c["tag"], c["rest"]) for c in calls] == [("test-advt", ""), ("test-advt-qt_q512", "qt:q=512")]
    assert all(c["model"] == "ge2e" and c["dataset"] == "embedded" and c["adversarial"] == "pgd:steps=1" for c in calls)
    scores = {}
    from sec4sr_core.study.store import ResultStore

    with ResultStore(tmp_path / "o" / "results.sqlite") as store:
        for r in store.rows("WHERE setting='benign'"):
            scores.setdefault(r["defense"], []).append(r["scores"])
        assert store.get_meta("defense_rows")[1] == {"label": "test-advt", "variant": True}
    assert scores["test-advt"] != scores["none"]  # another backbone
    assert len(summary["results"]) == 3
    # a second study finds the trained variants in the model store and trains nothing
    Study(cfg.model_copy(update={"out": tmp_path / "o2"}), progress=False)
    assert len(calls) == 2
    from sec4sr_core.report import render

    md = render(tmp_path / "o", "md")
    assert "## Adversarially trained systems" in md and "| test-advt+qt:q=512 |" in md


def test_advt_row_without_training_code_is_a_clear_error(advt_plugin, tmp_path, monkeypatch, ge2e_system):
    monkeypatch.setitem(sys.modules, "sec4sr_core.study.training", None)  # import fails
    cfg = StudyConfig(attacks=[WEAK_PGD], defenses=["test-advt+qt:q=128"], limit=1, out=tmp_path / "o")
    with pytest.raises(Sec4srError, match="variant 'test-advt-qt_q128'"):
        Study(cfg, progress=False)


def test_demo_config_is_the_issue_study():
    from pathlib import Path

    from sec4sr_core.base.params import parse_chain
    from sec4sr_core.plugins.manager import get_registry

    cfg = make_config(load_toml(str(Path(__file__).parents[2] / "examples" / "demo.toml")))
    reg = get_registry()
    assert [(s.model, s.task.value) for s in cfg.system_specs()] == [("ge2e", "csi-e")]
    assert cfg.settings == ["non-adaptive", "adaptive"] and cfg.limit
    names = {reg.resolve("attack", a)[0].name for a in cfg.attacks}
    assert names == {"fgsm", "pgd"}
    # the adaptive defaults that keep the adaptive column at least as strong as the non-adaptive one (issue 13):
    # 30 PGD steps (BPDA through Opus needs them) and 4 EOT draws for AT; the benchmark check on
    pgd = next(reg.resolve("attack", a)[1] for a in cfg.attacks if a.startswith("pgd"))
    assert pgd.steps >= 30 and cfg.eot >= 4 and cfg.check_benchmark
    defenses = {reg.resolve("defense", p)[0].name for d in cfg.defenses for p in parse_chain(d)}
    assert defenses == {"qt", "at", "opus", "feco"}


def test_a_study_of_two_systems(tmp_path, ge2e_system, one_thread):
    cfg = StudyConfig(systems=[{"model": "ge2e", "task": "csi-e"}, {"model": "ge2e", "task": "sv", "label": "ge2e-sv"}],
                      attacks=["pgd:steps=1"], limit=2, length_s=0.5, out=tmp_path / "o", metrics=["l2"], examples=1)
    summary = Study(cfg, progress=False).run()
    assert [(s["system"], s["task"]) for s in summary["systems"]] == [("ge2e", "csi-e"), ("ge2e-sv", "sv")]
    assert "thresholds" in summary["systems"][1] and summary["systems"][1]["thresholds"]["sv"] is not None
    assert {(r["system"], r["task"], r["n"]) for r in summary["results"]} == {("ge2e", "csi-e", 2), ("ge2e-sv", "sv", 2)}
    assert (tmp_path / "o" / "audio" / "ge2e-csi-e" / "non-adaptive").is_dir()
    assert (tmp_path / "o" / "audio" / "ge2e-sv-sv" / "benign").is_dir()
    from sec4sr_core.report import render

    md = render(tmp_path / "o", "md")
    assert "## Non-adaptive attacks — ge2e · csi-e" in md and "## Non-adaptive attacks — ge2e-sv · sv" in md
