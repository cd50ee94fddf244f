"""Uncertainty and the worst case: Wilson intervals against scipy, seeded bootstrap intervals for R1, and the
robust column (correct under every attack of its row) never above any attack column."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import binomtest

from sec4sr_core.study.stats import bootstrap_ci, mean, proportion, r1, wilson
from sec4sr_core.study.summary import format_table


@given(st.integers(1, 400).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
@settings(max_examples=200, deadline=None)
def test_wilson_equals_scipy(kn):
    k, n = kn
    ref = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    lo, hi = wilson(k, n)
    assert math.isclose(lo, ref.low, abs_tol=1e-9) and math.isclose(hi, ref.high, abs_tol=1e-9)
    assert 0.0 <= lo <= k / n <= hi <= 1.0


def test_proportion_skips_missing_values():
    pr = proportion([1, 0, None, 1, float("nan")])
    assert pr["n"] == 3 and pr["value"] == pytest.approx(2 / 3) and pr["ci"] == wilson(2, 3)
    assert proportion([]) == {"n": 0, "value": None, "ci": None}


def test_bootstrap_is_seeded_paired_and_brackets_the_estimate():
    b = [1] * 20
    a = [1, 0] * 10
    stat = lambda bb, aa: r1(mean(bb), [mean(aa)])  # noqa: E731
    ci = bootstrap_ci(stat, [b, a], seed=3)
    assert ci == bootstrap_ci(stat, [b, a], seed=3)
    assert ci[0] <= stat(b, a) <= ci[1] and ci[0] < ci[1]
    # identical columns resampled together: the difference of their means is exactly 0 on every draw
    assert bootstrap_ci(lambda x, y: mean(x) - mean(y), [a, a]) == (0.0, 0.0)
    assert bootstrap_ci(stat, [[], []]) is None


def test_robust_is_the_worst_case_per_utterance(small_study):
    _, summary = small_study
    sysdoc = summary["systems"][0]
    for d, rob in sysdoc["robust"].items():
        cols = [r for r in summary["results"] if r["defense"] == d]
        assert rob["n"] == cols[0]["n"]
        assert all(rob["accuracy"] <= r["adversarial_accuracy"] + 1e-12 for r in cols)
        assert rob["accuracy"] <= sysdoc["benign"][d]
        lo, hi = rob["ci"]
        assert lo <= rob["accuracy"] <= hi
        assert set(sysdoc["r1_by_setting"]) == {"non-adaptive", "adaptive"}
        # the worst-case R1 never exceeds the R1 of either setting
        w = sysdoc["r1_worst"][d]["value"]
        assert all(w <= sysdoc["r1_by_setting"][s][d]["value"] + 1e-12 for s in sysdoc["r1_by_setting"])
    table = format_table(summary)
    assert "robust" in table and "R1 worst" in table and "R1 NA" in table and "R1 A" in table
    assert f"n {cols[0]['n']} trials per cell" in table and "[" in table
