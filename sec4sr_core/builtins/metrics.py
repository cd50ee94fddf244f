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

import numpy as np
import torch

from sec4sr_core.sdk.interfaces import SAMPLE_RATE, Metric


def _delta(benign: torch.Tensor, adv: torch.Tensor) -> torch.Tensor:
    """(B, T) float64 perturbation ``adv − benign``."""
    if benign.shape != adv.shape:
        from sec4sr_core.base.errors import Sec4srError

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
