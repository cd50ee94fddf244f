"""The documentation builds with warnings as errors, and its generated reference is exactly the registry.

The build runs ``mkdocs build --strict`` in a subprocess (a fresh process reads the installed plugins' entry points,
as ``sec4sr list`` does); the hook ``scripts/gen_reference.py`` generates the reference pages during that build.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _gen():
    spec = importlib.util.spec_from_file_location("gen_reference", ROOT / "scripts" / "gen_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen = _gen()


def _run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd, timeout=600,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    if importlib.util.find_spec("mkdocs") is None:
        pytest.fail("mkdocs is not installed: it is part of the test extra (pip install -e '.[test]')")
    out = tmp_path_factory.mktemp("site")
    proc = _run("-m", "mkdocs", "build", "--strict", "--site-dir", str(out), "--config-file", str(ROOT / "mkdocs.yml"))
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout}\n{proc.stderr}"
    return out


def test_reference_lists_exactly_what_sec4sr_list_prints(site):
    listed = _run("-m", "sec4sr_core.cli", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    expected = json.loads(listed.stdout)
    generated = json.loads((site / "reference" / "components.json").read_text())
    key = lambda i: (i["kind"], i["name"], i["distribution"], i["summary"])  # noqa: E731
    assert sorted(map(key, generated)) == sorted(map(key, expected))
    assert generated == json.loads(json.dumps(expected, default=str))
    for item in expected:
        page = (site / "reference" / f"{item['kind']}s" / "index.html").read_text()
        assert f"<code>{item['name']}</code>" in page, f"{item['kind']} {item['name']} missing from its page"
        for param in item["params"]:
            assert f"<code>{param}</code>" in page


def test_guides_show_the_code_the_tests_install(site):
    guide = (site / "plugin-guide" / "index.html").read_text()
    for cls in ("class MuLaw(Defense)", "class RandomSign(Attack)", "class MFCCStats(SpeakerModel)",
                "example_defense = &quot;sec4sr_example_defense&quot;"):
        assert cls in guide, cls
    assert "--8&lt;--" not in guide
    configs = (site / "configs" / "index.html").read_text()
    assert "fakebob:max_iter=200" in configs
    rules = (site / "reference" / "contract-rules" / "index.html").read_text()
    from sec4sr_core.testing import RULES

    assert all(f"<code>{rule}</code>" in rules for rule in RULES)
    cli = (site / "reference" / "cli" / "index.html").read_text()
    from sec4sr_core.cli import build_parser

    commands = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction").choices
    assert all(f"sec4sr {name}" in cli for name in commands)


def test_missing_summaries_fail_and_missing_descriptions_warn():
    items = [
        {"kind": "defense", "name": "ok", "distribution": "d", "summary": "Fine.",
         "params": {"q": {"type": "integer", "default": 1, "description": "step in 16-bit units"}}},
        {"kind": "attack", "name": "silent", "distribution": "dist-a", "summary": "  ", "params": {}},
        {"kind": "defense", "name": "vague", "distribution": "dist-b", "summary": "Vague.",
         "params": {"k": {"type": "integer", "default": 3}}},
        {"kind": "preset", "name": "p", "distribution": "d", "summary": "A preset.", "params": {"k": 3}},
    ]
    errors, warnings = gen.problems(items)
    assert errors == ["attack 'silent' (dist-a) has no summary"]
    assert warnings == ["defense 'vague' (dist-b): parameter 'k' has no description (state its unit)"]


def test_a_component_without_summary_breaks_the_build(sec4sr_plugin, tmp_path):
    from mkdocs.exceptions import PluginError

    from sec4sr_core import Defense, hookimpl

    class Nameless(Defense):
        name = "nameless"

        def forward(self, x):
            return x

    class Plugin:
        @hookimpl
        def register_defenses(self, register):
            register(Nameless)

    sec4sr_plugin(Plugin(), name="nameless-plugin")
    config = {"docs_dir": str(ROOT / "docs")}
    with pytest.raises(PluginError, match="defense 'nameless' .* has no summary"):
        gen.on_files([], config)


def test_links_to_pages_not_in_the_checkout_become_text(tmp_path):
    (tmp_path / "studies.md").write_text("# here\n")
    config = {"docs_dir": str(tmp_path)}
    page = SimpleNamespace(file=SimpleNamespace(src_uri="guide.md"))
    md = "See [studies](studies.md), [cluster](cluster.md#ray) and [models](reference/models.md)."
    out = gen.on_page_markdown(md, page, config, None)
    assert out == "See [studies](studies.md), cluster and [models](reference/models.md)."
    deep = SimpleNamespace(file=SimpleNamespace(src_uri="reference/index.md"))
    assert gen.on_page_markdown("[a](attacks.md) [b](../attacks.md)", deep, config, None) == "[a](attacks.md) b"
    nav = [{"Home": "index.md"}, {"Components": [{"Cluster": "cluster.md"}, {"Studies": "studies.md"}]},
           {"Only missing": [{"Models": "models.md"}]}]
    assert gen._prune(nav, {"cluster.md", "models.md"}) == [{"Home": "index.md"},
                                                             {"Components": [{"Studies": "studies.md"}]}]


def test_includes_fail_loudly_on_a_missing_file():
    from mkdocs.exceptions import PluginError

    page = SimpleNamespace(file=SimpleNamespace(src_uri="x.md"))
    with pytest.raises(PluginError, match="no/such/file.py"):
        gen.on_page_markdown('```\n--8<-- "no/such/file.py"\n```', page, {"docs_dir": str(ROOT / "docs")}, None)


def test_script_mode_writes_the_same_pages(tmp_path):
    assert gen.main([str(tmp_path)]) == 0
    written = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()}
    assert written == set(gen.pages())


def test_example_study_config_is_valid():
    from sec4sr_core.base.params import parse_chain
    from sec4sr_core.plugins.manager import get_registry
    from sec4sr_core.study.runner import StudyConfig

    values = tomllib.loads((ROOT / "docs" / "examples" / "study.toml").read_text())
    config = StudyConfig(**values)
    reg = get_registry()
    for spec in config.attacks:
        reg.resolve("attack", spec)
    for chain in config.defenses:
        for part in parse_chain(chain):
            reg.resolve("defense", part)
    for m in config.metrics:
        reg.resolve("metric", m)


def test_getting_started_shows_the_makefile_demo_command():
    makefile = (ROOT / "Makefile").read_text()
    demo = re.search(r"^demo:.*\n\t\$\(BIN\)/(sec4sr run .*)$", makefile, re.M)
    assert demo, "Makefile has no demo target running sec4sr"
    page = (ROOT / "docs" / "getting-started.md").read_text()
    assert demo.group(1).strip() in page, "docs/getting-started.md no longer shows the demo command of the Makefile"
    assert "make test" in page and "make demo" in page
