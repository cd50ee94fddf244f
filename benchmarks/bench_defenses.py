"""Throughput of every defense on a batch (default 64 utterances × 3 s), against one-utterance-at-a-time ways of
applying it, all measured in the same run on the same input.

Two baselines, each a way someone actually applies the defense one utterance at a time:

* **same/utt** — the same sec4sr defense called once per utterance (B = 1) in a Python loop, for every defense.
  It isolates what batching itself buys.
* **predecessor** — where SEC4SR / SpeakerGuard (SPEC_SEC4SR.md §6) ran a different per-utterance algorithm:

  - lpf, bpf: per utterance, a recursive IIR filter (``torchaudio.functional.lfilter``) with the same Butterworth
    design in float32 (b, a) form, on the CPU (SPEC §6.3).
  - feco-k, feco-k-cos: per utterance, kmeans_pytorch's algorithm as the predecessor called it on a CPU (SPEC §6.5):
    k distinct random frames as centres, Lloyd iterations on an (F, k, D) broadcast distance until the squared
    centre shift is below 1e-4 (capped at 300 iterations; an empty cluster takes a random frame), centres updated
    in a Python loop over clusters, then the output rows as per-cluster means in another Python loop.
    (With a GPU the predecessor used libKMCUDA instead; this is its CPU path.)
  - feco-wk, feco-wk-random: per utterance, the predecessor's pure-Python warped k-means (SPEC §6.5): trace
    segmentation (or random cuts), then frame-by-frame boundary moves with incremental means and counts until
    nothing moves. Written out plainly below (:func:`predecessor_warped`).
  - codecs: sequentially per utterance: write a 16-bit WAV to a temporary folder, ``ffmpeg`` encode to a file,
    ``ffmpeg`` decode to a WAV, read it back (same ffmpeg binary as the batched path).

  qt, bdr, at, as, ms, ds have no such column: the predecessor applied them to the batch too.

**The target's denominator** (issue 4: ≥ 5× for the batched transforms qt, as, ms, ds, lpf, bpf, feco; ≥ 1.5× for
the codecs) is the predecessor column where there is one (lpf, bpf, feco, codecs), and same/utt otherwise. Both
ratios are printed for every row that has both.

FeCo runs on log-mel features of the batch (40 bands, 10 ms hop: (B, 301, 40) for 3 s), as at GE2E's final level.

Usage::

    python benchmarks/bench_defenses.py                      # everything (the codecs take a few minutes)
    python benchmarks/bench_defenses.py --only qt,lpf,feco   # a subset (names or prefixes)
    python benchmarks/bench_defenses.py --batch 16 --seconds 1 --device cuda
    python benchmarks/bench_defenses.py --threads 1          # steadier when another job shares the CPU

Prints one row per defense: wall time of the batched call and of each baseline (best of ``--repeat`` calls after a
warm-up; codecs and the predecessor's FeCo: one call), the batch's throughput in seconds of audio per second, the
ratios baseline / batched (higher is better) and the target.
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
    from sec4sr_core.sdk.audio import load_audio

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


# ----------------------------------------------------------------------------------------------------------------
# the predecessor's FeCo, one utterance at a time (SPEC_SEC4SR.md §6.5), written out plainly
# ----------------------------------------------------------------------------------------------------------------


def predecessor_kmeans(feats: torch.Tensor, ratio: float = 0.5, distance: str = "l2", tol: float = 1e-4,
                       iter_limit: int = 300, seed: int = 0) -> tuple[torch.Tensor, int]:
    """FeCo k-means per utterance on the CPU, kmeans_pytorch's algorithm; returns (B, k, D) rows in cluster order
    and how many utterances stopped at ``iter_limit`` instead of the tolerance."""
    rng = np.random.default_rng(seed)
    out, capped = [], 0
    for x in feats:  # (F, D)
        f = x.shape[0]
        k = int(f * ratio)
        centres = x[torch.from_numpy(rng.choice(f, k, replace=False))].clone()
        for _ in range(iter_limit):
            if distance == "l2":
                dis = ((x.unsqueeze(1) - centres.unsqueeze(0)) ** 2).sum(dim=-1)  # (F, k)
            else:
                a = x.unsqueeze(1) / x.unsqueeze(1).norm(dim=-1, keepdim=True)
                b = centres.unsqueeze(0) / centres.unsqueeze(0).norm(dim=-1, keepdim=True)
                dis = 1 - (a * b).sum(dim=-1)
            labels = torch.argmin(dis, dim=1)
            previous = centres.clone()
            for j in range(k):
                members = torch.index_select(x, 0, torch.nonzero(labels == j).squeeze(1))
                if members.shape[0] == 0:
                    members = x[int(rng.integers(f))].unsqueeze(0)
                centres[j] = members.mean(dim=0)
            shift = torch.sum(torch.sqrt(torch.sum((centres - previous) ** 2, dim=1)))
            if shift ** 2 < tol:
                break
        else:
            capped += 1
        ids = labels.numpy()
        rows = None
        for j in range(k):  # output: the mean of each cluster's frames (frame j as a placeholder when empty)
            idx = np.argwhere(ids == j).flatten()
            row = x[idx].mean(dim=0, keepdim=True) if idx.size > 0 else x[j:j + 1]
            rows = row if rows is None else torch.cat((rows, row), dim=0)
        out.append(rows)
    return torch.stack(out), capped


def _trace_segmentation(x: torch.Tensor, k: int) -> list[int]:
    """Start frame of each of k segments with equal cumulative frame-to-frame L2 path length (a Python loop)."""
    n = x.shape[0]
    dist = torch.zeros(n)
    for i in range(1, n):
        dist[i] = dist[i - 1] + torch.norm(x[i] - x[i - 1])
    step = dist[n - 1] / k
    bounds, index = [0], 0
    for j in range(1, k):
        while index < n and (step * j > dist[index] or index in bounds):
            index += 1
        bounds.append(index)
    over = [i for i, b in enumerate(bounds) if b >= n]  # fix-ups: cuts past the end go to the last frames
    for m, i in enumerate(over):
        bounds[i] = n - len(over) + m
    for i in range(over[0] - 1, 0, -1) if over else ():
        if bounds[i] >= bounds[i + 1]:
            bounds[i] = bounds[i + 1] - 1
    return bounds


def predecessor_warped(feats: torch.Tensor, ratio: float = 0.5, init: str = "ts", seed: int = 0) -> torch.Tensor:
    """Warped k-means per utterance, frame by frame in Python with incremental means (δ = 0); (B, k, D). Counts and
    boundaries are Python ints here (the predecessor kept them in torch tensors, which is slower still)."""
    rng = np.random.default_rng(seed)
    out = []
    for x in feats:  # (F, D)
        n = x.shape[0]
        k = int(n * ratio)
        if init == "ts":
            bounds = _trace_segmentation(x, k)
        else:
            bounds = [0] + sorted(int(c) for c in rng.choice(np.arange(1, n), size=k - 1, replace=False))
        ends = bounds[1:] + [n]
        counts = [e - b for b, e in zip(bounds, ends)]
        means = torch.stack([x[b:e].mean(dim=0) for b, e in zip(bounds, ends)])

        def delta(v, j, l):  # change in squared error when frame v leaves segment j for segment l
            return (torch.sum((v - means[l]) ** 2) * counts[l] / (counts[l] + 1)
                    - torch.sum((v - means[j]) ** 2) * counts[j] / (counts[j] - 1))

        def move(v, j, l):
            counts[j] -= 1
            counts[l] += 1
            means[j] -= (v - means[j]) / counts[j]
            means[l] += (v - means[l]) / counts[l]

        moved = True
        while moved:
            moved = False
            for i in range(k):
                if i > 0:  # the first frames of segment i may join segment i-1
                    start = bounds[i]
                    for j in range(start, start + counts[i] // 2):
                        if counts[i] > 1 and delta(x[j], i, i - 1) < 0:
                            move(x[j], i, i - 1)
                            bounds[i] += 1
                            moved = True
                        else:
                            break
                if i < k - 1:  # the last frames of segment i may join segment i+1
                    last = bounds[i + 1] - 1
                    for j in range(last, last - counts[i] // 2, -1):
                        if counts[i] > 1 and delta(x[j], i, i + 1) < 0:
                            move(x[j], i, i + 1)
                            bounds[i + 1] -= 1
                            moved = True
                        else:
                            break
        out.append(means.clone())
    return torch.stack(out)


WAVE = ["qt", "bdr", "at", "as", "ms", "ds", "lpf", "bpf"]
FECO = {"feco-k": "feco", "feco-k-cos": "feco:distance=cos", "feco-wk": "feco:method=warped",
        "feco-wk-random": "feco:method=warped,init=random"}
CODECS = ["opus", "speex", "amr", "amr-wb", "aac-v", "aac-c", "mp3-v", "mp3-c"]
#: (name or prefix, factor) of issue 4's targets
TARGETS = {"qt": 5, "as": 5, "ms": 5, "ds": 5, "lpf": 5, "bpf": 5, "feco": 5, **{c: 1.5 for c in CODECS}}


def target_of(name: str) -> float | None:
    return TARGETS.get(name, TARGETS.get(name.split("-")[0]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--repeat", type=int, default=3, help="timed calls per transform (best of); codecs and the "
                                                          "predecessor's FeCo: 1 call")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--only", default="", help="comma-separated names or prefixes")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch's default)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = speech_batch(args.batch, args.seconds).to(args.device)
    feats = log_mel(x)
    audio_s = args.batch * args.seconds
    only = [s for s in args.only.split(",") if s]
    pick = (lambda n: any(n == o or n.startswith(o) for o in only)) if only else (lambda n: True)

    print(f"{time.strftime('%Y-%m-%d')}: batch {args.batch} × {args.seconds:g} s on {args.device} "
          f"({os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads, torch {torch.__version__}); "
          f"features {tuple(feats.shape)}", flush=True)
    print(f"{'defense':<15}{'batched s':>10}{'same/utt s':>12}{'×':>7}{'predecessor s':>15}{'×':>7}"
          f"{'audio s/s':>11}  target")

    def report(name, t_new, t_same, t_pred=None, note=""):
        r_same = t_same / t_new
        r_pred = t_pred / t_new if t_pred is not None else None
        goal = target_of(name)
        if goal is None:
            verdict = "–"
        else:
            r = r_pred if r_pred is not None else r_same
            verdict = f"≥ {goal:g}× vs {'predecessor' if r_pred is not None else 'same/utt'}: " + \
                ("met" if r >= goal else "not met")
        pred = f"{t_pred:>15.4f}{r_pred:>6.1f}×" if t_pred is not None else f"{'–':>15}{'–':>7}"
        print(f"{name:<15}{t_new:>10.4f}{t_same:>12.4f}{r_same:>6.1f}×{pred}{audio_s / t_new:>11.1f}  {verdict}"
              + (f"  ({note})" if note else ""), flush=True)

    for name in WAVE:
        if not pick(name):
            continue
        d = sec4sr.defense(name)
        d.seed(0)
        with torch.no_grad():
            t_new = timed(lambda: d(x), args.repeat)
            t_same = timed(per_utterance(d, x), args.repeat)
            t_pred = timed(lfilter_baseline(d, x), args.repeat) if name in ("lpf", "bpf") else None
        report(name, t_new, t_same, t_pred)
    for name, spec in FECO.items():
        if not pick(name):
            continue
        d = sec4sr.defense(spec)
        d.seed(0)
        p = d.params
        note = ""
        with torch.no_grad():
            t_new = timed(lambda: d(feats), args.repeat)
            t_same = timed(per_utterance(d, feats), args.repeat)
            f_cpu = feats.cpu()
            t0 = time.perf_counter()
            if p.method == "kmeans":
                _, capped = predecessor_kmeans(f_cpu, p.ratio, p.distance)
                note = f"{capped} of {args.batch} utterances hit the 300-iteration cap" if capped else ""
            else:
                predecessor_warped(f_cpu, p.ratio, d.init_method)
            t_pred = time.perf_counter() - t0
        report(name, t_new, t_same, t_pred, note)
    for name in CODECS:
        if not pick(name):
            continue
        d = sec4sr.defense("amr:band=wb" if name == "amr-wb" else name)
        ok, why = d.available()
        if not ok:
            print(f"{name:<15}  skipped: {why}")
            continue
        d(x[:1])  # warm-up: binary discovery and the one-off delay measurement
        report(name, timed(lambda: d(x), 1, warm=False), timed(per_utterance(d, x), 1, warm=False),
               timed(tempfile_codec_baseline(d, x), 1, warm=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
