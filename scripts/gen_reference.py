"""Generate the reference pages of the docs from the live registry, the CLI parser and the code's own tables.

Two ways to run it:

* as a **MkDocs hook** (``hooks: [scripts/gen_reference.py]`` in ``mkdocs.yml``): at build time it adds the pages
  under ``reference/`` as generated files (nothing is written into ``docs/``), so the site lists exactly what
  ``sec4sr list --json`` lists in the environment that builds it. The build fails when a component has no summary
  and (with ``--strict``) warns when a parameter has no description. The hook also expands ``--8<-- "path"`` lines
  into the file at that path (relative to the repository root), so code shown in the guides is the code that runs.
* as a **script**: ``python scripts/gen_reference.py OUTDIR`` writes the same pages (and ``components.json``).

Pages written by other parts of the project (``OPTIONAL_PAGES``) may be missing from a checkout: nav entries and
links to a missing one are dropped with an info message instead of breaking the strict build.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
KIND_TITLES = {
    "attack": "Attacks", "defense": "Defenses", "model": "Models", "metric": "Metrics", "dataset": "Datasets",
    "preset": "Presets",
}
#: pages other areas of the project write; linked from the nav, but a checkout may not have them yet
OPTIONAL_PAGES = ("models.md", "defenses.md", "attacks.md", "studies.md", "corpus.md", "cluster.md")

log = logging.getLogger("mkdocs.plugins.sec4sr_reference")


# ---------------------------------------------------------------------------------------------------------------
# Collecting
# ---------------------------------------------------------------------------------------------------------------


def collect() -> list[dict[str, Any]]:
    """Every registered component as ``sec4sr list --json`` prints it (same code path, same order)."""
    from sec4sr_core.plugins.manager import get_registry
    from sec4sr_core.plugins.registry import KINDS

    reg = get_registry()
    return [reg.entries[k][n].as_dict() for k in KINDS for n in reg.names(k)]


def problems(items: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """(errors, warnings): components without a summary; parameters without a description."""
    errors, warnings = [], []
    for i in items:
        if i.get("error"):
            errors.append(f"{i['kind']} {i['name']!r} ({i['distribution']}) does not load: {i['error']}")
            continue
        if not str(i.get("summary") or "").strip():
            errors.append(f"{i['kind']} {i['name']!r} ({i['distribution']}) has no summary")
        if i["kind"] == "preset":
            continue
        for field, info in (i.get("params") or {}).items():
            if isinstance(info, dict) and not str(info.get("description") or "").strip():
                warnings.append(f"{i['kind']} {i['name']!r} ({i['distribution']}): parameter {field!r} has no "
                                f"description (state its unit)")
    return errors, warnings


# ---------------------------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------------------------


def _cell(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return text.replace("|", "\\|").replace("\n", " ")


def _type(info: dict[str, Any]) -> str:
    if "enum" in info:
        return " \\| ".join(json.dumps(v) for v in info["enum"])
    if "type" in info:
        return str(info["type"])
    if "anyOf" in info:
        parts = []
        for opt in info["anyOf"]:
            parts.append(" \\| ".join(json.dumps(v) for v in opt["enum"]) if "enum" in opt else str(opt.get("type", "?")))
        return " or ".join(parts)
    return "any"


def _bounds(info: dict[str, Any]) -> str:
    out = []
    for opt in info.get("anyOf", [info]):
        for key, sym in (("minimum", "≥"), ("exclusiveMinimum", ">"), ("maximum", "≤"), ("exclusiveMaximum", "<")):
            if key in opt:
                out.append(f"{sym} {opt[key]}")
    return ", ".join(out)


def render_component(item: dict[str, Any]) -> str:
    lines = [f"### `{item['name']}`", "", item["summary"], "", f"*Distribution:* `{item['distribution']}`"]
    facts = []
    for key in ("knowledge", "level", "differentiable", "randomized", "levels", "output", "tasks"):
        if key in item and item[key] not in (None, "", []):
            v = item[key]
            facts.append(f"*{key}:* `{', '.join(map(str, v)) if isinstance(v, list) else v}`")
    if item["kind"] == "preset":
        facts.append(f"*configures:* {item['component_kind']} `{item['component']}`")
    if facts:
        lines += ["", " · ".join(facts)]
    params = item.get("params") or {}
    if item["kind"] == "preset":
        if params:
            lines += ["", "| parameter | value |", "|---|---|"]
            lines += [f"| `{k}` | `{_cell(v)}` |" for k, v in params.items()]
    elif params:
        lines += ["", "| parameter | type | default | bounds | description |", "|---|---|---|---|---|"]
        for field, info in params.items():
            default = "*required*" if info.get("required") else f"`{_cell(info.get('default'))}`"
            lines.append(f"| `{field}` | {_type(info)} | {default} | {_bounds(info)} | "
                         f"{_cell(info.get('description', ''))} |")
    else:
        lines += ["", "No parameters."]
    return "\n".join(lines) + "\n"


def render_kind(kind: str, items: list[dict[str, Any]]) -> str:
    rows = [i for i in items if i["kind"] == kind]
    title = KIND_TITLES[kind]
    head = [f"# {title}", "",
            f"*Generated from the registry when the docs were built: the {len(rows)} {title.lower()} that "
            f"`sec4sr list {kind}s` lists in that environment.*", ""]
    if not rows:
        return "\n".join(head + ["None registered.", ""])
    head += ["| name | summary | distribution |", "|---|---|---|"]
    head += [f"| [`{r['name']}`](#{_anchor(r['name'])}) | {_cell(r['summary'])} | `{r['distribution']}` |" for r in rows]
    return "\n".join(head) + "\n\n" + "\n".join(render_component(r) for r in rows)


def _anchor(name: str) -> str:
    return re.sub(r"[^a-z0-9_-]", "", name.lower().replace(" ", "-").replace(".", ""))


def render_index(items: list[dict[str, Any]]) -> str:
    lines = ["# Reference", "",
             "Generated at build time from the code, so it cannot drift from it:", ""]
    for kind, title in KIND_TITLES.items():
        n = sum(1 for i in items if i["kind"] == kind)
        lines.append(f"- [{title}]({kind}s.md): {n} registered")
    dists = sorted({i["distribution"] for i in items})
    lines += ["- [Command line](cli.md): every sub-command's options, from the argument parser",
              "- [Study config](study-config.md): the fields of a study (TOML or flags)",
              "- [Result store](results.md): the columns of `results.sqlite`",
              "- [Contract rules](contract-rules.md): what the contract-test kit checks", "",
              f"Distributions that provided components: {', '.join(f'`{d}`' for d in dists)}.",
              "The machine-readable list is [components.json](components.json) (the output of `sec4sr list --json`).",
              ""]
    return "\n".join(lines)


def render_cli() -> str:
    import argparse

    from sec4sr_core.cli import build_parser

    parser = build_parser()
    parser.prog = "sec4sr"
    lines = ["# Command line", "", "*Generated from the argument parser (`sec4sr COMMAND --help`).*", "",
             "```text", parser.format_help().rstrip(), "```", ""]
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))  # noqa: SLF001
    helps = {a.dest: a.help for a in subs._choices_actions}  # noqa: SLF001
    for name in sorted(subs.choices):
        sub = subs.choices[name]
        lines += [f"## `sec4sr {name}`", "", helps.get(name) or "", "", "```text", sub.format_help().rstrip(), "```", ""]
    return "\n".join(lines)


def render_study_config() -> str:
    from sec4sr_core.study.runner import StudyConfig

    lines = ["# Study config", "",
             "*Generated from `sec4sr_core.study.runner.StudyConfig`.* A study is a TOML file of these keys "
             "(`sec4sr run study.toml`); every command-line flag of `sec4sr run` overrides the key of the same name.",
             "", "| key | type | default | description |", "|---|---|---|---|"]
    schema = StudyConfig.model_json_schema()
    props = schema.get("properties", {})
    for field, info in StudyConfig.model_fields.items():
        prop = props.get(field, {})
        if info.is_required():
            default = "*required*"
        else:
            value = info.get_default(call_default_factory=True)
            default = f"`{_cell(value if not isinstance(value, Path) else str(value))}`"
            if hasattr(value, "value"):
                default = f"`{value.value}`"
        typ = _type(prop) if "$ref" not in prop else prop["$ref"].rsplit("/", 1)[-1]
        if prop.get("type") == "array":
            items = prop.get("items", {})
            typ = f"list of {_type(items) if '$ref' not in items else items['$ref'].rsplit('/', 1)[-1]}"
        lines.append(f"| `{field}` | {typ} | {default} | {_cell(info.description or '')} |")
    return "\n".join(lines) + "\n"


def render_results() -> str:
    from sec4sr_core.study import store

    lines = ["# Result store", "",
             "*Generated from `sec4sr_core.study.store.SCHEMA`.* Every study writes `<out>/results.sqlite`; one row per "
             "(system, task, defense, attack, setting, utterance). Benign evaluations have `attack = ''` and "
             "`setting = 'benign'`. JSON columns hold JSON text.", ""]
    for table, body in re.findall(r"CREATE TABLE IF NOT EXISTS (\w+) \((.*?)\);", store.SCHEMA, re.S):
        lines += [f"## `{table}`", "", "| column | SQL type and constraints |", "|---|---|"]
        for raw in re.split(r",\s*(?![^()]*\))", body.strip()):
            raw = " ".join(raw.split())
            if not raw:
                continue
            if raw.upper().startswith(("UNIQUE", "PRIMARY KEY (")):
                lines.append(f"| *(table)* | `{raw}` |")
                continue
            col, _, rest = raw.partition(" ")
            lines.append(f"| `{col}` | `{rest}` |")
        lines.append("")
    return "\n".join(lines)


def render_rules() -> str:
    from sec4sr_core.testing import RULES

    lines = ["# Contract rules", "",
             "*Generated from `sec4sr_core.testing.RULES`.* Every violation message of the contract-test kit starts "
             "with the rule's id in brackets.", "", "| rule | requirement |", "|---|---|"]
    lines += [f"| `{rule}` | {_cell(text)} |" for rule, text in RULES.items()]
    return "\n".join(lines) + "\n"


def pages(items: list[dict[str, Any]] | None = None) -> dict[str, str]:
    """Every generated page: path under the docs root -> content."""
    items = collect() if items is None else items
    out = {"reference/index.md": render_index(items)}
    for kind in KIND_TITLES:
        out[f"reference/{kind}s.md"] = render_kind(kind, items)
    out["reference/cli.md"] = render_cli()
    out["reference/study-config.md"] = render_study_config()
    out["reference/results.md"] = render_results()
    out["reference/contract-rules.md"] = render_rules()
    out["reference/components.json"] = json.dumps(items, indent=2, default=str) + "\n"
    return out


# ---------------------------------------------------------------------------------------------------------------
# MkDocs hook
# ---------------------------------------------------------------------------------------------------------------

_INCLUDE = re.compile(r'^(?P<indent>[ \t]*)--8<-- "(?P<path>[^"]+)"[ \t]*$', re.M)


def _missing_optional(config: Any) -> set[str]:
    docs = Path(config["docs_dir"])
    return {p for p in OPTIONAL_PAGES if not (docs / p).exists()}


def _prune(nav: Any, missing: set[str]) -> Any:
    if isinstance(nav, list):
        kept = [_prune(n, missing) for n in nav]
        return [n for n in kept if n not in (None, [], {})]
    if isinstance(nav, dict):
        out = {k: _prune(v, missing) for k, v in nav.items()}
        return {k: v for k, v in out.items() if v not in (None, [], {})} or None
    if isinstance(nav, str) and nav in missing:
        return None
    return nav


def on_config(config: Any) -> Any:
    missing = _missing_optional(config)
    if missing and config.get("nav"):
        for page in sorted(missing):
            log.info("sec4sr: %s is not in this checkout yet; left out of the nav", page)
        config["nav"] = _prune(config["nav"], missing)
    return config


def on_files(files: Any, config: Any) -> Any:
    from mkdocs.exceptions import PluginError
    from mkdocs.structure.files import File

    from sec4sr_core.base.errors import Sec4srError

    try:
        items = collect()
    except Sec4srError as exc:
        raise PluginError(f"sec4sr reference: the registry does not load (`sec4sr list` fails too): {exc}") from None
    errors, warnings = problems(items)
    if errors:
        raise PluginError("sec4sr reference: every public component needs a summary: " + "; ".join(errors))
    for w in warnings:
        log.warning("sec4sr reference: %s", w)
    for path, content in pages(items).items():
        files.append(File.generated(config, path, content=content))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    from mkdocs.exceptions import PluginError

    def include(match: re.Match) -> str:
        path = ROOT / match["path"]
        if not path.is_file():
            raise PluginError(f"{page.file.src_uri}: included file {match['path']} does not exist")
        text = path.read_text().rstrip("\n")
        return "\n".join(match["indent"] + line if line else line for line in text.splitlines())

    markdown = _INCLUDE.sub(include, markdown)
    missing = _missing_optional(config)
    if missing:
        names = "|".join(re.escape(p) for p in sorted(missing))
        up = re.escape("../" * page.file.src_uri.count("/"))  # the docs root, seen from this page
        pattern = re.compile(r"\[([^\]]+)\]\(" + up + r"(?:" + names + r")(?:#[^)]*)?\)")
        if pattern.search(markdown):
            gone = sorted({m.group(0).split("(")[-1].rstrip(")") for m in pattern.finditer(markdown)})
            log.info("sec4sr: %s links to pages not in this checkout yet (%s); shown as text",
                     page.file.src_uri, ", ".join(gone))
            markdown = pattern.sub(r"\1", markdown)
    return markdown


# ---------------------------------------------------------------------------------------------------------------
# Script
# ---------------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python scripts/gen_reference.py OUTDIR", file=sys.stderr)
        return 2
    out = Path(argv[0])
    items = collect()
    errors, warnings = problems(items)
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    if errors:
        for e in errors:
            print(f"error: {e}", file=sys.stderr)
        return 1
    generated = pages(items)
    for path, content in generated.items():
        target = out / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
    print(f"wrote {len(generated)} files under {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
