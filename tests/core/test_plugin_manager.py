"""The plugin manager as an object: built-ins in code, ``check_pending`` for misspelled hooks, duplicate names that
disable only the later plugin, ``SEC4SR_PLUGINS`` hiding a plugin, and failures that name their distribution.

Most tests use an isolated :class:`PluginManager` (``entry_points=False``: the core's built-ins only) with inline
plugins, as llm and tox test theirs; the CLI tests go through the default manager and ``sec4sr_core.cli.main``; one
test installs real entry points (a ``.dist-info`` on ``PYTHONPATH``) and runs the CLI in a subprocess.
"""

from __future__ import annotations

import importlib
import json
import logging
import sys
import textwrap

import pytest

from sec4sr_core import hookimpl
from sec4sr_core.base.errors import ParameterError, PluginError, UnknownComponentError
from sec4sr_core.base.presets import Preset
from sec4sr_core.cli import main
from sec4sr_core.plugins.manager import (
    PluginManager,
    get_manager,
    get_registry,
    pm,
    statuses,
    versions,
)
from sec4sr_core.sdk import Attack, AttackResult, Knowledge

from .helpers import Shift, inline_plugin, run_python, toy_waves


def _status(mgr: PluginManager, name: str):
    return {s.name: s for s in mgr.statuses()}[name]


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "sec4sr.plugins" and r.levelno == logging.WARNING]


class Nudge(Attack):
    """Toy score-based attack (never run here)."""

    name = "nudge"
    knowledge = Knowledge.SCORES

    def run(self, oracle, x, y, targeted=False):  # pragma: no cover - registration only
        _, dec = oracle.scores_and_decisions(x)
        return AttackResult(x, dec != y, oracle.queries.clone(), dec)


class Mirror(Shift):
    name = "mirror"


# ----------------------------------------------------------------------------------------------------------------------
# The object and its default instance
# ----------------------------------------------------------------------------------------------------------------------


def test_an_isolated_manager_has_the_builtins_registered_in_code():
    mgr = PluginManager(entry_points=False)
    assert [(s.name, s.distribution, s.status) for s in mgr.statuses()] == [("builtins", "sec4sr", "loaded")]
    reg = mgr.registry()
    assert {"l0", "l2", "linf", "snr", "pesq", "stoi"} <= set(reg.names("metric"))
    assert {"embedded", "folder", "librispeech"} <= set(reg.names("dataset"))
    assert reg.names("attack") == [] and reg is mgr.registry()  # cached until a plugin changes
    assert PluginManager(entry_points=False, builtins=False).registry().names("metric") == []
    # isolated: the default manager does not see its plugins, and the other way round
    with inline_plugin(_plugin_with(defenses=[Mirror]), "mirror-default"):
        assert "mirror" not in mgr.registry().names("defense")
        assert "mirror" in get_registry().names("defense")


def test_the_builtins_are_registered_once_although_the_entry_point_also_names_them():
    builtins_module = importlib.import_module("sec4sr_core.builtins")
    names = [n for n, p in pm.pluggy.list_name_plugin() if p is builtins_module]
    assert names == ["builtins"]
    assert [s.name for s in statuses()].count("builtins") == 1
    assert statuses()[0].name == "builtins"  # first in load order: its names win a clash
    assert all(e.distribution == "sec4sr" for e in get_registry().entries["metric"].values()
               if e.name in ("l2", "snr"))


def test_the_module_accessors_are_thin_views_of_the_default_instance():
    assert get_manager() is pm and isinstance(pm, PluginManager)
    assert get_registry() is pm.registry()
    assert versions() == pm.versions() and versions()["sec4sr"] != ""
    assert [s.name for s in statuses()] == [s.name for s in pm.statuses()]
    with inline_plugin(_plugin_with(defenses=[Mirror]), "mirror-accessor", distribution="dist-mirror"):
        assert pm.registry().entries["defense"]["mirror"].plugin == "mirror-accessor"
    assert "mirror" not in pm.registry().names("defense")


def test_builtins_register_by_path_with_the_summaries_of_their_classes():
    from sec4sr_core import builtins

    mgr = PluginManager(entry_points=False)
    reg = mgr.registry()
    for name, path, summary in builtins.METRICS + builtins.DATASETS:
        kind = "metric" if (name, path, summary) in builtins.METRICS else "dataset"
        entry = reg.entries[kind][name]
        assert isinstance(entry.target, str) and entry.summary == summary
        cls = entry.load()
        assert cls.name == name
        if kind == "metric":  # the summary `sec4sr list` shows is the class' own first doc line
            assert cls.describe() == summary


def test_inline_register_refuses_a_name_already_known():
    mgr = PluginManager(entry_points=False)
    mgr.register(_plugin_with(defenses=[Mirror]), "mine")
    with pytest.raises(ValueError, match="already known"):
        mgr.register(_plugin_with(defenses=[Mirror]), "mine")
    mgr.unregister("mine")
    mgr.unregister("mine")  # unknown names are a no-op
    assert "mirror" not in mgr.registry().names("defense")


# ----------------------------------------------------------------------------------------------------------------------
# check_pending: a misspelled hook
# ----------------------------------------------------------------------------------------------------------------------


class Misspelled:
    """``register_defense`` for ``register_defenses``; its attack hook is fine."""

    @hookimpl
    def register_defense(self, register):  # the typo
        register(Mirror)

    @hookimpl
    def register_attacks(self, register):
        register(Nudge)


def test_a_misspelled_hook_is_an_error_naming_plugin_and_hook_with_a_suggestion(caplog):
    mgr = PluginManager(entry_points=False)
    mgr.register(Misspelled(), "typo", distribution="sec4sr-test-typo")
    problems = mgr.check_pending()
    assert [(p.plugin, p.distribution) for p in problems] == [("typo", "sec4sr-test-typo")]
    text = str(problems[0])
    assert "'typo'" in text and "unknown hook 'register_defense'" in text
    assert "did you mean 'register_defenses'?" in text
    with pytest.raises(PluginError, match=r"plugin 'typo' \(sec4sr-test-typo\): unknown hook 'register_defense'"):
        mgr.check_pending(strict=True)

    with caplog.at_level(logging.WARNING, logger="sec4sr.plugins"):
        reg = mgr.registry()
        mgr.registry()  # warned once, not at every call
    st = _status(mgr, "typo")
    assert st.status == "error" and "unknown hook 'register_defense'" in st.error
    assert "did you mean 'register_defenses'" in st.error
    # the tool keeps working, the plugin's correct hook included
    assert "nudge" in reg.names("attack") and "mirror" not in reg.names("defense")
    assert "l2" in reg.names("metric")
    warned = _warnings(caplog)
    assert len(warned) == 1 and "\n" not in warned[0]
    assert warned[0].startswith("warning: plugin 'typo' (sec4sr-test-typo)") and "register_defense" in warned[0]
    assert "sec4sr-test-typo" in mgr.versions()  # its attack is in use, so its version is recorded


def test_a_hook_function_without_hookimpl_is_reported():
    class Undecorated:
        def register_defenses(self, register):  # forgot @hookimpl: pluggy would never call it
            register(Mirror)

    mgr = PluginManager(entry_points=False)
    mgr.register(Undecorated(), "bare")
    st = _status(mgr, "bare")
    assert st.status == "error" and "'register_defenses' is not marked @hookimpl" in st.error
    assert [p.message for p in mgr.check_pending()] == [
        "'register_defenses' is not marked @hookimpl, so it is never called"
    ]


def test_a_hook_far_from_every_spec_lists_the_real_hooks():
    class Odd:
        @hookimpl
        def make_everything_faster(self):
            pass

    mgr = PluginManager(entry_points=False)
    mgr.register(Odd(), "odd")
    (problem,) = mgr.check_pending()
    assert "unknown hook 'make_everything_faster'" in problem.message
    assert "register_defenses" in problem.message and "sec4sr_result" in problem.message


def test_well_formed_plugins_have_nothing_pending():
    assert pm.check_pending() == []
    assert all(s.status == "loaded" for s in statuses() if s.distribution.startswith("sec4sr"))


def test_misspelled_hook_through_the_cli_plugins_and_list(capsys, caplog):
    with inline_plugin(Misspelled(), "typo-cli", distribution="sec4sr-test-typo"):
        with caplog.at_level(logging.WARNING, logger="sec4sr.plugins"):
            assert main(["plugins"]) == 0
            out = capsys.readouterr().out
            assert main(["list", "attacks", "--json"]) == 0
            listed = json.loads(capsys.readouterr().out)
    line = next(ln for ln in out.splitlines() if ln.startswith("typo-cli"))
    assert "sec4sr-test-typo" in line and "error: unknown hook 'register_defense'" in line
    assert "did you mean 'register_defenses'" in line
    assert "attacks" in out and "loaded" in out  # the other plugins are untouched
    names = {d["name"]: d["distribution"] for d in listed}
    assert names["nudge"] == "sec4sr-test-typo" and names["pgd"] == "sec4sr-plugins-attacks"
    assert any("typo-cli" in w and "register_defense" in w for w in _warnings(caplog))


# ----------------------------------------------------------------------------------------------------------------------
# Duplicate names
# ----------------------------------------------------------------------------------------------------------------------


def _plugin_with(attacks=(), defenses=(), presets=(), collect=None):
    """An inline plugin object registering the given classes (and collecting result rows into ``collect``)."""

    class P:
        @hookimpl
        def register_attacks(self, register):
            for cls in attacks:
                register(cls)

        @hookimpl
        def register_defenses(self, register):
            for cls in defenses:
                register(cls)

        @hookimpl
        def register_presets(self, register):
            for preset in presets:
                register(preset)

        @hookimpl
        def sec4sr_result(self, row):
            if collect is not None:
                collect.append(row)

    return P()


def test_a_duplicate_name_disables_the_later_plugin_as_a_whole(caplog):
    class OtherMirror(Shift):
        name = "mirror"

    class Extra(Shift):
        name = "extra-shift"

    first_rows, later_rows = [], []
    mgr = PluginManager(entry_points=False)
    mgr.register(_plugin_with(defenses=[Mirror], collect=first_rows), "first", distribution="dist-first")
    later = _plugin_with(attacks=[Nudge], defenses=[OtherMirror, Extra],
                         presets=[Preset("extra-big", "defense", "extra-shift", {"offset": 0.5})], collect=later_rows)
    mgr.register(later, "later", distribution="dist-later")
    with caplog.at_level(logging.WARNING, logger="sec4sr.plugins"):
        reg = mgr.registry()  # no exception
    st = _status(mgr, "later")
    assert st.status == "disabled"
    assert "duplicate defense name 'mirror'" in st.error
    assert "dist-first" in st.error and "dist-later" in st.error and "disabled" in st.error
    assert _status(mgr, "first").status == "loaded"
    # the earlier plugin's component wins; every component of the later one is dropped
    assert reg.entries["defense"]["mirror"].distribution == "dist-first"
    assert reg.entries["defense"]["mirror"].load() is Mirror
    assert "extra-shift" not in reg.names("defense") and "nudge" not in reg.names("attack")
    assert "extra-big" not in reg.names("preset")
    # asking for one of its names says why it is missing
    with pytest.raises(UnknownComponentError, match=r"defense 'extra-shift' is provided by dist-later .*disabled"):
        reg.build("defense", "extra-shift")
    with pytest.raises(UnknownComponentError, match=r"defense 'extra-big' is provided by dist-later"):
        reg.get("defense", "extra-big")
    # a disabled plugin's lifecycle hooks are not called, and its version is not recorded
    mgr.hook.sec4sr_result(row={"n": 1})
    assert first_rows == [{"n": 1}] and later_rows == []
    assert "dist-later" not in mgr.versions() and "dist-first" in mgr.versions()
    warned = _warnings(caplog)
    assert len(warned) == 1 and "'later'" in warned[0] and "dist-first" in warned[0]
    # removing the earlier plugin enables the later one again
    mgr.unregister("first")
    assert _status(mgr, "later").status == "loaded"
    assert mgr.registry().entries["defense"]["mirror"].load() is OtherMirror
    mgr.hook.sec4sr_result(row={"n": 2})
    assert later_rows == [{"n": 2}]


def test_a_plugin_registering_one_name_twice_keeps_the_first():
    class Again(Shift):
        name = "mirror"

    mgr = PluginManager(entry_points=False)
    mgr.register(_plugin_with(defenses=[Mirror, Again]), "twice", distribution="dist-twice")
    assert mgr.registry().entries["defense"]["mirror"].load() is Mirror
    st = _status(mgr, "twice")
    assert st.status == "error" and "registers defense 'mirror' twice" in st.error


class FakeQT(Shift):
    """An impostor ``qt`` (a shift with parameter ``offset``, not ``q``)."""

    name = "qt"


def test_duplicate_of_a_real_defense_keeps_list_and_run_working(capsys, caplog, tmp_path):
    with inline_plugin(_plugin_with(defenses=[FakeQT], attacks=[Nudge]), "impostor", distribution="dist-impostor"):
        with caplog.at_level(logging.WARNING, logger="sec4sr.plugins"):
            assert main(["plugins"]) == 0
            out = capsys.readouterr().out
            assert main(["list", "defenses"]) == 0
            listing = capsys.readouterr().out
        line = next(ln for ln in out.splitlines() if ln.startswith("impostor"))
        assert "disabled: duplicate defense name 'qt'" in line
        assert "sec4sr-plugins-defenses" in line and "dist-impostor" in line
        qt_line = next(ln for ln in listing.splitlines() if ln.strip().startswith("qt "))
        assert "[sec4sr-plugins-defenses]" in qt_line and "dist-impostor" not in listing
        assert any("impostor" in w and "duplicate defense name 'qt'" in w for w in _warnings(caplog))

        # `sec4sr run` resolves the first plugin's qt: its parameter q is validated (the impostor has none) ...
        code = main(["run", "--defense", "qt:q=0", "--limit", "1", "--out", str(tmp_path), "--quiet"])
        err = capsys.readouterr().err
        assert code == 2 and "greater than or equal to 1" in err and "duplicate" not in err
        # ... and builds it
        from sec4sr_core.compose.factories import build_defenses

        (qt,) = build_defenses("qt:q=256")
        assert type(qt) is not FakeQT and qt.params.q == 256
        assert type(qt).__module__.startswith("sec4sr_plugins_defenses")
        # the disabled plugin's other component is gone, and the error says why
        code = main(["run", "--attack", "nudge", "--limit", "1", "--out", str(tmp_path), "--quiet"])
        err = capsys.readouterr().err
        assert code == 2 and "attack 'nudge' is provided by dist-impostor" in err and "disabled" in err
    assert _status(pm, "defenses").status == "loaded"


# ----------------------------------------------------------------------------------------------------------------------
# SEC4SR_PLUGINS
# ----------------------------------------------------------------------------------------------------------------------


def test_a_name_from_a_plugin_hidden_by_sec4sr_plugins_says_so(caplog):
    with caplog.at_level(logging.WARNING, logger="sec4sr.plugins"):
        mgr = PluginManager(only="defenses, sec4sr-plugins-modles")
        reg = mgr.registry()
    assert _status(mgr, "attacks").status == "skipped" and _status(mgr, "defenses").status == "loaded"
    assert "qt" in reg.names("defense") and reg.names("attack") == []
    with pytest.raises(UnknownComponentError) as info:
        reg.build("attack", "pgd:steps=2")
    msg = str(info.value)
    assert msg.startswith("attack 'pgd' is provided by sec4sr-plugins-attacks, which SEC4SR_PLUGINS=")
    assert "'defenses, sec4sr-plugins-modles'" in msg and "does not load" in msg and "known: none" not in msg
    # a preset of a hidden plugin too, and a model
    with pytest.raises(UnknownComponentError, match=r"attack 'pgd-10' is provided by sec4sr-plugins-attacks"):
        reg.get("attack", "pgd-10")
    with pytest.raises(UnknownComponentError, match=r"model 'ge2e' is provided by sec4sr-plugins-models"):
        reg.get("model", "ge2e")
    # a name nobody provides is still plainly unknown
    with pytest.raises(UnknownComponentError, match=r"unknown attack 'zzzzzz' \(known: none\)"):
        reg.get("attack", "zzzzzz")
    # a misspelled plugin name in SEC4SR_PLUGINS is warned about, with the right spelling
    assert any("'sec4sr-plugins-modles'" in w and "did you mean 'sec4sr-plugins-models'" in w
               for w in _warnings(caplog))
    # hiding a plugin never registers it
    assert "attacks" not in dict(mgr.pluggy.list_name_plugin())


def test_sec4sr_plugins_matches_distribution_names_in_any_spelling():
    mgr = PluginManager(only="sec4sr_plugins_Attacks")
    assert _status(mgr, "attacks").status == "loaded" and _status(mgr, "defenses").status == "skipped"
    assert "pgd" in mgr.registry().names("attack")


def test_the_hidden_plugin_message_through_the_cli(tmp_path):
    code = ("from sec4sr_core.cli import main; import sys; "
            f"sys.exit(main(['run', '--attack', 'pgd-10', '--limit', '1', '--out', {str(tmp_path)!r}, '--quiet']))")
    proc = run_python(code, env={"SEC4SR_PLUGINS": "defenses,models"})
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    expected = ("error: attack 'pgd-10' is provided by sec4sr-plugins-attacks, which SEC4SR_PLUGINS='defenses,models' "
                "does not load (add 'attacks' to SEC4SR_PLUGINS, or unset it)")
    assert lines == [expected], proc.stderr


# ----------------------------------------------------------------------------------------------------------------------
# Failures name their distribution
# ----------------------------------------------------------------------------------------------------------------------

FAILING_MODULE = '''
from sec4sr_core.sdk import Defense, hookimpl

class NeedsLibrary(Defense):
    """Fails when built."""
    name = "needs-library"

    def __init__(self, params=None, **kwargs):
        super().__init__(params, **kwargs)
        raise RuntimeError("libfoo.so.3: cannot open shared object file")


class Crashes(Defense):
    """Fails in forward."""
    name = "crashes"

    def forward(self, x):
        return x.reshape(3, -1, 7)   # a shape bug


@hookimpl
def register_defenses(register):
    register(NeedsLibrary)
    register("sec4sr_failing_plugin_xyz:Crashes", name="crashes", summary="Fails in forward.")
'''


@pytest.fixture
def failing_plugin(tmp_path, monkeypatch):
    name = "sec4sr_failing_plugin_xyz"
    (tmp_path / f"{name}.py").write_text(FAILING_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    module = importlib.import_module(name)
    mgr = PluginManager(entry_points=False)
    mgr.register(module, "failing", distribution="sec4sr-test-failing")
    return mgr


def test_a_component_that_fails_to_build_names_its_distribution(failing_plugin):
    reg = failing_plugin.registry()
    with pytest.raises(PluginError) as info:
        reg.build("defense", "needs-library")
    msg = str(info.value)
    assert msg == ("defense 'needs-library' from sec4sr-test-failing failed to build: RuntimeError: "
                   "libfoo.so.3: cannot open shared object file")
    assert isinstance(info.value.__cause__, RuntimeError)
    # input errors stay input errors
    with pytest.raises(ParameterError):
        reg.build("defense", "needs-library:nope=1")


def test_a_component_that_fails_in_forward_is_blamed_on_its_plugin(failing_plugin):
    defense = failing_plugin.registry().build("defense", "crashes")
    with pytest.raises(RuntimeError) as info:
        defense(toy_waves(2))
    culprit = failing_plugin.blame(info.value)
    assert (culprit.name, culprit.distribution) == ("failing", "sec4sr-test-failing")
    # an error inside the core alone is nobody's plugin
    with pytest.raises(UnknownComponentError) as core_error:
        failing_plugin.registry().get("defense", "nope")
    assert failing_plugin.blame(core_error.value) is None


def test_a_component_that_fails_to_describe_itself_is_listed_with_its_error(capsys):
    class Unlistable(Shift):
        name = "unlistable"

        @classmethod
        def describe(cls):
            raise RuntimeError("describe is broken")

    with inline_plugin(_plugin_with(defenses=[Unlistable]), "unlistable", distribution="dist-unlistable"):
        assert main(["list", "defenses"]) == 0
        out = capsys.readouterr().out
        line = next(ln for ln in out.splitlines() if ln.strip().startswith("unlistable"))
        assert "ERROR" in line and "dist-unlistable" in line and "describe is broken" in line
        assert any(ln.strip().startswith("qt ") for ln in out.splitlines())  # the others are still listed
        st = {s.name: s for s in statuses()}["unlistable"]
        assert st.status == "error" and "describe is broken" in st.error


# ----------------------------------------------------------------------------------------------------------------------
# Installed (entry-point) plugins in a subprocess: a misspelled hook and a duplicate name
# ----------------------------------------------------------------------------------------------------------------------

TYPO_MODULE = '''
from sec4sr_core.sdk import Defense, hookimpl

class Halve(Defense):
    """Halve the waveform."""
    name = "halve"

    def forward(self, x):
        return x * 0.5

@hookimpl
def register_defense(register):      # misspelled
    register(Halve)

@hookimpl
def register_presets(register):
    from sec4sr_core.sdk import Preset
    register(Preset("qt-typo", "defense", "qt", {"q": 64}, "qt with q = 64"))
'''

CLASH_MODULE = '''
from sec4sr_core.sdk import Defense, hookimpl

class QT(Defense):
    """An impostor qt."""
    name = "qt"

    def forward(self, x):
        return x

@hookimpl
def register_defenses(register):
    register(QT)
'''


def _install(tmp_path, module: str, dist: str, ep: str, source: str) -> None:
    (tmp_path / f"{module}.py").write_text(source)
    info = tmp_path / f"{module}-0.2.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.2\n")
    (info / "entry_points.txt").write_text(f"[sec4sr]\n{ep} = {module}\n")


def test_installed_plugins_with_a_typo_and_a_clash_through_the_cli(tmp_path):
    _install(tmp_path, "sec4sr_typo_plugin_xyz", "sec4sr-typo-plugin-xyz", "typo", TYPO_MODULE)
    _install(tmp_path, "sec4sr_clash_plugin_xyz", "sec4sr-clash-plugin-xyz", "zz_clash", CLASH_MODULE)
    code = textwrap.dedent("""
        import sys
        from sec4sr_core.cli import main
        a = main(['plugins', '--json'])
        print('--')
        b = main(['list', 'defenses', '--json'])
        print('--')
        print('exit', a, b)
    """)
    proc = run_python(code, env={"PYTHONPATH": str(tmp_path)})
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    plugins_doc, listed_doc, tail = proc.stdout.split("--\n")
    assert tail.split() == ["exit", "0", "0"]
    st = {p["name"]: p for p in json.loads(plugins_doc)["plugins"]}
    assert st["typo"]["status"] == "error" and st["typo"]["version"] == "0.2"
    assert "unknown hook 'register_defense'; did you mean 'register_defenses'?" in st["typo"]["error"]
    assert st["zz_clash"]["status"] == "disabled"
    assert "duplicate defense name 'qt'" in st["zz_clash"]["error"]
    assert "sec4sr-plugins-defenses" in st["zz_clash"]["error"]
    assert "sec4sr-clash-plugin-xyz" in st["zz_clash"]["error"]
    assert st["defenses"]["status"] == "loaded" and st["builtins"]["status"] == "loaded"
    listed = {d["name"]: d for d in json.loads(listed_doc)}
    assert listed["qt"]["distribution"] == "sec4sr-plugins-defenses"
    assert listed["qt-typo"]["distribution"] == "sec4sr-typo-plugin-xyz"  # the typo plugin's good hook works
    assert "halve" not in listed
    # one warning line per problem on stderr, naming plugin and hook / both distributions
    warnings = [ln for ln in proc.stderr.splitlines() if ln.startswith("warning: ")]
    assert len(warnings) == 2, proc.stderr
    assert any("'typo'" in w and "register_defense" in w for w in warnings)
    assert any("'zz_clash'" in w and "sec4sr-plugins-defenses" in w for w in warnings)


def test_an_installed_plugin_with_a_bad_hook_signature_is_one_error_line(tmp_path):
    source = ("from sec4sr_core.sdk import hookimpl\n\n"
              "@hookimpl\ndef register_defenses(reg):   # the spec's argument is `register`\n    pass\n")
    _install(tmp_path, "sec4sr_badsig_plugin_xyz", "sec4sr-badsig-plugin-xyz", "badsig", source)
    code = ("import json; from sec4sr_core.plugins.manager import statuses; "
            "print(json.dumps({s.name: [s.status, s.error] for s in statuses()}))")
    proc = run_python(code, env={"PYTHONPATH": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    status, error = json.loads(proc.stdout.splitlines()[-1])["badsig"]
    assert status == "error" and error.startswith("PluginValidationError") and "\n" not in error
    assert "'reg'" in error and "register_defenses" in error


def test_the_cli_names_the_plugin_whose_component_crashed(tmp_path, monkeypatch, capsys):
    """A broken plugin's defense used to crash a run as an unnamed ``internal error``."""
    from sec4sr_core.plugins.manager import register_plugin, unregister_plugin

    name = "sec4sr_failing_plugin_xyz"
    (tmp_path / f"{name}.py").write_text(FAILING_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    register_plugin(importlib.import_module(name), name="failing-cli")
    try:
        code = main(["run", "--defense", "crashes", "--limit", "2", "--batch-size", "2", "--length", "0.5",
                     "--out", str(tmp_path / "out"), "--quiet"])
    finally:
        unregister_plugin("failing-cli")
    err = capsys.readouterr().err
    assert code == 1
    assert "internal error in plugin 'failing-cli'" in err and "RuntimeError" in err and "Traceback" not in err
