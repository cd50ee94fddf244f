"""``sec4sr detect --model M --attack A --detector waveguard:transform=… [--limit K]``: how well a WaveGuard-style
detector separates benign from adversarial audio, for a non-adaptive attack and for the detector-aware adaptive
attack (``pgd-detect``) on the same trials.

For each detector: detection scores (the system's score change under the detector's transform) of the benign
trials and of the successful adversarial examples of each setting; ROC AUC (Mann–Whitney, ties ½) and the TPR at
the threshold that flags ``--fpr`` (5 %) of the benign trials, each with a 95 % bootstrap interval; the attack's
success rate, and the evasion rate (successful and not flagged). The adaptive attack inherits ε, steps, step size,
and κ from ``--attack`` where it has them, and the transform from the detector; ``--adaptive SPEC`` overrides
(e.g. ``pgd-detect:lam=8``). Trials as in ``sec4sr run``.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any


def register(sub) -> None:
    p = sub.add_parser("detect", help="detection AUC and TPR@5%%FPR of a WaveGuard detector, non-adaptive and "
                                      "adaptive attack")
    p.add_argument("--model", default="ge2e", help="backbone spec (default ge2e)")
    p.add_argument("--task", choices=["csi-e", "csi-ne", "sv", "osi"], default="csi-e")
    p.add_argument("--dataset", default="embedded", help="dataset spec or folder path (default embedded)")
    p.add_argument("--attack", default="pgd-10", metavar="SPEC", help="non-adaptive attack (default pgd-10)")
    p.add_argument("--detector", action="append", default=None, metavar="SPEC",
                   help="detector spec, e.g. waveguard:transform=lpc (repeatable; default waveguard)")
    p.add_argument("--adaptive", default="pgd-detect", metavar="SPEC",
                   help="detector-aware attack (default pgd-detect with the --attack budget)")
    p.add_argument("--fpr", type=float, default=0.05, help="benign false-positive rate of the threshold (0.05)")
    p.add_argument("--draws", type=int, default=1000, help="bootstrap resamples for the intervals")
    p.add_argument("--limit", type=int, help="only the first N trials (seeded order)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=run)


#: attack parameters the adaptive attack inherits from the non-adaptive one
INHERITED = ("epsilon", "steps", "step_size", "kappa")


def _attack_batches(attack, system, x, y, claims, batch_size: int, seed: int):
    import torch

    advs, ok = [], []
    for s in range(0, x.shape[0], batch_size):
        cb = None if claims is None else claims[s : s + batch_size]
        advs.append(attack(system, x[s : s + batch_size], y[s : s + batch_size], claims=cb, seed=seed + s))
        ok.append(attack.last_result.success)
    return torch.cat(advs), torch.cat(ok).bool()


def detect(model_spec: str, attack_spec: str, detector_specs: list[str], adaptive_spec: str = "pgd-detect",
           task: str = "csi-e", dataset_spec: str = "embedded", limit: int | None = None, fpr: float = 0.05,
           draws: int = 1000, seed: int = 0, batch_size: int = 16, device: str = "cpu") -> dict[str, Any]:
    """The document ``sec4sr detect --json`` prints."""
    import torch

    from sec4sr_core.base.errors import Sec4srError
    from sec4sr_core.base.params import format_spec, parse_spec
    from sec4sr_core.compose.enroll import DEFAULT_LENGTH_S, build_system, task_trials
    from sec4sr_core.compose.factories import check_device, load_model, resolve_dataset
    from sec4sr_core.plugins.manager import get_registry
    from sec4sr_core.sdk.audio import load_batch
    from sec4sr_core.sdk.waveguard import WaveGuardTransform, detection_scores
    from sec4sr_core.study.detection import detection_summary

    if limit is not None and limit < 1:
        raise Sec4srError(f"--limit must be ≥ 1, got {limit}")
    if batch_size < 1:
        raise Sec4srError(f"--batch-size must be ≥ 1, got {batch_size}")
    if not 0 < fpr < 1:
        raise Sec4srError(f"--fpr must lie in (0, 1), got {fpr}")
    if draws < 1:
        raise Sec4srError(f"--draws must be ≥ 1, got {draws}")
    check_device(device)
    reg = get_registry()
    detectors = [reg.build("defense", spec) for spec in detector_specs]
    for spec, det in zip(detector_specs, detectors):
        if not isinstance(det.params, WaveGuardTransform):
            raise Sec4srError(f"--detector {spec!r} is not a WaveGuard-style detector (its parameters have no "
                              f"transform); use waveguard:transform=quantize|resample|lpc|mel")
    attack = reg.build("attack", attack_spec)
    model = load_model(model_spec, device)
    dataset = resolve_dataset(dataset_spec)
    system, _ = build_system(model, task, dataset)
    trials = task_trials(task, dataset, system.speakers, seed, limit)
    if not trials.utterances:
        raise Sec4srError(f"dataset {dataset.name!r} has no {task} trials")
    x = load_batch([u.path for u in trials.utterances], int(round(DEFAULT_LENGTH_S * 16000))).to(device)
    claims = None if trials.claims is None else trials.claims.to(device)
    with torch.no_grad():
        y = torch.cat([system.decide(system(x[s : s + batch_size],
                                            claims=None if claims is None else claims[s : s + batch_size]))
                       for s in range(0, x.shape[0], batch_size)])
    doc: dict[str, Any] = {"model": model_spec, "task": task, "dataset": dataset.name, "trials": int(x.shape[0]),
                           "seed": seed, "fpr": fpr, "attack": attack_spec, "detectors": []}
    t0 = time.perf_counter()
    adv_na, ok_na = _attack_batches(attack, system, x, y, claims, batch_size, seed)
    time_na = time.perf_counter() - t0
    adaptive_name, adaptive_user = parse_spec(adaptive_spec)
    base = {k: v for k, v in attack.params.model_dump().items() if k in INHERITED}
    for spec, det in zip(detector_specs, detectors):
        t0 = time.perf_counter()
        benign = detection_scores(system, x, det.params, claims, batch_size)
        time_det = time.perf_counter() - t0
        entry: dict[str, Any] = {"detector": spec, "detector_time_s": time_det, "settings": []}
        cls, _, _ = reg.resolve("attack", adaptive_name)
        fields = set(cls.Params.model_fields)
        values = {k: v for k, v in base.items() if k in fields}
        values.update({k: v for k, v in det.params.model_dump().items()
                       if k in WaveGuardTransform.model_fields and k in fields})
        values.update(adaptive_user)
        adaptive = reg.build("attack", (adaptive_name, values))
        label_a = format_spec(adaptive_name, {k: v for k, v in adaptive.params.model_dump().items()
                                              if k in values and v != cls.Params.model_fields[k].default})
        t0 = time.perf_counter()
        adv_a, ok_a = _attack_batches(adaptive, system, x, y, claims, batch_size, seed)
        time_a = time.perf_counter() - t0
        for setting, label, adv, ok, secs in (("non-adaptive", attack_spec, adv_na, ok_na, time_na),
                                              ("adaptive", label_a, adv_a, ok_a, time_a)):
            scores = detection_scores(system, adv, det.params, claims, batch_size)
            row: dict[str, Any] = {"setting": setting, "attack": label, "success": float(ok.double().mean()),
                                   "n_success": int(ok.sum()), "attack_time_s": secs}
            if bool(ok.any()):
                s = detection_summary(benign.tolist(), scores[ok.cpu()].tolist(), fpr, draws, seed)
                row.update(s)
                row["evasion"] = float((ok.cpu() & (scores <= s["threshold"])).double().mean())
            else:
                row.update({"auc": None, "tpr": None, "evasion": 0.0})
            entry["settings"].append(row)
        doc["detectors"].append(entry)
    return doc


def _ci(v: Any, scale: float = 1.0, digits: int = 2) -> str:
    return "" if not v else f" [{scale * v[0]:.{digits}f}, {scale * v[1]:.{digits}f}]"


def run(args) -> int:
    doc = detect(args.model, args.attack, args.detector or ["waveguard"], args.adaptive, args.task, args.dataset,
                 args.limit, args.fpr, args.draws, args.seed, args.batch_size, args.device)
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    pct = round(100 * doc["fpr"])
    print(f"{doc['model']} {doc['task']} on {doc['dataset']}: {doc['trials']} trials; AUC and TPR@{pct}%FPR over the "
          f"successful adversarial examples (95% bootstrap intervals)")
    for entry in doc["detectors"]:
        first = entry["settings"][0]
        tau = f"  τ = {first['threshold']:.4g}" if first.get("threshold") is not None else ""
        print(f"detector {entry['detector']}{tau}  ({entry['detector_time_s']:.1f} s for the benign scores)")
        print(f"  {'setting':13s} {'attack':36s} {'success':>7s}  {'AUC':>18s}  {'TPR@' + str(pct) + '%FPR':>18s}  "
              f"{'evasion':>7s}  {'time':>7s}")
        for r in entry["settings"]:
            auc = "-" if r["auc"] is None else f"{r['auc']:.2f}{_ci(r.get('auc_ci'))}"
            tpr = "-" if r["tpr"] is None else f"{100 * r['tpr']:.1f}%{_ci(r.get('tpr_ci'), 100, 1)}"
            print(f"  {r['setting']:13s} {r['attack'][:36]:36s} {100 * r['success']:6.1f}%  {auc:>18s}  {tpr:>18s}  "
                  f"{100 * r['evasion']:6.1f}%  {r['attack_time_s']:6.1f}s")
    sys.stdout.flush()
    return 0
