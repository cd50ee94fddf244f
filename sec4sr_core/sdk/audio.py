"""Audio I/O at the boundary of the one audio domain (float32 (B, 1, T) in [-1, 1], 16 kHz).

Files are checked: missing, unreadable, corrupt, empty and truncated files (fewer frames than the header declares)
and anything that is not a regular file (a FIFO would block the reader forever) raise :class:`AudioError` with the
path; a wrong sample rate is resampled, stereo is downmixed and a clipped file (many samples at full scale) is read
as it is, each with a one-line notice on stderr. Saving rounds to 16-bit (with clipping; the predecessor truncated and
let 1.0 overflow) and always writes WAV, whatever the name (``....wav`` has no extension for libsndfile).
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import soundfile as sf
import torch

from sec4sr_core.base.errors import AudioError
from sec4sr_core.sdk.interfaces import SAMPLE_RATE, Utterance

INT16_SCALE = 32768.0
#: a sample counts as clipped at or beyond this magnitude (full scale of 16-bit PCM, less one LSB of tolerance)
CLIP_LEVEL = 1.0 - 2.0 / INT16_SCALE
#: a file gets a clipping notice when at least this fraction (and at least CLIP_MIN_SAMPLES) of its samples clip
CLIP_FRACTION = 1e-3
CLIP_MIN_SAMPLES = 10


def notice(message: str) -> None:
    """A one-line notice for the user on stderr."""
    print(f"notice: {message}", file=sys.stderr)


def load_audio(path: str | Path, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """Read an audio file as a (1, T) float32 tensor in [-1, 1] at ``sample_rate``."""
    path = Path(path)
    check_audio_file(path)
    try:
        with sf.SoundFile(str(path)) as fh:
            sr, declared = fh.samplerate, fh.frames
            data = fh.read(dtype="float32", always_2d=True)
    except Exception as exc:  # noqa: BLE001 - libsndfile raises several types
        raise AudioError(f"cannot read audio file {path}: {str(exc).strip() or type(exc).__name__}") from None
    if data.shape[0] == 0:
        raise AudioError(f"audio file is empty (0 samples): {path}")
    header = wav_header_frames(path)
    if header is not None and header[0] > header[1]:
        declared = header[0]
    if data.shape[0] < declared:
        raise AudioError(f"audio file is truncated: {path} holds {data.shape[0]} of the {declared} frames its header "
                         f"declares ({data.shape[0] / sr:.2f} of {declared / sr:.2f} s); copy or export it again")
    if not np.isfinite(data).all():
        raise AudioError(f"audio file contains NaN or infinite samples: {path}")
    clipped = int(np.count_nonzero(np.abs(data) >= CLIP_LEVEL))
    if clipped >= max(CLIP_MIN_SAMPLES, CLIP_FRACTION * data.size):
        notice(f"{path.name}: {clipped} of {data.size} samples ({100.0 * clipped / data.size:.1f} %) are at full "
               f"scale (±1): the recording is clipped")
    wave = torch.from_numpy(np.ascontiguousarray(data.T))
    if wave.shape[0] > 1:
        notice(f"{path.name}: {wave.shape[0]} channels downmixed to mono")
        wave = wave.mean(dim=0, keepdim=True)
    if sr != sample_rate:
        import torchaudio.functional as AF

        notice(f"{path.name}: resampled from {sr} Hz to {sample_rate} Hz")
        wave = AF.resample(wave, sr, sample_rate)
    return wave.clamp(-1.0, 1.0).to(torch.float32)


def check_audio_file(path: Path) -> None:
    """Refuse what is not a readable regular file (missing, a folder, a FIFO, socket or device) with the path."""
    if not path.exists():
        raise AudioError(f"audio file not found: {path}")
    if path.is_dir():
        raise AudioError(f"expected an audio file, got a folder: {path}")
    if not path.is_file():
        raise AudioError(f"not a regular file (a FIFO, socket or device): {path}; a dataset holds audio files only")


def wav_header_frames(path: Path) -> tuple[int, int] | None:
    """For a RIFF/WAVE file: (frames its ``data`` chunk declares, frames the file actually holds); None for other
    formats and for streamed WAVs whose header leaves the size open (0 or 0xFFFFFFFF)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            block_align = 0
            while True:
                chunk = fh.read(8)
                if len(chunk) < 8:
                    return None
                cid, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
                if cid == b"fmt ":
                    fmt = fh.read(size + (size & 1))
                    if len(fmt) < 14:
                        return None
                    block_align = struct.unpack("<H", fmt[12:14])[0]
                elif cid == b"data":
                    if not block_align or size in (0, 0xFFFFFFFF):
                        return None
                    available = path.stat().st_size - fh.tell()
                    return size // block_align, max(0, available) // block_align
                else:
                    fh.seek(size + (size & 1), 1)
    except OSError:
        return None


def utterance_file(u: Utterance) -> Path:
    """Where saved audio of ``u`` goes, relative to a cell's folder: ``<speaker>/<id>.wav`` with the id's leading
    ``<speaker>/`` dropped (``alice/sub/u1.flac`` -> ``alice/sub/u1.flac.wav``). Distinct ids give distinct paths
    (the id keeps its extension, so ``u05.wav`` and ``u05.flac`` do not collide), and no path leaves the folder:
    ``''``/``.``/``..`` components and ``%``, ``\\`` and control characters are %-escaped."""
    rest = u.id[len(u.speaker) + 1:] if u.id.startswith(u.speaker + "/") else u.id
    parts = [_safe_part(u.speaker)] + [_safe_part(p) for p in rest.split("/")]
    parts[-1] += ".wav"
    return Path(*parts)


def _safe_part(part: str) -> str:
    special = {"": "%2F", ".": "%2E", "..": "%2E%2E"}
    if part in special:
        return special[part]
    return "".join(f"%{ord(c):02X}" if c in "%\\" or ord(c) < 32 else c for c in part)


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
    sf.write(str(path), samples, sample_rate, format="WAV", subtype="PCM_16")
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
