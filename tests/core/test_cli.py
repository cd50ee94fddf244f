"""The ``sec4sr`` command line end to end: the console script in a subprocess (with the session's ``SEC4SR_HOME``)
for listing, a tiny study and bad input at the process level; ``sec4sr_core.cli.main`` in-process for the rest of the
bad-input matrix (each must be one ``error:`` line, exit status 2, no traceback)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from sec4sr_core.sdk.audio import fit_length, load_audio
from sec4sr_core.cli import main

from .helpers import assert_one_line_error, run_cli

EMBEDDED = Path(__file__).resolve().parents[2] / "sec4sr_core" / "data" / "embedded" / "audio"


# ----------------------------------------------------------------------------------------------------------------------
# Listing
# ----------------------------------------------------------------------------------------------------------------------


def test_list_json_has_components_with_their_distributions():
    proc = run_cli("list", "--json")
    assert proc.returncode == 0, proc.stderr
    items = json.loads(proc.stdout)
    by = {(i["kind"], i["name"]): i for i in items}
    assert by[("model", "ge2e")]["distribution"] == "sec4sr-plugins-models"
    assert by[("attack", "pgd")]["distribution"] == "sec4sr-plugins-attacks"
    assert by[("defense", "qt")]["distribution"] == "sec4sr-plugins-defenses"
    assert by[("dataset", "embedded")]["distribution"] == "sec4sr"  # the core's own built-ins, same mechanism
    assert by[("preset", "pgd-10")]["component"] == "pgd"
    for item in items:
        assert {"name", "kind", "distribution", "summary", "params"} <= item.keys(), item
        assert item["distribution"] and isinstance(item["params"], dict)
    steps = by[("attack", "pgd")]["params"]["steps"]
    assert steps["type"] == "integer" and steps["minimum"] == 1 and steps["description"]
    assert by[("defense", "qt")]["differentiable"] is False
    assert by[("attack", "pgd")]["knowledge"] == "white-box"


def test_list_table_and_plugins_in_process(capsys):
    assert main(["list", "attacks"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("attacks:") and "pgd" in out and "[sec4sr-plugins-attacks]" in out
    assert "params: " in out and "steps=10" in out
    assert main(["plugins"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {ln.split()[0]: ln for ln in lines}
    for ep, dist in [("builtins", "sec4sr"), ("attacks", "sec4sr-plugins-attacks"),
                     ("defenses", "sec4sr-plugins-defenses"), ("models", "sec4sr-plugins-models")]:
        assert dist in rows[ep] and rows[ep].rstrip().endswith("loaded"), rows[ep]
    assert main(["plugins", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["error"] is None and {p["name"] for p in doc["plugins"]} >= {"builtins", "attacks", "defenses", "models"}


# ----------------------------------------------------------------------------------------------------------------------
# A tiny study
# ----------------------------------------------------------------------------------------------------------------------

EPS = 0.002


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli-run")
    proc = run_cli("run", "--model", "ge2e", "--task", "csi-e", "--attack", f"pgd:steps=2,epsilon={EPS}",
                   "--defense", "qt", "--limit", "2", "--json", "--quiet", "--out", str(out))
    return proc, out


def test_run_json_summary(study):
    proc, out = study
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    doc = json.loads(proc.stdout)
    assert {"system", "task", "dataset", "seed", "benign", "results", "versions", "thresholds", "eer"} <= doc.keys()
    assert (doc["system"], doc["task"], doc["dataset"]) == ("ge2e", "csi-e", "embedded")
    assert set(doc["benign"]) == {"none", "qt"}
    cells = {(r["defense"], r["attack"], r["setting"]): r for r in doc["results"]}
    assert set(cells) == {("none", f"pgd:steps=2,epsilon={EPS}", "non-adaptive"),
                          ("qt", f"pgd:steps=2,epsilon={EPS}", "non-adaptive")}
    for r in cells.values():
        assert {"n", "benign_accuracy", "adversarial_accuracy", "success_rate", "mean_queries", "metrics"} <= r.keys()
        assert r["n"] == 2 and 0 <= r["success_rate"] <= 1
        assert r["metrics"]["linf"] <= EPS + 1 / 32768
    assert doc["versions"]["sec4sr"] and doc["versions"]["sec4sr-plugins-attacks"]
    assert (out / "results.sqlite").exists()


def test_run_writes_16bit_adversarial_wavs_within_epsilon(study):
    proc, out = study
    assert proc.returncode == 0, proc.stderr
    wavs = sorted((out / "audio" / "non-adaptive").rglob("*.wav"))
    assert len(wavs) == 2
    for wav in wavs:
        info = sf.info(str(wav))
        assert (info.samplerate, info.channels, info.subtype, info.frames) == (16000, 1, "PCM_16", 48000)
        # audio/non-adaptive/<attack>/<speaker>/<utterance>.wav: compare with the clean source, cropped/padded to 3 s
        speaker = wav.parent.name
        clean = fit_length(load_audio(EMBEDDED / speaker / f"{wav.stem}.flac"), 48000)
        adv = load_audio(wav)
        delta = (adv - clean).abs().max()
        assert 0 < float(delta) <= EPS + 1 / 32768


# ----------------------------------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------------------------------


def test_invalid_parameter_in_a_subprocess_is_one_line(tmp_path):
    proc = run_cli("run", "--attack", "pgd:steps=-3", "--limit", "2", "--out", str(tmp_path))
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert_one_line_error(proc, "pgd", "steps", "greater than or equal to 1", "-3")


@pytest.mark.parametrize("args, needles", [
    (["--attack", "pgdd"], ["unknown attack 'pgdd'", "did you mean", "'pgd'"]),
    (["--defense", "qtt:q=3"], ["unknown defense 'qtt'", "did you mean 'qt'"]),
    (["--model", "ge2"], ["unknown model 'ge2'", "did you mean 'ge2e'"]),
    (["--metric", "snrr"], ["unknown metric 'snrr'", "did you mean 'snr'"]),
    (["--attack", "pgd:stepz=3"], ["stepz", "unknown parameter", "allowed:", "steps"]),
    (["--defense", "qt:q=0"], ["qt", "q:", "greater than or equal to 1"]),
    (["--attack", "pgd:steps"], ["expected key=value"]),
    (["--limit", "0"], ["limit", "greater than or equal to 1"]),
    (["--dataset", "folder:root=/no/such/sec4sr/folder"], ["dataset folder not found", "/no/such/sec4sr/folder"]),
    (["/no/such/study.toml"], ["config file not found"]),
])
def test_bad_input_is_one_error_line(capsys, tmp_path, args, needles):
    limit = [] if "--limit" in args else ["--limit", "2"]
    code = main(["run", *args, *limit, "--out", str(tmp_path), "--quiet"])
    captured = capsys.readouterr()
    assert code == 2, captured
    assert_one_line_error(captured.err, *needles)


def test_missing_dataset_folder_path_says_so(capsys, tmp_path):
    code = main(["run", "--dataset", str(tmp_path / "no-such-corpus"), "--limit", "2", "--out", str(tmp_path)])
    captured = capsys.readouterr()
    assert code == 2
    assert_one_line_error(captured.err, "not found", "no-such-corpus")


def _copy_corpus(root: Path, speakers=("s01", "s02"), n=6) -> Path:
    """A small folder dataset copied from the embedded corpus: root/<speaker>/<utt>.flac."""
    for spk in speakers:
        (root / spk).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            shutil.copy(EMBEDDED / spk / f"{spk}_{i:02d}.flac", root / spk / f"{spk}_{i:02d}.flac")
    return root


def test_corrupt_file_in_a_folder_dataset(tmp_path):
    root = _copy_corpus(tmp_path / "corrupt")
    bad = root / "s01" / "s01_00.flac"
    bad.write_bytes(b"fLaC" + bytes(range(256)) * 4)
    proc = run_cli("run", "--dataset", str(root), "--limit", "2", "--out", str(tmp_path / "out"), "--quiet")
    assert proc.returncode == 2, proc.stderr
    assert_one_line_error(proc, "cannot read audio file", str(bad))


def test_empty_file_in_a_folder_dataset(capsys, tmp_path):
    root = _copy_corpus(tmp_path / "empty")
    empty = root / "s02" / "s02_01.flac"
    empty.unlink()
    sf.write(str(empty.with_suffix(".wav")), np.zeros(0, dtype=np.int16), 16000, subtype="PCM_16")
    code = main(["run", "--dataset", str(root), "--limit", "2", "--out", str(tmp_path / "out"), "--quiet"])
    assert code == 2
    assert_one_line_error(capsys.readouterr().err, "audio file is empty", "s02_01.wav")


def test_resampled_and_stereo_files_run_with_notices(tmp_path):
    """A 22.05 kHz file and a stereo file in a dataset are converted, each with a notice; the run succeeds."""
    root = _copy_corpus(tmp_path / "mixed")
    mono, sr = sf.read(str(root / "s01" / "s01_00.flac"), dtype="float32")
    sf.write(str(root / "s01" / "s01_00.flac"), np.stack([mono, 0.5 * mono], axis=1), sr, subtype="PCM_16")
    import torchaudio.functional as AF

    wave = load_audio(root / "s02" / "s02_01.flac")
    slow = AF.resample(wave, 16000, 22050)[0].numpy()
    (root / "s02" / "s02_01.flac").unlink()
    sf.write(str(root / "s02" / "s02_01.wav"), slow, 22050, subtype="PCM_16")
    proc = run_cli("run", "--dataset", str(root), "--limit", "2", "--json", "--quiet", "--out", str(tmp_path / "o"))
    assert proc.returncode == 0, proc.stderr
    assert "notice: s01_00.flac: 2 channels downmixed to mono" in proc.stderr
    assert "notice: s02_01.wav: resampled from 22050 Hz to 16000 Hz" in proc.stderr
    assert "Traceback" not in proc.stderr and "error:" not in proc.stderr
    doc = json.loads(proc.stdout)  # notices never pollute the JSON on stdout
    assert doc["benign"]["none"] == 1.0 and doc["dataset"] == str(root)
    assert torch.isfinite(load_audio(root / "s02" / "s02_01.wav")).all()
