"""The third-party example plugins under ``plugins/``, installed and uninstalled as an outside user would.

The examples are built into wheels with ``pip wheel --no-deps --no-build-isolation`` (offline, fast) from a copy of
their folder, and installed with ``pip install --no-deps`` into a throwaway environment layered on the project's
``.venv`` (its site-packages are added by a ``.pth`` file), so the project's own environment — shared with every
other test run — never changes. Everything is checked through the ``sec4sr`` CLI in subprocesses, because a
process reads the entry points once.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PLUGINS = ROOT / "plugins"
EXAMPLES = {
    "sec4sr-example-defense": ("defense", "mulaw"),
    "sec4sr-example-attack": ("attack", "random-sign"),
    "sec4sr-example-backbone": ("model", "mfcc-stats"),
}


class Env:
    """A throwaway environment that sees the project's packages; ``sec4sr(...)`` runs the CLI in it."""

    def __init__(self, path: Path, home: Path) -> None:
        self.path, self.home = path, home
        self.python = path / "bin" / "python"

    def run(self, *args: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
        full = {**os.environ, "SEC4SR_HOME": str(self.home), **(env or {})}
        proc = subprocess.run([str(self.python), *args], capture_output=True, text=True, env=full, timeout=300)
        if check and proc.returncode != 0:
            raise AssertionError(f"{args} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
        return proc

    def sec4sr(self, *args: str, **kw) -> subprocess.CompletedProcess:
        return self.run("-m", "sec4sr_core.cli", *args, **kw)

    def pip(self, *args: str) -> subprocess.CompletedProcess:
        return self.run("-m", "pip", "--disable-pip-version-check", "-q", *args)

    def listed(self, **kw) -> dict[tuple[str, str], dict]:
        return {(i["kind"], i["name"]): i for i in json.loads(self.sec4sr("list", "--json", **kw).stdout)}


def make_env(tmp: Path) -> Env:
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp / "env")], check=True)
    env = Env(tmp / "env", tmp / "home")
    purelib = subprocess.run([str(env.python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    base = sysconfig.get_paths()["purelib"]
    Path(purelib, "_sec4sr_project.pth").write_text(f"import site; site.addsitedir({base!r})\n")
    return env


def build_wheel(src: Path, tmp: Path) -> Path:
    """Copy ``src`` (as a fresh checkout would have it) and build its wheel without network or isolation."""
    work = tmp / "src" / src.name
    shutil.copytree(src, work, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    out = tmp / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--disable-pip-version-check", "-q", "--no-deps",
                    "--no-build-isolation", "-w", str(out), str(work)], check=True, capture_output=True)
    return next(out.glob(src.name.replace("-", "_") + "-*.whl"))


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> Env:
    return make_env(tmp_path_factory.mktemp("plugin-env"))


@pytest.fixture(scope="module")
def wheels(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("plugin-wheels")
    return {name: build_wheel(PLUGINS / name, tmp) for name in EXAMPLES}


def test_examples_install_run_and_uninstall(env, wheels):
    env.pip("install", "--no-deps", *map(str, wheels.values()))
    try:
        after = env.listed()
        for dist, key in EXAMPLES.items():
            assert key in after, f"{key} missing after installing {dist}"
            assert after[key]["distribution"] == dist
            assert after[key]["summary"]
        assert after[("preset", "mulaw-4")]["component"] == "mulaw"
        assert after[("defense", "mulaw")]["params"]["bits"]["default"] == 8
        # all three by name in one study: the example backbone, attack and defense, no other change
        out = env.sec4sr("run", "--model", "mfcc-stats", "--task", "csi-e", "--attack",
                         "random-sign:trials=4,epsilon=0.01", "--defense", "mulaw:bits=6", "--limit", "4",
                         "--batch-size", "4", "--metric", "linf", "--out", str(env.home.parent / "study"), "--json")
        summary = json.loads(out.stdout)
        cells = {(r["defense"], r["attack"]): r for r in summary["results"]}
        cell = cells[("mulaw:bits=6", "random-sign:trials=4,epsilon=0.01")]
        assert cell["n"] == 4 and cell["mean_queries"] >= 2
        assert cell["metrics"]["linf"] <= 0.01 + 1 / 32768
        assert set(summary["benign"]) == {"none", "mulaw:bits=6"}
        assert {"sec4sr-example-defense", "sec4sr-example-attack", "sec4sr-example-backbone"} <= set(summary["versions"])
    finally:
        env.pip("uninstall", "-y", *EXAMPLES)
    missing = env.sec4sr("run", "--defense", "mulaw", "--limit", "1", check=False)
    assert missing.returncode == 2 and "unknown defense 'mulaw'" in missing.stderr, missing.stderr


def write_dist(root: Path, dist: str, module: str, body: str, ep: str | None = None) -> Path:
    """A minimal plugin distribution written the way the author guide says."""
    src = root / dist
    (src / module).mkdir(parents=True)
    (src / "pyproject.toml").write_text(textwrap.dedent(f"""\
        [build-system]
        requires = ["setuptools>=64"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "{dist}"
        version = "0.0.1"
        dependencies = ["sec4sr"]
        [project.entry-points.sec4sr]
        {ep or module} = "{module}"
        [tool.setuptools]
        packages = ["{module}"]
        """))
    (src / module / "__init__.py").write_text(textwrap.dedent(body))
    return src


def test_broken_plugins_are_reported_and_filtered(env, tmp_path):
    raising = write_dist(tmp_path, "sec4sr-raises", "sec4sr_raises", """\
        raise RuntimeError("this plugin is broken on purpose")
        """)
    dup = write_dist(tmp_path, "sec4sr-dup-qt", "sec4sr_dup_qt", """\
        from sec4sr_core import Defense, hookimpl

        class OtherQT(Defense):
            \"\"\"Another defense that claims the name qt.\"\"\"
            name = "qt"
            def forward(self, x):
                return x

        @hookimpl
        def register_defenses(register):
            register(OtherQT)
        """)
    wheels = [build_wheel(raising, tmp_path), build_wheel(dup, tmp_path)]
    env.pip("install", "--no-deps", str(wheels[0]))
    try:
        plugins = env.sec4sr("plugins")
        line = next(l for l in plugins.stdout.splitlines() if l.startswith("sec4sr_raises"))
        assert "error" in line and "RuntimeError: this plugin is broken on purpose" in line
        listed = env.sec4sr("list")
        assert listed.returncode == 0 and "embedded" in listed.stdout
        # SEC4SR_PLUGINS restricts loading: builtins always, the rest only when named (entry point or distribution)
        only = env.listed(env={"SEC4SR_PLUGINS": "sec4sr-plugins-defenses"})
        kinds = {k for k, _ in only}
        assert ("defense", "qt") in only and ("attack", "pgd") not in only and "metric" in kinds
        env.pip("install", "--no-deps", str(wheels[1]))
        conflict = env.sec4sr("list", check=False)  # the later plugin is disabled, the tool keeps working
        assert conflict.returncode == 0 and "embedded" in conflict.stdout
        assert "duplicate defense name 'qt'" in conflict.stderr
        assert "sec4sr-plugins-defenses" in conflict.stderr and "sec4sr-dup-qt" in conflict.stderr
        line = next(x for x in env.sec4sr("plugins").stdout.splitlines() if x.startswith("sec4sr_dup_qt"))
        assert "disabled: duplicate defense name 'qt'" in line
    finally:
        env.pip("uninstall", "-y", "sec4sr-raises", "sec4sr-dup-qt")


def test_example_test_suites_follow_the_author_guide(env):
    """Each example's own tests, run as its author would (``pytest -p sec4sr_core.testing``), pass; the broken
    example's all fail, each naming the rules it breaks. One pytest process runs them all."""
    names = [*EXAMPLES, "sec4sr-example-broken"]
    proc = env.run("-m", "pytest", "-q", "-rf", "-p", "sec4sr_core.testing", "-p", "no:cacheprovider", "--rootdir",
                   str(PLUGINS), *(str(PLUGINS / n / "tests") for n in names),
                   env={"PYTHONPATH": os.pathsep.join(str(PLUGINS / n) for n in names)}, check=False)
    out = proc.stdout
    failed_lines = [line for line in out.splitlines() if line.startswith("FAILED ")]
    assert {n for n in names if any(f"/{n}/" in line for line in failed_lines)} == {"sec4sr-example-broken"}, out
    assert "5 failed" in out and "0 errors" not in out, out
    for rule in ("[defense.deterministic]", "[defense.differentiable]", "[defense.shape]", "[params.model]",
                 "[params.described]", "[attack.budget]", "[attack.queries]", "[attack.knowledge]", "[model.chain]",
                 "[model.batch]"):
        assert rule in out, f"{rule} not reported:\n{out}"
