"""Detection statistics for benign vs adversarial detector scores (higher score = more likely adversarial).

* :func:`auc`: the ROC AUC as the Mann–Whitney statistic ``P(a > b) + ½·P(a = b)`` over every (adversarial a,
  benign b) pair, computed from mid-ranks in O(N log N).
* :func:`threshold_at_fpr`: the detection threshold τ (flag when score > τ) calibrated on benign scores so that at
  most ``fpr`` of them are flagged; :func:`tpr_at_fpr`: the fraction of adversarial scores above it.
* :func:`detection_summary`: both, with percentile-bootstrap 95 % intervals that resample the benign and the
  adversarial scores independently (seeded), and the benign FPR actually reached (ties can keep it below ``fpr``).
"""

from __future__ import annotations

import math
import random
from typing import Any, Sequence

from sec4sr_core.base.errors import ParameterError

DEFAULT_FPR = 0.05


def _values(scores: Sequence[float], what: str) -> list[float]:
    out = [float(v) for v in scores]
    if not out:
        raise ParameterError(f"detection statistics need at least one {what} score")
    if not all(math.isfinite(v) for v in out):
        raise ParameterError(f"{what} detector scores must be finite")
    return out


def _check_fpr(fpr: float) -> float:
    if not (0 < fpr < 1):
        raise ParameterError(f"the false-positive rate must lie in (0, 1), got {fpr}")
    return float(fpr)


def auc(benign: Sequence[float], adversarial: Sequence[float]) -> float:
    """ROC AUC of separating ``adversarial`` (positives) from ``benign`` (negatives); ties count ½."""
    b, a = _values(benign, "benign"), _values(adversarial, "adversarial")
    pooled = sorted([(v, 0) for v in b] + [(v, 1) for v in a], key=lambda p: p[0])
    rank_sum, i = 0.0, 0
    while i < len(pooled):
        j = i
        while j + 1 < len(pooled) and pooled[j + 1][0] == pooled[i][0]:
            j += 1
        mid = (i + j) / 2 + 1  # 1-based mid-rank of the tie block i..j
        rank_sum += mid * sum(1 for k in range(i, j + 1) if pooled[k][1])
        i = j + 1
    n_a, n_b = len(a), len(b)
    return (rank_sum - n_a * (n_a + 1) / 2) / (n_a * n_b)


def threshold_at_fpr(benign: Sequence[float], fpr: float = DEFAULT_FPR) -> float:
    """The smallest benign score τ such that at most ``fpr`` of the benign scores are > τ."""
    b = sorted(_values(benign, "benign"), reverse=True)
    k = int(math.floor(_check_fpr(fpr) * len(b) + 1e-9))
    return b[min(k, len(b) - 1)]


def tpr_at_fpr(benign: Sequence[float], adversarial: Sequence[float], fpr: float = DEFAULT_FPR) -> float:
    """Fraction of ``adversarial`` scores above :func:`threshold_at_fpr` of ``benign``."""
    tau = threshold_at_fpr(benign, fpr)
    a = _values(adversarial, "adversarial")
    return sum(v > tau for v in a) / len(a)


def _bootstrap(stat, b: list[float], a: list[float], draws: int, seed: int) -> tuple[float, float]:
    rng = random.Random(seed)
    values = sorted(stat([rng.choice(b) for _ in b], [rng.choice(a) for _ in a]) for _ in range(draws))
    lo = values[int(math.floor(0.025 * (len(values) - 1)))]
    hi = values[int(math.ceil(0.975 * (len(values) - 1)))]
    return lo, hi


def detection_summary(benign: Sequence[float], adversarial: Sequence[float], fpr: float = DEFAULT_FPR,
                      draws: int = 1000, seed: int = 0) -> dict[str, Any]:
    """``{"n_benign", "n_adversarial", "auc", "auc_ci", "fpr", "threshold", "benign_fpr", "tpr", "tpr_ci"}``;
    intervals are 95 % percentile-bootstrap intervals over ``draws`` seeded resamples."""
    b, a = _values(benign, "benign"), _values(adversarial, "adversarial")
    fpr = _check_fpr(fpr)
    if draws < 1:
        raise ParameterError(f"bootstrap draws must be ≥ 1, got {draws}")
    tau = threshold_at_fpr(b, fpr)
    return {
        "n_benign": len(b), "n_adversarial": len(a),
        "auc": auc(b, a), "auc_ci": _bootstrap(auc, b, a, draws, seed),
        "fpr": fpr, "threshold": tau, "benign_fpr": sum(v > tau for v in b) / len(b),
        "tpr": tpr_at_fpr(b, a, fpr),
        "tpr_ci": _bootstrap(lambda bb, aa: tpr_at_fpr(bb, aa, fpr), b, a, draws, seed + 1),
    }
