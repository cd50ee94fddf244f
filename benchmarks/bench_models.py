"""Backbone speed: forward and forward+backward (w.r.t. the waveform, as an attack needs) for a batch of
32 × 3 s per backbone, and the i-vector extractor with its constant terms precomputed once against recomputing them
on every call (the predecessor's way), measured in the same run. Weights are random (speed does not depend on them).

    .venv/bin/python benchmarks/bench_models.py [--device cuda] [--batch 32] [--seconds 3] [--repeat 3]
"""

from __future__ import annotations

import argparse
import time

import torch


def timed(fn, repeat: int, device: str) -> float:
    fn()  # warm-up
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


def build(name: str, kaldi_size: bool):
    from sec4sr_plugins_models.audionet import AudioNet
    from sec4sr_plugins_models.ecapa import ECAPA
    from sec4sr_plugins_models.ge2e import GE2E
    from sec4sr_plugins_models.ivector import IVector
    from sec4sr_plugins_models.xvector import XVector

    if name == "ivector":
        m = IVector(components=2048, ivector_dim=400, lda_dim=200) if kaldi_size else IVector()
        g = torch.Generator().manual_seed(0)
        c, f, _ = m.inv_covars.shape
        m.ie_M = torch.randn(c, f, m.ie_M.shape[2], generator=g) * 0.01
        m.prepare()
        return m
    m = {"xvector": XVector, "audionet": AudioNet, "ecapa": ECAPA, "ge2e": GE2E}[name]()
    if hasattr(m, "set_classes"):
        m.set_classes([str(i) for i in range(24)])
    return m


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--kaldi-size", action="store_true", help="i-vector at Kaldi VoxCeleb size (2048 × 400)")
    ap.add_argument("--models", default="ivector,xvector,audionet,ecapa,ge2e")
    args = ap.parse_args()
    dev = args.device
    x = (torch.randn(args.batch, 1, int(args.seconds * 16000), generator=torch.Generator().manual_seed(0)) * 0.05).to(dev)
    print(f"device {dev}  batch {args.batch} × {args.seconds:g} s  threads {torch.get_num_threads()}  "
          f"torch {torch.__version__}")
    print(f"{'model':10s} {'forward s':>10s} {'fwd+bwd s':>10s} {'bwd/fwd':>8s} {'utt/s fwd':>10s}")
    for name in args.models.split(","):
        m = build(name, args.kaldi_size).to(dev).eval()
        if name == "ivector":
            m.prepare()
        enrolled = None
        if m.output == "embedding":
            with torch.no_grad():
                enrolled = m.embed(x[:4])

        def fwd():
            with torch.no_grad():
                out = m.embed(x)
                return out if enrolled is None else m.score(out, enrolled)

        def fwd_bwd():
            xx = x.clone().requires_grad_(True)
            out = m.embed(xx)
            out = out if enrolled is None else m.score(out, enrolled)
            out.sum().backward()

        tf = timed(fwd, args.repeat, dev)
        tb = timed(fwd_bwd, args.repeat, dev)
        print(f"{name:10s} {tf:10.3f} {tb:10.3f} {tb / tf:8.2f} {args.batch / tf:10.1f}")
        if name == "ivector":
            with torch.no_grad():
                feats = m.to_level(x, "wave", "final")
                n, fs = m.stats(feats)
            t_pre = timed(lambda: m.extract(n, fs, precomputed=True), args.repeat, dev)
            t_re = timed(lambda: m.extract(n, fs, precomputed=False), args.repeat, dev)
            c, _, d = m.ie_M.shape
            print(f"  i-vector extraction ({c} comps, {d}-d, batch {args.batch}): precomputed {t_pre * 1e3:.1f} ms, "
                  f"recomputed per call {t_re * 1e3:.1f} ms -> {t_re / t_pre:.1f}x faster")
        del m
        if dev.startswith("cuda"):
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
