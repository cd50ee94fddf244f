"""Shared pieces of the attacks: projections, per-utterance best tracking, the NES parameters and the black-box
threshold estimator. (Input checks, the goal, query budgets and result assembly are the sdk's :class:`Attack`
template; the ε, steps, κ, loss and budget parameters are the sdk's mixins.)

Shapes: waveforms (B, 1, T) in [-1, 1]; per-utterance vectors (B,). Every helper works on the input's device and
keeps the whole batch in one tensor; subsets of still-active utterances are index tensors ``idx`` passed to the
oracle as ``owners`` so queries are charged to the right utterance.
"""

from __future__ import annotations

import math

import torch
from pydantic import Field, model_validator

from sec4sr_core.sdk import (
    NES_PRIOR_HELP, NOT_EVALUATED, REJECT, Attack, Crafted, Knowledge, NESPrior, ParameterError, ParamMixin, affordable,
)


class NESSampling(ParamMixin):
    """NES gradient estimation from scores: antithetic Gaussian probes around the current point."""

    samples: int = Field(50, ge=2, multiple_of=2, description="NES probes per gradient estimate (antithetic pairs)")
    samples_batch: int = Field(50, ge=2, multiple_of=2,
                               description="probes per utterance per oracle call (divides samples)")
    sigma: float = Field(0.001, gt=0, description="NES probe standard deviation in [-1, 1] amplitude units")
    prior: NESPrior = Field("spectral", description=NES_PRIOR_HELP)

    @model_validator(mode="after")
    def _divides(self):
        if self.samples % min(self.samples_batch, self.samples):
            raise ValueError("samples_batch must divide samples")
        return self


class ScoreBased(Attack):
    """A score-based attack in an L∞ ball that estimates the SV/OSI threshold before it searches (its result
    carries ``extra["threshold_estimate"]``). Its ``Params`` has ``epsilon`` and ``max_queries``."""

    knowledge = Knowledge.SCORES
    norm = "linf"
    estimates_threshold = True

    def estimate_threshold(self, oracle, x: torch.Tensor, **options) -> float | None:
        """:func:`ensure_threshold` within the attack's ε ball (per utterance with ``snr_db``) and query budget
        (None for CSI)."""
        p = self.params
        return ensure_threshold(oracle, x, self.budget(x), max_queries=p.max_queries, **options)


def _bound(epsilon: float | torch.Tensor, like: torch.Tensor) -> float | torch.Tensor:
    """A scalar bound, or a per-utterance one (B,) shaped (B, 1, ..., 1) to broadcast against ``like``."""
    if isinstance(epsilon, torch.Tensor) and epsilon.dim() == 1:
        return epsilon.to(like.device, like.dtype).view(-1, *([1] * (like.dim() - 1)))
    return epsilon


def linf_box(x: torch.Tensor, epsilon: float | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Lower and upper bounds (B, 1, T) of the L∞ ball of radius ``epsilon`` (a float or per utterance (B,))
    around ``x`` intersected with [-1, 1]."""
    e = _bound(epsilon, x)
    return (x - e).clamp(min=-1.0), (x + e).clamp(max=1.0)


def project_linf(adv: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    return torch.maximum(torch.minimum(adv, upper), lower)


def l2_norm(v: torch.Tensor) -> torch.Tensor:
    """Per-utterance L2 norm (B,) of (B, ...)."""
    return v.flatten(1).norm(dim=1)


def project_l2(adv: torch.Tensor, x: torch.Tensor, radius: float | torch.Tensor) -> torch.Tensor:
    """Project onto {‖adv − x‖₂ ≤ radius} ∩ [-1, 1] (``radius`` a float or per utterance (B,)). Clipping after
    scaling keeps the radius: x ∈ [-1, 1], so the clip only shrinks each coordinate of the perturbation."""
    delta = adv - x
    norm = l2_norm(delta).clamp(min=1e-12)
    if isinstance(radius, torch.Tensor):
        radius = radius.to(norm.device, norm.dtype)
    factor = (radius / norm).clamp(max=1.0).view(-1, *([1] * (x.dim() - 1)))
    return (x + delta * factor).clamp(-1.0, 1.0)


def expand(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B,) -> (B, 1, ..., 1) broadcastable against ``like``."""
    return v.view(-1, *([1] * (like.dim() - 1)))


class Best:
    """The best adversarial example per utterance: a success beats a failure, then the lower loss wins.

    ``update(adv, loss, ok, dec, idx)`` takes candidates for the utterances ``idx`` (all when None).
    """

    def __init__(self, x: torch.Tensor) -> None:
        b = x.shape[0]
        self.adv = x.detach().clone()
        self.ok = torch.zeros(b, dtype=torch.bool, device=x.device)
        self.loss = torch.full((b,), math.inf, device=x.device, dtype=x.dtype)
        self.decisions = torch.full((b,), NOT_EVALUATED, dtype=torch.int64, device=x.device)

    def update(
        self, adv: torch.Tensor, loss: torch.Tensor, ok: torch.Tensor, dec: torch.Tensor,
        idx: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Record better candidates; returns the (len(idx),) mask of rows that improved."""
        if idx is None:
            idx = torch.arange(self.adv.shape[0], device=self.adv.device)
        loss = loss.to(self.loss.dtype)
        cur_ok, cur_loss = self.ok[idx], self.loss[idx]
        better = (ok & ~cur_ok) | ((ok == cur_ok) & (loss < cur_loss))
        # an utterance never evaluated takes any candidate
        better |= self.decisions[idx] == NOT_EVALUATED
        rows = idx[better]
        self.adv[rows] = adv[better].detach()
        self.loss[rows] = loss[better]
        self.ok[rows] = ok[better]
        self.decisions[rows] = dec[better].to(torch.int64)
        return better

    def crafted(self, **extra) -> Crafted:
        """The best examples as :meth:`Attack.perturb` output; the template evaluates the never-evaluated ones."""
        return Crafted(self.adv, self.decisions, dict(extra))


# --------------------------------------------------------------------------------------------------------------------
# Threshold estimation for black-box attacks on SV / OSI
# --------------------------------------------------------------------------------------------------------------------


def _top(scores: torch.Tensor) -> torch.Tensor:
    return scores.max(dim=1).values


def estimate_threshold(
    oracle,
    x: torch.Tensor,
    epsilon: float | torch.Tensor = 0.002,
    max_iter: int = 30,
    samples: int = 20,
    sigma: float = 0.001,
    lr: float = 0.0005,
    step: float = 0.1,
    tol: float = 1e-3,
    max_queries: int | None = None,
) -> tuple[float, dict]:
    """Estimate the SV/OSI threshold θ from scores and decisions only (FAKEBOB's estimator, generalised).

    Every probe gives a bracket: a rejected probe has ``max score ≤ θ``, an accepted one ``max score > θ``. Each
    utterance of the batch (not only the first) is pushed across the decision boundary by NES sign steps inside
    its ``epsilon`` ball — rejected ones up, accepted ones down — and every probe's (score, decision) tightens the
    bracket [lo, hi). The loop is bounded by ``max_iter`` and stops once ``hi − lo < tol``. The estimate is the
    bracket's midpoint; with one side only it is FAKEBOB's ``bound ± |bound|·step``.

    Returns ``(θ̂, info)`` with ``info = {"lo", "hi", "iterations"}``. Queries: (samples + 1) per utterance per
    iteration, charged through the oracle.
    """
    from sec4sr_core.sdk import nes_gradient

    lo = torch.tensor(-math.inf, device=x.device)
    hi = torch.tensor(math.inf, device=x.device)

    def observe(scores: torch.Tensor, dec: torch.Tensor) -> None:
        nonlocal lo, hi
        top = _top(scores)
        rej = dec == REJECT
        if bool(rej.any()):
            lo = torch.maximum(lo, top[rej].max())
        if bool((~rej).any()):
            hi = torch.minimum(hi, top[~rej].min())

    n = x.shape[0]
    all_idx = torch.arange(n, device=x.device)
    scores0, dec0 = oracle.scores_and_decisions(x, owners=all_idx.cpu())
    observe(scores0, dec0)
    direction = torch.where(dec0 == REJECT, -1.0, 1.0).to(x.dtype)  # loss = direction · top: minimise
    lower, upper = linf_box(x, epsilon)
    adv = x.clone()
    iterations = 0
    crossed = torch.zeros(n, dtype=torch.bool, device=x.device)
    for it in range(max_iter):
        if bool(torch.isfinite(lo)) and bool(torch.isfinite(hi)) and float(hi - lo) < tol:
            break
        active = ~crossed & affordable(oracle, samples + 1, max_queries)
        idx = all_idx[active]
        if idx.numel() == 0:
            break
        iterations += 1
        d = direction[idx]

        def loss_fn(probes: torch.Tensor) -> torch.Tensor:
            owners = idx.repeat(probes.shape[0] // idx.numel())
            s, dd = oracle.scores_and_decisions(probes, owners=owners.cpu())
            observe(s, dd)
            flipped = (dd == REJECT) != (dec0[owners] == REJECT)
            crossed[owners[flipped]] = True
            return d.repeat(probes.shape[0] // idx.numel()) * _top(s)

        grad, _, _ = nes_gradient(loss_fn, adv[idx], samples, sigma, generator=oracle.generator)
        adv[idx] = project_linf(adv[idx] - lr * grad.sign(), lower[idx], upper[idx])
    if bool(torch.isfinite(lo)) and bool(torch.isfinite(hi)):
        est = float((lo + hi) / 2)
    elif bool(torch.isfinite(lo)):
        est = float(lo + abs(float(lo)) * step)
    elif bool(torch.isfinite(hi)):
        est = float(hi - abs(float(hi)) * step)
    else:  # pragma: no cover - at least one probe is observed
        raise ParameterError("threshold estimation observed no decisions")
    return est, {"lo": float(lo), "hi": float(hi), "iterations": iterations}


def ensure_threshold(oracle, x: torch.Tensor, epsilon: float | torch.Tensor, max_queries: int | None = None,
                     **kwargs) -> float | None:
    """The threshold a black-box attack uses: None for CSI, the oracle's estimate when set, otherwise estimated
    now (and stored on the oracle as ``estimated_threshold``)."""
    if not oracle.task.has_threshold:
        return None
    if oracle.estimated_threshold is not None:
        return float(oracle.estimated_threshold)
    est, info = estimate_threshold(oracle, x, epsilon=epsilon, max_queries=max_queries, **kwargs)
    oracle.estimated_threshold = est
    oracle.threshold_info = info
    return est

