"""The plugin mechanism: inline plugins for every hook, lazy registration by path, presets, duplicate names, broken
plugins, ``SEC4SR_PLUGINS``, and the run-lifecycle hooks.

Every hookspec of :mod:`sec4sr_core.base.hookspecs` must have a test here named ``test_hook_<hook name>``
(:func:`test_every_hook_has_a_test` fails otherwise), as datasette does for its hooks.
"""

from __future__ import annotations

import inspect
import json
import sys
import textwrap

import pytest
import torch

from sec4sr_core import hookimpl
from sec4sr_core.base import hookspecs
from sec4sr_core.base.errors import ParameterError, PluginError, UnknownComponentError
from sec4sr_core.base.presets import Preset
from sec4sr_core.plugins.manager import get_registry, pm, statuses
from sec4sr_core.sdk import Attack, AttackResult, Dataset, Knowledge, Metric, Utterance

from .helpers import Shift, ToyModel, inline_plugin, run_python, toy_system, toy_waves

HOOK_NAMES = sorted(name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction) if hasattr(fn, "sec4sr_spec"))


@pytest.mark.parametrize("hook", HOOK_NAMES)
def test_every_hook_has_a_test(hook):
    tests = [name for name in globals() if name.startswith("test_hook_")]
    assert any(t == f"test_hook_{hook}" or t.startswith(f"test_hook_{hook}_") for t in tests), (
        f"hook {hook!r} has no test named test_hook_{hook} in {__name__}"
    )


def test_hookspecs_are_the_ones_the_manager_knows():
    assert len(HOOK_NAMES) >= 8
    for name in HOOK_NAMES:
        assert getattr(pm.hook, name).spec is not None


# ----------------------------------------------------------------------------------------------------------------------
# Inline components, one per registration hook
# ----------------------------------------------------------------------------------------------------------------------


class InlineAttack(Attack):
    """Score-based toy attack: moves every sample by -epsilon·sign(x)."""

    name = "inline-attack"
    knowledge = Knowledge.SCORES

    def run(self, oracle, x, y, targeted=False):
        adv = (x - 0.01 * x.sign()).clamp(-1, 1)
        scores, dec = oracle.scores_and_decisions(adv)
        return AttackResult(adv, dec != y, oracle.queries.clone(), dec, {"scores": scores})


class InlineDefense(Shift):
    name = "inline-shift"


class InlineModel(ToyModel):
    name = "inline-toy"


class PeakRatio(Metric):
    """Peak of |adv| divided by peak of |benign| (unitless)."""

    name = "inline-peak-ratio"

    def compute(self, benign, adv):
        b = benign.abs().flatten(1).amax(1)
        a = adv.abs().flatten(1).amax(1)
        return (a / b).tolist()


class InlineDataset(Dataset):
    """Two speakers, fixed paths (never read in these tests)."""

    name = "inline-ds"

    def split(self, name):
        from pathlib import Path

        return [Utterance(Path(f"/nowhere/{s}_{i}.wav"), s, f"{s}_{i}") for s in ("a", "b") for i in range(3)
                if name == "enroll"]

    def split_names(self):
        return ["enroll"]


class Everything:
    """An inline plugin implementing every registration hook."""

    @hookimpl
    def register_attacks(self, register):
        register(InlineAttack)

    @hookimpl
    def register_defenses(self, register):
        register(InlineDefense)

    @hookimpl
    def register_models(self, register):
        register(InlineModel)

    @hookimpl
    def register_metrics(self, register):
        register(PeakRatio)

    @hookimpl
    def register_datasets(self, register):
        register(InlineDataset)

    @hookimpl
    def register_presets(self, register):
        register(Preset("inline-shift-big", "defense", "inline-shift", {"offset": 0.5}, "a big shift"))
        register(Preset("pgd-tiny", "attack", "pgd", {"steps": 1, "epsilon": 0.0005}))


@pytest.fixture
def everything():
    with inline_plugin(Everything(), "everything", distribution="sec4sr-test-everything") as p:
        yield p


def _entry(kind, name):
    return get_registry().entries[kind][name]


def test_hook_register_attacks(everything):
    entry = _entry("attack", "inline-attack")
    assert entry.distribution == "sec4sr-test-everything"
    attack = get_registry().build("attack", "inline-attack")
    system = toy_system()
    x = toy_waves(2)
    adv = attack(system, x, torch.tensor([0, 1]))
    assert adv.shape == x.shape
    assert attack.last_result.queries.tolist() == [1, 1]
    d = entry.as_dict()
    assert d["knowledge"] == "score-based" and d["summary"].startswith("Score-based toy attack")


def test_hook_register_defenses(everything):
    d = get_registry().build("defense", "inline-shift:offset=0.25")
    x = toy_waves(1)
    assert torch.allclose(d(x), x + 0.25)
    assert _entry("defense", "inline-shift").as_dict()["params"]["offset"]["default"] == 0.1
    with pytest.raises(ParameterError, match="offset"):
        get_registry().build("defense", "inline-shift:offset=big")


def test_hook_register_models(everything):
    m = get_registry().build("model", "inline-toy")
    assert isinstance(m, InlineModel) and m.embed(toy_waves(2)).shape == (2, 8)
    assert _entry("model", "inline-toy").as_dict()["levels"] == ["wave", "frames", "final"]


def test_hook_register_metrics(everything):
    metric = get_registry().build("metric", "inline-peak-ratio")
    x = toy_waves(2)
    assert metric.compute(x, 2 * x) == pytest.approx([2.0, 2.0])


def test_hook_register_datasets(everything):
    ds = get_registry().build("dataset", "inline-ds")
    assert ds.enrolled_speakers() == ["a", "b"] and len(ds.split("enroll")) == 6


def test_hook_register_presets(everything):
    reg = get_registry()
    d = reg.build("defense", "inline-shift-big")
    assert d.params.offset == 0.5
    # user overrides win over the preset's parameters; other preset parameters stay
    assert reg.build("defense", "inline-shift-big:offset=0.7").params.offset == 0.7
    d2 = reg.build("defense", "inline-shift-big:level=frames")
    assert (d2.params.offset, d2.level) == (0.5, "frames")
    # a preset of another distribution's component
    p = reg.build("attack", "pgd-tiny:steps=3")
    assert (p.params.steps, p.params.epsilon) == (3, 0.0005)
    assert reg.build("attack", "pgd-tiny", steps=4).params.steps == 4  # Python keyword overrides too
    with pytest.raises(ParameterError, match="steps"):
        reg.build("attack", "pgd-tiny:steps=-3")
    # a defense preset is not an attack
    with pytest.raises(UnknownComponentError, match="unknown attack 'inline-shift-big'"):
        reg.get("attack", "inline-shift-big")
    listed = reg.entries["preset"]["inline-shift-big"].as_dict()
    assert listed["component"] == "inline-shift" and listed["params"] == {"offset": 0.5}
    assert listed["distribution"] == "sec4sr-test-everything" and listed["summary"] == "a big shift"


def test_real_presets_merge_with_overrides():
    reg = get_registry()
    p = reg.build("attack", "pgd-10:epsilon=0.004")
    assert (p.params.steps, p.params.epsilon) == (10, 0.004)
    assert reg.build("defense", "qt-512").params.q == 512


def test_inline_plugin_is_gone_after_unregistering():
    with inline_plugin(Everything(), "everything-2"):
        assert "inline-attack" in get_registry().names("attack")
        assert any(s.name == "everything-2" and s.status == "loaded" for s in statuses())
    assert "inline-attack" not in get_registry().names("attack")
    assert all(s.name != "everything-2" for s in statuses())


def test_unknown_names_suggest_close_matches():
    reg = get_registry()
    with pytest.raises(UnknownComponentError, match=r"unknown attack 'pgf'; did you mean 'pgd'"):
        reg.get("attack", "pgf")
    with pytest.raises(UnknownComponentError, match=r"did you mean 'qt'"):
        reg.build("defense", "qtt:q=3")
    with pytest.raises(UnknownComponentError) as info:
        reg.get("model", "zzzzzzzzzz")
    assert "known:" in str(info.value) and "ge2e" in str(info.value)


# ----------------------------------------------------------------------------------------------------------------------
# Lazy registration by path
# ----------------------------------------------------------------------------------------------------------------------


LAZY_MODULE = '''
from pydantic import Field
from sec4sr_core.sdk.interfaces import Defense
from sec4sr_core.base.params import Params

class LazyParams(Params):
    gain: float = Field(2.0, description="gain (unitless)")

class LazyGain(Defense):
    """Multiply by gain."""
    name = "lazy-gain"
    Params = LazyParams

    def forward(self, x):
        return x * self.params.gain
'''


def test_lazy_registration_imports_only_when_used(tmp_path, monkeypatch):
    mod = "sec4sr_lazy_test_module"
    (tmp_path / f"{mod}.py").write_text(LAZY_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, mod, raising=False)

    class Lazy:
        @hookimpl
        def register_defenses(self, register):
            register(f"{mod}:LazyGain", name="lazy-gain", summary="Multiply by gain (lazy).")
            register("sec4sr_no_such_module_xyz:Thing", name="lazy-broken", summary="never importable")

    with inline_plugin(Lazy(), "lazy", distribution="sec4sr-test-lazy"):
        reg = get_registry()
        assert {"lazy-gain", "lazy-broken"} <= set(reg.names("defense"))
        entry = reg.entries["defense"]["lazy-gain"]
        assert isinstance(entry.target, str) and entry.summary == "Multiply by gain (lazy)."
        assert mod not in sys.modules  # registering and listing names imported nothing
        d = reg.build("defense", "lazy-gain:gain=3")
        assert mod in sys.modules and d.params.gain == 3.0
        assert torch.equal(d(torch.ones(1, 1, 4)), torch.full((1, 1, 4), 3.0))
        # a broken path fails only when used, naming the distribution and the path
        with pytest.raises(PluginError) as info:
            reg.build("defense", "lazy-broken")
        msg = str(info.value)
        assert "sec4sr-test-lazy" in msg and "sec4sr_no_such_module_xyz:Thing" in msg and "\n" not in msg
        assert "lazy-gain" in get_registry().names("defense")  # the rest keeps working


# ----------------------------------------------------------------------------------------------------------------------
# Conflicts and failures
# ----------------------------------------------------------------------------------------------------------------------


def _registers_defense(cls):
    class P:
        @hookimpl
        def register_defenses(self, register):
            register(cls)

    return P()


def test_duplicate_names_disable_the_later_plugin_naming_both_distributions():
    with inline_plugin(_registers_defense(InlineDefense), "dup-a", distribution="dist-alpha"):
        with inline_plugin(_registers_defense(InlineDefense), "dup-b", distribution="dist-beta"):
            reg = get_registry()  # no exception: the tool keeps working
            assert reg.entries["defense"]["inline-shift"].distribution == "dist-alpha"
            st = {s.name: s for s in statuses()}
            assert st["dup-a"].status == "loaded"
            assert st["dup-b"].status == "disabled"
            msg = st["dup-b"].error
            assert "duplicate defense name 'inline-shift'" in msg
            assert "dist-alpha" in msg and "dist-beta" in msg
        # the earlier plugin alone: healthy again
        assert {s.name: s.status for s in statuses()}["dup-a"] == "loaded"
    assert "inline-shift" not in get_registry().names("defense")  # both gone, registry healthy again


def test_duplicate_of_a_real_component_names_its_distribution():
    class FakeQT(Shift):
        name = "qt"

    with inline_plugin(_registers_defense(FakeQT), "fake-qt", distribution="dist-impostor"):
        st = {s.name: s for s in statuses()}
        assert st["fake-qt"].status == "disabled"
        assert "duplicate defense name 'qt'" in st["fake-qt"].error
        assert "sec4sr-plugins-defenses" in st["fake-qt"].error and "dist-impostor" in st["fake-qt"].error
        entry = get_registry().entries["defense"]["qt"]
        assert entry.distribution == "sec4sr-plugins-defenses" and entry.load() is not FakeQT


def test_a_raising_registration_hook_is_reported_and_the_rest_works():
    class Broken:
        @hookimpl
        def register_attacks(self, register):
            register(InlineAttack)
            raise RuntimeError("boom")

        @hookimpl
        def register_defenses(self, register):
            register(InlineDefense)

    class NoName:
        @hookimpl
        def register_metrics(self, register):
            register("somewhere:Thing")  # a path needs name=

    with inline_plugin(Broken(), "broken", distribution="sec4sr-test-broken"), inline_plugin(NoName(), "noname"):
        st = {s.name: s for s in statuses()}
        assert st["broken"].status == "error"
        assert st["broken"].error == "register_attacks raised RuntimeError: boom"
        assert st["noname"].status == "error" and "needs name=" in st["noname"].error
        reg = get_registry()
        assert "pgd" in reg.names("attack") and "qt" in reg.names("defense") and "ge2e" in reg.names("model")
        assert "inline-shift" in reg.names("defense")  # its other hook still registered
        assert all(s.status == "loaded" for s in statuses() if s.name in ("attacks", "defenses", "models"))


# ----------------------------------------------------------------------------------------------------------------------
# Entry points in a subprocess: SEC4SR_PLUGINS, a broken distribution, lazy imports
# ----------------------------------------------------------------------------------------------------------------------

PROBE = textwrap.dedent("""
    import json, sys
    from sec4sr_core.plugins.manager import get_registry, statuses
    st = {s.name: [s.distribution, s.status, s.error] for s in statuses()}
    reg = get_registry()
    names = {k: reg.names(k) for k in ("attack", "defense", "model", "metric", "dataset", "preset")}
    heavy = [m for m in ("sec4sr_plugins_attacks.pgd", "sec4sr_plugins_defenses.time_domain",
                         "sec4sr_plugins_models.ge2e", "sec4sr_core.builtins.datasets") if m in sys.modules]
    print(json.dumps({"status": st, "names": names, "heavy": heavy}))
""")


def _probe(env):
    proc = run_python(PROBE, env=env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_sec4sr_plugins_env_restricts_loading():
    none = _probe({"SEC4SR_PLUGINS": ""})
    assert none["status"]["builtins"][1] == "loaded"
    for ep in ("attacks", "defenses", "models"):
        assert none["status"][ep][1] == "skipped" and "SEC4SR_PLUGINS" in none["status"][ep][2]
    assert none["names"]["attack"] == [] and none["names"]["model"] == []
    assert {"embedded", "folder", "librispeech"} <= set(none["names"]["dataset"])  # the core's own builtins
    assert {"l2", "linf", "snr"} <= set(none["names"]["metric"])

    # by entry-point name and by distribution name
    some = _probe({"SEC4SR_PLUGINS": "attacks, sec4sr-plugins-defenses"})
    assert "pgd" in some["names"]["attack"] and "qt" in some["names"]["defense"]
    assert some["names"]["model"] == [] and some["status"]["models"][1] == "skipped"
    assert "pgd-10" in some["names"]["preset"]
    # listing registered everything by path: no plugin module with torch code was imported
    assert some["heavy"] == []


def test_a_broken_distribution_is_reported_and_the_tool_keeps_working(tmp_path):
    """A plugin whose import fails shows up in ``sec4sr plugins`` with its error; ``sec4sr list`` still works."""
    (tmp_path / "sec4sr_broken_plugin_xyz.py").write_text("raise ImportError('needs a library that is missing')\n")
    dist = tmp_path / "sec4sr_broken_plugin_xyz-0.3.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: sec4sr-broken-plugin-xyz\nVersion: 0.3\n")
    (dist / "entry_points.txt").write_text("[sec4sr]\nbroken = sec4sr_broken_plugin_xyz\n")
    # one interpreter, two commands (each subprocess costs seconds of imports)
    code = "from sec4sr_core.cli import main; a = main(['plugins', '--json']); b = main(['list', 'defenses', '--json']); " \
           "print('exit', a, b)"
    proc = run_python(code, env={"PYTHONPATH": str(tmp_path)})
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    decoder = json.JSONDecoder()
    doc, end = decoder.raw_decode(proc.stdout)
    listed, end2 = decoder.raw_decode(proc.stdout, end + 1)
    assert proc.stdout[end2:].split() == ["exit", "0", "0"]
    st = {p["name"]: p for p in doc["plugins"]}
    assert st["broken"]["status"] == "error"
    assert st["broken"]["distribution"] == "sec4sr-broken-plugin-xyz" and st["broken"]["version"] == "0.3"
    assert st["broken"]["error"] == "ImportError: needs a library that is missing"
    assert st["attacks"]["status"] == "loaded" and doc["error"] is None
    assert "qt" in {d["name"] for d in listed}


# ----------------------------------------------------------------------------------------------------------------------
# Run-lifecycle hooks during a tiny study
# ----------------------------------------------------------------------------------------------------------------------


class Collector:
    def __init__(self):
        self.rows = []
        self.summaries = []

    @hookimpl
    def sec4sr_result(self, row):
        self.rows.append(row)

    @hookimpl
    def sec4sr_run_finished(self, summary):
        self.summaries.append(summary)


@pytest.fixture(scope="module")
def collected(tmp_path_factory):
    from sec4sr_core.study.runner import Study, StudyConfig

    out = tmp_path_factory.mktemp("study")
    config = StudyConfig(attacks=["pgd:steps=1"], defenses=["qt:q=256"], limit=2, batch_size=2, out=out,
                         save_audio=False, metrics=["linf"])
    collector = Collector()
    with inline_plugin(collector, "collector"):
        summary = Study(config, progress=False).run()
    return collector, summary, config


def test_hook_sec4sr_result(collected):
    collector, _, config = collected
    rows = collector.rows
    # 2 utterances × (benign on 2 rows + the attack evaluated on 2 rows)
    assert len(rows) == 8
    benign = [r for r in rows if r["setting"] == "benign"]
    attacked = [r for r in rows if r["setting"] == "non-adaptive"]
    assert len(benign) == 4 and len(attacked) == 4
    assert {r["defense"] for r in rows} == {"none", "qt:q=256"}
    for r in attacked:
        assert r["attack"] == "pgd:steps=1" and r["queries"] > 0
        assert 0 < r["metrics"]["linf"] <= 0.002 + 1 / 32768
        assert r["seed"] == config.seed and "sec4sr" in r["versions"]
        assert len(r["scores"]) == 16 and r["success"] in (0, 1)


def test_hook_sec4sr_run_finished(collected):
    collector, summary, _ = collected
    assert collector.summaries == [summary]
    assert {(r["defense"], r["attack"]) for r in summary["results"]} == {("none", "pgd:steps=1"),
                                                                        ("qt:q=256", "pgd:steps=1")}
    assert all(r["n"] == 2 for r in summary["results"])
    assert "collector" not in {s.name for s in statuses()}  # unregistered after the run
