"""Audio I/O at the boundary of the one audio domain (float32 (B, 1, T) in [-1, 1], 16 kHz).

Files are checked: missing, unreadable, corrupt and empty files raise :class:`AudioError` with the path; a wrong
sample rate is resampled and stereo is downmixed, each with a notice on stderr. Saving rounds to 16-bit (with
clipping; the predecessor truncated and let 1.0 overflow).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import soundfile as sf
import torch

from .errors import AudioError
from .interfaces import SAMPLE_RATE

INT16_SCALE = 32768.0


def notice(message: str) -> None:
    """A one-line notice for the user on stderr."""
    print(f"notice: {message}", file=sys.stderr)


def load_audio(path: str | Path, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """Read an audio file as a (1, T) float32 tensor in [-1, 1] at ``sample_rate``."""
    path = Path(path)
    if not path.exists():
        raise AudioError(f"audio file not found: {path}")
    if path.is_dir():
        raise AudioError(f"expected an audio file, got a folder: {path}")
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # noqa: BLE001 - libsndfile raises several types
        raise AudioError(f"cannot read audio file {path}: {str(exc).strip() or type(exc).__name__}") from None
    if data.shape[0] == 0:
        raise AudioError(f"audio file is empty (0 samples): {path}")
    if not np.isfinite(data).all():
        raise AudioError(f"audio file contains NaN or infinite samples: {path}")
    wave = torch.from_numpy(np.ascontiguousarray(data.T))
    if wave.shape[0] > 1:
        notice(f"{path.name}: {wave.shape[0]} channels downmixed to mono")
        wave = wave.mean(dim=0, keepdim=True)
    if sr != sample_rate:
        import torchaudio.functional as AF

        notice(f"{path.name}: resampled from {sr} Hz to {sample_rate} Hz")
        wave = AF.resample(wave, sr, sample_rate)
    return wave.clamp(-1.0, 1.0).to(torch.float32)


def to_int16(wave: torch.Tensor) -> np.ndarray:
    """Round [-1, 1] floats to int16 samples (clipped), as written to 16-bit files."""
    x = torch.round(wave.detach().float().cpu() * INT16_SCALE).clamp(-INT16_SCALE, INT16_SCALE - 1)
    return x.to(torch.int16).numpy()


def quantize_16bit(wave: torch.Tensor) -> torch.Tensor:
    """What a listener gets back from a 16-bit file: ``round(x·32768)/32768``, clipped (no gradient)."""
    x = torch.round(wave.detach() * INT16_SCALE).clamp(-INT16_SCALE, INT16_SCALE - 1)
    return (x / INT16_SCALE).to(wave.dtype)


def save_audio(path: str | Path, wave: torch.Tensor, sample_rate: int = SAMPLE_RATE) -> Path:
    """Write a (1, T) or (T,) waveform as 16-bit PCM WAV (folders are created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    samples = to_int16(wave.reshape(-1))
    sf.write(str(path), samples, sample_rate, subtype="PCM_16")
    return path


def fit_length(wave: torch.Tensor, length: int) -> torch.Tensor:
    """Crop (from the start) or zero-pad at the end a (..., T) tensor to ``length`` samples."""
    t = wave.shape[-1]
    if t >= length:
        return wave[..., :length]
    return torch.nn.functional.pad(wave, (0, length - t))


def load_batch(paths: Sequence[str | Path], length: int | None = None) -> torch.Tensor:
    """Load files into a (B, 1, T) batch; ``length`` crops/pads every file (default: the longest, zero-padded)."""
    waves = [load_audio(p) for p in paths]
    if not waves:
        raise AudioError("no audio files to load")
    target = length or max(w.shape[-1] for w in waves)
    return torch.stack([fit_length(w, target) for w in waves], dim=0)
