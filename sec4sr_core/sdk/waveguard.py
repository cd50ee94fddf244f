"""WaveGuard transforms and the detection score (Hussain et al., USENIX Security 2021), shared by the ``waveguard``
detector (defenses) and the detector-aware attack ``pgd-detect`` (attacks), which must compute the same T.

A WaveGuard detector flags an input when the system's output changes much under a mild input transform T:
``d(x) = dist(s(x), s(T(x)))`` with ``s`` the system's score vector (B, S). Benign speech is nearly invariant to
T; adversarial perturbations, tuned to the exact waveform, are not. Transforms, all (B, 1, T) → (B, 1, T) float in
[-1, 1], batched, on the input's device:

* ``quantize``: round to ``bits``-bit levels (step 2/2^bits); straight-through gradient (identity backward).
* ``resample``: down-sample to ``rate`` Hz and back — the ideal (FFT brick-wall) band limit at ``rate/2``;
  differentiable.
* ``lpc``: order-``order`` linear-prediction resynthesis: per 25 ms Hann frame (hop 12.5 ms) the LPC coefficients
  (autocorrelation method, Levinson–Durbin) predict each sample from the ``order`` previous ones,
  ``x̂[n] = Σ_k a_k x[n−k]``; the predictions are overlap-added. Keeps the spectral envelope, drops what the
  envelope does not predict; differentiable.
* ``mel``: mel inversion: |STFT|² (512-point, hop 128) → ``n_mels`` mel bands → non-negative pseudo-inverse back
  to linear frequency → magnitude with the input's phase, then ``griffin_lim`` Griffin–Lim iterations (0 = keep the
  input's phase); differentiable.

``distance``: ``l2`` is the RMS difference of the score vectors ``‖s − s_T‖₂ / √S`` (score units; SV has S = 1);
``cosine`` is ``1 − cos(s, s_T)`` (needs S > 1).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Literal

import torch
from pydantic import Field

from sec4sr_core.base.errors import ParameterError
from sec4sr_core.base.types import SAMPLE_RATE
from sec4sr_core.sdk.attack_params import ParamMixin

__all__ = [
    "WaveGuardTransform", "detection_scores", "lpc_resynthesis", "mel_inversion", "output_distance", "quantize",
    "resample", "waveguard_transform",
]

TransformName = Literal["quantize", "resample", "lpc", "mel"]


class WaveGuardTransform(ParamMixin):
    """The transform T of a WaveGuard detector and the distance between the system's outputs at x and T(x)."""

    transform: TransformName = Field("lpc", description="T: 'quantize', 'resample', 'lpc' or 'mel'")
    bits: int = Field(8, ge=2, le=15, description="quantize: bit depth (step 2/2^bits in [-1, 1] units)")
    rate: int = Field(8000, ge=1000, le=SAMPLE_RATE - 1, description="resample: intermediate sample rate in Hz")
    order: int = Field(20, ge=1, le=64, description="lpc: prediction order (coefficients per 25 ms frame)")
    n_mels: int = Field(40, ge=8, le=128, description="mel: mel bands of the 512-point spectrogram")
    griffin_lim: int = Field(0, ge=0, le=64, description="mel: Griffin–Lim iterations (0 = the input's phase)")
    distance: Literal["l2", "cosine"] = Field("l2", description="output change: 'l2' (RMS score difference) or "
                                                                "'cosine' (1 − cosine of the score vectors)")


def quantize(x: torch.Tensor, bits: int = 8) -> torch.Tensor:
    """Round to multiples of 2/2^bits (straight-through gradient)."""
    q = 2.0 / (2 ** bits)
    y = (torch.round(x / q) * q).clamp(-1.0, 1.0)
    return x + (y - x).detach()


def resample(x: torch.Tensor, rate: int = 8000) -> torch.Tensor:
    """Down-sample to ``rate`` Hz and back: zero every FFT bin above ``rate / 2``."""
    t = x.shape[-1]
    spec = torch.fft.rfft(x, dim=-1)
    freqs = torch.fft.rfftfreq(t, d=1.0 / SAMPLE_RATE).to(x.device)
    spec = spec * (freqs < rate / 2).to(spec.dtype)
    return torch.fft.irfft(spec, n=t, dim=-1).clamp(-1.0, 1.0)


def _levinson(r: torch.Tensor, order: int) -> torch.Tensor:
    """Prediction coefficients a (..., order) with x̂[n] = Σ_k a_k x[n−k] from autocorrelations r (..., order+1)."""
    err = r[..., 0]
    a = r.new_zeros(*r.shape[:-1], 0)
    for i in range(1, order + 1):
        acc = r[..., i] - (a * r[..., 1:i].flip(-1)).sum(-1) if i > 1 else r[..., 1]
        k = acc / err
        a = torch.cat([a - k.unsqueeze(-1) * a.flip(-1), k.unsqueeze(-1)], dim=-1)
        err = err * (1 - k * k).clamp(min=1e-6)
    return a


def lpc_resynthesis(x: torch.Tensor, order: int = 20, frame: int = 400, hop: int = 200) -> torch.Tensor:
    """Order-``order`` linear-prediction resynthesis (see module docstring). (B, 1, T) → (B, 1, T)."""
    b, _, t = x.shape
    n_frames = max(1, math.ceil(max(t - frame, 0) / hop) + 1)
    total = (n_frames - 1) * hop + frame
    sig = torch.nn.functional.pad(x[:, 0], (order, total - t))          # (B, order + total)
    win = torch.hann_window(frame, periodic=True, dtype=x.dtype, device=x.device)
    frames = sig.unfold(-1, frame + order, hop)                          # (B, F, order + frame)
    cur = frames[..., order:] * win                                      # windowed analysis frames
    r = torch.stack([(cur[..., : frame - k] * cur[..., k:]).sum(-1) for k in range(order + 1)], dim=-1)
    r = r.double()  # Levinson in float64: order-20 recursions on tonal frames are ill-conditioned in float32
    r = torch.cat([r[..., :1] * (1 + 1e-4) + 1e-10, r[..., 1:]], dim=-1)  # −40 dB white-noise correction
    a = _levinson(r, order).to(x.dtype)                                  # (B, F, order)
    pred = sum(a[..., k - 1 : k] * frames[..., order - k : order - k + frame] for k in range(1, order + 1))
    pred = pred * win                                                    # Hann at 50 % overlap sums to 1
    out = torch.nn.functional.fold(pred.transpose(1, 2), output_size=(1, total), kernel_size=(1, frame),
                                   stride=(1, hop))[:, 0, 0]
    if n_frames > 1:  # the first and last half-frames are covered by one window only: undo its taper there
        norm = torch.nn.functional.fold(win.expand(1, n_frames, frame).transpose(1, 2), output_size=(1, total),
                                        kernel_size=(1, frame), stride=(1, hop))[0, 0, 0]
        out = out / norm.clamp(min=1e-3)
    return out[:, :t].unsqueeze(1).clamp(-1.0, 1.0)


def mel_filterbank(n_mels: int, n_fft: int = 512, sample_rate: int = SAMPLE_RATE, device: Any = None,
                   dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Triangular HTK-mel filterbank (n_mels, n_fft // 2 + 1), 0 Hz to Nyquist."""
    def mel(f):
        return 2595.0 * torch.log10(1.0 + f / 700.0)

    freqs = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    pts = torch.linspace(0.0, float(mel(torch.tensor(sample_rate / 2.0))), n_mels + 2, dtype=torch.float64)
    hz = 700.0 * (10 ** (pts / 2595.0) - 1)
    lo, ce, hi = hz[:-2, None], hz[1:-1, None], hz[2:, None]
    fb = torch.minimum((freqs - lo) / (ce - lo), (hi - freqs) / (hi - ce)).clamp(min=0)
    return fb.to(device=device, dtype=dtype)


def mel_inversion(x: torch.Tensor, n_mels: int = 40, griffin_lim: int = 0, n_fft: int = 512,
                  hop: int = 128) -> torch.Tensor:
    """Mel spectrogram → pseudo-inverse magnitude (+ Griffin–Lim) → waveform. (B, 1, T) → (B, 1, T)."""
    b, _, t = x.shape
    win = torch.hann_window(n_fft, dtype=x.dtype, device=x.device)

    def stft(w):
        return torch.stft(w, n_fft, hop, window=win, center=True, return_complex=True)

    def istft(z):
        return torch.istft(z, n_fft, hop, window=win, center=True, length=t)

    spec = stft(x[:, 0])                                                 # (B, F, frames)
    fb = mel_filterbank(n_mels, n_fft, device=x.device, dtype=x.dtype)
    power = spec.real ** 2 + spec.imag ** 2
    melspec = fb @ power
    approx = (torch.linalg.pinv(fb) @ melspec).clamp(min=0)
    mag = torch.sqrt(approx + 1e-12)
    phase = spec / (spec.abs() + 1e-12)
    for _ in range(griffin_lim):
        z = stft(istft(mag * phase))
        phase = z / (z.abs() + 1e-12)
    return istft(mag * phase).unsqueeze(1).clamp(-1.0, 1.0)


def waveguard_transform(params: WaveGuardTransform) -> Callable[[torch.Tensor], torch.Tensor]:
    """The transform T that ``params`` names, as a function (B, 1, T) → (B, 1, T)."""
    p = params
    if p.transform == "quantize":
        return lambda x: quantize(x, p.bits)
    if p.transform == "resample":
        return lambda x: resample(x, p.rate)
    if p.transform == "lpc":
        return lambda x: lpc_resynthesis(x, p.order)
    if p.transform == "mel":
        return lambda x: mel_inversion(x, p.n_mels, p.griffin_lim)
    raise ParameterError(f"unknown WaveGuard transform {p.transform!r} (choose quantize, resample, lpc or mel)")


def output_distance(s: torch.Tensor, s_t: torch.Tensor, distance: str = "l2") -> torch.Tensor:
    """Per-row change (B,) between score vectors (B, S) at x and at T(x)."""
    if distance == "l2":
        return (s - s_t).pow(2).mean(dim=-1).add(1e-12).sqrt()
    if distance == "cosine":
        if s.shape[-1] < 2:
            raise ParameterError("the cosine WaveGuard distance needs score vectors with S > 1 (not SV); "
                                 "use distance=l2")
        return 1 - torch.nn.functional.cosine_similarity(s, s_t, dim=-1)
    raise ParameterError(f"unknown WaveGuard distance {distance!r} (choose l2 or cosine)")


def detection_scores(system: Callable[..., torch.Tensor], x: torch.Tensor, params: WaveGuardTransform,
                     claims: torch.Tensor | None = None, batch_size: int = 32) -> torch.Tensor:
    """WaveGuard scores (B,) on the CPU of waves ``x`` (B, 1, T): the change of ``system(x, claims=...)``'s scores
    under T (higher = more likely adversarial). No gradient; evaluated in batches of ``batch_size``."""
    fn = waveguard_transform(params)
    out = []
    with torch.no_grad():
        for i in range(0, x.shape[0], batch_size):
            xb = x[i : i + batch_size]
            cb = None if claims is None else claims[i : i + batch_size]
            s, s_t = system(xb, claims=cb), system(fn(xb), claims=cb)
            out.append(output_distance(s, s_t, params.distance).cpu())
    return torch.cat(out) if out else torch.zeros(0)
