"""The upstream front-ends, batched and differentiable: Kaldi fbank as ``torchaudio.compliance.kaldi.fbank`` with
the toolkit's settings, then per-utterance cepstral mean (and optionally variance) normalisation.

* WeSpeaker (``wespeaker/dataset/processor.py``): the waveform scaled by 2^15, ``num_mel_bins``/``frame_length``/
  ``frame_shift`` from ``dataset_args.fbank_args``, **Hamming** window, ``snip_edges=True``, no energy, dither 0
  at evaluation (``bin/extract.py``); then ``apply_cmvn`` (mean over frames; ``norm_var`` divides by
  sqrt(unbiased var + 1e-8)).
* 3D-Speaker (``speakerlab/process/processor.py::FBank``): the waveform in [-1, 1] **unscaled**, 80 bins, 25/10 ms,
  Povey window (Kaldi's default), dither 0, then mean subtraction.

Everything else is Kaldi's default: DC removal, pre-emphasis 0.97, FFT size the next power of two, mel bands
20 Hz - Nyquist, log with a float-epsilon floor.
"""

from __future__ import annotations

import torch
import torchaudio.functional as AF
from torch import nn

from ..frontends import SR, KaldiFbank

WINDOWS = ("hamming", "povey", "hanning", "rectangular")


def kaldi_window(kind: str, size: int) -> torch.Tensor:
    """Kaldi's (symmetric) analysis windows of ``size`` samples."""
    if kind == "hamming":
        return torch.hamming_window(size, periodic=False, alpha=0.54, beta=0.46)
    if kind == "povey":
        return torch.hann_window(size, periodic=False).pow(0.85)
    if kind == "hanning":
        return torch.hann_window(size, periodic=False)
    if kind == "rectangular":
        return torch.ones(size)
    raise ValueError(f"unknown window {kind!r}; Kaldi's windows: {', '.join(WINDOWS)}")


class Fbank(nn.Module):
    """(B, 1, T) 16 kHz waveform in [-1, 1] -> (B, frames, num_mel_bins) log Kaldi fbank.

    ``scale`` multiplies the waveform first (32768 = WeSpeaker's int16 range, 1 = 3D-Speaker's float range);
    ``sample_rate`` other than 16000 resamples first (torchaudio's band-limited sinc, differentiable), as
    WeSpeaker's ``resample_rate``. Frames: 1 + (T - window) // shift (``snip_edges``)."""

    def __init__(self, num_mel_bins: int = 80, frame_length_ms: float = 25.0, frame_shift_ms: float = 10.0,
                 window: str = "hamming", scale: float = 32768.0, sample_rate: int = SR) -> None:
        super().__init__()
        self.sample_rate = int(sample_rate)
        self.kaldi = KaldiFbank(num_mel_bins=num_mel_bins, frame_length_ms=frame_length_ms,
                                frame_shift_ms=frame_shift_ms, snip_edges=True, dither=0.0, scale=scale,
                                sample_rate=self.sample_rate)
        self.kaldi.register_buffer("window", kaldi_window(window, self.kaldi.size), persistent=False)

    @property
    def window_samples(self) -> int:
        return self.kaldi.size

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        if self.sample_rate != SR:
            wave = AF.resample(wave, SR, self.sample_rate)
        return self.kaldi(wave)


def cmvn(feats: torch.Tensor, norm_mean: bool = True, norm_var: bool = False) -> torch.Tensor:
    """Per-utterance normalisation of (B, frames, dims) over frames (WeSpeaker's ``apply_cmvn``)."""
    if norm_mean:
        feats = feats - feats.mean(dim=1, keepdim=True)
    if norm_var:
        feats = feats / torch.sqrt(torch.var(feats, dim=1, keepdim=True) + 1e-8)
    return feats
