"""Built-in per-utterance metrics and the study aggregates computed from them.

Per-utterance metrics (plugins, registered through :mod:`sec4sr_core.builtins` like any third-party metric) take
benign and adversarial (B, 1, T) tensors in [-1, 1] and return B floats:

* ``l0`` (samples changed), ``l1``, ``l2``, ``linf`` — distortion of ``adv − benign`` over the whole utterance, in
  [-1, 1] amplitude units;
* ``snr`` — 10·log10(Σx² / Σ(x'−x)²) in dB, +inf when nothing changed;
* ``pesq`` — wide-band PESQ (ITU-T P.862.2, MOS-LQO 1.04–4.64) through the ``pesq`` package, NaN where it refuses
  the audio (silence, too short);
* ``stoi`` — short-time objective intelligibility (0–1) through ``pystoi``.

Aggregates (functions, used by the runner's summary and the reports): accuracy, success rate, mean of a metric over
utterances (NaN and ±inf dropped, as the predecessor dropped SNR = ∞), queries and time per example, and
``R1 = harmonic_mean(A_b, mean A_a over the study's attacks)`` per defense row.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from .interfaces import SAMPLE_RATE, Metric


def _delta(benign: torch.Tensor, adv: torch.Tensor) -> torch.Tensor:
    """(B, T) float64 perturbation ``adv − benign``."""
    if benign.shape != adv.shape:
        from .errors import Sec4srError

        raise Sec4srError(f"metric inputs differ in shape: benign {tuple(benign.shape)} vs adversarial {tuple(adv.shape)}")
    return (adv.detach().double() - benign.detach().double()).reshape(adv.shape[0], -1)


class L0(Metric):
    """Number of samples changed (L0 distortion)."""

    name = "l0"
    unit = "samples"
    higher_is_better = False

    def compute(self, benign, adv):
        return (_delta(benign, adv) != 0).sum(dim=1).double().tolist()


class L1(Metric):
    """L1 distortion in [-1, 1] amplitude units."""

    name = "l1"
    higher_is_better = False

    def compute(self, benign, adv):
        return _delta(benign, adv).abs().sum(dim=1).tolist()


class L2(Metric):
    """L2 distortion in [-1, 1] amplitude units."""

    name = "l2"
    higher_is_better = False

    def compute(self, benign, adv):
        return _delta(benign, adv).norm(dim=1).tolist()


class Linf(Metric):
    """L∞ distortion (largest sample change) in [-1, 1] amplitude units."""

    name = "linf"
    higher_is_better = False

    def compute(self, benign, adv):
        return _delta(benign, adv).abs().amax(dim=1).tolist()


class SNR(Metric):
    """Signal-to-noise ratio of the perturbation, 10·log10(Σx² / Σ(x'−x)²) in dB (+inf when unchanged)."""

    name = "snr"
    unit = "dB"
    higher_is_better = True

    def compute(self, benign, adv):
        noise = _delta(benign, adv).pow(2).sum(dim=1)
        signal = benign.detach().double().reshape(benign.shape[0], -1).pow(2).sum(dim=1).clamp_min(1e-300)
        snr = 10 * torch.log10(signal / noise.clamp_min(1e-300))
        return torch.where(noise == 0, torch.full_like(snr, math.inf), snr).tolist()


class PESQ(Metric):
    """Wide-band PESQ (ITU-T P.862.2, MOS-LQO) of the adversarial against the benign audio, via ``pesq``."""

    name = "pesq"
    unit = "MOS"
    higher_is_better = True

    def compute(self, benign, adv):
        from pesq import pesq

        ref = benign.detach().cpu().double().reshape(benign.shape[0], -1).numpy()
        deg = adv.detach().cpu().double().reshape(adv.shape[0], -1).numpy()
        out = []
        for b, a in zip(ref, deg):
            try:
                with np.errstate(invalid="ignore", divide="ignore"):
                    out.append(float(pesq(SAMPLE_RATE, b, a, "wb")))
            except Exception:  # noqa: BLE001 - pesq refuses silent or too-short audio
                out.append(math.nan)
        return out


class STOI(Metric):
    """Short-time objective intelligibility (0–1) of the adversarial against the benign audio, via ``pystoi``."""

    name = "stoi"
    higher_is_better = True

    def compute(self, benign, adv):
        from pystoi import stoi

        ref = benign.detach().cpu().double().reshape(benign.shape[0], -1).numpy()
        deg = adv.detach().cpu().double().reshape(adv.shape[0], -1).numpy()
        return [float(stoi(b, a, SAMPLE_RATE, extended=False)) for b, a in zip(ref, deg)]


ALL = (L0, L1, L2, Linf, SNR, PESQ, STOI)


# --------------------------------------------------------------------------------------------------------------------
# Aggregates
# --------------------------------------------------------------------------------------------------------------------


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


def as_array(values: Iterable[Any]) -> np.ndarray:
    """Values as a float array, with None -> NaN (for plots)."""
    return np.array([math.nan if v is None else float(v) for v in values], dtype=float)
