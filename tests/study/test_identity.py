"""Result rows know what produced them: every change of configuration, weights or data in the same output folder
computes new rows, says which keys changed, and is counted on its own; an identical re-run adds nothing.

Measured before the row identity (same --out): a --seed 1 re-run printed n=27 (16 seed-0 rows + 11 new), --eot 4
added 0 rows, --defense-order average then sequential reported rows computed with average, --limit 4 after 16
trials reported n=16."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest
import soundfile as sf

from sec4sr_core.study.runner import Study, StudyConfig, study_id
from sec4sr_core.study.store import ResultStore

from .conftest import WEAK_PGD

LIMIT = 4
BASE = dict(
    attacks=["test-flip"], defenses=["qt:q=512+test-noisy"], settings=["non-adaptive", "adaptive"], limit=LIMIT,
    batch_size=2, length_s=0.5, enroll_length_s=1.0, metrics=["linf"], save_audio=False, examples=0,
)


def count(out: Path) -> int:
    con = sqlite3.connect(out / "results.sqlite")
    try:
        return con.execute("SELECT COUNT(*) FROM results").fetchone()[0]
    finally:
        con.close()


def run(out: Path, **changes):
    """Run the base study with ``changes`` into ``out``: (summary, rows added, the config)."""
    cfg = StudyConfig(**{**BASE, **changes, "out": out})
    before = count(out) if (out / "results.sqlite").exists() else 0
    summary = Study(cfg, progress=False).run()
    return summary, count(out) - before, cfg


def cells(summary):
    return {(r["defense"], r["attack"], r["setting"]): (r["n"], r["adversarial_accuracy"]) for r in summary["results"]}


def study_rows(out: Path, cfg: StudyConfig):
    with ResultStore(out / "results.sqlite") as store:
        return store.rows(study=study_id(cfg))


CHANGES = [
    ("seed", {"seed": 1}),
    ("eot", {"eot": 2}),
    ("length_s", {"length_s": 0.25}),
    ("limit", {"limit": 2}),
    ("defense_order", {"defense_order": "average"}),
]


@pytest.fixture(scope="module")
def base_out(tmp_path_factory, study_plugin):
    out = tmp_path_factory.mktemp("identity")
    summary, added, cfg = run(out)
    # benign: 2 rows x LIMIT; each attack setting: 2 rows x LIMIT
    assert added == 2 * LIMIT + 2 * 2 * LIMIT
    return out, summary, cfg


def test_identical_rerun_adds_nothing_and_reports_the_same(base_out, one_thread):
    out, summary, _ = base_out
    again, added, _ = run(out)
    assert added == 0
    assert cells(again) == cells(summary)


@pytest.mark.parametrize("key,change", CHANGES, ids=[k for k, _ in CHANGES])
def test_a_changed_configuration_computes_and_counts_only_its_own_rows(base_out, key, change, one_thread, capfd):
    out, base_summary, base_cfg = base_out
    capfd.readouterr()
    summary, added, cfg = run(out, **change)
    err = capfd.readouterr().err
    assert "another study" in err and key in err.split("differs in", 1)[1].splitlines()[0], err
    n = change.get("limit", LIMIT)
    # a smaller limit reuses the batches it shares exactly (same trials, same batch index); all else recomputes
    assert added == 0 if key == "limit" else added > 0
    assert {c[0] for c in cells(summary).values()} == {n}  # every cell counts exactly this study's trials
    rows = study_rows(out, cfg)
    assert len(rows) == 2 * n + 2 * 2 * n and len({(r["unit"], r["utterance"]) for r in rows}) == len(rows)
    assert all(r["seed"] == cfg.seed for r in rows)
    if key in ("eot", "defense_order"):
        # these change only the rows they affect: the undefended and benign rows are shared, the defended
        # adaptive (eot) or defended (order) rows are new
        base_keys = {(r["unit"], r["utterance"]) for r in study_rows(out, base_cfg)}
        changed = {(r["defense"], r["attack"], r["setting"]) for r in rows if (r["unit"], r["utterance"]) not in base_keys}
        assert changed and all(d != "none" for d, _, _ in changed)
    assert run(out, **change)[1] == 0  # an identical re-run of the changed study adds nothing


def test_back_to_the_first_study_adds_nothing_and_reports_what_it_reported(base_out, one_thread):
    out, base_summary, _ = base_out
    back, added, _ = run(out)
    assert added == 0 and cells(back) == cells(base_summary)
    with ResultStore(out / "results.sqlite") as store:
        assert len(store.studies()) == 1 + len(CHANGES)


def test_an_attack_parameter_is_part_of_the_identity(tmp_path, study_plugin, one_thread, capfd):
    out = tmp_path / "out"
    one = dict(attacks=[WEAK_PGD], defenses=[], settings=["non-adaptive"], limit=2, gradient_check=False)
    _, first, _ = run(out, **one)
    capfd.readouterr()
    summary, added, cfg = run(out, **{**one, "attacks": [WEAK_PGD.replace("steps=1", "steps=2")]})
    assert "differs in attacks" in capfd.readouterr().err
    assert added == 2 and [r["n"] for r in summary["results"]] == [2]  # benign rows shared, attack rows new


def test_changed_audio_in_a_folder_dataset_recomputes(tmp_path, embedded, study_plugin, one_thread, capfd):
    """The dataset's content is part of the identity: rewriting one trial file under the same name recomputes."""
    root = tmp_path / "data"
    speakers = embedded.enrolled_speakers()[:3]
    for u in embedded.split("enroll") + embedded.split("test"):
        if u.speaker in speakers:
            (root / u.speaker).mkdir(parents=True, exist_ok=True)
            shutil.copy(u.path, root / u.speaker / u.path.name)
    out = tmp_path / "out"
    common = dict(dataset=str(root), attacks=[], defenses=[], settings=["non-adaptive"], limit=None)
    _, first, cfg = run(out, **common)
    assert first > 0 and run(out, **common)[1] == 0
    victim = sorted((root / speakers[0]).iterdir())[-1]
    audio, sr = sf.read(victim)
    sf.write(victim, 0.5 * audio, sr)
    capfd.readouterr()
    _, again, _ = run(out, **common)
    assert again > 0
    assert "changed since this study last ran" in capfd.readouterr().err


def test_report_renders_every_study_of_the_folder_or_the_one_asked_for(base_out, capsys):
    from sec4sr_core.cli import main
    from sec4sr_core.report import render

    out, _, base_cfg = base_out
    with ResultStore(out / "results.sqlite") as store:
        ids = [s["id"] for s in store.studies()]
    assert len(ids) > 1 and study_id(base_cfg) in ids
    md = render(out, "md")
    assert f"# {len(ids)} studies in" in md and all(f"`{i}`" in md for i in ids)
    assert "seed 1" in md and "eot 2" in md and "order average" in md  # each with its configuration
    one = render(out, "md", study=study_id(base_cfg)[:6])  # a prefix is enough
    assert f"study `{study_id(base_cfg)}`" in one and sum(f"study `{i}`" in one for i in ids) == 1
    html = render(out, "html")
    assert all(f'id="study-{i}"' in html for i in ids)
    csv_text = render(out, "csv")
    assert csv_text.splitlines()[0].startswith("study,") and {line.split(",")[0] for line in csv_text.splitlines()[1:]} == set(ids)
    capsys.readouterr()
    assert main(["report", str(out), "--list"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == len(ids)
    assert main(["report", str(out), "--study", "nosuchstudy"]) == 2
    assert "has no study 'nosuchstudy'" in capsys.readouterr().err
