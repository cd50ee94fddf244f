"""Batched, differentiable acoustic front-ends shared by the backbones.

* :class:`KaldiFbank` / :class:`KaldiMFCC` — Kaldi-compatible filterbanks and MFCCs computed for a whole batch at
  once (the predecessor called ``torchaudio.compliance.kaldi.mfcc`` per utterance). Same arithmetic as Kaldi:
  framing with ``snip_edges`` (or Kaldi's reflected edges), DC removal, raw log energy, pre-emphasis, povey window,
  zero-padding to a power of two, power spectrum, triangular mel banks on the Kaldi mel scale, log, DCT-II with
  c0 = sqrt(1/N), cepstral liftering. **Dither defaults to 0** so models are deterministic; a user who wants it
  passes ``dither > 0`` and a generator.
* :func:`deltas` — Kaldi regression deltas as one fixed conv1d with replicate padding.
* :func:`sliding_cmn` — Kaldi ``apply-cmvn-sliding`` (centred window, mean only) via a cumulative sum over the
  clamped window (no per-frame Python loop).
* :class:`LogMel` — AudioNet's pre-emphasised log-mel power spectrogram.

Waveforms are (B, 1, T) or (B, T) float in [-1, 1]; features are (B, frames, dims).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
import torchaudio.functional as AF
from torch import nn

SR = 16000
INT16 = 32768.0


def _flat(wave: torch.Tensor) -> torch.Tensor:
    """(B, 1, T) or (B, T) -> (B, T)."""
    if wave.dim() == 3:
        if wave.shape[1] != 1:
            raise ValueError(f"expected mono (B, 1, T) audio, got {tuple(wave.shape)}")
        return wave[:, 0]
    if wave.dim() != 2:
        raise ValueError(f"expected (B, 1, T) or (B, T) audio, got {tuple(wave.shape)}")
    return wave


def kaldi_mel_scale(f: torch.Tensor | float) -> torch.Tensor | float:
    """Kaldi's mel scale: 1127 ln(1 + f/700)."""
    if isinstance(f, torch.Tensor):
        return 1127.0 * torch.log1p(f / 700.0)
    return 1127.0 * math.log1p(f / 700.0)


def kaldi_mel_banks(num_bins: int, n_fft: int, sample_rate: float, low: float, high: float) -> torch.Tensor:
    """Triangular mel filters (n_fft//2 + 1, num_bins) on Kaldi's mel scale; the Nyquist row is zero."""
    nyquist = 0.5 * sample_rate
    if high <= 0.0:
        high += nyquist
    if not 0.0 <= low < high <= nyquist:
        raise ValueError(f"bad mel band edges low={low}, high={high} (nyquist {nyquist})")
    mel_low, mel_high = kaldi_mel_scale(low), kaldi_mel_scale(high)
    delta = (mel_high - mel_low) / (num_bins + 1)
    b = torch.arange(num_bins, dtype=torch.float64).unsqueeze(1)
    left, center, right = mel_low + b * delta, mel_low + (b + 1) * delta, mel_low + (b + 2) * delta
    freqs = sample_rate / n_fft * torch.arange(n_fft // 2, dtype=torch.float64)
    mel = kaldi_mel_scale(freqs).unsqueeze(0)
    up = (mel - left) / (center - left)
    down = (right - mel) / (right - center)
    banks = torch.clamp(torch.minimum(up, down), min=0.0)  # (bins, n_fft/2)
    return torch.cat([banks, torch.zeros(num_bins, 1, dtype=torch.float64)], dim=1).T.float()


def dct_matrix(num_ceps: int, num_bins: int) -> torch.Tensor:
    """Orthonormal DCT-II basis (num_bins, num_ceps) as Kaldi uses it (first column sqrt(1/N))."""
    n = torch.arange(num_bins, dtype=torch.float64).unsqueeze(1)
    k = torch.arange(num_ceps, dtype=torch.float64).unsqueeze(0)
    d = math.sqrt(2.0 / num_bins) * torch.cos(math.pi / num_bins * (n + 0.5) * k)
    d[:, 0] = math.sqrt(1.0 / num_bins)
    return d.float()


def frame_signal(x: torch.Tensor, size: int, shift: int, snip_edges: bool) -> torch.Tensor:
    """Frames (B, n_frames, size) of (B, T) signals, with Kaldi's edge rule.

    ``snip_edges=True``: only frames that fit, ``1 + (T - size) // shift``. ``False``: ``(T + shift//2) // shift``
    frames; the signal is extended by reflection (``x[pad-1..0]`` on the left, the reversed signal on the right).
    """
    t = x.shape[1]
    if snip_edges:
        if t < size:
            raise ValueError(f"audio of {t} samples is shorter than one frame ({size} samples)")
        return x.unfold(1, size, shift)
    n = (t + shift // 2) // shift
    if n < 1:
        raise ValueError(f"audio of {t} samples gives no frame")
    pad = size // 2 - shift // 2
    rev = torch.flip(x, dims=[1])
    if pad > 0:
        ext = torch.cat([rev[:, t - pad :], x, rev], dim=1)
    else:
        ext = torch.cat([x[:, -pad:], rev], dim=1)
    while ext.shape[1] < (n - 1) * shift + size:  # very short inputs: keep reflecting
        ext = torch.cat([ext, torch.flip(ext, dims=[1])], dim=1)
    return ext.unfold(1, size, shift)[:, :n]


class KaldiFbank(nn.Module):
    """Kaldi ``compute-fbank-feats`` for a batch. Output (B, frames, num_mel_bins) log mel energies
    (or linear energies with ``use_log=False``). ``scale`` multiplies the [-1, 1] input first (32768 reproduces
    Kaldi's int16 arithmetic, which models trained by Kaldi expect).

    ``noise_floor`` (int16 units, default 0 = Kaldi's float-epsilon floor) adds, before the log, the *expected* mel
    energy of white noise of that standard deviation — Kaldi's dither made deterministic (dither noise is
    independent of the signal, so its power adds in expectation). Digital silence (zero padding) then maps to the
    level of a quiet recording instead of log(ε) ≈ −15.9, far below anything speech or room noise produces."""

    def __init__(
        self,
        num_mel_bins: int = 23,
        frame_length_ms: float = 25.0,
        frame_shift_ms: float = 10.0,
        low_freq: float = 20.0,
        high_freq: float = 0.0,
        preemphasis: float = 0.97,
        remove_dc_offset: bool = True,
        snip_edges: bool = True,
        dither: float = 0.0,
        use_log: bool = True,
        use_power: bool = True,
        scale: float = INT16,
        sample_rate: int = SR,
        noise_floor: float = 0.0,
    ) -> None:
        super().__init__()
        if noise_floor < 0:
            raise ValueError("noise_floor must be >= 0")
        self.size = int(sample_rate * frame_length_ms / 1000)
        self.shift = int(sample_rate * frame_shift_ms / 1000)
        self.n_fft = 1 << (self.size - 1).bit_length()
        self.preemphasis = preemphasis
        self.remove_dc_offset = remove_dc_offset
        self.snip_edges = snip_edges
        self.dither = dither
        self.use_log = use_log
        self.use_power = use_power
        self.scale = scale
        self.register_buffer("window", torch.hann_window(self.size, periodic=False).pow(0.85), persistent=False)
        banks = kaldi_mel_banks(num_mel_bins, self.n_fft, sample_rate, low_freq, high_freq)
        self.register_buffer("banks", banks, persistent=False)
        self.eps = torch.finfo(torch.float32).eps
        self.noise_floor = noise_floor
        self.register_buffer("floor_mel", noise_floor**2 * self.noise_mel_energy(), persistent=False)

    def noise_mel_energy(self) -> torch.Tensor:
        """Expected mel energies (num_mel_bins,) of unit-variance white noise through this front-end (DC removal,
        pre-emphasis, window, FFT): E|X_k|² = ||row k of the linear frame→spectrum map||², exactly, in float64."""
        eye = torch.eye(self.size, dtype=torch.float64)
        fr = eye
        if self.remove_dc_offset:
            fr = fr - fr.mean(dim=-1, keepdim=True)
        if self.preemphasis:
            prev = torch.cat([fr[..., :1], fr[..., :-1]], dim=-1)
            fr = fr - self.preemphasis * prev
        fr = F.pad(fr * self.window.double(), (0, self.n_fft - self.size))
        spec = torch.fft.rfft(fr, dim=-1)  # row j: the spectrum of the unit impulse at sample j
        power = (spec.real.pow(2) + spec.imag.pow(2)).sum(dim=0)
        return (power @ self.banks.double()).float()

    def frames(self, wave: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Windowed frames (B, n, n_fft) and their raw log energies (B, n)."""
        x = _flat(wave) * self.scale
        fr = frame_signal(x, self.size, self.shift, self.snip_edges)
        if self.dither > 0:
            fr = fr + self.dither * torch.randn(fr.shape, generator=generator, device=fr.device, dtype=fr.dtype)
        if self.remove_dc_offset:
            fr = fr - fr.mean(dim=-1, keepdim=True)
        energy = fr.pow(2).sum(dim=-1).clamp_min(self.eps).log()
        if self.preemphasis:
            prev = torch.cat([fr[..., :1], fr[..., :-1]], dim=-1)
            fr = fr - self.preemphasis * prev
        fr = fr * self.window.to(fr.dtype)
        fr = F.pad(fr, (0, self.n_fft - self.size))
        return fr, energy

    def spectrum(self, fr: torch.Tensor) -> torch.Tensor:
        spec = torch.fft.rfft(fr, dim=-1)
        power = spec.real.pow(2) + spec.imag.pow(2)
        return power if self.use_power else power.clamp_min(1e-30).sqrt()

    def forward(self, wave: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        fr, _ = self.frames(wave, generator)
        mel = self.spectrum(fr) @ self.banks.to(fr.dtype)
        if self.noise_floor > 0:
            mel = mel + self.floor_mel.to(mel.dtype)
        return mel.clamp_min(self.eps).log() if self.use_log else mel


class KaldiMFCC(KaldiFbank):
    """Kaldi ``compute-mfcc-feats`` for a batch: (B, frames, num_ceps). ``use_energy`` replaces c0 by the raw log
    energy of the frame (Kaldi's ``--raw-energy=true``); liftering with ``cepstral_lifter``."""

    def __init__(self, num_ceps: int = 13, num_mel_bins: int = 23, cepstral_lifter: float = 22.0,
                 use_energy: bool = True, **kwargs) -> None:
        super().__init__(num_mel_bins=num_mel_bins, use_log=True, use_power=True, **kwargs)
        if num_ceps > num_mel_bins:
            raise ValueError(f"num_ceps ({num_ceps}) must not exceed num_mel_bins ({num_mel_bins})")
        self.use_energy = use_energy
        lifter = 1.0 + 0.5 * cepstral_lifter * torch.sin(math.pi * torch.arange(num_ceps) / cepstral_lifter)
        self.register_buffer("dct", dct_matrix(num_ceps, num_mel_bins) * lifter.unsqueeze(0), persistent=False)

    def forward(self, wave: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        fr, energy = self.frames(wave, generator)
        mel = self.spectrum(fr) @ self.banks.to(fr.dtype)
        if self.noise_floor > 0:  # the mel bands only; the raw energy keeps Kaldi's floor
            mel = mel + self.floor_mel.to(mel.dtype)
        logmel = mel.clamp_min(self.eps).log()
        ceps = logmel @ self.dct.to(fr.dtype)
        if self.use_energy:
            ceps = torch.cat([energy.unsqueeze(-1), ceps[..., 1:]], dim=-1)
        return ceps


def delta_filters(order: int = 2, window: int = 3) -> torch.Tensor:
    """Kaldi regression filters (order + 1, 2·order·window + 1), centred; row i computes the i-th delta."""
    j = torch.arange(-window, window + 1, dtype=torch.float64)
    base = j / j.pow(2).sum()
    length = 2 * order * window + 1
    rows = []
    f = torch.ones(1, dtype=torch.float64)
    for i in range(order + 1):
        if i > 0:
            f = F.conv1d(F.pad(f.view(1, 1, -1), (2 * window, 2 * window)), base.flip(0).view(1, 1, -1)).view(-1)
        pad = (length - f.numel()) // 2
        rows.append(F.pad(f, (pad, pad)))
    return torch.stack(rows)


def deltas(feats: torch.Tensor, order: int = 2, window: int = 3) -> torch.Tensor:
    """[static, Δ, ΔΔ, ...] (B, T, D·(order+1)) of (B, T, D) features; edge frames replicated (Kaldi)."""
    b, t, d = feats.shape
    filt = delta_filters(order, window).to(feats.dtype).to(feats.device)  # (order+1, L)
    half = filt.shape[1] // 2
    x = feats.transpose(1, 2).reshape(b * d, 1, t)
    x = F.pad(x, (half, half), mode="replicate")
    y = F.conv1d(x, filt.unsqueeze(1))  # (B·D, order+1, T)
    return y.reshape(b, d, order + 1, t).permute(0, 3, 2, 1).reshape(b, t, (order + 1) * d)


def sliding_window_bounds(t: int, window: int = 300, device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Kaldi's centred CMN window [start, end) for each of ``t`` frames (shifted to stay inside [0, t))."""
    idx = torch.arange(t, device=device)
    start = idx - window // 2
    end = start + window
    shift = torch.clamp(-start, min=0)
    start, end = start + shift, end + shift
    over = torch.clamp(end - t, min=0)
    start, end = torch.clamp(start - over, min=0), end - over
    return start, end


def sliding_cmn(feats: torch.Tensor, window: int = 300) -> torch.Tensor:
    """Kaldi ``apply-cmvn-sliding --center=true --norm-vars=false``: subtract the mean over a centred window of
    ``window`` frames from each frame of (B, T, D) features (vectorised via a cumulative sum, float64 sums)."""
    b, t, d = feats.shape
    start, end = sliding_window_bounds(t, window, feats.device)
    cs = torch.cat([feats.new_zeros(b, 1, d, dtype=torch.float64), feats.double().cumsum(dim=1)], dim=1)
    mean = (cs[:, end] - cs[:, start]) / (end - start).to(torch.float64).view(1, t, 1)
    return feats - mean.to(feats.dtype)


class LogMel(nn.Module):
    """AudioNet's log-mel: pre-emphasis (T-1 samples), STFT (n_fft 1024, hop 160, Hann 800 centred in 1024,
    reflect-padded), power, 32 Slaney mel bands 0-8 kHz, 10·log10(max(·, 1e-16)). Output (B, frames, n_mels)."""

    def __init__(self, n_mels: int = 32, n_fft: int = 1024, hop: int = 160, win: int = 800,
                 preemphasis: float = 0.97, sample_rate: int = SR) -> None:
        super().__init__()
        self.n_fft, self.hop, self.win, self.preemphasis = n_fft, hop, win, preemphasis
        self.register_buffer("window", torch.hann_window(win, periodic=True), persistent=False)
        fb = AF.melscale_fbanks(n_fft // 2 + 1, 0.0, sample_rate / 2, n_mels, sample_rate, norm="slaney",
                                mel_scale="slaney")
        self.register_buffer("fb", fb, persistent=False)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        x = _flat(wave)
        x = x[:, 1:] - self.preemphasis * x[:, :-1]
        spec = torch.stft(x, self.n_fft, self.hop, self.win, self.window.to(x.dtype), center=True,
                          pad_mode="reflect", return_complex=True)
        power = spec.real.pow(2) + spec.imag.pow(2)
        mel = power.transpose(1, 2) @ self.fb.to(x.dtype)
        return 10.0 * torch.log10(mel.clamp_min(1e-16))
