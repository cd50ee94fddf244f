"""GE2E speaker encoder (Wan et al., 2018) with the trained weights that ship in the PyPI package ``resemblyzer``.

Re-implemented in torch so the path waveform -> score is differentiable and batched:

* volume normalisation to -30 dBFS (increase only, as resemblyzer's preprocessing), a differentiable gain;
* mel *power* spectrogram (not log): 25 ms Hann window (n_fft 400), 10 ms hop, centred with zero padding,
  40 Slaney mel bands 0-8 kHz with Slaney normalisation (librosa's defaults);
* partial utterances of 160 frames every round(16000/1.3/160) = 77 frames; the waveform is zero-padded so the last
  partial is covered when it holds at least 75 % speech (resemblyzer's rule);
* 3-layer LSTM 40 -> 256, linear 256 -> 256, ReLU, L2 normalisation per partial; the utterance embedding is the
  L2-normalised mean of its partial embeddings. Scores are cosine similarities.

Levels: ``wave`` -> ``final`` (the mel power frames (B, frames, 40) entering the LSTM).
The weights file is read from the installed ``resemblyzer`` distribution without importing the package (its import
pulls webrtcvad and librosa).
"""

from __future__ import annotations

import importlib.metadata as md
import math
from pathlib import Path

import torch
import torchaudio.functional as AF
from pydantic import Field
from torch import nn

from sec4sr_core.sdk import Sec4srError
from sec4sr_core.sdk import SpeakerModel, Task
from sec4sr_core.sdk import Params
from sec4sr_core.sdk import load_state, read_torch_file

SR = 16000
HOP = 160
N_FFT = 400
N_MELS = 40


def resemblyzer_weights() -> Path:
    """Path of ``pretrained.pt`` inside the installed resemblyzer distribution."""
    try:
        dist = md.distribution("resemblyzer")
    except md.PackageNotFoundError:
        raise Sec4srError(
            "GE2E weights come from the PyPI package resemblyzer; install it with "
            "`pip install --no-deps resemblyzer==0.1.4` (sec4sr reads only its weights file)"
        ) from None
    path = Path(dist.locate_file("resemblyzer/pretrained.pt"))
    if not path.exists():
        raise Sec4srError(f"resemblyzer is installed but its weights file is missing: {path}")
    return path


class GE2EParams(Params):
    weights: Path | None = Field(None, description="a resemblyzer-format pretrained.pt (default: the installed one)")
    partial_frames: int = Field(160, ge=10, description="frames per partial utterance (10 ms each)")
    partial_rate: float = Field(1.3, gt=0, description="partial utterances per second of audio")
    min_coverage: float = Field(0.75, gt=0, le=1, description="keep the last partial when it covers this much")
    normalize_volume: bool = Field(True, description="raise quiet input to -30 dBFS (resemblyzer's preprocessing)")


class GE2E(SpeakerModel):
    """GE2E LSTM speaker encoder (resemblyzer's trained weights), cosine scoring; CSI-E/SV/OSI."""

    name = "ge2e"
    Params = GE2EParams
    #: wave (B, 1, T) -> final mel power (B, frames, 40) of the volume-normalised, padded wave
    stages = (("final", "compute_mel"),)
    output = "embedding"
    tasks = (Task.CSI_E, Task.SV, Task.OSI)

    def __init__(self, params=None, **kwargs) -> None:
        super().__init__(params, **kwargs)
        self.lstm = nn.LSTM(N_MELS, 256, num_layers=3, batch_first=True)
        self.linear = nn.Linear(256, 256)
        self.relu = nn.ReLU()
        fb = AF.melscale_fbanks(N_FFT // 2 + 1, 0.0, SR / 2, N_MELS, SR, norm="slaney", mel_scale="slaney")
        self.register_buffer("mel_fb", fb, persistent=False)  # (freqs, mels)
        self.register_buffer("window", torch.hann_window(N_FFT, periodic=True), persistent=False)

    # -- weights ---------------------------------------------------------------------------------------------------
    def load_weights(self, home: Path) -> None:
        path = Path(self.params.weights) if self.params.weights else resemblyzer_weights()
        payload = read_torch_file(path)
        state = payload.get("model_state", payload) if isinstance(payload, dict) else None
        if not isinstance(state, dict):
            raise Sec4srError(f"{path} is not a resemblyzer checkpoint (no model_state)")
        state = {k: v for k, v in state.items() if not k.startswith("similarity_")}
        load_state(self, state, str(path))

    # -- front-end -------------------------------------------------------------------------------------------------
    def frame_step(self) -> int:
        return int(round(SR / self.params.partial_rate / HOP))

    def padded_length(self, n_samples: int) -> int:
        """Samples after resemblyzer's padding so that the last kept partial utterance is covered."""
        pf, step = self.params.partial_frames, self.frame_step()
        n_frames = int(math.ceil((n_samples + 1) / HOP))
        starts = list(range(0, max(1, n_frames - pf + step + 1), step))
        last = starts[-1]
        coverage = (n_samples - last * HOP) / (pf * HOP)
        if coverage < self.params.min_coverage and len(starts) > 1:
            last = starts[-2]
        return max(n_samples, (last + pf) * HOP)

    def mel(self, wave: torch.Tensor) -> torch.Tensor:
        """Mel power spectrogram (B, frames, 40) of (B, 1, T) waves (no padding to partials)."""
        x = wave.reshape(wave.shape[0], -1)
        spec = torch.stft(x, N_FFT, HOP, N_FFT, self.window, center=True, pad_mode="constant", return_complex=True)
        power = spec.real.pow(2) + spec.imag.pow(2)  # (B, freqs, frames)
        return torch.matmul(power.transpose(1, 2), self.mel_fb)

    def compute_mel(self, wave: torch.Tensor) -> torch.Tensor:
        """(B, 1, T) waveform -> (B, frames, 40) mel power: resemblyzer's volume normalisation (if
        ``normalize_volume``) and padding to whole partial utterances, then :meth:`mel`."""
        wave = wave.reshape(wave.shape[0], -1)
        if self.params.normalize_volume:
            rms = wave.pow(2).mean(dim=1, keepdim=True).clamp_min(1e-20).sqrt()
            gain = (10 ** (-30 / 20) / rms).clamp(min=1.0)
            wave = wave * gain
        target = self.padded_length(wave.shape[1])
        wave = nn.functional.pad(wave, (0, target - wave.shape[1]))
        return self.mel(wave)

    def head(self, final: torch.Tensor) -> torch.Tensor:
        """Utterance embeddings (B, 256) from mel frames (B, F, 40): mean of normalised partial embeddings."""
        b, f, _ = final.shape
        pf, step = self.params.partial_frames, self.frame_step()
        starts = list(range(0, f - pf + 1, step)) if f >= pf else [0]
        width = min(pf, f)
        parts = torch.stack([final[:, s : s + width] for s in starts], dim=1)  # (B, P, width, 40)
        seq = parts.reshape(b * len(starts), width, N_MELS)
        if seq.is_cuda and not self.lstm.training and torch.is_grad_enabled():
            # cuDNN refuses an RNN backward in eval mode, and attacks need that gradient. The LSTM has no dropout,
            # so its train mode computes exactly the eval output; switch it for this call only (keeps cuDNN speed).
            self.lstm.train(True)
            try:
                _, (hidden, _) = self.lstm(seq)
            finally:
                self.lstm.train(False)
        else:
            _, (hidden, _) = self.lstm(seq)
        emb = self.relu(self.linear(hidden[-1]))
        emb = emb / emb.norm(dim=1, keepdim=True).clamp_min(1e-12)
        emb = emb.view(b, len(starts), -1).mean(dim=1)
        return emb / emb.norm(dim=1, keepdim=True).clamp_min(1e-12)

    def enroll_embeddings(self, embs: torch.Tensor) -> torch.Tensor:
        e = embs.mean(dim=0)
        return e / e.norm().clamp_min(1e-12)
