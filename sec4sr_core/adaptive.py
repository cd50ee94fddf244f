"""Adaptive-attack composition: BPDA, EOT and NES. They apply to any attack and any defense.

* :class:`BPDA` runs a non-differentiable function forward and a differentiable surrogate backward (identity by
  default), so an attack gets a gradient through codecs and quantisers.
* :func:`eot_loss_and_grad` evaluates ``draws`` copies of a batch in **one** batch of size ``draws·B`` (layout
  ``[copy0 of all utterances, copy1, ...]``) through a randomized system and returns the mean loss and the mean of
  the per-draw gradients.
* :func:`nes_gradient` estimates a gradient from losses only: antithetic Gaussian probes ``x ± σ·u`` plus one
  zero probe for the current point, ``ĝ = mean_i loss(x+σu_i)·u_i / σ``.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn


class _BPDAFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, fn: Callable, surrogate: Callable | None):  # type: ignore[override]
        ctx.surrogate = surrogate
        ctx.save_for_backward(x)
        with torch.no_grad():
            out = fn(x)
        if out.shape != x.shape and surrogate is None:
            raise ValueError("BPDA with an identity surrogate needs a shape-preserving function")
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):  # type: ignore[override]
        if ctx.surrogate is None:
            return grad_out, None, None
        (x,) = ctx.saved_tensors
        with torch.enable_grad():
            xd = x.detach().requires_grad_(True)
            out = ctx.surrogate(xd)
            (grad,) = torch.autograd.grad(out, xd, grad_out)
        return grad, None, None


class BPDA(nn.Module):
    """Backward-pass differentiable approximation of ``fn``: forward ``fn(x)``, backward through ``surrogate``.

    ``surrogate=None`` means the identity (the straight-through estimator used for quantisers and codecs).
    """

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], surrogate: Callable | None = None) -> None:
        super().__init__()
        self.fn = fn
        self.surrogate = surrogate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (torch.is_grad_enabled() and x.requires_grad):
            return self.fn(x)
        return _BPDAFunction.apply(x, self.fn, self.surrogate)


def repeat_batch(x: torch.Tensor, draws: int) -> torch.Tensor:
    """(B, ...) -> (draws·B, ...) in the layout [copy0 of all items, copy1, ...]."""
    return x.repeat(draws, *([1] * (x.dim() - 1)))


def eot_loss_and_grad(
    loss_fn: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    x: torch.Tensor,
    draws: int = 1,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Expectation over transformation in one batch.

    ``loss_fn(xr)`` receives the repeated batch (draws·B, ...) and returns ``(loss (draws·B,), scores (draws·B, S))``.
    Returns ``(mean loss (B,), mean gradient (B, ...), scores (draws, B, S))``: the gradient of the mean loss, which
    equals the mean of the per-draw gradients.
    """
    b = x.shape[0]
    xd = x.detach().requires_grad_(True)
    loss, scores = loss_fn(repeat_batch(xd, draws))
    mean_loss = loss.view(draws, b).mean(dim=0)
    (grad,) = torch.autograd.grad(mean_loss.sum(), xd)
    return mean_loss.detach(), grad.detach(), scores.detach().view(draws, b, -1)


def nes_gradient(
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    samples: int,
    sigma: float,
    generator: torch.Generator | None = None,
    batch: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """NES gradient estimate with antithetic sampling.

    ``loss_fn(xs)`` gets (m·B, ...) probes in the layout [probe0 of all items, probe1, ...] and returns (m·B,)
    losses. ``samples`` (even) probes are drawn per item, in groups of ``batch`` probes per call (default all at
    once). Returns ``(grad estimate (B, ...), mean probe loss (B,), loss at x (B,))``.
    """
    if samples < 2 or samples % 2:
        raise ValueError("NES needs an even number of samples >= 2")
    batch = batch or samples
    if batch % 2 or samples % batch:
        raise ValueError("NES batch must be even and divide samples")
    b = x.shape[0]
    grad = torch.zeros_like(x)
    total = torch.zeros(b, device=x.device, dtype=x.dtype)
    loss_at_x = None
    with torch.no_grad():
        for start in range(0, samples, batch):
            half = torch.randn((batch // 2,) + tuple(x.shape), generator=generator, device=x.device, dtype=x.dtype)
            u = torch.cat([half, -half], dim=0)  # (batch, B, ...)
            probes = x.unsqueeze(0) + sigma * u
            if loss_at_x is None:
                probes = torch.cat([x.unsqueeze(0), probes], dim=0)
            losses = loss_fn(probes.reshape((-1,) + tuple(x.shape[1:]))).view(-1, b)
            if loss_at_x is None:
                loss_at_x, losses = losses[0], losses[1:]
            shape = (batch, b) + (1,) * (x.dim() - 1)
            grad += (losses.view(shape) * u).sum(dim=0)
            total += losses.sum(dim=0)
    grad = grad / (samples * sigma)
    assert loss_at_x is not None
    return grad, total / samples, loss_at_x
