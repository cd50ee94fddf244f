"""Built-in per-utterance metrics: Lp distortions, SNR, PESQ (wide-band) and STOI.

Each takes benign and adversarial (B, 1, T) tensors in [-1, 1] and returns B floats. The Lp norms are computed in
[-1, 1] amplitude units over the whole utterance.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .interfaces import SAMPLE_RATE, Metric


def _delta(benign: torch.Tensor, adv: torch.Tensor) -> torch.Tensor:
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
        signal = benign.detach().double().reshape(benign.shape[0], -1).pow(2).sum(dim=1)
        noise = _delta(benign, adv).pow(2).sum(dim=1)
        out = []
        for s, n in zip(signal.tolist(), noise.tolist()):
            out.append(math.inf if n == 0 else 10 * math.log10(max(s, 1e-300) / n))
        return out


class PESQ(Metric):
    """Wide-band PESQ (ITU-T P.862.2) of the adversarial against the benign audio, via the ``pesq`` package."""

    name = "pesq"
    higher_is_better = True

    def compute(self, benign, adv):
        from pesq import pesq

        out = []
        for b, a in zip(benign.detach().cpu().numpy(), adv.detach().cpu().numpy()):
            try:
                out.append(float(pesq(SAMPLE_RATE, b.reshape(-1).astype(np.float64), a.reshape(-1).astype(np.float64), "wb")))
            except Exception:  # noqa: BLE001 - pesq refuses silent or too-short audio
                out.append(math.nan)
        return out


class STOI(Metric):
    """Short-time objective intelligibility of the adversarial against the benign audio, via ``pystoi``."""

    name = "stoi"
    higher_is_better = True

    def compute(self, benign, adv):
        from pystoi import stoi

        return [
            float(stoi(b.reshape(-1), a.reshape(-1), SAMPLE_RATE, extended=False))
            for b, a in zip(benign.detach().cpu().double().numpy(), adv.detach().cpu().double().numpy())
        ]


ALL = (L0, L1, L2, Linf, SNR, PESQ, STOI)
