"""WaveGuard: its transforms against independent computations, calibration at 5 % FPR, the guarded system's
rejections, the detector-aware attack's gradient and its effect (lower detection AUC than plain PGD on the same
trials), and the contract kit for every transform."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import scipy.linalg
import torch

from sec4sr_core.plugins.manager import get_registry
from sec4sr_core.sdk import REJECT, ParameterError, Sec4srError
from sec4sr_core.sdk.waveguard import (
    _levinson, detection_scores, lpc_resynthesis, mel_filterbank, mel_inversion, output_distance, quantize, resample,
)
from sec4sr_core.study.detection import auc
from sec4sr_core.testing import check_registered, tiny_system, waves


def tones(freqs, t=8000, amp=0.1):
    n = torch.arange(t, dtype=torch.float64) / 16000
    return sum(amp * torch.sin(2 * math.pi * f * n + i) for i, f in enumerate(freqs)).view(1, 1, -1)


# -- transforms -------------------------------------------------------------------------------------------------


def test_quantize_rounds_to_the_grid_with_a_straight_through_gradient():
    x = waves(2, 0.1, seed=3).requires_grad_(True)
    y = quantize(x, 8)
    q = 2 / 256
    steps = y.detach() / q
    assert torch.allclose(steps, steps.round(), atol=1e-4)
    assert float((y - x).detach().abs().max()) <= q / 2 + 1e-7
    (g,) = torch.autograd.grad(y.sum(), x)
    assert torch.equal(g, torch.ones_like(x))


def test_resample_keeps_tones_below_half_the_rate_and_removes_those_above():
    # tones on the FFT grid of 8000 samples (2 Hz bins)
    low, high = tones([300, 1200, 3000]), tones([5000, 7000])
    assert torch.allclose(resample(low, 8000), low, atol=1e-9)
    assert float(resample(high, 8000).abs().max()) < 1e-9
    assert float(resample(low + high, 8000).sub(low).abs().max()) < 1e-9


def test_levinson_matches_scipy_toeplitz_solve():
    g = torch.Generator().manual_seed(0)
    sig = torch.randn(4, 800, generator=g, dtype=torch.float64)
    order = 12
    r = torch.stack([(sig[:, : 800 - k] * sig[:, k:]).sum(-1) for k in range(order + 1)], -1)
    a = _levinson(r, order)
    for i in range(4):
        ref = scipy.linalg.solve_toeplitz(r[i, :order].numpy(), r[i, 1:].numpy())
        np.testing.assert_allclose(a[i].numpy(), ref, rtol=1e-8, atol=1e-10)


def test_lpc_predicts_tones_and_drops_white_noise():
    x = tones([220, 1100], t=16000)
    assert float((lpc_resynthesis(x, 20) - x)[..., 400:-400].pow(2).mean() / x.pow(2).mean()) < 1e-4
    g = torch.Generator().manual_seed(1)
    noise = 0.01 * torch.randn(1, 1, 16000, generator=g, dtype=torch.float64)
    # white noise is unpredictable: most of it does not survive the resynthesis
    residual = (lpc_resynthesis(x + noise, 20) - x)[..., 400:-400].pow(2).mean() / noise.pow(2).mean()
    assert float(residual) < 0.9
    assert float(lpc_resynthesis(torch.zeros(2, 1, 3000), 20).abs().max()) == 0.0


def test_mel_inversion_preserves_the_mel_spectrogram():
    x = waves(2, 0.5, seed=4).double()
    y = mel_inversion(x, 64)
    win = torch.hann_window(512, dtype=torch.float64)
    fb = mel_filterbank(64, dtype=torch.float64)

    def mel(w):
        return fb @ torch.stft(w[:, 0], 512, 128, window=win, return_complex=True).abs().pow(2)

    rel = (mel(y) - mel(x)).abs().sum() / mel(x).sum()
    assert float(rel) < 0.25
    assert y.shape == x.shape


def test_output_distance():
    s = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    t = torch.tensor([[0.0, 1.0], [0.5, 0.5]])
    assert torch.allclose(output_distance(s, t, "l2"), torch.tensor([1.0, 0.0]), atol=1e-5)
    assert torch.allclose(output_distance(s, t, "cosine"), torch.tensor([1.0, 0.0]), atol=1e-6)
    with pytest.raises(ParameterError):
        output_distance(s[:, :1], t[:, :1], "cosine")


@pytest.mark.parametrize("transform", ["quantize", "resample", "lpc", "mel"])
def test_every_transform_passes_the_contract_kit(transform):
    check_registered("defense", "waveguard", {"transform": transform}, gradcheck=transform != "quantize")


# -- calibration and the guarded system ---------------------------------------------------------------------------


def build(spec="waveguard:transform=quantize"):
    return get_registry().build("defense", spec)


def test_calibration_flags_at_most_five_percent_of_benign_audio():
    system = tiny_system("csi-e")
    benign = waves(40, 0.25, seed=11)
    det = build()
    tau = det.calibrate(system, benign)
    d = det.scores(system, benign)
    assert int((d > tau).sum()) <= 2  # 5 % of 40
    assert int((d >= tau).sum()) >= 3  # the smallest such threshold: τ is the third-largest score
    assert torch.equal(det.flags(system, benign), d > tau)


def test_an_uncalibrated_detector_refuses_to_guard():
    with pytest.raises(Sec4srError, match="calibrate"):
        build().guard(tiny_system("csi-e"))


@pytest.mark.parametrize("task", ["csi-e", "sv", "osi"])
def test_the_guarded_system_rejects_exactly_the_flagged_inputs(task):
    system = tiny_system(task)
    x = waves(12, 0.25, seed=12)
    claims = torch.arange(12) % 4 if task == "sv" else None
    det = build()
    scores = det.scores(system, x, claims)
    det.tau = float(scores.median())  # half flagged
    flagged = scores > det.tau
    guarded = det.guard(system)
    with torch.no_grad():
        s = guarded(x, claims=claims)
        dec = guarded.decide(s)
        plain = system.decide(system(x, claims=claims))
    assert bool(flagged.any()) and bool((~flagged).any())
    assert torch.equal(guarded.last_flags, flagged)
    assert bool((dec[flagged] == REJECT).all())
    assert torch.equal(dec[~flagged], plain[~flagged])
    if task != "csi-e":  # the threshold rule alone rejects them (what an oracle decides)
        from sec4sr_core.sdk.system import decide
        assert bool((decide(s, system.task, system.threshold)[flagged] == REJECT).all())


def test_guarded_scores_match_the_sdk_detection_scores():
    system = tiny_system("csi-e")
    x = waves(6, 0.25, seed=13)
    det = build("waveguard:transform=lpc")
    det.tau = 1e9  # flag nothing: guarded scores are the plain scores
    guarded = det.guard(system)
    with torch.no_grad():
        assert torch.allclose(guarded(x), system(x), atol=1e-6)
    assert torch.allclose(detection_scores(system, x, det.params), det.scores(system, x))


# -- the detector-aware attack --------------------------------------------------------------------------------


def test_pgd_detect_gradient_is_the_gradient_of_the_joint_loss():
    from sec4sr_core.sdk import make_oracle
    from sec4sr_core.sdk.losses import margin_loss
    from sec4sr_core.sdk.system import as_defended

    system = as_defended(tiny_system("csi-e"))
    x = waves(3, 0.25, seed=14)
    y = torch.tensor([0, 1, 2])
    atk = get_registry().build("attack", "pgd-detect:transform=lpc,lam=2.5,kappa=0.5")
    oracle = make_oracle(system, atk.knowledge, n=3)
    base = lambda s, lab: margin_loss(s, lab, "csi-e", kappa=0.5)  # noqa: E731
    loss, grad, dec = atk.joint_gradient(oracle, x, base, y, torch.arange(3))
    xg = x.clone().requires_grad_(True)
    s = system(xg)
    ref = margin_loss(s, y, "csi-e", kappa=0.5).clamp(min=0) + 2.5 * output_distance(s, system(lpc_resynthesis(xg, 20)))
    (g_ref,) = torch.autograd.grad(ref.sum(), xg)
    assert torch.allclose(loss, ref.detach(), atol=1e-6)
    assert torch.allclose(grad, g_ref, atol=1e-6, rtol=1e-4)
    assert torch.equal(oracle.queries, torch.full((3,), 2))  # the probes x and T(x)


@pytest.mark.parametrize("transform", ["quantize"])  # lpc on GE2E: docs/detection.md, `sec4sr detect`
def test_the_detector_aware_attack_lowers_detection_auc(transform):
    """Same trials, same budget: plain PGD vs PGD on attack loss + λ·detection score, AUC over successes."""
    reg = get_registry()
    system = tiny_system("csi-e")
    x = waves(16, 0.25, seed=7)
    det = build(f"waveguard:transform={transform}")
    benign = det.scores(system, x).tolist()
    budget = "steps=10,epsilon=0.005,step_size=0.001"
    pgd = reg.build("attack", f"pgd:{budget}")
    adv = pgd(system, x)
    ok = pgd.last_result.success
    aware = reg.build("attack", f"pgd-detect:{budget},transform={transform}")
    adv_a = aware(system, x)
    ok_a = aware.last_result.success
    assert int(ok.sum()) >= 12 and int(ok_a.sum()) >= 8
    auc_na = auc(benign, det.scores(system, adv)[ok].tolist())
    auc_a = auc(benign, det.scores(system, adv_a)[ok_a].tolist())
    assert auc_na > 0.6  # the detector sees the non-adaptive attack
    assert auc_a < auc_na - 0.3
    assert float((adv_a - x).abs().max()) <= 0.005 + 1e-6


def test_lam_zero_is_plain_margin_pgd():
    reg = get_registry()
    system = tiny_system("csi-e")
    x = waves(4, 0.25, seed=8)
    a = reg.build("attack", "pgd-detect:steps=3,lam=0,epsilon=0.005,step_size=0.001,transform=quantize")
    p = reg.build("attack", "pgd:steps=3,loss=margin,epsilon=0.005,step_size=0.001")
    adv_a, adv_p = a(system, x), p(system, x)
    # same successes (both keep the best iterate; λ = 0 leaves only the clipped margin loss)
    assert torch.equal(a.last_result.success, p.last_result.success)
    assert adv_a.shape == adv_p.shape


# -- end to end through the CLI --------------------------------------------------------------------------------


@pytest.mark.slow  # GE2E enrollment + two attacks on 3 trials: about a minute on an idle machine
def test_sec4sr_detect_end_to_end(capsys):
    from sec4sr_core.cli import main

    args = ["detect", "--model", "ge2e", "--attack", "fgsm", "--detector", "waveguard:transform=quantize",
            "--adaptive", "pgd-detect:steps=2", "--limit", "3", "--draws", "50", "--json"]
    assert main(args) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["trials"] == 3 and doc["fpr"] == 0.05
    (entry,) = doc["detectors"]
    settings = {r["setting"]: r for r in entry["settings"]}
    assert set(settings) == {"non-adaptive", "adaptive"}
    assert settings["adaptive"]["attack"].startswith("pgd-detect:")
    assert "epsilon=0.002" in settings["adaptive"]["attack"] or "steps=2" in settings["adaptive"]["attack"]
    for r in settings.values():
        assert 0 <= r["success"] <= 1
        if r["n_success"]:
            assert 0 <= r["auc"] <= 1 and r["auc_ci"][0] <= r["auc"] <= r["auc_ci"][1]
    assert main(args[:-1]) == 0  # the table
    out = capsys.readouterr().out
    assert "non-adaptive" in out and "TPR@5%FPR" in out


@pytest.mark.parametrize("extra, message", [
    (["--detector", "qt"], "not a WaveGuard-style detector"),
    (["--detector", "waveguard:transform=fft"], "transform"),
    (["--fpr", "1.5"], "--fpr"),
    (["--limit", "0"], "--limit"),
    (["--attack", "nosuch"], "nosuch"),
])
def test_sec4sr_detect_bad_input_is_one_error_line(extra, message, capsys):
    from sec4sr_core.cli import main

    assert main(["detect", "--model", "ge2e", "--limit", "2", *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and message in err[0]
