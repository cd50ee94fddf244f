"""``sec4sr list [KIND] [--json]``: registered components with their distribution, summary and parameters."""

from __future__ import annotations

import json

from sec4sr_core.base.kinds import KINDS

PLURAL = {k + "s": k for k in KINDS}


def register(sub) -> None:
    p = sub.add_parser("list", help="list registered attacks, defenses, models, metrics, datasets and presets")
    p.add_argument("kind", nargs="?", choices=sorted(PLURAL) + list(KINDS), help="only this kind")
    p.add_argument("--json", action="store_true", help="print a JSON array")
    p.set_defaults(func=run)


def run(args) -> int:
    from sec4sr_core.cli.listing_cache import describe_entries
    from sec4sr_core.plugins.manager import get_registry

    reg = get_registry()
    kinds = [PLURAL.get(args.kind, args.kind)] if args.kind else list(KINDS)
    entries = [reg.entries[k][n] for k in kinds for n in reg.names(k)]
    if args.kind and kinds != ["preset"]:
        # `list defenses` also shows the presets that configure a defense (feco-o-k, qt-512, ...)
        entries += [e for n, e in sorted(reg.entries["preset"].items()) if _preset_kind(e) in kinds]
    items = describe_entries(entries, describe)
    if args.json:
        print(json.dumps(items, indent=2, default=str))
        return 0
    for kind in kinds:
        rows = [i for i in items if i["kind"] == kind]
        if not rows:
            continue
        print(f"{kind}s:")
        width = max(len(r["name"]) for r in rows)
        for r in rows:
            params = ", ".join(
                f"{k}={v.get('default')!r}" if isinstance(v, dict) else f"{k}={v!r}" for k, v in r["params"].items()
            )
            if r.get("error"):
                print(f"  {r['name']:<{width}}  ERROR: {r['error']}  [{r['distribution']}]")
                continue
            print(f"  {r['name']:<{width}}  {r['summary']}  [{r['distribution']}]")
            if params:
                print(f"  {'':<{width}}    params: {params}")
    return 0


def _preset_kind(entry) -> str | None:
    """The kind a preset configures (None when its entry cannot be loaded: shown under ``presets``)."""
    try:
        return getattr(entry.load(), "kind", None)
    except Exception:  # noqa: BLE001
        return None


def describe(entry) -> dict:
    """``entry.as_dict()``, or, for a component that fails to load or to describe itself, a row carrying the error
    and its distribution (reported by ``sec4sr plugins`` too) so one broken component never hides the others."""
    from sec4sr_core.base.errors import PluginError
    from sec4sr_core.plugins.manager import mark_component_error

    try:
        return entry.as_dict()
    except Exception as exc:  # noqa: BLE001 - a broken plugin must not break the listing
        if isinstance(exc, PluginError):
            message = str(exc)
        else:
            detail = " ".join(str(exc).split())
            message = f"{entry.kind} {entry.name!r} from {entry.distribution} failed to describe itself: " \
                      f"{type(exc).__name__}: {detail}"
        mark_component_error(entry.distribution, message)
        return {"name": entry.name, "kind": entry.kind, "distribution": entry.distribution,
                "summary": entry.summary_hint or "", "params": {}, "error": message}
