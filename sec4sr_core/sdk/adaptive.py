"""Adaptive-attack composition: BPDA, EOT and NES. They apply to any attack and any defense.

* :class:`BPDA` runs a non-differentiable function forward and a differentiable surrogate backward (identity by
  default), so an attack gets a gradient through codecs and quantisers.
* :func:`eot_loss_and_grad` evaluates ``draws`` copies of a batch in **one** batch of size ``draws·B`` (layout
  ``[copy0 of all utterances, copy1, ...]``) through a randomized system and returns the mean loss and the mean of
  the per-draw gradients.
* :func:`nes_gradient` estimates a gradient from losses only: antithetic Gaussian probes ``x ± σ·u`` plus one
  zero probe for the current point, ``ĝ = mean_i loss(x+σu_i)·u_i / σ``. The probes ``u`` are white Gaussian
  noise by default, or drawn by a *sampler* such as :class:`SpectralPrior`.
* :class:`SpectralPrior` draws probes shaped by the input's own short-time spectrum (random real gains per
  frame and mel band on its STFT). For a log-mel front-end the loss gradient lies close to that subspace, so at the
  same query budget the estimate aligns 2–3× better with the true gradient than white probes on speech (measured on
  GE2E, ``docs/attacks.md``). It needs only the input, not the model: score-based attacks may use it.
"""

from __future__ import annotations

from typing import Callable, Literal

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


class SpectralPrior:
    """NES probe sampler: random real gains on the short-time spectrum of a reference waveform.

    For each probe, ``U`` ~ N(0, 1) of shape (bands, ⌈frames / frames_per_gain⌉) is spread over the STFT bins by a
    mel filterbank (rows normalised to sum 1) and held for ``frames_per_gain`` frames; the probe is
    ``istft(STFT(ref) · gain)``, scaled to unit RMS per probe so ``σ`` keeps its meaning (the per-sample standard
    deviation of a white probe). ``ref`` is the current point of each item, (B, 1, T) or (B, T), on its device.
    The gradient of a mel-power loss w.r.t. the waveform is ``istft(STFT(x) · G)`` for a real per-frame, per-bin
    gain ``G`` smooth across each mel band, so these probes concentrate on the directions the model is sensitive
    to. For a log-mel front-end (``log=True``) the gain of band b is further divided by the band's power
    ``M_b + floor·max M`` (``d log M_b / dX = 2 w_b X / M_b``), which puts the probes' energy in quiet bands too.
    """

    def __init__(self, bands: int = 20, frames_per_gain: int = 4, n_fft: int = 400, hop: int = 160,
                 sample_rate: int = 16000, log: bool = False, floor: float = 1e-6) -> None:
        if bands < 1 or frames_per_gain < 1 or n_fft < 2 or hop < 1 or hop > n_fft:
            raise ValueError("SpectralPrior needs bands >= 1, frames_per_gain >= 1 and 1 <= hop <= n_fft")
        self.bands, self.frames_per_gain, self.n_fft, self.hop, self.sample_rate = (
            bands, frames_per_gain, n_fft, hop, sample_rate)
        self.log, self.floor = log, floor
        self._ref: torch.Tensor | None = None
        self._spec: torch.Tensor | None = None
        self._fb: torch.Tensor | None = None  # (bins, bands), rows normalised; built once per device and dtype
        self._inv: torch.Tensor | None = None

    def _stft(self, w: torch.Tensor) -> torch.Tensor:
        win = torch.hann_window(self.n_fft, device=w.device, dtype=w.dtype)
        return torch.stft(w, self.n_fft, self.hop, window=win, return_complex=True)

    def _prepare(self, ref: torch.Tensor) -> torch.Tensor:
        if self._ref is not ref:
            import torchaudio

            flat = ref.reshape(ref.shape[0], ref.shape[-1])
            self._spec = self._stft(flat)  # (B, bins, frames)
            if self._fb is None or self._fb.device != flat.device or self._fb.dtype != flat.dtype:
                self._mel = torchaudio.functional.melscale_fbanks(
                    self.n_fft // 2 + 1, 0.0, self.sample_rate / 2, self.bands, self.sample_rate
                ).to(flat.device, flat.dtype)
                self._fb = self._mel / self._mel.sum(dim=1, keepdim=True).clamp_min(1e-8)
            self._inv = None
            if self.log:  # d log M_b / dX_k = 2 w_bk X_k / M_b: weight each band by 1 / (its power + floor)
                power = self._spec.real.pow(2) + self._spec.imag.pow(2)  # (B, bins, frames)
                band = torch.matmul(self._mel.transpose(0, 1), power)  # (B, bands, frames)
                floor = self.floor * band.flatten(1).amax(dim=1).clamp_min(1e-20).view(-1, 1, 1)
                self._inv = 1.0 / (band + floor)
            self._ref = ref
        assert self._spec is not None
        return self._spec

    def __call__(self, ref: torch.Tensor, m: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``m`` probes per item: (m, B, ...) shaped like ``ref``."""
        spec = self._prepare(ref)
        b, _, frames = spec.shape
        t = ref.shape[-1]
        cols = -(-frames // self.frames_per_gain)
        u = torch.randn((m, b, self.bands, cols), generator=generator, device=ref.device, dtype=ref.dtype)
        u = u.repeat_interleave(self.frames_per_gain, dim=-1)[..., :frames]
        if self._inv is not None:
            u = u * self._inv
        gain = torch.matmul(self._fb, u)  # (m, B, bins, frames)
        win = torch.hann_window(self.n_fft, device=ref.device, dtype=ref.dtype)
        probes = torch.istft((spec.unsqueeze(0) * gain).reshape(m * b, *spec.shape[1:]), self.n_fft, self.hop,
                             window=win, length=t).view(m, b, t)
        probes = probes / probes.pow(2).mean(dim=-1, keepdim=True).sqrt().clamp_min(1e-12)
        return probes.view((m,) + tuple(ref.shape))


#: NES probe directions an attack can choose (see :func:`probe_sampler`)
NESPrior = Literal["white", "spectral", "spectral-log"]
NES_PRIOR_HELP = ("NES probe directions: 'white' Gaussian noise, 'spectral' (random gains on the utterance's own "
                  "short-time spectrum, for mel-power front-ends such as GE2E) or 'spectral-log' (the same, weighted "
                  "for log-mel front-ends); sec4sr_core.sdk.adaptive.SpectralPrior")


def probe_sampler(prior: str) -> SpectralPrior | None:
    """The ``sampler`` of :func:`nes_gradient` for a :data:`NESPrior` name (None = white Gaussian probes)."""
    if prior == "white":
        return None
    if prior not in ("spectral", "spectral-log"):
        raise ValueError(f"unknown NES prior {prior!r}: 'white', 'spectral' or 'spectral-log'")
    return SpectralPrior(log=prior == "spectral-log")


def nes_gradient(
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    samples: int,
    sigma: float,
    generator: torch.Generator | None = None,
    batch: int | None = None,
    sampler: Callable[[torch.Tensor, int, torch.Generator | None], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """NES gradient estimate with antithetic sampling.

    ``loss_fn(xs)`` gets (m·B, ...) probes in the layout [probe0 of all items, probe1, ...] and returns (m·B,)
    losses. ``samples`` (even) probes are drawn per item, in groups of ``batch`` probes per call (default all at
    once). ``sampler(x, m, generator)`` draws the probe directions (m, B, ...) (default white Gaussian). Returns
    ``(grad estimate (B, ...), mean probe loss (B,), loss at x (B,))``.
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
            if sampler is None:
                half = torch.randn((batch // 2,) + tuple(x.shape), generator=generator, device=x.device,
                                   dtype=x.dtype)
            else:
                half = sampler(x, batch // 2, generator)
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
