"""``sec4sr threshold --model M [--dataset D]``: the SV and OSI thresholds at the EER on held-out genuine (dev) and
imposter (imposter-dev) trials, stored with the enrollment (never copied from stdout), with minDCF (P_target
0.01), the OSI identification error rate (genuine trials accepted as the wrong speaker) and the dev CSI accuracy."""

from __future__ import annotations

import json


def register(sub) -> None:
    p = sub.add_parser("threshold", help="choose and store SV/OSI thresholds at the EER; report EER, minDCF, IER")
    p.add_argument("--model", required=True, help="backbone spec")
    p.add_argument("--dataset", default="embedded", help="dataset spec or folder path (default embedded)")
    p.add_argument("--length", type=float, dest="length_s", help="seconds per utterance (default 3)")
    p.add_argument("--refresh", action="store_true", help="re-enroll and recompute the thresholds")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    from sec4sr_core.base.errors import Sec4srError
    from sec4sr_core.cli.commands.enroll import enrollment_summary, load_enrollment

    model, dataset, e, path = load_enrollment(args)
    if not e.thresholds:
        raise Sec4srError(f"dataset {dataset.name!r} has no dev and imposter-dev trials to choose thresholds on")
    s = enrollment_summary(model, dataset, e, path)
    s.pop("speakers")
    if args.json:
        print(json.dumps(s, indent=2))
        return 0
    print(f"{model.name} on {dataset.name}: thresholds at the EER (stored with the enrollment)")
    if "sv" in e.thresholds:
        print(f"  SV   threshold {e.thresholds['sv']:.4f}  EER {100 * e.eer['sv']:.2f}%  "
              f"minDCF(0.01) {s.get('min_dcf', float('nan')):.4f}")
    if "osi" in e.thresholds:
        print(f"  OSI  threshold {e.thresholds['osi']:.4f}  EER {100 * e.eer['osi']:.2f}%  "
              f"IER {100 * s.get('osi_ier', float('nan')):.2f}%")
    if "dev_csi_accuracy" in s:
        print(f"  CSI accuracy on dev {100 * s['dev_csi_accuracy']:.1f}%")
    print(f"stored: {path}")
    return 0
