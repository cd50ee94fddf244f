"""``sec4sr channels --model M --attack SPEC [--eot-defense SPEC] [--eot N] [--channels C] [--limit K] [--out OUT]``:
robustness of adversarial examples over unseen simulated channels.

Crafts the attack plainly (as ``sec4sr run``) and with EOT over the channel defense (as ``sec4sr run --defense
channel --adaptive --eot N``) on the same trials, passes benign, plain and EOT examples through C unseen channels
(rooms and draws disjoint from crafting, :mod:`sec4sr_core.study.channels`) and prints the attack success over
channels with Wilson 95 % intervals; the document goes to ``<out>/channels.json``."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("channels", help="attack success over unseen simulated channels: plain vs channel-EOT")
    p.add_argument("--model", default="ge2e", help="backbone spec (default ge2e)")
    p.add_argument("--attack", required=True, help="attack spec or preset, e.g. pgd-10")
    p.add_argument("--eot-defense", default="channel", metavar="SPEC",
                   help="the randomized defense EOT crafts over (default channel)")
    p.add_argument("--eot", type=int, default=8, help="EOT draws per step (default 8)")
    p.add_argument("--channels", type=int, default=20, help="unseen evaluation channels (default 20)")
    p.add_argument("--channel", dest="channel_spec", metavar="SPEC",
                   help="spec of the evaluation channels (default: the --eot-defense spec)")
    from sec4sr_core.cli.commands.transfer import add_study_options

    add_study_options(p, "channels.json")
    p.set_defaults(func=run)


def run(args) -> int:
    from sec4sr_core.cli.commands.transfer import study_config
    from sec4sr_core.study.channels import channel_setting

    config = study_config(args)
    verbose = sys.stderr.isatty() and not args.json
    result = channel_setting(args.model, args.attack, config, args.eot_defense, args.eot, args.channels,
                             args.channel_spec, progress=(lambda msg: print(msg, file=sys.stderr)) if verbose else None)
    doc = result.as_dict()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "channels.json").write_text(json.dumps(doc, indent=2))
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(result.table())
        print(f"\nresults: {out / 'channels.json'}")
    return 0
