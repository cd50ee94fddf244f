"""``sec4sr enroll --model M [--dataset D]``: enroll the dataset's speakers and store the enrolled system
(speakers, embeddings, SV/OSI thresholds at the EER on the dev trials) in the model store."""

from __future__ import annotations

import json


def register(sub) -> None:
    p = sub.add_parser("enroll", help="enroll a dataset's speakers on a backbone and store the enrolled system")
    p.add_argument("--model", required=True, help="backbone spec, e.g. ge2e or xvector")
    p.add_argument("--dataset", default="embedded", help="dataset spec or folder path (default embedded)")
    p.add_argument("--length", type=float, dest="length_s", help="seconds per utterance (crop/pad; default 3)")
    p.add_argument("--refresh", action="store_true", help="recompute even when a stored enrollment exists")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def enrollment_summary(model, dataset, e, path) -> dict:
    return {
        "model": model.name, "dataset": dataset.name, "speakers": e.speakers, "embedding_dim": int(e.enrolled.shape[1]),
        "thresholds": e.thresholds, "eer": e.eer, "min_dcf": e.stats.get("sv_min_dcf"),
        "osi_ier": e.stats.get("osi_ier"), "dev_csi_accuracy": e.stats.get("dev_csi_accuracy"), "path": str(path),
    }


def load_enrollment(args):
    from sec4sr_core.base.errors import Sec4srError
    from sec4sr_core.compose.enroll import DEFAULT_LENGTH_S, enrollment_path, load_or_enroll
    from sec4sr_core.compose.factories import check_device, load_model, resolve_dataset

    check_device(args.device)
    model = load_model(args.model, args.device)
    if model.output != "embedding":
        raise Sec4srError(f"model {model.name!r} is a closed-set classifier (CSI-NE): it has nothing to enroll")
    dataset = resolve_dataset(args.dataset)
    e = load_or_enroll(model, dataset, args.length_s or DEFAULT_LENGTH_S, refresh=args.refresh)
    return model, dataset, e, enrollment_path(model, dataset)


def run(args) -> int:
    model, dataset, e, path = load_enrollment(args)
    s = enrollment_summary(model, dataset, e, path)
    if args.json:
        print(json.dumps(s, indent=2))
        return 0
    print(f"{model.name}: enrolled {len(e.speakers)} speakers of {dataset.name} ({s['embedding_dim']}-d)")
    for key in ("sv", "osi"):
        if key in e.thresholds:
            print(f"  {key.upper():3s} threshold {e.thresholds[key]:.4f}  EER {100 * e.eer[key]:.2f}%")
    print(f"stored: {path}")
    return 0
