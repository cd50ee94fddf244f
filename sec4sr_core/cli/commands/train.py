"""``sec4sr train --model M [--dataset D]``: train a backbone and store it in the model store.

Neural backbones (audionet, xvector, ecapa) run the seeded loop of :mod:`sec4sr_core.study.training` with a checkpoint
per epoch (``--resume``, the default, continues an interrupted run); ivector is fitted by EM. ``--adversarial SPEC``
trains adversarially (a ``--ratio`` share of each batch replaced by untargeted examples of that attack, crafted
through the ``--defense`` chain when one is given) and ``--defense CHAIN`` puts a defense chain in the training
forward path; both are stored as separate variants, under the tags a study's ``advt`` rows look for
(:func:`sec4sr_core.sdk.variants.variant_tag`: ``--adversarial pgd:epsilon=0.002,steps=10 --defense feco-o-k`` is
the backbone of the row ``advt+feco-o-k``).
"""

from __future__ import annotations

import json
import sys


def register(sub) -> None:
    p = sub.add_parser("train", help="train a backbone (audionet, xvector, ecapa, ivector) into the model store")
    p.add_argument("--model", required=True, help="backbone spec, e.g. audionet or xvector:channels=256")
    p.add_argument("--dataset", default="embedded", help="dataset spec or folder path (default embedded)")
    p.add_argument("--epochs", type=int, help="epochs (default: the backbone's own)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float, help="Adam learning rate")
    p.add_argument("--crop", type=float, dest="crop_s", help="seconds per training example")
    p.add_argument("--min-crop", type=float, dest="min_crop_s",
                   help="shortest speech per example in seconds (the rest zero-padded, as evaluation pads)")
    p.add_argument("--aug-eps", type=float, default=0.0, help="noise augmentation bound (amplitude units)")
    p.add_argument("--resume", action=__import__("argparse").BooleanOptionalAction, default=True,
                   help="continue from the last epoch checkpoint (default) or start over")
    p.add_argument("--adversarial", metavar="SPEC", help="adversarial training with this attack, e.g. pgd:epsilon=0.002")
    p.add_argument("--ratio", type=float, default=0.5, help="share of each batch replaced by adversarial examples")
    p.add_argument("--eot", type=int, default=1, help="EOT draws when crafting against randomized defenses")
    p.add_argument("--defense", metavar="CHAIN", help="defense chain in the training forward path, e.g. qt:q=512")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's own; 1 is fastest on a "
                                               "machine shared with other jobs, where idle threads stall each op)")
    p.add_argument("--json", action="store_true", help="print the training summary as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from sec4sr_core.base.errors import ParameterError
    from sec4sr_core.sdk.variants import TrainingOptions
    from sec4sr_core.study.training import train_variant

    if args.threads is not None:
        if args.threads < 1:
            raise ParameterError(f"--threads must be at least 1, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)
    args.resume_hint = "run the same command again to resume from the last finished epoch"
    extra = {k: v for k, v in {"lr": args.lr, "batch_size": args.batch_size, "crop_s": args.crop_s,
                                 "min_crop_s": args.min_crop_s}.items()
             if v is not None}
    options = TrainingOptions.checked("sec4sr train", adversarial=args.adversarial, defense=args.defense,
                                      ratio=args.ratio, eot=args.eot, epochs=args.epochs)
    summary = train_variant(
        args.model, args.dataset, seed=args.seed, progress=not args.quiet and sys.stderr.isatty(),
        resume=args.resume, aug_eps=args.aug_eps, device=args.device, **options.as_kwargs(), **extra,
    )
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
        return 0
    if summary.get("up_to_date"):
        print(f"{summary['model']}: already trained ({summary['epochs']} epochs) — {summary['checkpoint']}")
    else:
        hist = summary.get("history") or []
        acc = summary.get("heldout_accuracy")
        line = f"{summary['model']}: trained in {summary['time_s']:.1f} s"
        if hist:
            line += f", {summary['epochs']} epochs, final loss {hist[-1]['loss']:.3f}"
        if acc is not None:
            line += f", held-out accuracy {100 * acc:.1f}%"
        print(line)
        print(f"checkpoint: {summary['checkpoint']}")
    return 0
