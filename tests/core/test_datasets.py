"""Built-in datasets: the embedded corpus, the speaker-folder and split-folder layouts, LibriSpeech's layout, and
checksum verification (per-file SHA256SUMS and published archive MD5s)."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from sec4sr_core.builtins import datasets as ds_mod
from sec4sr_core.builtins.datasets import SPLITS, EmbeddedDataset, FolderDataset, LibriSpeechDataset, verify_archive
from sec4sr_core.base.errors import AudioError, ParameterError, Sec4srError
from sec4sr_core.plugins.manager import get_registry
from sec4sr_core.compose.factories import resolve_dataset

SR = 16000


def _sine(path: Path, freq: float = 220.0, seconds: float = 0.1) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(SR * seconds)) / SR
    sf.write(str(path), 0.3 * np.sin(2 * np.pi * freq * t), SR, subtype="PCM_16")
    return path


def _ids(utts):
    return [u.id for u in utts]


# ----------------------------------------------------------------------------------------------------------------------
# Embedded corpus
# ----------------------------------------------------------------------------------------------------------------------


def test_embedded_manifest_layout(embedded):
    sizes = {s: len(embedded.split(s)) for s in SPLITS}
    assert sizes == {"enroll": 48, "dev": 32, "test": 112, "imposter-dev": 40, "imposter-test": 56,
                     "train": 216, "heldout": 72}
    all_speakers = {u.speaker for s in SPLITS for u in embedded.split(s)}
    assert len(all_speakers) == 24
    enrolled = embedded.enrolled_speakers()
    imposters = embedded.speakers("imposter-test")
    assert len(enrolled) == 16 and len(imposters) == 8 and not set(enrolled) & set(imposters)
    assert embedded.speakers("imposter-dev") == imposters
    assert embedded.speakers("test") == embedded.speakers("dev") == enrolled
    # the README's rule: utterance numbers per split
    number = {"enroll": range(0, 3), "dev": range(3, 5), "test": range(5, 12), "imposter-dev": range(0, 5),
              "imposter-test": range(5, 12), "train": range(0, 9), "heldout": range(9, 12)}
    for split, allowed in number.items():
        for u in embedded.split(split):
            assert int(re.fullmatch(r"s\d\d_(\d\d)", u.id).group(1)) in allowed, (split, u.id)
            assert u.path.exists() and u.path.suffix == ".flac" and u.path.parent.name == u.speaker
    assert embedded.fingerprint() == EmbeddedDataset().fingerprint()
    with pytest.raises(Sec4srError, match="no split 'validation'"):
        embedded.split("validation")


def test_embedded_checksums_verify():
    ds = get_registry().build("dataset", "embedded:verify=true")
    assert len(ds.split("enroll")) == 48  # verification ran (it raises on any mismatch) and the corpus loads
    sums = ds.root / "SHA256SUMS"
    assert len([ln for ln in sums.read_text().splitlines() if ln.strip()]) == 288
    first = sums.read_text().splitlines()[0]
    digest, _, rel = first.partition("  ")
    assert hashlib.sha256((ds.root / rel).read_bytes()).hexdigest() == digest


def test_embedded_audio_format(embedded):
    info = sf.info(str(embedded.split("enroll")[0].path))
    assert (info.samplerate, info.channels, info.subtype) == (SR, 1, "PCM_16")


# ----------------------------------------------------------------------------------------------------------------------
# Folder layouts
# ----------------------------------------------------------------------------------------------------------------------


@pytest.fixture
def speaker_folder(tmp_path):
    root = tmp_path / "corpus"
    for i, spk in enumerate(["alice", "bob", "carol", "zed"]):
        for j in range(7):
            ext = "flac" if j % 2 else "wav"
            _sine(root / spk / f"u{j}.{ext}", 200 + 50 * i + 5 * j)
    (root / "alice" / "notes.txt").write_text("not audio")
    _sine(root / "bob" / "sub" / "u9.wav")  # nested files count too
    return root


def test_folder_layout_split_rule(speaker_folder):
    ds = FolderDataset(root=speaker_folder, imposters=1)
    assert ds.enrolled_speakers() == ["alice", "bob", "carol"]
    assert _ids(ds.split("enroll"))[:3] == ["alice/u0.wav", "alice/u1.flac", "alice/u2.wav"]
    assert len(ds.split("enroll")) == 9 and len(ds.split("dev")) == 6
    assert _ids(ds.split("test")) == ["alice/u5.flac", "alice/u6.wav", "bob/u5.flac", "bob/u6.wav", "bob/sub/u9.wav",
                                      "carol/u5.flac", "carol/u6.wav"]
    assert _ids(ds.split("imposter-dev")) == ["zed/u0.wav", "zed/u1.flac", "zed/u2.wav"]
    assert _ids(ds.split("imposter-test")) == ["zed/u3.flac", "zed/u4.wav", "zed/u5.flac", "zed/u6.wav"]
    assert len(ds.split("heldout")) == 4 * 3 and len(ds.split("train")) == 4 * 4 + 1
    assert not {u.path for u in ds.split("train")} & {u.path for u in ds.split("heldout")}
    assert all(u.path.suffix in (".wav", ".flac") for s in SPLITS for u in ds.split(s))
    # a path given to the runner is a folder dataset
    same = resolve_dataset(str(speaker_folder))
    assert isinstance(same, FolderDataset) and _ids(same.split("enroll")) == _ids(FolderDataset(root=speaker_folder).split("enroll"))
    # the fingerprint follows the files: editing one changes it
    before = ds.fingerprint()
    _sine(speaker_folder / "alice" / "u0.wav", 999.0, seconds=0.2)
    assert FolderDataset(root=speaker_folder, imposters=1).fingerprint() != before


def test_split_folder_layout(tmp_path):
    root = tmp_path / "splits"
    for spk in ("a", "b"):
        for j in range(2):
            _sine(root / "enroll" / spk / f"e{j}.wav")
            _sine(root / "test" / spk / f"t{j}.wav")
    _sine(root / "imposter" / "z" / "i0.wav")
    ds = FolderDataset(root=root)
    assert ds.enrolled_speakers() == ["a", "b"]
    assert _ids(ds.split("test")) == ["test/a/t0.wav", "test/a/t1.wav", "test/b/t0.wav", "test/b/t1.wav"]
    assert _ids(ds.split("imposter-dev")) == _ids(ds.split("imposter-test")) == ["imposter/z/i0.wav"]
    assert ds.split("dev") == []


def test_folder_errors(tmp_path, speaker_folder):
    with pytest.raises(Sec4srError, match="dataset folder not found"):
        FolderDataset(root=tmp_path / "missing").split("enroll")
    (tmp_path / "empty" / "spk").mkdir(parents=True)
    with pytest.raises(Sec4srError, match="no audio files"):
        FolderDataset(root=tmp_path / "empty").split("enroll")
    with pytest.raises(Sec4srError, match="imposters=4 leaves no enrolled speaker"):
        FolderDataset(root=speaker_folder, imposters=4).split("enroll")
    with pytest.raises(Sec4srError, match="unknown split 'val'"):
        FolderDataset(root=speaker_folder).split("val")
    with pytest.raises(ParameterError, match="imposters"):
        get_registry().build("dataset", f"folder:root={speaker_folder},imposters=-1")
    with pytest.raises(ParameterError, match="root"):
        get_registry().build("dataset", "folder")


def _write_sums(root: Path) -> Path:
    lines = [f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.relative_to(root).as_posix()}"
             for p in sorted(root.rglob("*")) if p.suffix in (".wav", ".flac")]
    (root / "SHA256SUMS").write_text("\n".join(lines) + "\n")
    return root / "SHA256SUMS"


def test_folder_checksums(speaker_folder):
    _write_sums(speaker_folder)
    assert len(FolderDataset(root=speaker_folder).split("enroll")) == 12  # verified and fine
    # tamper one file: a clear error naming it
    _sine(speaker_folder / "bob" / "u3.flac", 1234.0)
    with pytest.raises(Sec4srError) as info:
        FolderDataset(root=speaker_folder).split("enroll")
    msg = str(info.value)
    assert "failed verification" in msg and "bob/u3.flac (checksum mismatch)" in msg and "\n" not in msg
    # a listed file that is gone
    (speaker_folder / "carol" / "u6.wav").unlink()
    with pytest.raises(Sec4srError, match=r"2 file\(s\).*carol/u6.wav \(missing\)"):
        FolderDataset(root=speaker_folder).split("test")
    # verification can be switched off
    assert len(FolderDataset(root=speaker_folder, verify=False).split("enroll")) == 12


# ----------------------------------------------------------------------------------------------------------------------
# LibriSpeech layout and archives
# ----------------------------------------------------------------------------------------------------------------------


@pytest.fixture
def libri(tmp_path):
    root = tmp_path / "LibriSpeech"
    for spk, chapters in {"1034": ["121119"], "19": ["198", "227"], "103": ["1240"]}.items():
        for ch in chapters:
            for k in range(3):
                _sine(root / "train-clean-100" / spk / ch / f"{spk}-{ch}-{k:04d}.flac")
    (root / "train-clean-100" / "19" / "198" / "19-198.trans.txt").write_text("transcripts are ignored\n")
    return root


def test_librispeech_layout(libri):
    ds = LibriSpeechDataset(root=libri)
    assert ds.enrolled_speakers() == ["103", "1034", "19"]
    assert [u.id for u in ds.split("enroll") if u.speaker == "103"] == ["103-1240-0000", "103-1240-0001",
                                                                       "103-1240-0002"]
    nineteen = [u.id for s in SPLITS for u in ds.split(s) if u.speaker == "19"]
    assert "19-227-0002" in nineteen and all(i.startswith("19-") for i in nineteen)
    assert len(ds.split("heldout")) == 9 and len(ds.split("test")) == 1  # 19 has 6 files: 3 enroll, 2 dev, 1 test
    # speakers=N keeps the first N speaker ids in numeric order (19 < 103 < 1034), not string order
    only_two = LibriSpeechDataset(root=libri, speakers=2)
    assert only_two.enrolled_speakers() == ["103", "19"]
    # the subset folder itself may be given as root
    direct = LibriSpeechDataset(root=libri / "train-clean-100")
    assert _ids(direct.split("heldout")) == _ids(ds.split("heldout"))


def test_librispeech_imposters_are_the_last_speakers_in_id_order(libri):
    """``imposters`` are "the last of those used", and ``speakers=N`` orders ids numerically (19 < 103 < 1034), so
    the imposter of {19, 103, 1034} is 1034. ``split_by_rule`` sorts names as strings, making 19 the imposter."""
    ds = LibriSpeechDataset(root=libri, imposters=1)
    assert ds.speakers("imposter-test") == ["1034"]
    assert ds.enrolled_speakers() == ["103", "19"]


def test_librispeech_errors(tmp_path, libri):
    with pytest.raises(Sec4srError, match="subset folder not found"):
        LibriSpeechDataset(root=libri, subset="dev-clean").split("enroll")
    (tmp_path / "L2" / "dev-clean" / "7" / "1").mkdir(parents=True)
    with pytest.raises(AudioError, match="no LibriSpeech .flac files"):
        LibriSpeechDataset(root=tmp_path / "L2", subset="dev-clean").split("enroll")


def test_verify_archive(tmp_path, monkeypatch, libri):
    fake = tmp_path / "dev-clean.tar.gz"
    fake.write_bytes(b"definitely not LibriSpeech")
    md5 = hashlib.md5(fake.read_bytes()).hexdigest()
    with pytest.raises(Sec4srError) as info:
        verify_archive(fake)
    msg = str(info.value)
    assert "checksum mismatch" in msg and md5 in msg and "42e2234ba48799c1f50f24a7926300a1" in msg
    assert "re-download" in msg and "\n" not in msg
    with pytest.raises(Sec4srError, match="archive not found"):
        verify_archive(tmp_path / "test-clean.tar.gz")
    other = tmp_path / "mystery.tar.gz"
    other.write_bytes(b"x")
    with pytest.raises(Sec4srError, match="no published checksum for mystery.tar.gz"):
        verify_archive(other)
    # a dataset that names its archive verifies it before use
    with pytest.raises(Sec4srError, match="checksum mismatch"):
        LibriSpeechDataset(root=libri, archive=fake).split("enroll")
    # with the right checksum it passes and returns the digest
    monkeypatch.setitem(ds_mod.KNOWN_MD5, "dev-clean.tar.gz", md5)
    assert verify_archive(fake) == md5
    assert LibriSpeechDataset(root=libri, archive=fake).enrolled_speakers() == ["103", "1034", "19"]


# ----------------------------------------------------------------------------------------------------------------------
# Ids unique per file; scanning refuses what it cannot read
# ----------------------------------------------------------------------------------------------------------------------


def test_files_sharing_a_stem_are_distinct_utterances(tmp_path):
    root = tmp_path / "same"
    for j in range(5):
        _sine(root / "a" / f"u{j}.wav")
    _sine(root / "a" / "u5.wav")
    sf.write(str(root / "a" / "u5.flac"), np.zeros(1600), SR, subtype="PCM_16")  # beside u5.wav
    _sine(root / "a" / "x" / "u9.wav")
    _sine(root / "a" / "y" / "u9.wav")  # same name, other sub-folder
    ids = _ids(FolderDataset(root=root).split("test"))
    assert ids == ["a/u5.flac", "a/u5.wav", "a/x/u9.wav", "a/y/u9.wav"]


def test_two_files_under_one_id_are_refused(libri):
    dup = libri / "train-clean-100" / "19" / "227" / "19-198-0001.flac"  # LibriSpeech ids are file stems
    _sine(dup)
    with pytest.raises(Sec4srError, match="two files share the utterance id '19-198-0001'") as info:
        LibriSpeechDataset(root=libri).split("enroll")
    assert str(dup) in str(info.value) and "rename" in str(info.value)


def test_non_regular_audio_entries_are_refused(tmp_path, speaker_folder):
    import os

    fifo = speaker_folder / "carol" / "pipe.wav"
    os.mkfifo(fifo)
    with pytest.raises(AudioError, match="not a regular file") as info:
        FolderDataset(root=speaker_folder).split("enroll")
    assert str(fifo) in str(info.value)
    fifo.unlink()
    os.symlink(tmp_path / "nowhere.flac", speaker_folder / "bob" / "link.flac")
    with pytest.raises(AudioError, match="broken link"):
        FolderDataset(root=speaker_folder).split("enroll")


def test_unreadable_folders_are_errors_not_missing_speakers(speaker_folder, monkeypatch):
    import os

    real = os.scandir
    denied = speaker_folder / "bob" / "sub"

    def scandir(path="."):
        if Path(path) == denied:
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(ds_mod.os, "scandir", scandir)
    with pytest.raises(Sec4srError, match="cannot read dataset folder .*Permission denied.*chmod") as info:
        FolderDataset(root=speaker_folder).split("enroll")
    assert str(denied) in str(info.value)


def test_an_output_folder_inside_a_dataset_is_refused(speaker_folder):
    out = speaker_folder / "sec4sr-out"
    _sine(out / "audio" / "non-adaptive" / "fgsm" / "alice" / "u0.wav")
    (out / "results.sqlite").write_bytes(b"")
    with pytest.raises(Sec4srError, match="output folder") as info:
        FolderDataset(root=speaker_folder).split("enroll")
    assert str(out) in str(info.value)
    with pytest.raises(Sec4srError, match="not a dataset"):
        FolderDataset(root=out).split("enroll")
