"""A training-free speaker backbone, packaged the way an outside author would package a sec4sr plugin.

``mfcc-stats`` embeds an utterance as the mean and standard deviation over frames of its MFCCs and their deltas,
and scores with cosine similarity. It has no weights, so it works right after ``pip install``; it is weak against
real speakers but separates the embedded corpus' synthetic voices and shows every part of the model interface:

* stages ``wave`` (B, 1, T) -> ``mfcc`` (B, frames, n_mfcc) -> ``final`` (B, frames, 2·n_mfcc: MFCC + deltas),
  declared as ``stages``: the base class walks them, so a feature-level defense can act on ``mfcc`` or ``final``
  and the model continues from there;
* everything is batched torch and differentiable, so white-box attacks get exact gradients.

Front end: 25 ms Hann window (400 samples), 10 ms hop, 512-point FFT, ``n_mels`` HTK mel bands 20 Hz–7.6 kHz,
log(mel power + 1e-6), orthonormal DCT-II keeping coefficients 1..n_mfcc (c0, the loudness, is dropped).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torchaudio.functional as AF
from pydantic import Field, model_validator

from sec4sr_core.sdk import SpeakerModel, Params, Task, hookimpl

SR = 16000
N_FFT, WIN, HOP = 512, 400, 160


class MFCCStatsParams(Params):
    n_mels: int = Field(40, ge=8, le=128, description="mel bands between 20 Hz and 7.6 kHz")
    n_mfcc: int = Field(20, ge=2, le=64, description="cepstral coefficients kept (c1..c_n; c0 dropped)")
    delta_window: int = Field(2, ge=1, le=5, description="half-width of the delta regression window, in frames")

    @model_validator(mode="after")
    def _fits(self):
        if self.n_mfcc >= self.n_mels:
            raise ValueError(f"n_mfcc ({self.n_mfcc}) must be smaller than n_mels ({self.n_mels})")
        return self


class MFCCStats(SpeakerModel):
    """MFCC+delta mean/std statistics, cosine scoring; training-free (CSI-E/SV/OSI)."""

    name = "mfcc-stats"
    Params = MFCCStatsParams
    #: each level after "wave" and the method computing it from the previous one; levels = wave, mfcc, final
    stages = (("mfcc", "mfcc"), ("final", "with_deltas"))
    output = "embedding"
    tasks = (Task.CSI_E, Task.SV, Task.OSI)

    def __init__(self, params=None, **kwargs) -> None:
        super().__init__(params, **kwargs)
        p = self.params
        fb = AF.melscale_fbanks(N_FFT // 2 + 1, 20.0, 7600.0, p.n_mels, SR, norm=None, mel_scale="htk")
        dct = AF.create_dct(p.n_mfcc + 1, p.n_mels, norm="ortho")[:, 1:]  # (n_mels, n_mfcc), c0 dropped
        w = p.delta_window
        taps = torch.arange(-w, w + 1, dtype=torch.float32)
        self.register_buffer("mel_fb", fb, persistent=False)  # (freqs, n_mels)
        self.register_buffer("dct", dct, persistent=False)
        self.register_buffer("window", torch.hann_window(WIN), persistent=False)
        self.register_buffer("delta_taps", taps / taps.pow(2).sum(), persistent=False)

    def load_weights(self, home: Path) -> None:
        """Nothing to load: the backbone has no trained parameters."""

    def mfcc(self, wave: torch.Tensor) -> torch.Tensor:
        """(B, 1, T) waveform -> (B, frames, n_mfcc) MFCCs, frames = T // 160 + 1."""
        x = wave.reshape(wave.shape[0], -1)
        spec = torch.stft(x, N_FFT, HOP, WIN, self.window, center=True, pad_mode="constant", return_complex=True)
        power = spec.real.pow(2) + spec.imag.pow(2)  # (B, freqs, frames)
        logmel = torch.log(torch.matmul(power.transpose(1, 2), self.mel_fb) + 1e-6)
        return torch.matmul(logmel, self.dct)

    def deltas(self, feats: torch.Tensor) -> torch.Tensor:
        """(B, frames, D) -> regression deltas (B, frames, D), edge frames replicated."""
        b, f, d = feats.shape
        w = self.params.delta_window
        x = feats.transpose(1, 2).reshape(b * d, 1, f)
        x = torch.nn.functional.pad(x, (w, w), mode="replicate")
        out = torch.nn.functional.conv1d(x, self.delta_taps.view(1, 1, -1))
        return out.view(b, d, f).transpose(1, 2)

    def with_deltas(self, mfcc: torch.Tensor) -> torch.Tensor:
        """(B, frames, n_mfcc) -> (B, frames, 2·n_mfcc): the MFCCs followed by their deltas."""
        return torch.cat([mfcc, self.deltas(mfcc)], dim=-1)

    def head(self, final: torch.Tensor) -> torch.Tensor:
        """(B, frames, 2·n_mfcc) -> (B, 4·n_mfcc) embedding: [mean, std] over frames."""
        mean = final.mean(dim=1)
        std = (final - mean.unsqueeze(1)).pow(2).mean(dim=1).add(1e-8).sqrt()
        return torch.cat([mean, std], dim=-1)


@hookimpl
def register_models(register):
    register(MFCCStats)
