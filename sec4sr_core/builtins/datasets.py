"""Built-in datasets: the embedded corpus, a speaker-folder layout, and LibriSpeech's own layout.

All of them expose the same named splits (see :class:`~sec4sr_core.sdk.interfaces.Dataset`). Folder layouts without
explicit splits are split deterministically per speaker, by sorted utterance name: the first 3 utterances enroll,
the next 2 are ``dev``, the rest ``test``; the last ``imposters`` speakers (sorted) are imposters instead
(first half ``imposter-dev``, rest ``imposter-test``). ``train``/``heldout`` hold, for every speaker, all but the
last 3 utterances / the last 3.

Utterance ids are unique per file: in a folder dataset an id is the file's path relative to the dataset folder, with
its extension (``alice/u05.wav`` beside ``alice/u05.flac``, ``bob/a/u99.wav`` beside ``bob/b/u99.wav``;
``test/alice/u1.wav`` in the split layout); LibriSpeech keeps its own ids (``19-198-0001``) and the embedded corpus its
manifest's, and any id shared by two files is refused. Scanning refuses rather than skips: a folder that cannot be
listed, an audio-named entry that is not a regular file (a FIFO would block the reader forever) and a sec4sr output
folder inside the dataset (its ``audio/`` would become a speaker) are each an error naming the path.
"""

from __future__ import annotations

import csv
import hashlib
import os
from functools import cached_property
from pathlib import Path
from typing import Sequence

from pydantic import Field

from sec4sr_core.base.errors import AudioError, Sec4srError
from sec4sr_core.sdk.interfaces import Dataset, Utterance
from sec4sr_core.base.params import Params

SPLITS = ("enroll", "dev", "test", "imposter-dev", "imposter-test", "train", "heldout")
AUDIO_EXTS = (".wav", ".flac")

#: MD5 checksums of archives whose sums are published (LibriSpeech at openslr; the SEC4SR archives in its README)
KNOWN_MD5 = {
    "train-clean-100.tar.gz": "2a93770f6d5c6c964bc36631d331a522",
    "dev-clean.tar.gz": "42e2234ba48799c1f50f24a7926300a1",
    "test-clean.tar.gz": "32fa31d27d2e1cad72775fee3f4849a9",
    "Spk10_enroll.tar.gz": "0e90fb00b69989c0dde252a585cead85",
    "Spk10_test.tar.gz": "b0f8eb0db3d2eca567810151acf13f16",
    "Spk10_imposter.tar.gz": "42abd80e27b78983a13b74e44a67be65",
    "Spk251_train.tar.gz": "02bee7caf460072a6fc22e3666ac2187",
    "Spk251_test.tar.gz": "182dd6b17f8bcfed7a998e1597828ed6",
    "pre-trained-models.tar.gz": "b011ead1e6663d557afa9e037f30a866",
}


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify_archive(path: str | Path) -> str:
    """Check a downloaded archive against its published MD5; returns the digest or raises."""
    path = Path(path)
    if not path.exists():
        raise Sec4srError(f"archive not found: {path}")
    expected = KNOWN_MD5.get(path.name)
    if expected is None:
        raise Sec4srError(f"no published checksum for {path.name} (known: {', '.join(sorted(KNOWN_MD5))})")
    got = file_digest(path, "md5")
    if got != expected:
        raise Sec4srError(f"checksum mismatch for {path}: md5 {got}, expected {expected} (re-download it)")
    return got


def verify_sums(root: Path, sums_file: Path) -> None:
    """Verify a ``sha256sum``-format file of paths relative to ``root``."""
    bad = []
    for line in sums_file.read_text().splitlines():
        if not line.strip():
            continue
        digest, _, rel = line.partition("  ")
        target = root / rel.strip()
        if not target.exists():
            bad.append(f"{rel} (missing)")
        elif file_digest(target) != digest.strip():
            bad.append(f"{rel} (checksum mismatch)")
    if bad:
        raise Sec4srError(f"{len(bad)} file(s) of {root} failed verification: " + ", ".join(bad[:5]))


def split_by_rule(speakers: dict[str, list[Path]], imposters: int, id_of, order=None) -> dict[str, list[Utterance]]:
    """The deterministic split rule of the module docstring; ``order`` is the sort key of speaker names (the last
    ``imposters`` in that order are imposters; default: string order)."""
    names = sorted(speakers, key=order)
    if imposters >= len(names):
        raise Sec4srError(f"imposters={imposters} leaves no enrolled speaker ({len(names)} speakers)")
    imposter_set = set(names[len(names) - imposters :]) if imposters else set()
    out: dict[str, list[Utterance]] = {s: [] for s in SPLITS}
    for spk in names:
        files = sorted(speakers[spk], key=lambda p: (p.name, str(p)))
        utts = [Utterance(p, spk, id_of(spk, p)) for p in files]
        out["train"] += utts[:-3] if len(utts) > 3 else []
        out["heldout"] += utts[-3:]
        if spk in imposter_set:
            half = max(1, len(utts) // 2)
            out["imposter-dev"] += utts[:half]
            out["imposter-test"] += utts[half:]
        else:
            out["enroll"] += utts[:3]
            out["dev"] += utts[3:5]
            out["test"] += utts[5:]
    check_unique_ids(out)
    return out


def check_unique_ids(splits: dict[str, list[Utterance]]) -> None:
    """Refuse two different files under one utterance id (one of their trials would silently vanish)."""
    seen: dict[str, Path] = {}
    for utts in splits.values():
        for u in utts:
            other = seen.setdefault(u.id, u.path)
            if other != u.path:
                raise Sec4srError(f"two files share the utterance id {u.id!r}: {other} and {u.path}; "
                                  f"rename one of them")


def _scan_error(path: Path, exc: OSError) -> Sec4srError:
    reason = exc.strerror or type(exc).__name__
    return Sec4srError(f"cannot read dataset folder {path}: {reason}; fix its permissions (chmod -R u+rX) "
                       f"or move it out of the dataset")


def list_dir(folder: Path) -> list[os.DirEntry]:
    """The entries of a dataset folder, sorted by name; a folder that cannot be listed is an error naming it."""
    try:
        with os.scandir(folder) as it:
            return sorted(it, key=lambda e: e.name)
    except OSError as exc:
        raise _scan_error(folder, exc) from None


def audio_files(folder: Path, exts: Sequence[str] = AUDIO_EXTS) -> list[Path]:
    """Every file under ``folder`` (recursively, symlinked folders followed once) whose extension is in ``exts``,
    sorted. Refused, each with its path: a folder that cannot be listed, an audio-named entry that is not a regular
    file (FIFO, socket, device, broken link) and a sec4sr output folder (one holding ``results.sqlite``)."""
    out: list[Path] = []
    visited: set[str] = set()

    def walk(d: Path) -> None:
        try:
            real = os.path.realpath(d)
        except OSError as exc:
            raise _scan_error(d, exc) from None
        if real in visited:
            return
        visited.add(real)
        entries = list_dir(d)
        if any(e.name == "results.sqlite" for e in entries):
            raise Sec4srError(f"{d} is a sec4sr output folder (it holds results.sqlite) inside the dataset; its "
                              f"audio would be read as speech: move it out of the dataset folder")
        for e in entries:
            p = Path(e.path)
            try:
                is_dir = e.is_dir()
            except OSError as exc:
                raise _scan_error(p, exc) from None
            if is_dir:
                walk(p)
            elif p.suffix.lower() in exts:
                if not p.is_file():
                    kind = "a broken link" if p.is_symlink() and not p.exists() else "not a regular file"
                    raise AudioError(f"{p} is {kind} (a FIFO, socket or device cannot be read as audio); "
                                     f"remove it from the dataset")
                out.append(p)

    walk(folder)
    return sorted(out)


class EmbeddedParams(Params):
    verify: bool = Field(False, description="verify every file against SHA256SUMS before use")


class EmbeddedDataset(Dataset):
    """The small multi-speaker TTS corpus shipped with sec4sr (FLAC, 16 kHz); the default everywhere."""

    name = "embedded"
    Params = EmbeddedParams

    @property
    def root(self) -> Path:
        return Path(__file__).resolve().parents[1] / "data" / "embedded"

    @cached_property
    def _splits(self) -> dict[str, list[Utterance]]:
        manifest = self.root / "manifest.tsv"
        if not manifest.exists():
            raise Sec4srError(f"the embedded corpus is missing ({manifest}); reinstall sec4sr")
        if self.params.verify:
            verify_sums(self.root, self.root / "SHA256SUMS")
        out: dict[str, list[Utterance]] = {s: [] for s in SPLITS}
        with open(manifest, newline="") as fh:
            for row in csv.DictReader(fh, delimiter="\t"):
                path = self.root / row["path"]
                out.setdefault(row["split"], []).append(Utterance(path, row["speaker"], Path(row["path"]).stem))
        check_unique_ids(out)
        return out

    def split(self, name: str) -> list[Utterance]:
        if name not in self._splits:
            raise Sec4srError(f"dataset {self.name!r} has no split {name!r} (splits: {', '.join(self._splits)})")
        return list(self._splits[name])

    def split_names(self) -> Sequence[str]:
        return list(self._splits)


class FixedSplits(Dataset):
    """A dataset with the standard named splits (:data:`SPLITS`), built once into ``self._splits`` (a cached
    ``{split: [Utterance, ...]}``; a split it leaves out is empty)."""

    _splits: dict[str, list[Utterance]]

    def split(self, name: str) -> list[Utterance]:
        if name not in SPLITS:
            raise Sec4srError(f"unknown split {name!r} (splits: {', '.join(SPLITS)})")
        return list(self._splits.get(name, []))

    def split_names(self) -> Sequence[str]:
        return list(SPLITS)


class FolderParams(Params):
    root: Path = Field(..., description="folder holding <speaker>/<utterance>.wav|flac (or <split>/<speaker>/...)")
    imposters: int = Field(0, ge=0, description="number of speakers (last, sorted) used as imposters")
    verify: bool = Field(True, description="verify files against root/SHA256SUMS when that file exists")


class FolderDataset(FixedSplits):
    """Audio on disk as ``root/<speaker>/<utt>.wav|flac`` (the Spk10/Spk251 layout), or with split folders
    ``root/<split>/<speaker>/<utt>`` (split names as in the embedded corpus; ``imposter`` maps to both imposter
    splits)."""

    name = "folder"
    Params = FolderParams

    @cached_property
    def _splits(self) -> dict[str, list[Utterance]]:
        root = Path(self.params.root).expanduser()
        if not root.is_dir():
            raise Sec4srError(f"dataset folder not found: {root}")
        sums = root / "SHA256SUMS"
        if self.params.verify and sums.exists():
            verify_sums(root, sums)
        children = {e.name for e in list_dir(root) if e.is_dir()}
        split_dirs = children & (set(SPLITS) | {"imposter"})

        def id_of(spk: str, p: Path) -> str:  # the path relative to the dataset folder, extension kept
            return p.relative_to(root).as_posix()

        if split_dirs:
            out: dict[str, list[Utterance]] = {s: [] for s in SPLITS}
            for split in sorted(split_dirs):
                for spk, files in sorted(_speaker_files(root / split).items()):
                    utts = [Utterance(p, spk, id_of(spk, p)) for p in sorted(files)]
                    targets = ["imposter-dev", "imposter-test"] if split == "imposter" else [split]
                    for t in targets:
                        out[t] += utts
            check_unique_ids(out)
            return out
        speakers = _speaker_files(root)
        if not speakers:
            raise Sec4srError(f"no audio files (*.wav, *.flac) under {root}/<speaker>/")
        return split_by_rule(speakers, self.params.imposters, id_of)



def _speaker_files(root: Path) -> dict[str, list[Path]]:
    """``{speaker folder name: its audio files}`` for the speaker folders directly under ``root`` (see
    :func:`audio_files`); loose audio files directly under ``root`` belong to no speaker and are an error."""
    out: dict[str, list[Path]] = {}
    entries = list_dir(root)
    if any(e.name == "results.sqlite" for e in entries):
        raise Sec4srError(f"{root} is a sec4sr output folder (it holds results.sqlite), not a dataset; "
                          f"give the dataset folder instead")
    for e in entries:
        if e.is_dir():
            files = audio_files(Path(e.path))
            if files:
                out[e.name] = files
    return out


class LibriParams(Params):
    root: Path = Field(..., description="LibriSpeech folder (holding e.g. train-clean-100/<spk>/<chapter>/*.flac)")
    subset: str = Field("train-clean-100", description="subset folder name")
    speakers: int = Field(0, ge=0, description="use only the first N speakers (sorted by id); 0 = all")
    imposters: int = Field(0, ge=0, description="number of speakers (last of those used) that act as imposters")
    archive: Path | None = Field(None, description="the downloaded .tar.gz, verified against its published MD5")


class LibriSpeechDataset(FixedSplits):
    """LibriSpeech in its own layout ``<root>/<subset>/<speaker>/<chapter>/<spk>-<chapter>-<utt>.flac``."""

    name = "librispeech"
    Params = LibriParams

    @cached_property
    def _splits(self) -> dict[str, list[Utterance]]:
        if self.params.archive is not None:
            verify_archive(self.params.archive)
        base = Path(self.params.root).expanduser()
        sub = base / self.params.subset
        if not sub.is_dir():
            sub = base if base.name == self.params.subset else sub
        if not sub.is_dir():
            raise Sec4srError(f"LibriSpeech subset folder not found: {base / self.params.subset}")
        speakers: dict[str, list[Path]] = {}
        spk_dirs = [Path(e.path) for e in list_dir(sub) if e.is_dir()]
        for spk_dir in sorted(spk_dirs, key=lambda p: (len(p.name), p.name)):
            files = [p for p in audio_files(spk_dir, (".flac",)) if len(p.relative_to(spk_dir).parts) == 2]
            if files:
                speakers[spk_dir.name] = files
        if not speakers:
            raise AudioError(f"no LibriSpeech .flac files under {sub}/<speaker>/<chapter>/")
        if self.params.speakers:
            keep = sorted(speakers, key=lambda s: (len(s), s))[: self.params.speakers]
            speakers = {k: speakers[k] for k in keep}
        return split_by_rule(speakers, self.params.imposters, lambda spk, p: p.stem, order=lambda s: (len(s), s))

