"""Evaluations that check their own strength: each warning provoked by a study built to trigger it, and absent where
it should be (zero BPDA gradient, EOT not converged, benchmark too easy, accuracy rising with attack strength)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from sec4sr_core import Attack, AttackResult, Knowledge, hookimpl
from sec4sr_core.plugins.manager import register_plugin, unregister_plugin
from sec4sr_core.study import reliability
from sec4sr_core.study.stats import wilson
from sec4sr_core.study.store import ResultStore

from .conftest import WEAK_PGD, cell, signs


class EotProbe(Attack):
    """Scrambles the audio (x·s) only when the oracle averages at least 4 EOT draws, else returns it unchanged: an
    attack whose result depends on the number of draws, so doubling ``eot`` from 2 to 4 changes it completely."""

    name = "test-eot-probe"
    knowledge = Knowledge.SCORES

    def run(self, oracle, x, y, targeted=False):
        adv = x * signs(x.shape[-1], x.device) if oracle.eot >= 4 else x.clone()
        dec = oracle.decisions(adv)
        return AttackResult(adv, dec != y.to(dec.device), oracle.queries.clone(), dec)


class Plugin:
    @hookimpl
    def register_attacks(self, register):
        register(EotProbe)


@pytest.fixture(scope="module")
def probe_plugin(study_plugin):
    register_plugin(Plugin(), name="strength-test-plugin")
    yield
    unregister_plugin("strength-test-plugin")


def _run(out, **kw):
    from sec4sr_core.study.runner import Study, StudyConfig

    cfg = StudyConfig(**{"limit": 4, "length_s": 1.0, "batch_size": 4, "out": out, "metrics": ["linf"],
                         "examples": 0, **kw})
    return Study(cfg, progress=False).run()


def _codes(out, defense, attack, setting):
    with ResultStore(out / "results.sqlite") as store:
        rows = store.rows("WHERE defense=? AND attack=? AND setting=?", (defense, attack, setting))
    assert rows
    return [{w["code"] for w in r["warnings"]} for r in rows]


# -- zero BPDA gradient ---------------------------------------------------------------------------------------------
def test_zero_bpda_gradient_from_the_gradient_check():
    g = torch.tensor([0.0, 1.0, float("nan")], dtype=torch.float64)
    through_bpda = reliability.row_warnings(3, adaptive=True, randomized=False, eot=1, grad_norms=g, bpda=True)
    assert [[w["code"] for w in ws] for ws in through_bpda] == [["zero-bpda-gradient"], [], ["zero-bpda-gradient"]]
    plain = reliability.row_warnings(3, adaptive=True, randomized=False, eot=1, grad_norms=g, bpda=False)
    assert [[w["code"] for w in ws] for ws in plain] == [["gradient-masking"], [], ["gradient-masking"]]


def test_all_zero_perturbation_through_bpda_is_flagged(small_study):
    """WEAK_PGD (ε = 1e-5, below one 16-bit step) saves the benign audio unchanged: through QT's BPDA that is flagged;
    on the differentiable undefended row (plain gradient) and for non-adaptive audio it is not this warning."""
    out, summary = small_study
    assert all("zero-bpda-gradient" in c for c in _codes(out, "qt:q=512", WEAK_PGD, "adaptive"))
    assert cell(summary, "qt:q=512", WEAK_PGD, "adaptive")["warnings"]["zero-bpda-gradient"] == 4
    for d, s in (("none", "adaptive"), ("qt:q=512", "non-adaptive"), ("test-stepq", "adaptive")):
        assert not any("zero-bpda-gradient" in c for c in _codes(out, d, WEAK_PGD, s))
    # a decision-based attack through the same defense is not a gradient attack
    assert not any("zero-bpda-gradient" in c for c in _codes(out, "qt:q=512", "test-flip", "adaptive"))


def test_a_real_perturbation_through_bpda_is_not_flagged(tmp_path, study_plugin, one_thread):
    from sec4sr_core.study.summary import format_table

    attack = "pgd:steps=1,epsilon=0.002,step_size=0.002"
    s = _run(tmp_path, attacks=[attack], defenses=["qt:q=512"], settings=["adaptive"], limit=2)
    assert not any("zero-bpda-gradient" in c or "gradient-masking" in c
                   for c in _codes(tmp_path, "qt:q=512", attack, "adaptive"))
    # SNR per cell is measured although `snr` is not among the study's metrics (["linf"]): the mean of the rows'
    with ResultStore(tmp_path / "results.sqlite") as store:
        rows = store.rows("WHERE defense='qt:q=512' AND attack=?", (attack,))
    snrs = [r["metrics"]["snr"] for r in rows]
    c = cell(s, "qt:q=512", attack, "adaptive")
    assert c["snr_db"] == pytest.approx(sum(snrs) / len(snrs)) and 10 < c["snr_db"] < 60 and c["snr_n"] == 2
    lo, hi = c["snr_db_ci"]
    assert lo <= c["snr_db"] <= hi
    assert "mean SNR (dB) of the saved adversarial audio" in format_table(s)


def test_an_attack_left_blind_by_a_masked_gradient_is_flagged_without_the_gradient_check(tmp_path, study_plugin,
                                                                                        one_thread):
    """test-stepq claims to be differentiable but its gradient is zero everywhere: PGD crafted through it (adaptive)
    returns the benign audio and fails — flagged `gradient-masking` from the unchanged output alone (the opt-in
    gradient check is off); the same PGD on the undefended row moves the audio and is not flagged."""
    attack = "pgd:steps=2,epsilon=0.002,step_size=0.001"
    _run(tmp_path, attacks=[attack], defenses=["test-stepq"], settings=["adaptive"], limit=2)
    masked = _codes(tmp_path, "test-stepq", attack, "adaptive")
    assert masked and all("gradient-masking" in c for c in masked)
    assert not any("gradient-masking" in c for c in _codes(tmp_path, "none", attack, "adaptive"))


# -- EOT convergence ------------------------------------------------------------------------------------------------
def test_eot_converged_against_the_wilson_interval():
    lo, hi = wilson(4, 8)
    assert reliability.eot_converged([1] * 4 + [0] * 4, [1] * 4 + [0] * 4, 2) is None
    moved = reliability.eot_converged([1] * 8, [0] * 8, 2)
    assert moved["code"] == "eot-not-converged" and "eot=2" in moved["message"] and "eot=4" in moved["message"]
    # one trial more or less stays inside the 8-trial interval
    assert lo < 3 / 8 and reliability.eot_converged([1] * 4 + [0] * 4, [1] * 3 + [0] * 5, 2) is None


def test_eot_not_converged_is_flagged_and_absent_when_converged(tmp_path, probe_plugin, one_thread):
    common = dict(attacks=["test-eot-probe"], defenses=["test-noisy"], settings=["adaptive"], eot_check=True)
    s2 = _run(tmp_path / "eot2", eot=2, **common)
    c = cell(s2, "test-noisy", "test-eot-probe", "adaptive")
    assert c["adversarial_accuracy"] == 1.0  # 2 draws: the probe does nothing
    assert c["warnings"].get("eot-not-converged") == 4
    assert "eot=2 A_a 100.0%" in " ".join(c["warning_messages"])
    # the deterministic undefended row is never re-crafted
    assert "eot-not-converged" not in cell(s2, "none", "test-eot-probe", "adaptive")["warnings"]
    with ResultStore(tmp_path / "eot2" / "results.sqlite") as store:
        (check,) = store.study_meta(s2["study"], "eot_check").values()
    assert check["accuracy"] == 1.0 and check["accuracy_doubled"] < 1.0 and check["n"] == 4

    s4 = _run(tmp_path / "eot4", eot=4, **common)  # 4 → 8 draws: the same result, no warning
    assert "eot-not-converged" not in cell(s4, "test-noisy", "test-eot-probe", "adaptive")["warnings"]
    # without the opt-in flag nothing is re-crafted
    s_off = _run(tmp_path / "off", eot=2, attacks=["test-eot-probe"], defenses=["test-noisy"], settings=["adaptive"])
    assert "eot-not-converged" not in cell(s_off, "test-noisy", "test-eot-probe", "adaptive")["warnings"]


# -- benchmark too easy ---------------------------------------------------------------------------------------------
def test_benchmark_easy_against_the_wilson_interval():
    w = reliability.benchmark_easy([1] * 8, [1] * 7 + [0], "ge2e")
    assert w["code"] == "benchmark-too-easy" and "87.5%" in w["message"] and "random weights" in w["message"]
    assert reliability.benchmark_easy([1] * 8, [0] * 7 + [1], "ge2e") is None


def test_benchmark_check_on_ge2e_measures_and_does_not_flag(tmp_path, study_plugin, one_thread):
    """GE2E's trained weights matter on the embedded corpus: its random-weights twin (seeded) is far below the trained
    accuracy, so no warning — but the measurement is stored and printed."""
    from sec4sr_core.study.summary import format_table

    s = _run(tmp_path, attacks=[], defenses=[], check_benchmark=True, limit=8)
    with ResultStore(tmp_path / "results.sqlite") as store:
        (check,) = store.study_meta(s["study"], "benchmark_check").values()
    lo, _ = wilson(round(check["accuracy"] * 8), 8)
    assert check["n"] == 8 and check["random_accuracy"] < lo and check["warning"] is None
    assert s["systems"][0]["benign_warnings"] == []
    assert s["systems"][0]["benchmark_check"]["random_accuracy"] == check["random_accuracy"]
    assert "benchmark check: ge2e with random weights" in format_table(s)


def test_benchmark_too_easy_when_the_weights_do_not_matter(tmp_path, study_plugin, one_thread):
    """The example backbone ``mfcc-stats`` has no weights at all: its "random-weights" reference is the same function,
    reaches the same accuracy, and the check flags the benchmark, with the measured accuracy."""
    import sys
    from pathlib import Path

    from sec4sr_core.study.summary import format_table

    sys.path.insert(0, str(Path(__file__).parents[2] / "plugins" / "sec4sr-example-backbone"))
    try:
        from sec4sr_example_backbone import MFCCStats
    finally:
        sys.path.pop(0)

    class Backbone:
        @hookimpl
        def register_models(self, register):
            register(MFCCStats)

    register_plugin(Backbone(), name="strength-test-backbone")
    try:
        s = _run(tmp_path, model="mfcc-stats", attacks=[], defenses=[], check_benchmark=True, limit=8)
        s_off = _run(tmp_path / "off", model="mfcc-stats", attacks=[], defenses=[], limit=8)
    finally:
        unregister_plugin("strength-test-backbone")
    check = s["systems"][0]["benchmark_check"]
    assert check["random_accuracy"] == check["accuracy"]
    (w,) = s["systems"][0]["benign_warnings"]
    assert w["defense"] == "none" and w["message"].startswith("benchmark too easy")
    assert f"random weights: A_b {100 * check['random_accuracy']:.1f}% on 8 trials" in w["message"]
    assert "benchmark too easy" in format_table(s)
    with ResultStore(tmp_path / "results.sqlite") as store:
        rows = store.rows("WHERE setting='benign' AND defense='none'", study=s["study"])
    assert rows and all(any(x["code"] == "benchmark-too-easy" for x in r["warnings"]) for r in rows)
    assert s_off["systems"][0]["benign_warnings"] == []  # off by default


# -- accuracy rising with attack strength ---------------------------------------------------------------------------
def _sweep(xs, values, kind="attack", param="epsilon"):
    line = SimpleNamespace(name="none", values=values, cis=[None] * len(xs), benign=False,
                           cells=[{"defense": "none", "attack": f"a{i}", "study": "s"} for i in range(len(xs))])
    return SimpleNamespace(xs=xs, lines=[line]), {"kind": kind, "param": param}


@pytest.mark.parametrize("xs,values,param,flagged", [
    ([0.001, 0.002, 0.004], [0.8, 0.5, 0.2], "epsilon", []),            # monotone: none
    ([0.001, 0.002, 0.004], [0.8, 0.5, 0.6], "epsilon", ["a2"]),        # rises at the largest ε
    ([0.004, 0.001, 0.002], [0.6, 0.8, 0.5], "epsilon", ["a0"]),        # any order of the values
    ([1, 10, 100], [0.5, 0.5, 0.75], "steps", ["a2"]),
    ([20.0, 30.0, 40.0], [0.2, 0.5, 0.9], "snr_db", []),                # larger SNR budget = weaker attack
    ([20.0, 30.0, 40.0], [0.6, 0.5, 0.9], "snr_db", ["a0"]),            # SNR 20 is stronger than 30 yet higher
    ([1, 2, 4], [0.5, 0.25, 0.5], "eot", ["a2"]),
    ([1, 2, 4], [0.5, 0.25, 0.5], "kappa", []),                         # no known direction
])
def test_sweep_not_monotone(xs, values, param, flagged):
    data, sweep = _sweep(xs, values, param=param)
    found = reliability.sweep_warnings(data, sweep)
    assert [k["attack"] for k, _ in found] == flagged
    for _, codes in found:
        assert list(codes) == ["sweep-not-monotone"] and param in codes["sweep-not-monotone"]


def test_defense_sweeps_are_not_checked_for_monotony():
    data, sweep = _sweep([64, 128], [0.2, 0.9], kind="defense", param="q")
    assert reliability.sweep_warnings(data, sweep) == []
