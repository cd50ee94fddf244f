"""Randomized smoothing (Cohen, Rosenfeld & Kolter 2019; for speaker recognition Korzh et al., AAAI 2025,
arXiv 2404.18791): the smoothed classifier predicts the decision the base system takes most often on Gaussian copies
``x + δ``, ``δ ~ N(0, σ² I)``, of the waveform — the reject class −1 of SV/OSI included, votes on *decisions*, not
scores. If the top decision's probability under the noise is at least ``p_A > 1/2``, no L2 perturbation of norm
below ``σ·Φ⁻¹(p_A)`` changes the smoothed prediction (``sec4sr certify`` estimates that radius).

This module holds the noise: one call of :meth:`Smooth.forward` draws one Gaussian copy of every row (B, 1, T) from
the seeded generator, ``σ`` in [-1, 1] amplitude units per sample. The vote — ``n`` copies per utterance, batched as
(B·n, 1, T) in chunks of ``batch`` rows — is the core's (``sec4sr_core.study.certify``: ``SmoothedSystem`` and
``certify``), because it needs the decisions of the whole system behind the noise, which a
:class:`~sec4sr_core.sdk.Defense` (an input transformation) does not see. The defense declares what that vote needs
through ``smoothing_sigma`` (the L2 certificate's σ), ``smoothing_n`` and ``smoothing_batch``.

Clipping the noisy copy to [-1, 1] keeps the one audio domain; it is a deterministic part of the base classifier,
so the certificate still holds.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field

from sec4sr_core.sdk import Defense, Params


class SmoothParams(Params):
    sigma: float = Field(0.005, gt=0.0, le=1.0, description="noise standard deviation per sample, in [-1, 1] "
                                                                    "amplitude units (the L2 certificate's σ)")
    snr_db: float | None = Field(None, ge=-20.0, le=100.0,
                                 description="instead of sigma: the noise at this SNR in dB of each utterance "
                                             "(σ = rms(x)·10^(-snr/20)); it replaces sigma, and gives no L2 "
                                             "certificate")
    n: int = Field(100, ge=1, le=1_000_000, description="noisy copies voting on each prediction")
    batch: int = Field(256, ge=1, le=1_000_000, description="noisy copies per forward pass of the system (rows)")


class Smooth(Defense):
    """Randomized smoothing: majority decision over n Gaussian copies N(0, σ²) (reject class included); randomized.

    As an input transformation (``forward``) it is one seeded Gaussian draw per row, differentiable, on the input's
    device. ``snr_db`` sets the noise relative to each utterance's power instead (like ``at``); the certificate needs
    a fixed ``sigma``.
    """

    name = "smooth"
    Params = SmoothParams
    differentiable = True
    randomized = True
    acts_on = ("wave",)
    #: marks a defense whose prediction is a vote over its noisy copies (read by ``sec4sr_core.study.certify``)
    smoothing: ClassVar[bool] = True

    @property
    def smoothing_sigma(self) -> float | None:
        """σ of the Gaussian noise in [-1, 1] amplitude units, or None when the noise is set by SNR."""
        return None if self.params.snr_db is not None else float(self.params.sigma)

    @property
    def smoothing_n(self) -> int:
        return int(self.params.n)

    @property
    def smoothing_batch(self) -> int:
        return int(self.params.batch)

    def noise_std(self, x: torch.Tensor) -> torch.Tensor | float:
        """The noise standard deviation for ``x`` (B, 1, T): σ, or (B, 1, 1) from ``snr_db`` and each row's power."""
        if self.params.snr_db is None:
            return float(self.params.sigma)
        power = x.pow(2).mean(dim=(1, 2), keepdim=True)
        return torch.sqrt(power * 10.0 ** (-self.params.snr_db / 10.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from sec4sr_core.sdk import ParameterError

        if x.dim() != 3 or x.shape[1] != 1:
            raise ParameterError(f"{self.name}: expected a waveform batch (B, 1, T), got shape {tuple(x.shape)}")
        noise = torch.randn(x.shape, generator=self.rng(x.device), device=x.device, dtype=x.dtype)
        return (x + self.noise_std(x) * noise).clamp(-1.0, 1.0)
