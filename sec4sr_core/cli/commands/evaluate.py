"""``sec4sr evaluate --model M [--task T] [--dataset D] [--json]``: benign accuracy of a backbone on each task it
supports (or the ``--task`` given), with the stored EER and thresholds of its enrollment.

Trials as in ``sec4sr run``: CSI-E the ``test`` split, CSI-NE ``heldout``, SV/OSI genuine ``test`` plus
``imposter-test`` utterances (a correct rejection counts as correct).

SV also reports EER, minDCF@0.01 and minDCF@0.05 (C_miss = C_fa = 1, normalised): on the dataset's own trial list
when it has one (``prompts``, ``voxceleb``: the standard protocol, every trial's utterances cropped to the model
length; ``--as-norm K`` normalises with the top-K of the dataset's cohort), else on the enrollment's dev trials.
A dataset with a loudness report (``prompts``) has it printed (RMS dBFS per speaker)."""

from __future__ import annotations

import json
import sys


def register(sub) -> None:
    p = sub.add_parser("evaluate", help="benign accuracy, EER and thresholds of a backbone per task")
    p.add_argument("--model", required=True, help="backbone spec")
    p.add_argument("--task", action="append", choices=["csi-e", "csi-ne", "sv", "osi"],
                   help="task (repeatable; default: every task the model supports)")
    p.add_argument("--dataset", default="embedded", help="dataset spec or folder path (default embedded)")
    p.add_argument("--limit", type=int, help="only the first N trials (seeded order)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="cpu")
    p.add_argument("--as-norm", type=int, default=0, metavar="K",
                   help="AS-Norm the SV trial list with the top-K cohort scores (datasets with a cohort)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def evaluate(model_spec: str, tasks=None, dataset_spec: str = "embedded", limit=None, seed: int = 0,
             batch_size: int = 32, device: str = "cpu", as_norm: int = 0) -> dict:
    """The document ``sec4sr evaluate --json`` prints."""
    import torch

    from sec4sr_core.base.errors import Sec4srError
    from sec4sr_core.compose.enroll import (
        DEFAULT_LENGTH_S,
        build_system,
        sv_metrics,
        task_trials,
        trial_list_scores,
    )
    from sec4sr_core.compose.factories import check_device, load_model, resolve_dataset
    from sec4sr_core.sdk.audio import load_batch
    from sec4sr_core.sdk.interfaces import Task

    if as_norm and as_norm < 2:
        raise Sec4srError(f"--as-norm needs K >= 2 cohort scores, got {as_norm}")
    check_device(device)
    model = load_model(model_spec, device)
    dataset = resolve_dataset(dataset_spec)
    tasks = [Task(t) for t in tasks] if tasks else list(model.tasks)
    bad = [t.value for t in tasks if t not in model.tasks]
    if bad:
        raise Sec4srError(f"model {model.name!r} does not support {', '.join(bad)} "
                          f"(supports: {', '.join(t.value for t in model.tasks)})")
    if as_norm and not hasattr(dataset, "cohort"):
        raise Sec4srError(f"--as-norm: dataset {dataset.name!r} has no impostor cohort (voxceleb has one)")
    out = {"model": model_spec, "dataset": dataset.name, "seed": seed, "tasks": {}}
    if hasattr(dataset, "loudness"):
        out["loudness_dbfs"] = dataset.loudness()
    length = int(round(DEFAULT_LENGTH_S * 16000))
    for task in tasks:
        protocol = None
        if task == Task.SV and hasattr(dataset, "sv_trials"):
            sv_list = dataset.sv_trials()
            cohort = dataset.cohort() if as_norm else ()
            tgt, non = trial_list_scores(model, sv_list, DEFAULT_LENGTH_S, cohort, as_norm, batch_size)
            protocol = {"trials": len(sv_list), "targets": len(tgt), "as_norm": as_norm or None,
                        **sv_metrics(tgt, non)}
        try:
            system, enrollment = build_system(model, task, dataset)
        except Sec4srError:
            if protocol is None:
                raise
            # a trial-list dataset without imposter speakers in its splits: the protocol is the SV result
            out["tasks"][task.value] = {"trials": 0, "accuracy": None, "protocol": protocol}
            continue
        trials = task_trials(task, dataset, system.speakers, seed, limit)
        decisions = []
        with torch.no_grad():
            for s in range(0, len(trials.utterances), batch_size):
                x = load_batch([u.path for u in trials.utterances[s : s + batch_size]], length).to(device)
                claims = None if trials.claims is None else trials.claims[s : s + batch_size].to(device)
                decisions.append(system.decide(system(x, claims=claims)).cpu())
        dec = torch.cat(decisions)
        entry = {"trials": len(dec), "accuracy": float((dec == trials.labels).double().mean())}
        if task.has_threshold:
            genuine = trials.labels != -1
            entry["genuine_accuracy"] = float((dec[genuine] == trials.labels[genuine]).double().mean()) \
                if bool(genuine.any()) else None
            entry["imposter_rejection"] = float((dec[~genuine] == -1).double().mean()) if bool((~genuine).any()) else None
            key = "sv" if task == Task.SV else "osi"
            entry["threshold"] = system.threshold
            entry["eer"] = enrollment.eer.get(key) if enrollment else None
            if task == Task.SV:
                entry["min_dcf"] = enrollment.stats.get("sv_min_dcf") if enrollment else None
                entry["min_dcf_0.05"] = enrollment.stats.get("sv_min_dcf_0.05") if enrollment else None
                entry["protocol"] = protocol
            else:
                entry["ier"] = enrollment.stats.get("osi_ier") if enrollment else None
        out["tasks"][task.value] = entry
    return out


def run(args) -> int:
    doc = evaluate(args.model, args.task, args.dataset, args.limit, args.seed, args.batch_size, args.device,
                   args.as_norm)
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    print(f"{doc['model']} on {doc['dataset']}")
    for task, e in doc["tasks"].items():
        if e["accuracy"] is None:
            line = f"  {task:6s} (no thresholded trials: the dataset's splits have no imposter speakers)"
        else:
            line = f"  {task:6s} accuracy {100 * e['accuracy']:5.1f}%  ({e['trials']} trials)"
        if "threshold" in e:
            line += f"  threshold {e['threshold']:.4f}"
            if e.get("eer") is not None:
                line += f"  EER {100 * e['eer']:.2f}%"
            if e.get("min_dcf") is not None:
                line += f"  minDCF@0.01 {e['min_dcf']:.4f}"
            if e.get("min_dcf_0.05") is not None:
                line += f"  minDCF@0.05 {e['min_dcf_0.05']:.4f}"
        print(line)
        proto = e.get("protocol")
        if proto:
            norm = f", AS-Norm top-{proto['as_norm']}" if proto["as_norm"] else ""
            print(f"         trial list ({proto['trials']} trials, {proto['targets']} targets{norm}): "
                  f"EER {100 * proto['eer']:.2f}%  minDCF@0.01 {proto['min_dcf_0.01']:.4f}  "
                  f"minDCF@0.05 {proto['min_dcf_0.05']:.4f}")
    if doc.get("loudness_dbfs"):
        print("  loudness (RMS dBFS): " + "  ".join(f"{k} {v:.1f}" for k, v in doc["loudness_dbfs"].items()))
    sys.stdout.flush()
    return 0
