"""WaveGuard (Hussain et al., USENIX Security 2021): detect adversarial audio by the change of the system's output
under an input transform T (quantisation, down/up-sampling, LPC resynthesis, mel inversion; the transforms and the
score live in :mod:`sec4sr_core.sdk.waveguard`, shared with the detector-aware attack ``pgd-detect``).

* The detection score is ``d(x) = dist(s(x), s(T(x)))`` of the system's score vectors (B, S).
* :meth:`WaveGuard.calibrate` sets the threshold τ on benign audio so that at most ``fpr`` (5 %) of it is flagged.
* :meth:`WaveGuard.guard` returns a :class:`GuardedSystem`: the system whose flagged inputs (``d > τ``) are
  rejected — their scores are replaced by :data:`FLAGGED_SCORE`, below any threshold, so SV and OSI decide −1, and
  :meth:`GuardedSystem.decide` returns −1 for them in every task.
* In an ordinary defense chain (``--defense waveguard:transform=lpc``) the component applies T itself, the
  input-transformation defense the detector is built on (differentiable; ``quantize`` passes the gradient straight
  through, i.e. BPDA).
"""

from __future__ import annotations

from typing import Sequence

import torch
from pydantic import Field

from sec4sr_core.sdk import REJECT, Defense, DefendedSystem, ParameterError, as_defended
from sec4sr_core.sdk.waveguard import WaveGuardTransform, detection_scores, output_distance, waveguard_transform

#: score given to a flagged input: below every cosine / PLDA / logit threshold in use
FLAGGED_SCORE = -1.0e4


class WaveGuardParams(WaveGuardTransform):
    """WaveGuard: the transform, the output distance, the target false-positive rate and the threshold."""

    fpr: float = Field(0.05, gt=0, lt=1, description="benign false-positive rate the calibrated threshold allows")
    threshold: float | None = Field(None, ge=0, description="detection threshold τ on the output change (flag when "
                                                            "d > τ); None = calibrate on benign audio first")


class WaveGuard(Defense):
    """WaveGuard detector: output change under T; as a chain defense it applies T (differentiable)."""

    name = "waveguard"
    summary = "WaveGuard detector: flags inputs whose scores change under a transform; in a chain it applies T."
    Params = WaveGuardParams
    differentiable = True
    acts_on = ("wave",)

    def __init__(self, params=None, **kwargs) -> None:
        super().__init__(params, **kwargs)
        self._fn = waveguard_transform(self.params)
        self.tau: float | None = self.params.threshold

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """T(x): (B, 1, T) → (B, 1, T) in [-1, 1]."""
        return self._fn(x)

    def scores(self, system, x: torch.Tensor, claims: torch.Tensor | None = None) -> torch.Tensor:
        """Detection scores (B,) on the CPU (higher = more likely adversarial)."""
        return detection_scores(as_defended(system), x, self.params, claims)

    def calibrate(self, system, benign: torch.Tensor, claims: torch.Tensor | None = None) -> float:
        """Set τ from benign waves (N, 1, T) so that at most ``fpr`` of them score above it; returns τ."""
        d = self.scores(system, benign, claims)
        k = int(self.params.fpr * d.numel() + 1e-9)
        self.tau = float(d.sort(descending=True).values[min(k, d.numel() - 1)])
        return self.tau

    def flags(self, system, x: torch.Tensor, claims: torch.Tensor | None = None) -> torch.Tensor:
        """(B,) bool: inputs the detector flags (needs a threshold)."""
        return self.scores(system, x, claims) > self._threshold()

    def _threshold(self) -> float:
        if self.tau is None:
            raise ParameterError("waveguard has no threshold: calibrate it on benign audio first "
                                 "(WaveGuard.calibrate) or pass waveguard:threshold=…")
        return self.tau

    def guard(self, system) -> GuardedSystem:
        """The system with this detector in front: flagged inputs are rejected."""
        return GuardedSystem(as_defended(system), self)


class GuardedSystem(DefendedSystem):
    """A defended system behind a WaveGuard detector: each input is scored twice (x and T(x)) in one batch, and
    flagged ones (``d > τ``) get :data:`FLAGGED_SCORE` in every column (rejected). Gradients flow through both
    branches, so a white-box attack on the guarded system is itself detector-aware (a hard, masked one)."""

    def __init__(self, inner: DefendedSystem, detector: WaveGuard) -> None:
        super().__init__(inner.system, list(inner.defenses), inner.order)
        self.detector = detector
        detector._threshold()  # fail now, not at the first query

    def forward(self, x: torch.Tensor, claims: torch.Tensor | None = None) -> torch.Tensor:
        n = x.shape[0]
        both = torch.cat([x, self.detector(x)])
        cl = None if claims is None else torch.cat([claims, claims])
        s = super().forward(both, cl)
        s_x, s_t = s[:n], s[n:]
        flagged = output_distance(s_x, s_t, self.detector.params.distance) > self.detector._threshold()
        self.last_flags = flagged.detach()
        return torch.where(flagged.unsqueeze(1), torch.full_like(s_x, FLAGGED_SCORE), s_x)

    def decide(self, scores: torch.Tensor) -> torch.Tensor:
        dec = super().decide(scores)
        return torch.where((scores == FLAGGED_SCORE).all(dim=1), torch.full_like(dec, REJECT), dec)

    def label(self) -> str:
        inner = super().label()
        return self.detector.label() if inner == "none" else f"{inner}+{self.detector.label()}"


def calibrated(system, benign: torch.Tensor, claims: torch.Tensor | None = None,
               **params) -> tuple[WaveGuard, GuardedSystem]:
    """A WaveGuard with ``params`` calibrated on ``benign`` and the guarded system."""
    det = WaveGuard(params)
    det.calibrate(system, benign, claims)
    return det, det.guard(system)


__all__: Sequence[str] = ("FLAGGED_SCORE", "GuardedSystem", "WaveGuard", "WaveGuardParams", "calibrated")
