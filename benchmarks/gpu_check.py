"""GPU check: correctness on CUDA against the CPU, and timings of the GPU paths, in one run.

    python benchmarks/gpu_check.py --device cuda [--out results.json]

For every registered backbone: embeddings on the device equal the CPU's (relative error), the gradient reaches the
waveform on the device, and forward / forward+backward times for a batch of 32 × 3 s on both. For every defense: the
output stays on the input's device with the same shape, deterministic ones agree with the CPU, throughput for
64 × 3 s. For every attack (small budgets): it runs on the device against GE2E and lowers accuracy. EOT with 8 draws
batched against 8 sequential draws, and one PGD-10 study through the CLI with ``--device``. Each section records its
errors instead of stopping the run. Timings are ratios against the CPU measured in the same run.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import time
import traceback

import torch

from sec4sr_core.base.errors import NotTrainedError
from sec4sr_core.plugins.manager import get_registry
from sec4sr_core.sdk.modelstore import home


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timeit(fn, device: str, reps: int = 3) -> float:
    fn()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    sync(device)
    return (time.perf_counter() - t0) / reps


def section(name, results):
    def deco(fn):
        t0 = time.perf_counter()
        try:
            results[name] = fn()
        except Exception as exc:  # noqa: BLE001 - record and go on
            results[name] = {"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()[-2000:]}
        results[name] = {"wall_s": round(time.perf_counter() - t0, 2), **(results[name] or {})}
        print(f"== {name}: {json.dumps(results[name], default=str)[:3000]}", flush=True)
        return fn

    return deco


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default=None)
    ap.add_argument("--quick", action="store_true", help="tiny sizes (for a dry run on the CPU)")
    args = ap.parse_args()
    dev = args.device
    reg = get_registry()
    results: dict = {"device": dev, "torch": torch.__version__,
                     "gpu": torch.cuda.get_device_name(0) if dev.startswith("cuda") else "cpu"}
    B, T = (4, 16000) if args.quick else (32, 48000)
    g = torch.Generator().manual_seed(0)
    wave = (torch.randn(B, 1, T, generator=g) * 0.03).clamp(-1, 1)

    def model_instance(name):
        m = reg.build("model", name)
        try:
            m.load_weights(home())
            loaded = True
        except NotTrainedError:
            loaded = False  # random initialisation: enough for device agreement and timing
        return m.eval(), loaded

    @section("models", results)
    def _models():
        out = {}
        for name in reg.names("model"):
            try:
                m, loaded = model_instance(name)
                mc, mg = copy.deepcopy(m), copy.deepcopy(m).to(dev)
                x = wave[:4, :, :16000]
                with torch.no_grad():
                    ec, eg = mc.embed(x, "wave"), mg.embed(x.to(dev), "wave")
                rel = float((ec - eg.cpu()).norm() / ec.norm().clamp_min(1e-12))
                xg = x.to(dev).requires_grad_(True)
                mg.embed(xg, "wave").pow(2).sum().backward()
                grad_ok = bool(torch.isfinite(xg.grad).all()) and xg.grad.device.type == torch.device(dev).type
                xb = wave.to(dev)

                def fwd(model=mg, xb=xb):
                    with torch.no_grad():
                        model.embed(xb, "wave")

                def fwdbwd(model=mg, xb=xb):
                    xx = xb.clone().requires_grad_(True)
                    model.embed(xx, "wave").sum().backward()

                t_f, t_fb = timeit(fwd, dev), timeit(fwdbwd, dev)
                xcpu = wave

                def fwdbwd_cpu(model=mc, xb=xcpu):
                    xx = xb.clone().requires_grad_(True)
                    model.embed(xx, "wave").sum().backward()

                t_cpu = timeit(fwdbwd_cpu, "cpu", reps=1)
                out[name] = {"weights_loaded": loaded, "rel_err_vs_cpu": rel, "grad_on_device": grad_ok,
                             "fwd_s": round(t_f, 4), "fwd_bwd_s": round(t_fb, 4), "cpu_fwd_bwd_s": round(t_cpu, 4),
                             "speedup_vs_cpu": round(t_cpu / t_fb, 1)}
            except Exception as exc:  # noqa: BLE001
                out[name] = {"error": f"{type(exc).__name__}: {exc}"}
        return out

    @section("training", results)
    def _training():
        from sec4sr_core.compose.factories import resolve_dataset
        from sec4sr_core.study.training import TrainConfig, train

        m = reg.build("model", "audionet")
        t0 = time.perf_counter()
        info = train(m.to(dev), resolve_dataset("embedded"), TrainConfig(epochs=1 if args.quick else 8, device=dev),
                     progress=False)
        return {"audionet_train_s": round(time.perf_counter() - t0, 2),
                "info": {k: v for k, v in info.items() if k != "history"} if isinstance(info, dict) else str(info)}

    @section("defenses", results)
    def _defenses():
        out = {}
        xw = wave[: min(B, 64)].to(dev)
        xw64 = (torch.randn(4 if args.quick else 64, 1, T, generator=g) * 0.03).to(dev)
        feats = torch.randn(8, 300, 40, generator=g).to(dev)
        for name in reg.names("defense"):
            if name == "advt":
                continue
            try:
                d = reg.build("defense", name)
                x = xw if d.level == "wave" else feats
                d.seed(0, dev)
                with torch.no_grad():
                    y = d(x)
                row = {"same_shape": tuple(y.shape) == tuple(x.shape) if d.level == "wave" else y.shape[0] == x.shape[0],
                       "on_device": y.device.type == torch.device(dev).type, "finite": bool(torch.isfinite(y).all())}
                if not d.randomized:
                    dc = reg.build("defense", name)
                    with torch.no_grad():
                        yc = dc(x.cpu())
                    row["max_abs_diff_vs_cpu"] = float((yc - y.cpu()).abs().max()) if yc.shape == y.shape else "shape"
                if d.level == "wave":
                    def run(d=d):
                        with torch.no_grad():
                            d(xw64)
                    t = timeit(run, dev, reps=1 if d.differentiable is False and "aac" in name else 2)
                    row["utt_per_s_64x3s"] = round(xw64.shape[0] / t, 1)
                out[name] = row
            except Exception as exc:  # noqa: BLE001
                out[name] = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
        return out

    @section("attacks", results)
    def _attacks():
        import sec4sr_core as s4
        from sec4sr_core.sdk.audio import load_batch
        from sec4sr_core.compose.enroll import task_trials
        from sec4sr_core.sdk.oracle import make_oracle
        from sec4sr_core.compose.factories import resolve_dataset
        from sec4sr_core.sdk.system import as_defended

        system = s4.load_system("ge2e", task="csi-e", device=dev)
        ds = resolve_dataset("embedded")
        n = 8 if args.quick else 32
        trials = task_trials("csi-e", ds, system.speakers, 0, n)
        x = load_batch([u.path for u in trials.utterances], 48000).to(dev)
        y = trials.labels.to(dev)
        with torch.no_grad():
            benign = float((system(x).argmax(1) == y).float().mean())
        out = {"benign_acc": benign}
        small = {"cw2": {"max_iter": 30, "binary_search_steps": 2}, "fakebob": {"max_iter": 10},
                 "siren": {"max_epoch": 2, "max_iter": 5}, "square": {"max_queries": 100},
                 "hsja": {"max_queries": 200}, "uap": {}, "kenan": {"max_iter": 5}, "pgd-nes": {"steps": 3}}
        for name in reg.names("attack"):
            try:
                params = dict(small.get(name, {}))
                cls = reg.resolve("attack", name)[0]
                params = {k: v for k, v in params.items() if k in cls.Params.model_fields}
                atk = reg.build("attack", name, **params)
                xs, ys = x[:8], y[:8]
                oracle = make_oracle(as_defended(system), atk.knowledge, n=xs.shape[0], seed=0)
                t0 = time.perf_counter()
                r = atk.run(oracle, xs, ys, targeted=False)
                sync(dev)
                out[name] = {"acc_after": float((r.decisions.cpu() == ys.cpu()).float().mean()),
                             "adv_on_device": r.adv.device.type == torch.device(dev).type,
                             "max_queries": int(r.queries.max()), "s": round(time.perf_counter() - t0, 2)}
            except Exception as exc:  # noqa: BLE001
                out[name] = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
        pgd = s4.attack("pgd-10")
        t0 = time.perf_counter()
        pgd(system, x, y)
        sync(dev)
        out["pgd10_batch"] = {"n": n, "acc_after": float((pgd.last_result.decisions.cpu() == y.cpu()).float().mean()),
                              "s": round(time.perf_counter() - t0, 2)}
        # EOT: 8 draws in one batch vs 8 sequential single draws, through AT
        defended = s4.defend(system, "at:snr=30")
        from sec4sr_core.sdk.losses import margin_loss

        def loss_fn(sc, yy):
            return margin_loss(sc, yy, "csi-e")

        o8 = make_oracle(defended, "white-box", n=n, eot=8, seed=0)
        o1 = make_oracle(defended, "white-box", n=n, eot=1, seed=0)
        t_b = timeit(lambda: o8.loss_and_grad(x, loss_fn, y), dev, reps=2)
        t_s = timeit(lambda: [o1.loss_and_grad(x, loss_fn, y) for _ in range(8)], dev, reps=1)
        out["eot8"] = {"batched_s": round(t_b, 3), "sequential_s": round(t_s, 3), "speedup": round(t_s / t_b, 2)}
        # one PGD step vs one forward+backward of the defended system
        o = make_oracle(as_defended(system), "white-box", n=n, seed=0)
        t_fb = timeit(lambda: o.loss_and_grad(x, loss_fn, y), dev)
        step = s4.attack("pgd", steps=1)
        t_step = timeit(lambda: step(system, x, y), dev, reps=2)
        out["pgd_step_over_fwd_bwd"] = round(t_step / (2 * t_fb), 2)  # steps=1 does 2 gradient evaluations
        return out

    @section("cli", results)
    def _cli():
        exe = os.path.join(os.path.dirname(sys.executable), "sec4sr")
        cmd = [sys.executable, "-m", "sec4sr_core.cli"] if not os.path.exists(exe) else [exe]
        p = subprocess.run(cmd + ["run", "--device", dev, "--attack", "pgd-10", "--defense", "qt:q=512",
                                  "--limit", "16", "--json", "--quiet", "--out", "/tmp/gpu-cli-out"],
                           capture_output=True, text=True, timeout=400)
        doc = json.loads(p.stdout) if p.returncode == 0 else None
        return {"rc": p.returncode, "stderr": p.stderr[-800:],
                "results": [{k: r[k] for k in ("defense", "attack", "benign_accuracy", "adversarial_accuracy")}
                            for r in (doc or {}).get("results", [])]}

    text = json.dumps(results, indent=1, default=str)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
