"""End to end through the CLI: every defense and preset is listed, and the study's presets run in ``sec4sr run``."""

from __future__ import annotations

import json

import pytest

from sec4sr_core.cli import main

STUDY = ["qt", "at", "as", "ms", "ds", "lpf", "bpf", "opus", "speex", "amr", "aac-v", "aac-c", "mp3-v", "mp3-c"]
FECO = [f"feco-{lv}-{m}" for lv in "odcf" for m in ("k", "wk")]


def test_list_defenses_json(capsys):
    assert main(["list", "defenses", "--json"]) == 0
    listed = {d["name"]: d for d in json.loads(capsys.readouterr().out)}
    assert set(STUDY + ["bdr", "feco", "advt"]) <= set(listed)
    assert listed["feco"]["params"]["level"]["default"] == "final"
    assert listed["qt"]["differentiable"] is False and listed["at"]["randomized"] is True
    for name in STUDY + ["feco"]:
        for field, schema in listed[name]["params"].items():
            assert schema.get("description"), (name, field)
    assert main(["list", "presets", "--json"]) == 0
    presets = {p["name"]: p for p in json.loads(capsys.readouterr().out)}
    assert set(FECO) <= set(presets) and presets["feco-d-wk"]["params"] == {"method": "warped", "level": "delta"}


@pytest.mark.slow
def test_every_preset_runs_on_the_embedded_corpus(tmp_path, capsys):
    """The 14 transformations, FeCo at GE2E's final level and a chain, on one utterance (benign row only)."""
    rows = STUDY + ["feco-f-k", "feco-f-wk", "qt:q=512+feco-f-k"]
    args = ["run", "--limit", "1", "--out", str(tmp_path), "--quiet", "--json"]
    for r in rows:
        args += ["--defense", r]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(rows) <= set(out["benign"]) and not out["failures"]
    assert all(out["benign"][r] is not None for r in rows)


def test_feature_level_the_model_lacks_is_refused(tmp_path, capsys):
    code = main(["run", "--defense", "feco-o-k", "--limit", "1", "--out", str(tmp_path), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error:") and "raw" in err
