"""Time-domain input transformations on (B, 1, T) waveforms in [-1, 1]."""

from __future__ import annotations

import torch
from pydantic import Field

from sec4sr_core.interfaces import Defense
from sec4sr_core.params import Params

INT16 = 32768.0


class QTParams(Params):
    q: int = Field(128, ge=1, le=32768, description="quantisation step in 16-bit sample units")


class QT(Defense):
    """Quantisation: round samples to multiples of q (16-bit units); BPDA identity backward."""

    name = "qt"
    Params = QTParams
    differentiable = False
    randomized = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = float(self.params.q)
        return (torch.round(x * INT16 / q) * q / INT16).clamp(-1.0, 1.0)
