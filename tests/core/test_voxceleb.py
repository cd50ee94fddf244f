"""The VoxCeleb1 layout loader and trial-list scoring (EER, minDCF, AS-Norm) on a tiny fake layout of generated
audio: each speaker is a harmonic tone of its own pitch, so a toy spectral embedding separates them."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from sec4sr_core.base.errors import Sec4srError
from sec4sr_core.builtins.voxceleb import VoxCelebDataset
from sec4sr_core.compose.enroll import eer_threshold, trial_list_scores
from sec4sr_core.compose.factories import resolve_dataset

from .helpers import assert_one_line_error

TRIAL_SPEAKERS = ["id10270", "id10271", "id10272"]
COHORT_SPEAKERS = ["id10001", "id10002", "id10003"]


def tone(f0: float, seed: int, seconds: float = 0.5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(16000 * seconds)) / 16000
    x = sum(np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6)) / k for k in (1, 2, 3))
    return (0.2 * x / np.abs(x).max() + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.fixture
def layout(tmp_path):
    root = tmp_path / "vox1"
    for i, spk in enumerate(TRIAL_SPEAKERS + COHORT_SPEAKERS):
        for video in ("vidA", "vidB"):
            for u in range(3):
                p = root / "wav" / spk / video / f"0000{u + 1}.wav"
                p.parent.mkdir(parents=True, exist_ok=True)
                sf.write(p, tone(150 + 90 * i, seed=100 * i + 10 * (video == "vidB") + u), 16000, subtype="PCM_16")
    utts = [f"{s}/{v}/0000{u + 1}.wav" for s in TRIAL_SPEAKERS for v in ("vidA", "vidB") for u in range(3)]
    lines = []
    for a in utts:
        for b in utts:
            if a < b and a.split("/")[1] == "vidA" and b.split("/")[1] == "vidB":
                lines.append(f"{int(a.split('/')[0] == b.split('/')[0])} {a} {b}")
    trials = tmp_path / "veri_test2.txt"
    trials.write_text("\n".join(lines) + "\n")
    return root, trials, len(lines)


class Spectral(torch.nn.Module):
    """A log-magnitude spectrum as the embedding ((B, T) -> (B, 257)), no training needed."""

    def forward(self, x):
        spec = torch.stft(x, 512, 256, window=torch.hann_window(512), return_complex=True).abs()
        return torch.log1p(spec.mean(dim=-1))


def test_layout_trials_cohort_and_splits(layout):
    root, trials, n = layout
    d = resolve_dataset(f"voxceleb:root={root},trials={trials}")
    assert isinstance(d, VoxCelebDataset)
    tl = d.sv_trials()
    assert len(tl) == n and {lab for lab, _, _ in tl} == {0, 1}
    _, a, _ = tl[0]
    assert a.id.count("/") == 2 and a.id.endswith(".wav") and a.speaker == a.id.split("/")[0] and a.path.is_file()
    assert {u.speaker for u in d.cohort()} == set(COHORT_SPEAKERS) and len(d.cohort()) == 18
    assert d.enrolled_speakers() == TRIAL_SPEAKERS and len(d.split("enroll")) == 9
    assert set(COHORT_SPEAKERS) <= {u.speaker for u in d.split("train")}
    # the root may also be the wav folder itself
    assert len(resolve_dataset(f"voxceleb:root={root / 'wav'},trials={trials}").sv_trials()) == n


def test_trial_list_scores_eer_and_as_norm(layout):
    from sec4sr_core.api import wrap

    root, trials, _ = layout
    d = VoxCelebDataset(root=root, trials=trials)
    model = wrap(Spectral(), name="spectral")
    tgt, non = trial_list_scores(model, d.sv_trials(), length_s=0.5)
    assert len(tgt) == 3 * 9 and len(non) == 3 * 9
    # independent computation: cosine of the embeddings, trial by trial
    lab, a, b = d.sv_trials()[0]
    ea, eb = (Spectral()(torch.from_numpy(sf.read(u.path, dtype="float32")[0])[None]) for u in (a, b))
    first = torch.nn.functional.cosine_similarity(ea, eb).item()
    assert first == pytest.approx((tgt if lab else non)[0].item(), abs=1e-5)
    assert eer_threshold(tgt, non)[1] == 0.0  # distinct pitches are separable
    ntgt, nnon = trial_list_scores(model, d.sv_trials(), 0.5, cohort=d.cohort(), top_k=2)
    assert eer_threshold(ntgt, nnon)[1] == 0.0 and not torch.allclose(ntgt, tgt)
    with pytest.raises(Sec4srError, match="top_k"):
        trial_list_scores(model, d.sv_trials(), 0.5, cohort=d.cohort(), top_k=1)


@pytest.mark.parametrize("content, needle", [
    ("2 id10270/vidA/00001.wav id10270/vidB/00001.wav\n", "label"),
    ("1 id10270/vidA/00001.wav\n", "label enroll test"),
    ("1 id10270/vidA/00001.wav id10270/vidZ/00009.wav\n", "vidZ"),
    ("1 id10270/vidA/00001.wav id10270/vidB/00001.wav\n", "both"),
])
def test_bad_trial_lists_name_file_and_line(layout, tmp_path, content, needle):
    root, _, _ = layout
    bad = tmp_path / "bad.txt"
    bad.write_text(content)
    with pytest.raises(Sec4srError, match=needle) as exc:
        VoxCelebDataset(root=root, trials=bad).sv_trials()
    assert str(bad) in str(exc.value)


def test_missing_root_and_trials_are_clear(tmp_path, layout):
    root, trials, _ = layout
    with pytest.raises(Sec4srError, match="VoxCeleb folder not found"):
        VoxCelebDataset(root=tmp_path / "none", trials=trials).sv_trials()
    with pytest.raises(Sec4srError, match="trial list not found"):
        VoxCelebDataset(root=root, trials=tmp_path / "none.txt").sv_trials()


def test_evaluate_cli_prints_protocol_and_refuses_bad_as_norm(layout, capsys):
    from sec4sr_core.cli import main

    root, trials, n = layout
    spec = f"voxceleb:root={root},trials={trials}"
    assert main(["evaluate", "--model", "ge2e", "--dataset", spec, "--task", "sv", "--as-norm", "1"]) == 2
    assert_one_line_error(capsys.readouterr().err, "--as-norm")
    assert main(["evaluate", "--model", "ge2e", "--dataset", spec, "--task", "sv", "--as-norm", "3"]) == 0
    out = capsys.readouterr().out
    assert f"trial list ({n} trials, 27 targets, AS-Norm top-3): EER" in out and "minDCF@0.05" in out
