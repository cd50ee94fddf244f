"""Each reliability warning is provoked by a study built to trigger it, and absent where it should be."""

from __future__ import annotations

import torch

from sec4sr_core.study import reliability
from sec4sr_core.study.store import ResultStore

from .conftest import WEAK_PGD, cell


def _codes(out, defense, attack, setting):
    with ResultStore(out / "results.sqlite") as store:
        rows = store.rows("WHERE defense=? AND attack=? AND setting=?", (defense, attack, setting))
    assert rows
    return [{w["code"] for w in r["warnings"]} for r in rows]


def test_randomized_defense_without_eot_is_flagged(small_study):
    out, summary = small_study
    for attack in (WEAK_PGD, "test-flip"):
        assert all("randomized-no-eot" in c for c in _codes(out, "test-noisy", attack, "adaptive"))
        # crafted on the undefended system (non-adaptive) or against a deterministic defense: no flag
        assert not any("randomized-no-eot" in c for c in _codes(out, "test-noisy", attack, "non-adaptive"))
        assert not any("randomized-no-eot" in c for c in _codes(out, "qt:q=512", attack, "adaptive"))
    assert cell(summary, "test-noisy", WEAK_PGD, "adaptive")["warnings"]["randomized-no-eot"] == 4


def test_randomized_defense_with_eot_is_not_flagged():
    warns = reliability.row_warnings(3, adaptive=True, randomized=True, eot=4)
    assert warns == [[], [], []]
    assert reliability.row_warnings(2, adaptive=True, randomized=True, eot=1)[0][0]["code"] == "randomized-no-eot"


def test_vanishing_input_gradient_is_flagged(small_study):
    out, summary = small_study
    assert all("gradient-masking" in c for c in _codes(out, "test-stepq", WEAK_PGD, "adaptive"))
    # BPDA through QT and the plain model give real gradients; a black-box attack is not checked
    for d in ("none", "qt:q=512", "test-noisy"):
        assert not any("gradient-masking" in c for c in _codes(out, d, WEAK_PGD, "adaptive"))
    assert not any("gradient-masking" in c for c in _codes(out, "test-stepq", "test-flip", "adaptive"))
    with ResultStore(out / "results.sqlite") as store:
        rows = store.rows("WHERE attack=? AND setting='adaptive'", (WEAK_PGD,))
    norms = {r["defense"]: r["metrics"]["grad_norm"] for r in rows}
    assert norms["test-stepq"] == 0.0 and norms["none"] > 1e-6 and norms["qt:q=512"] > 1e-6


def test_input_gradient_norm_matches_autograd(ge2e_system, test_batch):
    from sec4sr_core.sdk.losses import margin_loss
    from sec4sr_core.sdk.system import as_defended

    x, y = test_batch[0][:2, :, :16000], test_batch[1][:2]
    norms = reliability.input_gradient_norms(as_defended(ge2e_system), x, y)
    xd = x.clone().requires_grad_(True)
    loss = margin_loss(ge2e_system(xd), y, "csi-e")
    (g,) = torch.autograd.grad(loss.sum(), xd)
    torch.testing.assert_close(norms, g.double().flatten(1).norm(dim=1), rtol=1e-5, atol=1e-12)


def test_black_box_beating_white_box_is_flagged(small_study):
    out, summary = small_study
    flip, pgd = cell(summary, "none", "test-flip", "non-adaptive"), cell(summary, "none", WEAK_PGD, "non-adaptive")
    assert flip["adversarial_accuracy"] < pgd["adversarial_accuracy"]
    assert all("black-box-beats-white" in c for c in _codes(out, "none", "test-flip", "non-adaptive"))
    assert all("black-box-beats-white" in c for c in _codes(out, "none", WEAK_PGD, "non-adaptive"))
    # on the row where the flip undoes the defense, the black-box attack is weaker: no flag
    assert not any("black-box-beats-white" in c for c in _codes(out, "test-signflip", "test-flip", "non-adaptive"))


def test_accuracy_above_benign_is_flagged(small_study):
    out, summary = small_study
    c = cell(summary, "test-signflip", "test-flip", "non-adaptive")
    assert c["adversarial_accuracy"] == 1.0 > c["benign_accuracy"]
    assert all("accuracy-above-benign" in codes for codes in _codes(out, "test-signflip", "test-flip", "non-adaptive"))
    assert not any("accuracy-above-benign" in codes for codes in _codes(out, "none", "test-flip", "non-adaptive"))


def test_study_warnings_on_a_hand_made_summary():
    base = {"system": "m", "task": "csi-e", "defense": "none", "setting": "non-adaptive", "n": 10,
            "benign_accuracy": 0.9}
    results = [
        {**base, "attack": "pgd", "adversarial_accuracy": 0.5},
        {**base, "attack": "fgsm", "adversarial_accuracy": 0.6},
        {**base, "attack": "fakebob", "adversarial_accuracy": 0.4},
        {**base, "attack": "kenan", "adversarial_accuracy": 0.95},
    ]
    know = {"pgd": "white-box", "fgsm": "white-box", "fakebob": "score-based", "kenan": "decision-based"}
    found = reliability.study_warnings(results, know)
    flagged = {(k["attack"], code) for k, codes in found for code in codes}
    assert ("fakebob", "black-box-beats-white") in flagged
    assert ("pgd", "black-box-beats-white") in flagged and ("fgsm", "black-box-beats-white") in flagged
    assert ("kenan", "black-box-beats-white") not in flagged
    assert ("kenan", "accuracy-above-benign") in flagged
    assert ("pgd", "accuracy-above-benign") not in flagged


def test_adaptive_weaker_than_non_adaptive_is_flagged():
    """Measured on the demo: at:snr=30 PGD-10 NA 12.5 %, A 25.0 %; opus NA 25.0 %, A 50.0 % — printed silently."""
    base = {"system": "m", "task": "csi-e", "attack": "pgd-10", "n": 8, "benign_accuracy": 1.0}
    results = [
        {**base, "defense": "at:snr=30", "setting": "non-adaptive", "adversarial_accuracy": 0.125},
        {**base, "defense": "at:snr=30", "setting": "adaptive", "adversarial_accuracy": 0.25},
        {**base, "defense": "qt:q=512", "setting": "non-adaptive", "adversarial_accuracy": 0.75},
        {**base, "defense": "qt:q=512", "setting": "adaptive", "adversarial_accuracy": 0.375},
        {**base, "defense": "none", "setting": "non-adaptive", "adversarial_accuracy": 0.1},
        {**base, "defense": "none", "setting": "adaptive", "adversarial_accuracy": 0.2},
    ]
    found = reliability.study_warnings(results, {"pgd-10": "white-box"})
    flagged = {(k["defense"], k["setting"]) for k, codes in found if "adaptive-weaker" in codes}
    assert flagged == {("at:snr=30", "adaptive")}  # not qt (adaptive stronger), not the undefended row
    msg = next(codes["adaptive-weaker"] for k, codes in found if "adaptive-weaker" in codes)
    assert "25.0%" in msg and "12.5%" in msg


def test_warnings_are_shown_in_the_table(small_study):
    from sec4sr_core.study.runner import format_table

    text = format_table(small_study[1])
    assert "reliability warnings" in text and "gradient masking" in text and "without EOT" in text
