"""The bad-input matrix (issue 13): every bad input gets one ``error: ...`` line naming the offending path or
parameter and the fix, exit status 2 and no traceback — and nothing already computed is lost.

The CLI cases run ``sec4sr_core.cli.main`` in-process (a handful again in a subprocess, ``python -m
sec4sr_core.cli``, to pin the process-level behaviour) into the output folder of one small successful study, whose
row count is checked after every case. The Python API cases assert :class:`ParameterError` (or another
:class:`Sec4srError`) with the argument named. Everything stops before model work except the one baseline run and
the run that pins unique utterance ids, so the file takes under a minute on two idle CPU cores.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import soundfile as sf
import torch

import sec4sr_core
from sec4sr_core.base.errors import AudioError, ParameterError, Sec4srError
from sec4sr_core.base.params import parse_chain, parse_spec
from sec4sr_core.builtins.datasets import FolderDataset
from sec4sr_core.cli import main
from sec4sr_core.sdk.audio import load_audio, save_audio, utterance_file
from sec4sr_core.sdk.checks import check_system_options, check_waves
from sec4sr_core.base.types import Utterance

from .helpers import TOY_T, toy_system

EMBEDDED = Path(__file__).resolve().parents[2] / "sec4sr_core" / "data" / "embedded" / "audio"
#: the cheapest real study: two trials of half a second, one FGSM column
CHEAP = ["--attack", "fgsm", "--limit", "2", "--length", "0.5", "--batch-size", "2", "--quiet"]
ROOT_USER = hasattr(os, "geteuid") and os.geteuid() == 0


# ----------------------------------------------------------------------------------------------------------------------
# Fixtures: a small folder corpus, a finished study to protect, and the odd files
# ----------------------------------------------------------------------------------------------------------------------


def _copy_corpus(root: Path, speakers=("s01", "s02"), n=6) -> Path:
    """root/<speaker>/<utt>.flac copied from the embedded corpus."""
    for spk in speakers:
        (root / spk).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            shutil.copy(EMBEDDED / spk / f"{spk}_{i:02d}.flac", root / spk / f"{spk}_{i:02d}.flac")
    return root


def _rows(out: Path) -> int:
    with sqlite3.connect(out / "results.sqlite") as conn:
        return conn.execute("SELECT COUNT(*) FROM results").fetchone()[0]


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A workspace holding ``done/``: the output folder of a finished cheap study (the rows to protect)."""
    ws = tmp_path_factory.mktemp("bad-inputs")
    code = main(["run", *CHEAP, "--out", str(ws / "done")])
    assert code == 0
    assert _rows(ws / "done") > 0
    return ws


@pytest.fixture(scope="module")
def corpus(base) -> Path:
    return _copy_corpus(base / "corpus")


def _fresh_corpus(ws: Path, name: str) -> Path:
    root = ws / name
    if root.exists():
        shutil.rmtree(root)
    return _copy_corpus(root)


def _truncated_wav(path: Path, keep: int = 11989, frames: int = 24000) -> Path:
    """A 16-bit WAV whose header declares ``frames`` frames but whose data holds only ``keep``."""
    wave = np.sin(np.arange(frames) / 7.0).astype(np.float32) * 0.3
    sf.write(str(path), wave, 16000, subtype="PCM_16")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 2 * (frames - keep)])
    return path


# ----------------------------------------------------------------------------------------------------------------------
# The CLI table
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class Case:
    """One bad command line: ``argv(ws)`` builds it in the workspace (``--out`` defaults to the finished study's
    folder, whose rows are counted before and after every case); every needle must be in the error line."""

    id: str
    argv: Callable[[Path], list[str]]
    needles: Callable[[Path], list[str]]
    #: also run it in a subprocess
    subprocess: bool = False
    marks: list = field(default_factory=list)


def _flags(*args: str, needles: tuple[str, ...], **kw) -> Case:
    return Case("flags " + " ".join(args), lambda ws: list(args), lambda ws: list(needles), **kw)


#: the cheap study in TOML; a case's own keys replace these
CHEAP_TOML = {"attacks": "['fgsm']", "limit": "2", "length_s": "0.5", "batch_size": "2"}


def _toml(name: str, text: str, needles: tuple[str, ...]) -> Case:
    def argv(ws: Path) -> list[str]:
        path = ws / f"{name}.toml"
        given = {line.partition("=")[0].strip() for line in text.splitlines()}
        cheap = "".join(f"{k} = {v}\n" for k, v in CHEAP_TOML.items() if k not in given)
        path.write_text(cheap + text.replace("{ws}", ws.as_posix()))
        return [str(path)]

    return Case(f"toml {name}", argv, lambda ws: list(needles))


def _fifo_corpus(ws: Path) -> Path:
    root = _fresh_corpus(ws, "fifo-corpus")
    os.mkfifo(root / "s02" / "s02_09.wav")
    return root


def _nested_fifo_corpus(ws: Path) -> Path:
    root = _fresh_corpus(ws, "fifo-nested")
    (root / "s01" / "take2").mkdir()
    os.mkfifo(root / "s01" / "take2" / "pipe.flac")
    return root


def _broken_link_corpus(ws: Path) -> Path:
    root = _fresh_corpus(ws, "broken-link")
    os.symlink(ws / "no-such-file.wav", root / "s01" / "gone.wav")
    return root


def _stale_out_corpus(ws: Path) -> Path:
    root = _fresh_corpus(ws, "stale-out")
    (root / "old-run" / "audio" / "non-adaptive" / "fgsm" / "s01").mkdir(parents=True)
    shutil.copy(ws / "done" / "results.sqlite", root / "old-run" / "results.sqlite")
    shutil.copy(EMBEDDED / "s01" / "s01_07.flac", root / "old-run" / "audio" / "non-adaptive" / "fgsm" / "s01" / "x.flac")
    return root


def _truncated_corpus(ws: Path) -> Path:
    root = _fresh_corpus(ws, "truncated")
    (root / "s01" / "s01_00.flac").unlink()
    _truncated_wav(root / "s01" / "s01_00.wav")  # the first file: an enrollment utterance
    return root


def _file(ws: Path, name: str, data: bytes) -> Path:
    path = ws / name
    if path.is_dir():
        shutil.rmtree(path)
    path.write_bytes(data)
    return path


def _folder(ws: Path, name: str) -> Path:
    (ws / name).mkdir(exist_ok=True)
    return ws / name


def _store(ws: Path, name: str, data: bytes | None) -> Path:
    """An output folder whose results.sqlite holds ``data`` (None: results.sqlite is a folder)."""
    out = ws / name
    out.mkdir(exist_ok=True)
    db = out / "results.sqlite"
    if data is None:
        db.mkdir(exist_ok=True)
    else:
        db.write_bytes(data)
    return out


CLI_CASES = [
    # -- strict component parameters ----------------------------------------------------------------------------
    _flags("--attack", "pgd:steps=true", needles=("pgd", "steps", "boolean"), subprocess=True),
    _flags("--attack", "pgd:steps=false", needles=("steps", "boolean")),
    _flags("--attack", "pgd:epsilon=true", needles=("epsilon", "boolean")),
    _flags("--attack", "pgd:steps=2.5", needles=("steps", "fractional", "2.5")),
    _flags("--attack", "pgd:epsilon=nan", needles=("epsilon", "finite")),
    _flags("--attack", "pgd:epsilon=inf", needles=("epsilon", "finite")),
    _flags("--attack", "pgd:epsilon=-Infinity", needles=("epsilon", "finite")),
    _flags("--attack", "pgd:steps=1,steps=2", needles=("steps", "given twice", "pgd:steps=1,steps=2")),
    _flags("--attack", "pgd:epsilon=0.002,epsilon=0.004", needles=("epsilon", "given twice")),
    _flags("--attack", "pgd:steps=", needles=("steps", "integer")),
    _flags("--attack", ":steps=3", needles=(":steps=3", "no component name")),
    _flags("--attack", "pgd:steps", needles=("pgd:steps", "key=value")),
    _flags("--defense", "+qt", needles=("+qt", "empty", "'+'")),
    _flags("--defense", "qt+", needles=("qt+", "empty")),
    _flags("--defense", "qt++at", needles=("qt++at", "empty")),
    _flags("--defense", "qt:q=512,q=256", needles=("q", "given twice")),
    _flags("--defense", "qt:q=true", needles=("qt", "q", "boolean")),
    _flags("--defense", "qt:q=512+at:snr=nan", needles=("snr", "finite")),
    _flags("--model", "ge2e:partial_frames=true", needles=("partial_frames", "boolean")),
    _flags("--dataset", "folder:root=/a,root=/b", needles=("root", "given twice")),
    # -- strict study numbers -----------------------------------------------------------------------------------
    _flags("--threshold", "nan", needles=("threshold", "finite")),
    _flags("--threshold", "inf", needles=("threshold", "finite")),
    _flags("--threshold=-inf", needles=("threshold", "finite")),
    _flags("--length", "1e-5", needles=("length", "0.1")),
    _flags("--length", "0", needles=("length", "0.1")),
    _flags("--length", "-1", needles=("length", "0.1")),
    _flags("--length", "nan", needles=("length", "finite")),
    _flags("--length", "1e9", needles=("length", "600")),
    _flags("--seed", "-1", needles=("seed", "greater than or equal to 0")),
    _flags("--eot", "0", needles=("eot", "greater than or equal to 1")),
    _flags("--batch-size", "0", needles=("batch_size", "greater than or equal to 1")),
    _flags("--limit", "-3", needles=("limit", "greater than or equal to 1")),
    _flags("--device", "tpu", needles=("device", "cpu")),
    # -- TOML configs ------------------------------------------------------------------------------------------
    _toml("nan-threshold", "threshold = nan\nout = '{ws}/done'\n", ("threshold", "finite")),
    _toml("tiny-length", "length_s = 1e-5\nout = '{ws}/done'\n", ("length_s", "0.1")),
    _toml("bool-steps", "attacks = [{name = 'pgd', steps = true}]\nout = '{ws}/done'\n", ("steps", "boolean")),
    _toml("neg-seed", "seed = -4\nout = '{ws}/done'\n", ("seed",)),
    _toml("enroll-nan", "enroll_length_s = inf\nout = '{ws}/done'\n", ("enroll_length_s", "finite")),
    _toml("system-nan", "systems = [{model = 'ge2e', task = 'sv', threshold = nan}]\nout = '{ws}/done'\n",
          ("threshold", "finite")),
    _toml("empty-chain", "defenses = [['qt', '']]\nout = '{ws}/done'\n", ("empty",)),
    Case("toml binary", lambda ws: [str(_file(ws, "binary.toml", bytes(range(256)) * 4))],
         lambda ws: [str(ws / "binary.toml"), "TOML"]),
    Case("toml directory", lambda ws: [str(_folder(ws, "dir.toml"))], lambda ws: [str(ws / "dir.toml"), "folder"]),
    # -- datasets ----------------------------------------------------------------------------------------------
    Case("dataset fifo", lambda ws: ["--dataset", str(_fifo_corpus(ws))],
         lambda ws: [str(ws / "fifo-corpus" / "s02" / "s02_09.wav"), "not a regular file", "remove it"],
         subprocess=True),
    Case("dataset nested fifo", lambda ws: ["--dataset", f"folder:root={_nested_fifo_corpus(ws)}"],
         lambda ws: [str(ws / "fifo-nested" / "s01" / "take2" / "pipe.flac"), "not a regular file"]),
    Case("dataset broken link", lambda ws: ["--dataset", str(_broken_link_corpus(ws))],
         lambda ws: [str(ws / "broken-link" / "s01" / "gone.wav"), "broken link"]),
    Case("dataset holds an old output folder", lambda ws: ["--dataset", str(_stale_out_corpus(ws))],
         lambda ws: [str(ws / "stale-out" / "old-run"), "output folder", "move it out"]),
    Case("dataset is an output folder", lambda ws: ["--dataset", str(ws / "done"), "--out", str(ws / "elsewhere")],
         lambda ws: [str(ws / "done"), "output folder", "not a dataset"]),
    Case("dataset truncated wav", lambda ws: ["--dataset", str(_truncated_corpus(ws))],
         lambda ws: [str(ws / "truncated" / "s01" / "s01_00.wav"), "truncated", "11989 of the 24000"]),
    Case("out inside the dataset", lambda ws: ["--dataset", str(ws / "corpus"), "--out", str(ws / "corpus" / "out")],
         lambda ws: [str(ws / "corpus" / "out"), str(ws / "corpus"), "outside the dataset"],
         subprocess=True),
    Case("out is the dataset", lambda ws: ["--dataset", f"folder:root={ws / 'corpus'}", "--out", str(ws / "corpus")],
         lambda ws: [str(ws / "corpus"), "inside the dataset"]),
    Case("out deep inside a system's dataset",
         lambda ws: [str(_file(ws, "sys-ds.toml", f"systems = [{{model = 'ge2e', dataset = '{ws / 'corpus'}'}}]\n"
                                                  .encode())), "--out", str(ws / "corpus" / "s01" / "x" / "y")],
         lambda ws: [str(ws / "corpus" / "s01" / "x" / "y"), "inside the dataset folder"]),
    # -- output folders and stores -----------------------------------------------------------------------------
    Case("out is a file", lambda ws: ["--out", str(_file(ws, "a-file", b"not a folder"))],
         lambda ws: [str(ws / "a-file"), "not a folder"]),
    Case("out is the store file", lambda ws: ["--out", str(ws / "done" / "results.sqlite")],
         lambda ws: [str(ws / "done" / "results.sqlite"), "not a folder"]),
    Case("out under a file", lambda ws: ["--out", str(_file(ws, "b-file", b"x") / "sub")],
         lambda ws: [str(ws / "b-file"), "is a file"]),
    Case("store is random bytes", lambda ws: ["--out", str(_store(ws, "corrupt", bytes(range(256)) * 20))],
         lambda ws: [str(ws / "corrupt" / "results.sqlite"), "not a database", "move it away"],
         subprocess=True),
    Case("store is text", lambda ws: ["--out", str(_store(ws, "texty", b"hello, I am not SQLite\n" * 50))],
         lambda ws: [str(ws / "texty" / "results.sqlite"), "not a database"]),
    Case("store is a folder", lambda ws: ["--out", str(_store(ws, "dirstore", None))],
         lambda ws: [str(ws / "dirstore" / "results.sqlite"), "is a folder"]),
]


def _check_error(text: str, code: int, needles: list[str]) -> str:
    assert "Traceback" not in text, text
    assert "internal error" not in text, text
    assert code == 2, text
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("notice:")]
    assert len(lines) == 1 and lines[0].startswith("error: "), text
    for n in needles:
        assert n.lower() in lines[0].lower(), (n, lines[0])
    return lines[0]


def _argv(case: Case, ws: Path) -> list[str]:
    """The case's arguments after the cheap ones (the last of a repeated flag wins); a TOML case gets no flag
    that would override its file (its text carries the cheap settings)."""
    args = case.argv(ws)
    if "--out" not in args:
        args += ["--out", str(ws / "done")]
    cheap = ["--quiet"] if case.id.startswith("toml") else CHEAP
    return ["run", *cheap, *args]


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=c.marks) for c in CLI_CASES])
def test_cli_bad_input(case, base, corpus, capsys):
    before = _rows(base / "done")
    code = main(_argv(case, base))
    captured = capsys.readouterr()
    _check_error(captured.err + captured.out, code, case.needles(base))
    assert captured.out == ""
    assert _rows(base / "done") == before


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=c.marks) for c in CLI_CASES if c.subprocess])
def test_cli_bad_input_in_a_subprocess(case, base, corpus):
    before = _rows(base / "done")
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, "-m", "sec4sr_core.cli", *_argv(case, base)], capture_output=True,
                          text=True, env=env, timeout=120)
    _check_error(proc.stderr + proc.stdout, proc.returncode, case.needles(base))
    assert _rows(base / "done") == before


def test_a_corrupt_store_is_left_untouched(base, capsys):
    out = _store(base, "keep-corrupt", b"\x00garbage" * 500)
    digest = _md5(out / "results.sqlite")
    assert main(["run", *CHEAP, "--out", str(out)]) == 2
    assert "not a database" in capsys.readouterr().err
    assert _md5(out / "results.sqlite") == digest
    assert sorted(p.name for p in out.iterdir()) == ["results.sqlite"]


def test_read_only_store_names_the_path_and_keeps_the_rows(base, capsys, monkeypatch):
    """A store the process may not write (simulated with SQLite's read-only mode, since root ignores chmod)."""
    from sec4sr_core.study import store as store_mod

    connect = sqlite3.connect
    target = str(base / "done" / "results.sqlite")

    def read_only(path, *args, **kwargs):
        if str(path) == target:
            return connect(f"file:{path}?mode=ro", *args, uri=True, **kwargs)
        return connect(path, *args, **kwargs)

    before = _rows(base / "done")
    monkeypatch.setattr(store_mod.sqlite3, "connect", read_only)
    code = main(["run", *CHEAP, "--out", str(base / "done")])
    monkeypatch.undo()
    _check_error(capsys.readouterr().err, code, [target, "read-only", "chmod u+w"])
    assert _rows(base / "done") == before


@pytest.mark.skipif(ROOT_USER, reason="root ignores file permissions")
def test_read_only_store_by_permissions(base, capsys):
    out = base / "ro"
    shutil.copytree(base / "done", out, ignore=shutil.ignore_patterns("audio"))
    before = _rows(out)
    for p in [out / "results.sqlite", out]:
        p.chmod(0o555 if p.is_dir() else 0o444)
    try:
        code = main(["run", *CHEAP, "--out", str(out)])
        _check_error(capsys.readouterr().err, code, [str(out / "results.sqlite")])
    finally:
        out.chmod(0o755)
        (out / "results.sqlite").chmod(0o644)
    assert _rows(out) == before


def _deny(monkeypatch, folder: Path) -> None:
    """Make ``os.scandir`` of ``folder`` fail as an unreadable folder does (root ignores chmod)."""
    import sec4sr_core.builtins.datasets as ds_mod

    real = os.scandir

    def scandir(path="."):
        if Path(path) == folder:
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(ds_mod.os, "scandir", scandir)


def test_unreadable_speaker_folder_is_an_error_naming_it(base, capsys, monkeypatch):
    root = _fresh_corpus(base, "unreadable")
    _deny(monkeypatch, root / "s02")
    before = _rows(base / "done")
    code = main(["run", "--dataset", str(root), *CHEAP, "--out", str(base / "done")])
    monkeypatch.undo()
    _check_error(capsys.readouterr().err, code, [str(root / "s02"), "permission denied", "chmod"])
    assert _rows(base / "done") == before


@pytest.mark.skipif(ROOT_USER, reason="root ignores file permissions")
def test_unreadable_speaker_folder_by_permissions(base, capsys):
    root = _fresh_corpus(base, "unreadable-chmod")
    (root / "s02").chmod(0)
    try:
        code = main(["run", "--dataset", str(root), *CHEAP, "--out", str(base / "done")])
        _check_error(capsys.readouterr().err, code, [str(root / "s02")])
    finally:
        (root / "s02").chmod(0o755)


def test_ids_are_unique_per_file_and_no_trial_vanishes(base, capsys):
    """``u05.wav`` beside ``u05.flac`` and ``a/u99.wav`` beside ``b/u99.wav`` were one id each: a trial vanished.
    Now every file is a trial with its own row, and odd names (``....wav``) are written without a crash."""
    root = _fresh_corpus(base, "same-names")
    wave, sr = sf.read(str(EMBEDDED / "s01" / "s01_07.flac"), dtype="float32")
    sf.write(str(root / "s01" / "s01_05.wav"), wave, sr, subtype="PCM_16")  # beside s01_05.flac
    for sub in ("a", "b"):
        (root / "s02" / sub).mkdir()
        sf.write(str(root / "s02" / sub / "u99.wav"), wave, sr, subtype="PCM_16")
    sf.write(str(root / "s02" / "....wav"), wave, sr, format="WAV", subtype="PCM_16")
    ds = FolderDataset(root=root)
    test_ids = [u.id for u in ds.split("test")]
    assert {"s01/s01_05.flac", "s01/s01_05.wav", "s02/a/u99.wav", "s02/b/u99.wav"} <= set(test_ids)
    assert len(test_ids) == len(set(test_ids))
    out = base / "same-names-out"
    code = main(["run", "--dataset", str(root), "--attack", "fgsm", "--length", "0.5", "--batch-size", "16", "--quiet",
                 "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "Traceback" not in captured.err and "error" not in captured.err
    with sqlite3.connect(out / "results.sqlite") as conn:
        rows = conn.execute("SELECT utterance, audio_path FROM results WHERE attack = 'fgsm'").fetchall()
    assert sorted(u for u, _ in rows) == sorted(test_ids)  # every trial has its row


def test_saved_audio_paths_are_unique_per_trial(base):
    out = base / "same-names-out"
    if not (out / "results.sqlite").exists():
        pytest.skip("needs test_ids_are_unique_per_file_and_no_trial_vanishes")
    with sqlite3.connect(out / "results.sqlite") as conn:
        paths = [p for (p,) in conn.execute("SELECT audio_path FROM results WHERE attack = 'fgsm'")]
    assert len(paths) == len(set(paths)) and all(Path(p).exists() for p in paths)


# ----------------------------------------------------------------------------------------------------------------------
# The Python API table
# ----------------------------------------------------------------------------------------------------------------------

B, T = 2, TOY_T
GOOD_X = torch.linspace(-0.5, 0.5, B * T).reshape(B, 1, T)
GOOD_Y = torch.tensor([0, 1])


def _with_nan(x: torch.Tensor, value: float) -> torch.Tensor:
    x = x.clone()
    x[1, 0, 7] = value
    return x


API_WAVES = [
    ("1-D tensor", GOOD_X.reshape(-1), None, ["x", "(B, 1, T)", "reshape(1, 1, -1)"]),
    ("(B, T) tensor", GOOD_X[:, 0], GOOD_Y, ["x", "(B, 1, T)", "unsqueeze(1)"]),
    ("stereo", GOOD_X.repeat(1, 2, 1), GOOD_Y, ["x", "(2, 2, 160)", "mean(dim=1"]),
    ("4-D tensor", GOOD_X[None], GOOD_Y, ["x", "(B, 1, T)"]),
    ("empty batch", GOOD_X[:0], GOOD_Y[:0], ["x", "empty"]),
    ("zero samples", GOOD_X[..., :0], GOOD_Y, ["x", "empty"]),
    ("float64", GOOD_X.double(), GOOD_Y, ["x", "float32", "float64", "x.float()"]),
    ("float16", GOOD_X.half(), GOOD_Y, ["x", "float16"]),
    ("int16", (GOOD_X * 32767).short(), GOOD_Y, ["x", "int16", "/ 32768"]),
    ("int64", (GOOD_X * 100).long(), GOOD_Y, ["x", "int64"]),
    ("NaN", _with_nan(GOOD_X, math.nan), GOOD_Y, ["x", "1 nan"]),
    ("inf", _with_nan(GOOD_X, math.inf), GOOD_Y, ["x", "infinite"]),
    ("above 1", GOOD_X * 3, GOOD_Y, ["x", "[-1, 1]", "1.5"]),
    ("below -1", _with_nan(GOOD_X, -1.01), GOOD_Y, ["x", "[-1, 1]", "clamp"]),
    ("numpy array", GOOD_X.numpy(), GOOD_Y, ["x", "torch.Tensor", "ndarray"]),
    ("list", GOOD_X.tolist(), GOOD_Y, ["x", "torch.Tensor", "list"]),
    ("meta device", torch.empty(B, 1, T, device="meta"), GOOD_Y, ["x", "meta", "model is on cpu", ".to("]),
    ("labels too long", GOOD_X, torch.tensor([0, 1, 2]), ["y", "(2,)", "(3,)"]),
    ("labels too short", GOOD_X, torch.tensor([0]), ["y", "(2,)", "(1,)"]),
    ("labels 2-D", GOOD_X, GOOD_Y[:, None], ["y", "(2,)", "(2, 1)"]),
    ("labels float", GOOD_X, GOOD_Y.float(), ["y", "integer", "float32"]),
    ("labels bool", GOOD_X, GOOD_Y.bool(), ["y", "integer", "bool"]),
    ("labels list", GOOD_X, [0, 1], ["y", "torch.Tensor", "list"]),
    ("labels below -1", GOOD_X, torch.tensor([0, -5]), ["y", "-5", "reject"]),
]


@pytest.fixture(scope="module")
def toy():
    return toy_system()


@pytest.mark.parametrize("x, y, needles", [pytest.param(x, y, n, id=i) for i, x, y, n in API_WAVES])
def test_api_attack_refuses_bad_tensors(toy, x, y, needles):
    atk = sec4sr_core.attack("fgsm")
    with pytest.raises(ParameterError) as info:
        atk(toy, x, y)
    msg = str(info.value)
    assert "\n" not in msg
    for n in needles:
        assert n.lower() in msg.lower(), (n, msg)


def test_api_claims_and_crafting_are_checked(toy):
    atk = sec4sr_core.attack("fgsm")
    with pytest.raises(ParameterError, match=r"claims must have shape \(2,\)"):
        atk(toy, GOOD_X, GOOD_Y, claims=torch.tensor([0, 1, 1]))
    with pytest.raises(ParameterError, match="crafting must be float32"):
        atk(toy, GOOD_X, GOOD_Y, crafting=GOOD_X.double())


def test_check_waves_accepts_the_one_domain_and_bounds_labels():
    check_waves(GOOD_X, GOOD_Y, device="cpu")
    check_waves(GOOD_X.clamp(-1, 1).sign(), torch.tensor([-1, 0]), device=torch.device("cpu"), classes=2)
    with pytest.raises(ParameterError, match="system has 2 speaker"):
        check_waves(GOOD_X, torch.tensor([0, 2]), classes=2)
    with pytest.raises(ParameterError, match="wave must have shape"):
        check_waves(GOOD_X[0], what="wave")


def test_the_sdk_exports_the_checks():
    import sec4sr_core.sdk as sdk

    assert sdk.check_waves is check_waves and sdk.check_system_options is check_system_options


@pytest.mark.parametrize("call, needles", [
    (lambda: sec4sr_core.attack("pgd", steps=True), ["steps", "boolean"]),
    (lambda: sec4sr_core.attack("pgd", epsilon=math.nan), ["epsilon", "finite"]),
    (lambda: sec4sr_core.attack("pgd", epsilon=math.inf), ["epsilon", "finite"]),
    (lambda: sec4sr_core.attack("pgd:steps=1,steps=2"), ["steps", "twice"]),
    (lambda: sec4sr_core.defense("qt", q=False), ["q", "boolean"]),
    (lambda: parse_chain("+qt"), ["+qt", "first part is empty"]),
    (lambda: parse_chain("qt:q=512++at"), ["#2 part is empty"]),
    (lambda: parse_spec("pgd:steps=3,steps=3"), ["steps", "twice"]),
    (lambda: check_system_options("csi", "cpu"), ["task 'csi'", "csi-e"]),
    (lambda: check_system_options("sv", "tpu"), ["device 'tpu'", "cuda:N"]),
    (lambda: check_system_options("sv", "cpu", math.nan), ["threshold", "finite"]),
    (lambda: check_system_options("sv", "cpu", True), ["threshold", "finite"]),
], ids=["attack-bool", "attack-nan", "attack-inf", "attack-dup", "defense-bool", "chain-lead", "chain-double",
        "spec-dup", "task", "device", "threshold-nan", "threshold-bool"])
def test_api_parameters_are_strict(call, needles):
    with pytest.raises(ParameterError) as info:
        call()
    for n in needles:
        assert n.lower() in str(info.value).lower(), (n, str(info.value))


def test_api_defend_refuses_an_empty_chain_part(toy):
    with pytest.raises(ParameterError, match="last part is empty"):
        sec4sr_core.api.defend(toy, "qt:q=512+")


def test_api_datasets_and_audio(base, monkeypatch):
    ws = base
    fifo = _fifo_corpus(ws)
    with pytest.raises(AudioError, match="not a regular file") as info:
        FolderDataset(root=fifo).split("test")
    assert str(fifo / "s02" / "s02_09.wav") in str(info.value)
    with pytest.raises(AudioError, match="not a regular file"):  # load_audio never blocks on a FIFO either
        load_audio(fifo / "s02" / "s02_09.wav")
    root = _fresh_corpus(ws, "api-unreadable")
    _deny(monkeypatch, root / "s01")
    with pytest.raises(Sec4srError, match="cannot read dataset folder") as info:
        FolderDataset(root=root).split("enroll")
    assert str(root / "s01") in str(info.value)
    monkeypatch.undo()
    with pytest.raises(AudioError, match=r"truncated.*11989 of the 24000 frames"):
        load_audio(_truncated_wav(ws / "cut.wav"))
    with pytest.raises(Sec4srError, match="output folder"):
        FolderDataset(root=_stale_out_corpus(ws)).split("enroll")


def test_odd_names_are_saved_and_map_to_unique_files(tmp_path):
    """``....wav`` has no extension for libsndfile (it crashed the writer); output files are unique per id."""
    path = save_audio(tmp_path / "s01" / "....wav", torch.zeros(1, 160))
    assert sf.info(str(path)).format == "WAV"
    ids = ["s01/u05.wav", "s01/u05.flac", "s01/a/u99.wav", "s01/b/u99.wav", "s01/....wav", "s01/..", "s01/.",
           "s01/", "s01/%2E", "u05"]
    files = [utterance_file(Utterance(Path("x"), "s01", i)) for i in ids]
    assert len(set(files)) == len(files)
    for f in files:
        assert f.parts[0] == "s01" and ".." not in f.parts and "." not in f.parts and not f.is_absolute()
        assert f.name.endswith(".wav")
    assert files[0] == Path("s01/u05.wav.wav") and files[2] == Path("s01/a/u99.wav.wav")
    assert files[-1] == Path("s01/u05.wav")  # ids without the speaker prefix (the embedded corpus) as before


@pytest.mark.parametrize("kwargs,named", [({"task": "bogus"}, "bogus"), ({"device": "tpu"}, "tpu"),
                                          ({"threshold": float("nan")}, "threshold")])
def test_load_system_checks_its_options(kwargs, named):
    import sec4sr_core as sec4sr
    from sec4sr_core.base.errors import Sec4srError

    with pytest.raises(Sec4srError, match=named):
        sec4sr.load_system("ge2e", **kwargs)
