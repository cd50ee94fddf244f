"""Detection statistics: AUC against an independent O(N²) pair count (ties ½), the 5 %-FPR threshold and TPR,
bootstrap intervals, and bad input."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sec4sr_core.base.errors import ParameterError
from sec4sr_core.study.detection import auc, detection_summary, threshold_at_fpr, tpr_at_fpr


def auc_pairs(benign, adversarial) -> float:
    """The O(N²) definition: mean over every (adversarial, benign) pair of 1[a > b] + ½·1[a = b]."""
    total = sum((a > b) + 0.5 * (a == b) for a in adversarial for b in benign)
    return total / (len(adversarial) * len(benign))


# coarse values make ties common
values = st.lists(st.integers(-5, 5).map(lambda v: v / 4), min_size=1, max_size=30)


@settings(max_examples=200, deadline=None)
@given(values, values)
def test_auc_equals_the_pairwise_definition(benign, adversarial):
    assert auc(benign, adversarial) == pytest.approx(auc_pairs(benign, adversarial), abs=1e-12)


@settings(max_examples=100, deadline=None)
@given(values, values)
def test_auc_is_antisymmetric(benign, adversarial):
    assert auc(benign, adversarial) + auc(adversarial, benign) == pytest.approx(1.0)


def test_auc_known_values():
    assert auc([0, 1, 2], [3, 4]) == 1.0
    assert auc([3, 4], [0, 1, 2]) == 0.0
    assert auc([1, 1], [1, 1, 1]) == 0.5


@settings(max_examples=200, deadline=None)
@given(values, st.sampled_from([0.01, 0.05, 0.1, 0.25, 0.5]))
def test_threshold_flags_at_most_fpr_and_is_the_smallest_such_benign_score(benign, fpr):
    tau = threshold_at_fpr(benign, fpr)
    assert tau in benign
    assert sum(v > tau for v in benign) <= fpr * len(benign) + 1e-9
    # any smaller benign score as threshold would flag more than fpr
    for v in set(benign):
        if v < tau:
            assert sum(b > v for b in benign) > fpr * len(benign)


def test_tpr_at_fpr_by_hand():
    benign = [i / 100 for i in range(100)]  # 5 % above 0.94 → τ = 0.94
    assert threshold_at_fpr(benign, 0.05) == pytest.approx(0.94)
    assert tpr_at_fpr(benign, [0.5, 0.95, 0.99, 2.0], 0.05) == 0.75


def test_summary_has_intervals_that_contain_the_estimate():
    benign = [0.01 * i for i in range(40)]
    adversarial = [0.2 + 0.01 * i for i in range(40)]
    s = detection_summary(benign, adversarial, draws=300, seed=1)
    assert s["n_benign"] == s["n_adversarial"] == 40
    assert s["auc_ci"][0] <= s["auc"] <= s["auc_ci"][1]
    assert s["tpr_ci"][0] <= s["tpr"] <= s["tpr_ci"][1]
    assert s["benign_fpr"] <= 0.05
    assert detection_summary(benign, adversarial, draws=300, seed=1) == s  # seeded


@pytest.mark.parametrize("call", [
    lambda: auc([], [1.0]),
    lambda: auc([1.0], []),
    lambda: auc([float("nan")], [1.0]),
    lambda: threshold_at_fpr([1.0], 0.0),
    lambda: threshold_at_fpr([1.0], 1.5),
    lambda: detection_summary([1.0], [2.0], draws=0),
])
def test_bad_input_is_a_parameter_error(call):
    with pytest.raises(ParameterError):
        call()
