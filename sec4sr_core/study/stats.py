"""Aggregates of result rows, free of torch: finite means, harmonic mean, R1, per-cell aggregates."""

from __future__ import annotations

import math
from typing import Any, Iterable, Sequence



def finite(values: Iterable[Any]) -> list[float]:
    """The values that are numbers and finite (None, NaN, ±inf and the store's "inf" strings dropped)."""
    out = []
    for v in values:
        if v is None:
            continue
        try:
            f = float(v)
        except (TypeError, ValueError):
            continue
        if math.isfinite(f):
            out.append(f)
    return out


def mean(values: Iterable[Any]) -> float | None:
    """Mean of the finite values, None when there is none."""
    vals = finite(values)
    return sum(vals) / len(vals) if vals else None


def harmonic_mean(a: float | None, b: float | None) -> float | None:
    """2ab/(a+b); 0 when both are 0; None when either is missing."""
    if a is None or b is None:
        return None
    if a < 0 or b < 0:
        raise ValueError("the harmonic mean is defined here for accuracies in [0, 1]")
    return 0.0 if a + b == 0 else 2 * a * b / (a + b)


def r1(benign_accuracy: float | None, adversarial_accuracies: Sequence[float | None]) -> float | None:
    """The SEC4SR paper's R1 score of a defense row: harmonic mean of A_b and the mean A_a over the attacks."""
    return harmonic_mean(benign_accuracy, mean(adversarial_accuracies))


def aggregate(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Aggregates of one cell's result rows: n, accuracy, success rate, queries and time per example, and the mean
    of every per-utterance metric (keys of ``row["metrics"]``, non-numbers skipped)."""
    names = sorted({k for r in rows for k, v in (r.get("metrics") or {}).items() if not isinstance(v, bool)})
    return {
        "n": len(rows),
        "accuracy": mean(r.get("correct") for r in rows),
        "success_rate": mean(r.get("success") for r in rows),
        "mean_queries": mean(r.get("queries") for r in rows),
        "mean_time_s": mean(r.get("time_s") for r in rows),
        "metrics": {m: mean((r.get("metrics") or {}).get(m) for r in rows) for m in names},
    }


Z95 = 1.959963984540054  #: two-sided 95 % normal quantile


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """The Wilson score interval (lo, hi) of a proportion ``successes / n`` (95 % by default); None when n = 0.

    Unlike the normal approximation it stays inside [0, 1] and is informative at 0 % and 100 %."""
    if n <= 0:
        return None
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo = 0.0 if successes == 0 else max(0.0, centre - half)  # exactly 0 / 1 at the ends (no rounding residue)
    hi = 1.0 if successes == n else min(1.0, centre + half)
    return lo, hi


def proportion(values: Iterable[Any]) -> dict[str, Any]:
    """n, the mean and its Wilson 95 % interval of 0/1 values (None and non-numbers skipped)."""
    vals = [1 if float(v) else 0 for v in finite(values)]
    n = len(vals)
    return {"n": n, "value": (sum(vals) / n) if n else None, "ci": wilson(sum(vals), n)}


def bootstrap_ci(statistic: Any, columns: Sequence[Sequence[float]], draws: int = 1000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float] | None:
    """Percentile bootstrap interval of ``statistic(*resampled columns)`` over utterances: every column holds one
    value per utterance (aligned), and each draw resamples utterances with replacement, the same for every column
    (a paired bootstrap). Seeded, so a report is reproducible. None when there is no utterance or the statistic is
    undefined on every draw."""
    import random

    n = len(columns[0]) if columns else 0
    if n == 0 or any(len(c) != n for c in columns):
        return None
    rng = random.Random(seed)
    values = []
    for _ in range(draws):
        idx = [rng.randrange(n) for _ in range(n)]
        v = statistic(*[[c[i] for i in idx] for c in columns])
        if v is not None and math.isfinite(v):
            values.append(v)
    if not values:
        return None
    values.sort()
    lo = values[int(math.floor((1 - level) / 2 * (len(values) - 1)))]
    hi = values[int(math.ceil((1 + level) / 2 * (len(values) - 1)))]
    return lo, hi
