"""Throughput of every defense on a batch (default 64 utterances × 3 s), against the one-utterance-at-a-time way,
both measured in the same run on the same input.

Baselines ("one at a time"):

* qt, bdr, at, as, ms, ds, feco (every variant): the same defense called once per utterance (B = 1) in a Python
  loop — what a per-utterance pipeline does (the predecessor's FeCo looped over utterances).
* lpf, bpf: the predecessor's way — per utterance, a recursive IIR filter (``torchaudio.functional.lfilter``) with
  the same Butterworth design in float32 (b, a) form.
* codecs: the predecessor's way — sequentially per utterance: write a 16-bit WAV to a temporary folder, ``ffmpeg``
  encode to a file, ``ffmpeg`` decode to a WAV, read it back (same ffmpeg binary as the batched path).

FeCo runs on log-mel features of the batch (40 bands, 10 ms hop: (B, 301, 40) for 3 s), as at GE2E's final level.

Usage::

    python benchmarks/bench_defenses.py                      # everything (the codecs take a few minutes)
    python benchmarks/bench_defenses.py --only qt,lpf,feco   # a subset (names or prefixes)
    python benchmarks/bench_defenses.py --batch 16 --seconds 1 --device cuda

Prints one row per defense: wall time of the batched call and of the baseline, throughput in seconds of audio per
second, and the ratio baseline / batched (higher is better).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import soundfile as sf
import torch

import sec4sr_core as sec4sr
from sec4sr_plugins_defenses import codecs as C

SR = 16000


def speech_batch(b: int, seconds: float, seed: int = 0) -> torch.Tensor:
    """Real speech from the embedded corpus, cut/looped to ``seconds``, (B, 1, T) float32."""
    from sec4sr_core.audio import load_audio

    root = Path(sec4sr.__file__).parent / "data" / "embedded" / "audio"
    files = sorted(root.glob("*/*.flac"))
    t = int(seconds * SR)
    out = []
    for i in range(b):
        w = load_audio(files[(i * 7 + seed) % len(files)])[0]
        reps = -(-t // w.numel())
        out.append(w.repeat(reps)[:t])
    return torch.stack(out).unsqueeze(1)


def timed(fn: Callable[[], object], repeat: int, warm: bool = True) -> float:
    """Best wall time of ``repeat`` calls (after one warm-up call when ``warm``)."""
    if warm:
        fn()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


def per_utterance(d, x: torch.Tensor) -> Callable[[], list]:
    return lambda: [d(x[i:i + 1]) for i in range(x.shape[0])]


def lfilter_baseline(d, x: torch.Tensor) -> Callable[[], list]:
    import torchaudio.functional as AF
    from scipy import signal

    b, a = signal.sos2tf(d.sos)
    bt, at = torch.tensor(b, dtype=torch.float32), torch.tensor(a, dtype=torch.float32)
    xc = x.cpu()
    return lambda: [AF.lfilter(xc[i, 0], at, bt, clamp=False).to(x.device) for i in range(x.shape[0])]


def tempfile_codec_baseline(d, x: torch.Tensor) -> Callable[[], list]:
    """The predecessor's codec path: per utterance, temp WAV -> ffmpeg encode file -> ffmpeg decode WAV -> read."""
    fmt = d.codec_format()
    opts = d.codec_options()
    enc_bin, dec_bin = C.find_binaries(fmt.encoder, fmt.decoders)
    ext = {"ogg": "ogg", "amr": "amr", "adts": "aac", "mp3": "mp3"}[fmt.muxer]
    flags = [str(v) for k, v in opts.items() for v in (f"-{k}", v)]
    data = (x.cpu().numpy()[:, 0] * 32768).clip(-32768, 32767).astype(np.int16)

    def run():
        outs = []
        with tempfile.TemporaryDirectory(prefix="sec4sr-bench-") as tmp:
            for i in range(data.shape[0]):
                src, mid, dst = (os.path.join(tmp, f"{i}.wav"), os.path.join(tmp, f"{i}.{ext}"),
                                 os.path.join(tmp, f"{i}-out.wav"))
                sf.write(src, data[i], SR, subtype="PCM_16")
                subprocess.run([str(enc_bin), "-y", "-loglevel", "error", "-i", src, "-ac", "1", "-ar", str(fmt.rate),
                                *flags, "-c:a", fmt.encoder, mid], check=True)
                subprocess.run([str(dec_bin), "-y", "-loglevel", "error", "-i", mid, "-ac", "1", "-ar", str(SR),
                                "-c:a", "pcm_s16le", dst], check=True)
                outs.append(sf.read(dst, dtype="float32")[0])
        return outs

    return run


def log_mel(x: torch.Tensor) -> torch.Tensor:
    import torchaudio

    mel = torchaudio.transforms.MelSpectrogram(SR, n_fft=400, hop_length=160, n_mels=40).to(x.device)
    return torch.log(mel(x[:, 0]) + 1e-6).transpose(1, 2).contiguous()  # (B, frames, 40)


WAVE = ["qt", "bdr", "at", "as", "ms", "ds", "lpf", "bpf"]
FECO = {"feco-k": "feco", "feco-k-cos": "feco:distance=cos", "feco-wk": "feco:method=warped",
        "feco-wk-random": "feco:method=warped,init=random"}
CODECS = ["opus", "speex", "amr", "amr-wb", "aac-v", "aac-c", "mp3-v", "mp3-c"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--repeat", type=int, default=3, help="timed calls per transform (best of); codecs: 1 call")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--only", default="", help="comma-separated names or prefixes")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    x = speech_batch(args.batch, args.seconds).to(args.device)
    feats = log_mel(x)
    audio_s = args.batch * args.seconds
    only = [s for s in args.only.split(",") if s]
    pick = (lambda n: any(n == o or n.startswith(o) for o in only)) if only else (lambda n: True)

    print(f"batch {args.batch} × {args.seconds:g} s on {args.device} ({torch.get_num_threads()} torch threads); "
          f"features {tuple(feats.shape)}", flush=True)
    print(f"{'defense':<16}{'batched s':>11}{'one-at-a-time s':>17}{'audio s/s':>11}{'ratio':>8}  baseline")
    rows = []

    def report(name, t_new, t_old, baseline):
        ratio = t_old / t_new
        rows.append((name, t_new, t_old, ratio))
        print(f"{name:<16}{t_new:>11.4f}{t_old:>17.4f}{audio_s / t_new:>11.1f}{ratio:>7.1f}×  {baseline}", flush=True)

    for name in WAVE:
        if not pick(name):
            continue
        d = sec4sr.defense(name)
        d.seed(0)
        if name in ("lpf", "bpf"):
            base, label = lfilter_baseline(d, x), "per-utterance float32 (b,a) lfilter"
        else:
            base, label = per_utterance(d, x), "same defense per utterance"
        with torch.no_grad():
            report(name, timed(lambda: d(x), args.repeat), timed(base, args.repeat), label)
    for name, spec in FECO.items():
        if not pick(name):
            continue
        d = sec4sr.defense(spec)
        d.seed(0)
        with torch.no_grad():
            report(name, timed(lambda: d(feats), args.repeat), timed(per_utterance(d, feats), args.repeat),
                   "same FeCo per utterance")
    for name in CODECS:
        if not pick(name):
            continue
        d = sec4sr.defense("amr:band=wb" if name == "amr-wb" else name)
        ok, why = d.available()
        if not ok:
            print(f"{name:<16}  skipped: {why}")
            continue
        d(x[:1])  # warm-up: binary discovery and the one-off delay measurement
        report(name, timed(lambda: d(x), 1, warm=False), timed(tempfile_codec_baseline(d, x), 1, warm=False),
               "sequential temp-file ffmpeg round trips")
    return 0


if __name__ == "__main__":
    sys.exit(main())
