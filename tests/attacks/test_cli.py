"""End to end through the CLI: the registry lists every attack and the 15 study presets; attacks run via
``sec4sr run`` on the embedded corpus against GE2E for CSI-E, SV and OSI (tiny settings)."""

from __future__ import annotations

import json

import pytest

from sec4sr_core.cli import main
from sec4sr_core.sdk.interfaces import Knowledge
from sec4sr_core.plugins.manager import get_registry

ATTACKS = {"fgsm", "pgd", "cwinf", "cw2", "fakebob", "siren", "kenan", "apgd", "square", "hsja", "uap", "pgd-nes"}
PRESETS = {"fgsm", "pgd-10", "pgd-20", "pgd-30", "pgd-40", "pgd-50", "pgd-100", "cwinf-0", "cw2-0", "cw2-2", "cw2-5",
           "cw2-10", "cw2-20", "cw2-50", "fakebob"}


def test_list_attacks_and_presets(capsys):
    assert main(["list", "attacks", "--json"]) == 0
    items = json.loads(capsys.readouterr().out)
    assert ATTACKS <= {i["name"] for i in items}
    reg = get_registry()  # the listing stays import-free; the knowledge level is on the class
    assert reg.resolve("attack", "fakebob")[0].knowledge == Knowledge.SCORES
    assert reg.resolve("attack", "kenan")[0].knowledge == Knowledge.DECISIONS
    assert main(["list", "presets", "--json"]) == 0
    presets = {i["name"]: i for i in json.loads(capsys.readouterr().out)}
    assert PRESETS <= set(presets)
    assert presets["cw2-5"]["params"]["kappa"] == 5.0


@pytest.mark.parametrize("task,attacks", [
    ("csi-e", ["pgd-10:steps=2", "cw2-0:max_iter=2,binary_search_steps=1"]),
    ("sv", ["fakebob:max_iter=1,samples=2,samples_batch=2,estimate_iter=1"]),
    ("osi", ["kenan:max_iter=2"]),
])
def test_run_attack_on_ge2e(tmp_path, capsys, ge2e_system, task, attacks):
    """One run per task (the CSI-E one with two attack columns), 2 trials of 1 s; ``ge2e_system`` enrolls once per
    session and the runs reuse the stored enrollment."""
    argv = ["run", "--task", task, "--limit", "2", "--batch-size", "2", "--length", "1", "--quiet", "--json",
            "--out", str(tmp_path), "--metric", "linf"]
    for a in attacks:
        argv += ["--attack", a]
    assert main(argv) == 0
    doc = json.loads(capsys.readouterr().out)
    cells = {c["attack"]: c for c in doc["results"]}
    assert set(cells) == set(attacks)
    for cell in cells.values():
        assert cell["n"] == 2 and cell["mean_queries"] > 0


def test_bad_attack_parameter_is_a_one_line_error(tmp_path, capsys):
    rc = main(["run", "--attack", "cw2-0:kappa=-1", "--limit", "1", "--out", str(tmp_path), "--quiet"])
    assert rc == 2
    assert "kappa" in capsys.readouterr().err
