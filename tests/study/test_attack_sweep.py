"""`sec4sr sweep` over attack parameters and EOT draws: columns per value, the undefended row always present, 95 %
interval bands on a log-x plot, the SNR per value, and the warning when accuracy rises with attack strength."""

from __future__ import annotations

import json

import pytest
from pydantic import Field

from sec4sr_core import Attack, AttackResult, Knowledge, hookimpl
from sec4sr_core.base.params import Params
from sec4sr_core.cli import main
from sec4sr_core.plugins.manager import register_plugin, unregister_plugin
from sec4sr_core.study.store import ResultStore

from .conftest import signs

COMMON = ["--limit", "2", "--length", "0.5", "--metric", "linf", "--quiet"]


class StepsParams(Params):
    steps: int = Field(1, ge=1, description="iterations")


class StepsFlip(Attack):
    """Scrambles the audio at steps = 1 and leaves it unchanged at more steps: an attack that gets *weaker* with
    steps, so an attack sweep over steps must flag it."""

    name = "test-steps-flip"
    Params = StepsParams
    knowledge = Knowledge.DECISIONS

    def run(self, oracle, x, y, targeted=False):
        adv = x * signs(x.shape[-1], x.device) if self.params.steps == 1 else x.clone()
        dec = oracle.decisions(adv)
        return AttackResult(adv, dec != y.to(dec.device), oracle.queries.clone(), dec)


class Plugin:
    @hookimpl
    def register_attacks(self, register):
        register(StepsFlip)


@pytest.fixture(scope="module")
def steps_plugin(study_plugin):
    register_plugin(Plugin(), name="attack-sweep-test-plugin")
    yield
    unregister_plugin("attack-sweep-test-plugin")


@pytest.fixture
def plot_calls(monkeypatch):
    """Records the interval bands and x scales the sweep plot draws."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib.axes import Axes

    calls = {"bands": [], "xscale": []}
    fill, scale = Axes.fill_between, Axes.set_xscale

    def fill_between(self, x, lo, hi, *a, **k):
        calls["bands"].append((list(x), list(lo), list(hi)))
        return fill(self, x, lo, hi, *a, **k)

    def set_xscale(self, value, *a, **k):
        calls["xscale"].append(value)
        return scale(self, value, *a, **k)

    monkeypatch.setattr(Axes, "fill_between", fill_between)
    monkeypatch.setattr(Axes, "set_xscale", set_xscale)
    return calls


def test_attack_sweep_over_epsilon(tmp_path, capsys, ge2e_system, one_thread, plot_calls):
    out = tmp_path / "eps"
    rc = main(["sweep", "--attack", "pgd:steps=1,step_size=0.004", "--param", "epsilon=0.0005,0.004", "--row", "qt:q=512",
               "--out", str(out), *COMMON])
    assert rc == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "Sweep of pgd:steps=1,step_size=0.004 over epsilon"
    assert lines[1].split() == ["pgd:steps=1,step_size=0.004", "epsilon", "none", "qt:q=512", "SNR", "dB", "(none)"]
    assert [ln.split()[0] for ln in lines[2:4]] == ["0.0005", "0.004"]
    # a larger ε: a lower SNR (dB) of the undefended row's audio, measured per value
    snr = [float(ln.split()[-1]) for ln in lines[2:4]]
    assert snr[0] > snr[1] + 10  # 8× the amplitude is 18 dB
    with ResultStore(out / "results.sqlite") as store:
        sweep = store.get_meta("sweep")
        cells = {(c["defense"], c["attack"]) for c in store.cells()}
    assert sweep["kind"] == "attack" and sweep["columns"] == {
        "pgd:steps=1,step_size=0.004,epsilon=0.0005": 0.0005, "pgd:steps=1,step_size=0.004,epsilon=0.004": 0.004}
    assert {d for d, _ in cells} == {"none", "qt:q=512"}  # the undefended row always present
    # one band per curve (none, qt) from the Wilson bounds, log x over a factor 8 (sweep.png and the report's copy)
    assert len(plot_calls["bands"]) == 4 and set(plot_calls["xscale"]) == {"log"}
    x, lo, hi = plot_calls["bands"][0]
    assert x == [0.0005, 0.004] and all(0 <= a <= b <= 100 for a, b in zip(lo, hi))
    assert (out / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    html = (out / "report.html").read_text()
    assert "Sweep of pgd:steps=1,step_size=0.004 over epsilon" in html and "SNR of the adversarial audio" in html


def test_attack_getting_weaker_with_steps_is_flagged(tmp_path, capsys, steps_plugin, one_thread):
    out = tmp_path / "steps"
    assert main(["sweep", "--attack", "test-steps-flip", "--param", "steps=1,2", "--out", str(out), *COMMON]) == 0
    text = capsys.readouterr().out
    assert "! accuracy rises as the attack gets stronger" in text and "steps=1 leaves" in text
    with ResultStore(out / "results.sqlite") as store:
        flagged = {(r["attack"], any(w["code"] == "sweep-not-monotone" for w in r["warnings"]))
                   for r in store.rows("WHERE setting='non-adaptive' AND defense='none'")}
    assert flagged == {("test-steps-flip:steps=1", False), ("test-steps-flip:steps=2", True)}


def test_monotone_attack_sweep_is_not_flagged(tmp_path, capsys, steps_plugin, one_thread):
    out = tmp_path / "steps-ok"
    assert main(["sweep", "--attack", "test-steps-flip", "--param", "steps=2,3", "--out", str(out), *COMMON]) == 0
    assert "accuracy rises" not in capsys.readouterr().out
    with ResultStore(out / "results.sqlite") as store:
        assert not any(w["code"] == "sweep-not-monotone" for r in store.rows() for w in r["warnings"])


def test_eot_sweep_runs_one_study_per_value(tmp_path, capsys, study_plugin, one_thread):
    out = tmp_path / "eot"
    assert main(["sweep", "--attack", "test-flip", "--param", "eot=1,2", "--row", "test-noisy", "--out", str(out),
                 "--json", *COMMON]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["sweep"]["kind"] == "study" and set(doc["sweep"]["studies"]) == {"1", "2"}
    with ResultStore(out / "results.sqlite") as store:
        studies = {s["id"]: s["config"] for s in store.studies()}
    assert {studies[i]["eot"] for i in doc["sweep"]["studies"].values()} == {1, 2}
    assert all(c["settings"] == ["adaptive"] for c in studies.values())
    from sec4sr_core.report import load_study
    from sec4sr_core.report.tables import sweep_table

    t = sweep_table(load_study(out))
    assert t.headers == ["eot", "test-flip on none", "test-flip on test-noisy"]
    assert [r[0] for r in t.rows] == ["1", "2"] and all("[" in c for r in t.rows for c in r[1:])


@pytest.mark.parametrize("argv,needle", [
    (["--attack", "pgd", "--param", "nonsense=1,2"], "has no parameter 'nonsense'"),
    (["--attack", "pgd", "--attack", "fgsm", "--param", "epsilon=0.001"], "exactly one --attack"),
    (["--attack", "pgd:epsilon=0.001", "--param", "epsilon=0.002,0.004"], "also fixed"),
    (["--attack", "pgd", "--param", "steps=0,1"], "steps"),
    (["--attack", "pgd", "--param", "eot=0,2"], "whole numbers"),
    (["--param", "eot=1,2"], "at least one --attack"),
    (["--defense", "qt", "--row", "at", "--param", "q=1,2", "--attack", "pgd"], "--row"),
])
def test_bad_sweeps_are_one_line_errors(tmp_path, capsys, argv, needle):
    assert main(["sweep", *argv, "--out", str(tmp_path / "x"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and needle in err and len(err.splitlines()) == 1
    assert not (tmp_path / "x" / "results.sqlite").exists()


def test_defense_sweep_keeps_the_undefended_row(tmp_path, capsys, study_plugin, one_thread):
    from sec4sr_core.report import load_study
    from sec4sr_core.report.tables import sweep_table

    out = tmp_path / "qt"
    assert main(["sweep", "--defense", "qt", "--param", "q=256,4096", "--attack", "test-flip", "--out", str(out),
                 *COMMON]) == 0
    t = sweep_table(load_study(out))
    assert [r[0] for r in t.rows] == ["256", "4096", "none"]
    assert all("[" in c for c in t.rows[-1][1:])  # the undefended row with its intervals
