"""A mu-law companding defense, packaged the way an outside author would package a sec4sr plugin.

mu-law companding (ITU-T G.711) compresses the amplitude logarithmically, quantises it to ``bits`` bits (sign and
magnitude, so silence stays exactly 0) and expands it back. Small perturbations on loud samples vanish in the
coarse steps, while quiet speech keeps fine steps. Rounding has a zero gradient, so the defense declares
``differentiable = False`` and sec4sr wraps it in BPDA (identity backward) for adaptive attacks automatically.
"""

from __future__ import annotations

import math

import torch
from pydantic import Field

from sec4sr_core.sdk import Defense, Params, Preset, hookimpl


class MuLawParams(Params):
    bits: int = Field(8, ge=2, le=16, description="code word size in bits, sign included (2**bits - 1 levels)")
    mu: float = Field(255.0, gt=0, le=1e6, description="companding constant mu (dimensionless; 255 in G.711)")


class MuLaw(Defense):
    """mu-law companding to `bits` bits and back (G.711-style); deterministic, BPDA identity backward."""

    name = "mulaw"
    Params = MuLawParams
    differentiable = False  # rounding: sec4sr applies BPDA when an attack needs gradients
    randomized = False
    acts_on = ("wave",)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, T) waveform in [-1, 1] -> the same shape, dtype and device, values in [-1, 1]."""
        mu = self.params.mu
        steps = 2 ** (self.params.bits - 1) - 1  # magnitude levels per sign
        log_mu = math.log1p(mu)
        mag = x.abs().clamp(max=1.0)
        compressed = torch.log1p(mu * mag) / log_mu  # in [0, 1]
        quantised = torch.round(compressed * steps) / steps
        expanded = torch.expm1(quantised * log_mu) / mu
        return (torch.sign(x) * expanded).clamp(-1.0, 1.0).to(x.dtype)


@hookimpl
def register_defenses(register):
    register(MuLaw)


@hookimpl
def register_presets(register):
    register(Preset("mulaw-4", "defense", "mulaw", {"bits": 4}, "mu-law companding to 4 bits (a strong setting)"))
