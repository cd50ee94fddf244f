"""Start-up: ``sec4sr --help``, ``--version``, ``plugins``, ``report`` and (from its cache) ``list`` import no torch.

Each command runs in a fresh interpreter with a meta-path watcher that records the stack of the first ``import
torch``, so a failure names the import that pulled it in. No wall-clock assertion: ``benchmarks/bench_startup.py``
measures the time. The listing cache (:mod:`sec4sr_core.cli.listing_cache`) is tested through a fake plugin module
written to ``tmp_path``: served again while nothing changed, recomputed when its module or a data file it reads
changes, never storing errors or rows computed from a module edited after the process imported it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sec4sr_core.study.config import StudyConfig
from sec4sr_core.study.store import ResultStore

#: runs ``sec4sr_core.cli.main(argv)`` and reports, as the last stderr line, its status, whether torch was imported
#: and the stack that imported it first
DRIVER = r"""
import json, sys

class _Watch:
    stack = None

    def find_spec(self, name, path=None, target=None):
        if name == "torch" and _Watch.stack is None:
            import traceback
            _Watch.stack = "".join(traceback.format_stack(limit=30)[:-1])
        return None

sys.meta_path.insert(0, _Watch())
from sec4sr_core.cli import main
try:
    rc = main(sys.argv[1:])
except SystemExit as exc:  # --help
    rc = exc.code
sys.stdout.flush()
sys.stderr.write("\n@@startup " + json.dumps({"rc": rc, "torch": "torch" in sys.modules, "stack": _Watch.stack}) + "\n")
"""


def run_main(*argv: str, env: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess, dict]:
    proc = subprocess.run([sys.executable, "-c", DRIVER, *argv], capture_output=True, text=True, timeout=300, check=False,
                          env={**os.environ, **(env or {})})
    marker = [line for line in proc.stderr.splitlines() if line.startswith("@@startup ")]
    assert marker, f"sec4sr {' '.join(argv)} did not finish: {proc.stderr[-2000:]}"
    return proc, json.loads(marker[-1][len("@@startup "):])


def assert_no_torch(argv: tuple[str, ...], result: dict) -> None:
    assert not result["torch"], f"`sec4sr {' '.join(argv)}` imported torch, first here:\n{result['stack']}"


def tiny_store(out: Path) -> Path:
    """A finished one-cell study (ge2e, pgd-10 against the undefended and a qt row, 4 utterances each), written
    straight through :class:`ResultStore` — no model, no torch."""
    config = StudyConfig(name="tiny study", attacks=["pgd-10"], defenses=["qt:q=512"], out=out)
    rows = []
    for defense in ("none", "qt:q=512"):
        for setting, attack in (("benign", ""), ("non-adaptive", "pgd-10")):
            cell = f"ge2e|csi-e|{defense}|{attack}|{setting}"
            for i in range(4):
                correct = int(setting == "benign" or i % 2 == 0)
                rows.append({
                    "system": "ge2e", "task": "csi-e", "defense": defense, "attack": attack, "setting": setting,
                    "utterance": f"spk{i % 2}/u{i}", "speaker": f"spk{i % 2}", "label": i % 2,
                    "decision": i % 2 if correct else 1 - i % 2, "correct": correct,
                    "success": None if setting == "benign" else 1 - correct, "queries": 10, "time_s": 0.01,
                    "metrics": {} if setting == "benign" else {"linf": 0.002, "snr": 31.5}, "warnings": [],
                    "seed": 0, "versions": {"sec4sr": "0.1.0"}, "cell": cell, "unit": f"{cell}|unit0",
                })
    with ResultStore(out / "results.sqlite") as store:
        store.set_meta("config", config.model_dump(mode="json"))
        store.add_rows(rows)
    return out


@pytest.mark.parametrize("argv", [("--help",), ("--version",), ("plugins",), ("plugins", "--json")],
                         ids=lambda a: " ".join(a))
def test_command_does_not_import_torch(argv):
    proc, result = run_main(*argv)
    assert result["rc"] == 0, proc.stderr
    assert proc.stdout.strip()
    assert_no_torch(argv, result)


@pytest.mark.parametrize("fmt", ["md", "csv", "html"])
def test_report_does_not_import_torch(tmp_path, fmt):
    out = tiny_store(tmp_path / "study")
    argv = ("report", str(out), "--format", fmt)
    proc, result = run_main(*argv)
    assert result["rc"] == 0, proc.stderr
    assert_no_torch(argv, result)
    if fmt == "md":
        assert "# tiny study" in proc.stdout and "| none | 100.0 | 50.0 | 66.7 |" in proc.stdout
    elif fmt == "csv":
        assert proc.stdout.splitlines()[0].startswith("system,task,defense,attack,setting")
    else:
        assert "<h1>tiny study</h1>" in (out / "report.html").read_text()


def test_list_is_served_from_its_cache_without_torch(tmp_path, monkeypatch, capsys):
    """The first ``list`` describes every component (importing the plugins, so torch); the next ones print the
    same JSON and the same table from the cache, without importing torch."""
    env = {"SEC4SR_HOME": str(tmp_path / "home")}
    cold, _ = run_main("list", env=env)
    assert cold.returncode == 0, cold.stderr
    time.sleep(1.1)  # nothing changed after the process that fills the cache started (its clock is whole seconds)
    cold_json, first = run_main("list", "--json", env=env)
    if first["torch"]:  # the first run could not store (a file of the checkout changed while it ran): once more
        cold_json, first = run_main("list", "--json", env=env)
    warm_json, result = run_main("list", "--json", env=env)
    assert_no_torch(("list", "--json"), result)
    warm_text, result = run_main("list", env=env)
    assert_no_torch(("list",), result)
    assert warm_text.stdout == cold.stdout
    # the content is the one computed from the classes, without any cache
    monkeypatch.setenv("SEC4SR_LIST_CACHE", "0")
    from sec4sr_core.cli import main

    assert main(["list", "--json"]) == 0
    live = capsys.readouterr().out
    assert warm_json.stdout == cold_json.stdout == live
    assert {"kind": "attack", "name": "pgd"}.items() <= next(
        i for i in json.loads(live) if i["name"] == "pgd" and i["kind"] == "attack").items()


# -- the cache itself, on a fake plugin --------------------------------------------------------------------------
CACHE_DRIVER = r"""
import json, sys
from sec4sr_core.plugins.registry import Entry
from sec4sr_core.cli.listing_cache import describe_entries

calls = []

def describe(entry):
    calls.append(entry.name)
    try:
        return entry.as_dict()
    except Exception as exc:
        return {"name": entry.name, "kind": entry.kind, "distribution": entry.distribution, "summary": "",
                "params": {}, "error": str(exc)}

if len(sys.argv) > 1:  # edit the module after importing it, before describing
    import fakeplug_s4.comp
    path = fakeplug_s4.comp.__file__
    with open(path, "a") as fh:
        fh.write(sys.argv[1])

entries = [Entry("thing", "attack", "fake-dist", "fakeplug_s4.comp:Thing", "A thing."),
           Entry("broken", "attack", "fake-dist", "fakeplug_s4.missing:Nope", "Broken.")]
rows = describe_entries(entries, describe)
print(json.dumps({"calls": calls, "rows": repr(rows), "torch": "torch" in sys.modules}))
"""

COMP = '''
import json
from pathlib import Path

from pydantic import Field

from sec4sr_core.base.params import Params

DEFAULTS = json.loads(Path(__file__).with_name("defaults.json").read_text())


class Thing:
    """A thing."""

    name = "thing"
    knowledge = "white-box"

    class Params(Params):
        epsilon: float = Field(DEFAULTS["epsilon"], description="L-inf bound in [-1, 1] amplitude units")
        band: tuple[int, int] = Field((300, 3400), description="pass band in Hz")
'''


@pytest.fixture
def fake_plugin(tmp_path):
    root = tmp_path / "site"
    pkg = root / "fakeplug_s4"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "comp.py").write_text(COMP)
    (pkg / "defaults.json").write_text(json.dumps({"epsilon": 0.002}))
    env = {**os.environ, "PYTHONPATH": str(root), "SEC4SR_HOME": str(tmp_path / "home")}
    env.pop("SEC4SR_LIST_CACHE", None)

    def describe(*extra: str, **more_env: str) -> dict:
        time.sleep(1.1)  # the files are older than the process (its start time is known to whole seconds)
        proc = subprocess.run([sys.executable, "-c", CACHE_DRIVER, *extra], capture_output=True, text=True,
                              timeout=120, check=False, env={**env, **more_env})
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout.splitlines()[-1])

    return pkg, tmp_path / "home" / "cache", describe


def test_cache_serves_rows_until_a_dependency_changes(fake_plugin):
    pkg, cache, describe = fake_plugin
    first = describe()
    assert first["calls"] == ["thing", "broken"]
    assert "(300, 3400)" in first["rows"] and "'epsilon'" in first["rows"] and "0.002" in first["rows"]
    assert len(list(cache.glob("listing-*.json"))) == 1
    again = describe()
    assert again["calls"] == ["broken"], "a stored row is served again; an error row is never stored"
    assert again["rows"] == first["rows"], "a served row is identical to the computed one (tuples stay tuples)"
    assert not again["torch"]

    (pkg / "defaults.json").write_text(json.dumps({"epsilon": 0.004}))  # a data file read at import time
    changed = describe()
    assert changed["calls"] == ["thing", "broken"] and "0.004" in changed["rows"]

    with open(pkg / "comp.py", "a") as fh:
        fh.write('        steps: int = Field(10, description="iterations")\n')
    edited = describe()
    assert edited["calls"] == ["thing", "broken"] and "'steps'" in edited["rows"]
    assert describe()["calls"] == ["broken"]

    assert describe(SEC4SR_LIST_CACHE="0")["calls"] == ["thing", "broken"]


def test_a_corrupt_cache_file_is_recomputed(fake_plugin):
    _, cache, describe = fake_plugin
    describe()
    (path,) = cache.glob("listing-*.json")
    path.write_text('{"format": 1, "rows": ')
    assert describe()["calls"] == ["thing", "broken"]
    assert describe()["calls"] == ["broken"]


def test_a_row_from_a_module_edited_after_its_import_is_not_stored(fake_plugin):
    """The process imports the module, the file changes, then the (old) class is described: that row must not be
    stored under the new file's fingerprint."""
    _, _, describe = fake_plugin
    stale = describe("\n# edited after import\n")
    assert stale["calls"] == ["thing", "broken"]
    assert describe()["calls"] == ["thing", "broken"], "the stale row was stored"
    assert describe()["calls"] == ["broken"]
