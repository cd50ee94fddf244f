"""Time-domain input transformations on (B, 1, T) waveforms in [-1, 1].

=======  ============================================  ==========  ==============  ===============
name     operation                                     randomized  differentiable  default
=======  ============================================  ==========  ==============  ===============
``qt``   round to multiples of q (16-bit units)        no          no (BPDA)       q = 128
``bdr``  keep ``bits`` bits: QT with q = 2^(16-bits)   no          no (BPDA)       bits = 8
``at``   add Gaussian noise at an SNR (dB)             yes         yes             snr = 25 dB
``as``   moving average over an odd window             no          yes             kernel = 3
``ms``   moving median over an odd window              no          subgradient     kernel = 3
=======  ============================================  ==========  ==============  ===============

Every transformation acts on the whole batch at once on the input's device, and clips its output to [-1, 1].
AS and MS zero-pad (w-1)/2 samples on each side ("same" length). Even windows are refused by validation (the
predecessor crashed on them with a length mismatch).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator

from sec4sr_core.interfaces import Defense
from sec4sr_core.params import Params

INT16 = 32768.0


def _check_wave(x: torch.Tensor, name: str) -> None:
    from sec4sr_core.errors import ParameterError

    if x.dim() != 3 or x.shape[1] != 1:
        raise ParameterError(f"{name}: expected a waveform batch (B, 1, T), got shape {tuple(x.shape)}")


def quantize(x: torch.Tensor, q: float) -> torch.Tensor:
    """Round ``x`` (in [-1, 1]) to the nearest multiple of ``q``/32768 and clip to [-1, 1]."""
    return (torch.round(x * (INT16 / q)) * (q / INT16)).clamp(-1.0, 1.0)


class QTParams(Params):
    q: int = Field(128, ge=1, le=32768, description="quantisation step in 16-bit sample units (1 = 16-bit PCM)")


class QT(Defense):
    """Quantisation: round samples to multiples of q (16-bit units); BPDA identity backward."""

    name = "qt"
    Params = QTParams
    differentiable = False
    randomized = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_wave(x, self.name)
        return quantize(x, float(self.params.q))


class BDRParams(Params):
    bits: int = Field(8, ge=1, le=16, description="bit depth kept, in bits (16 = unchanged 16-bit PCM)")


class BDR(Defense):
    """Bit-depth reduction to ``bits`` bits: QT with q = 2^(16-bits); BPDA identity backward."""

    name = "bdr"
    Params = BDRParams
    differentiable = False
    randomized = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_wave(x, self.name)
        return quantize(x, float(2 ** (16 - self.params.bits)))


class ATParams(Params):
    snr: float = Field(25.0, ge=-20.0, le=100.0, description="signal-to-noise ratio of the added noise, in dB")


class AT(Defense):
    """Additive Gaussian noise at a fixed SNR (dB) per utterance; randomized (seeded), differentiable.

    Signal power P = mean(x²) over the utterance; noise ~ N(0, P·10^(-snr/10)). The noise scale depends on x, and
    the gradient flows through it too.
    """

    name = "at"
    Params = ATParams
    differentiable = True
    randomized = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_wave(x, self.name)
        power = x.pow(2).mean(dim=(1, 2), keepdim=True)
        std = torch.sqrt(power * 10.0 ** (-self.params.snr / 10.0))
        noise = torch.randn(x.shape, generator=self.rng(x.device), device=x.device, dtype=x.dtype)
        return (x + std * noise).clamp(-1.0, 1.0)


class WindowParams(Params):
    kernel: int = Field(3, ge=1, le=1001, description="window length in samples (odd; 1 = identity)")

    @field_validator("kernel")
    @classmethod
    def _odd(cls, v: int) -> int:
        if v % 2 == 0:
            raise ValueError(f"window length must be odd so the output keeps the input's length, got {v}")
        return v


class AS(Defense):
    """Average smoothing: moving mean over an odd window of ``kernel`` samples, zero "same" padding."""

    name = "as"
    Params = WindowParams
    differentiable = True
    randomized = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_wave(x, self.name)
        w = self.params.kernel
        if w == 1:
            return x.clamp(-1.0, 1.0)
        weight = torch.full((1, 1, w), 1.0 / w, device=x.device, dtype=x.dtype)
        return F.conv1d(x, weight, padding=w // 2).clamp(-1.0, 1.0)


class MS(Defense):
    """Median smoothing: moving median over an odd window of ``kernel`` samples, zero "same" padding.

    Differentiable almost everywhere: the gradient goes to the selected (median) sample.
    """

    name = "ms"
    Params = WindowParams
    differentiable = True
    randomized = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_wave(x, self.name)
        w = self.params.kernel
        if w == 1:
            return x.clamp(-1.0, 1.0)
        windows = F.pad(x, (w // 2, w // 2)).unfold(-1, w, 1)  # (B, 1, T, w), a view
        return windows.median(dim=-1).values.clamp(-1.0, 1.0)
