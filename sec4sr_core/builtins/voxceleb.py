"""The ``voxceleb`` dataset: VoxCeleb1's layout and trial lists, for the standard SV protocol.

``voxceleb:root=DIR,trials=FILE`` reads ``DIR/wav/<speaker>/<video>/<utt>.wav`` (or ``DIR/<speaker>/...`` when
``DIR`` has no ``wav/`` folder) and a trial list of ``label enroll test`` lines as in ``veri_test2.txt``
(``1 id10270/x6uYqmx31kE/00001.wav id10270/8jEAjG6SegY/00008.wav``; label 1 = same speaker, 0 = different), paths
relative to the ``wav`` folder. Utterance ids are those relative paths (extension kept), the speaker is the first
component.

* :meth:`VoxCelebDataset.sv_trials` is the trial list; ``sec4sr evaluate`` scores it (EER, minDCF at p = 0.01 and
  0.05, optionally AS-Norm).
* :meth:`VoxCelebDataset.cohort` — the utterances of speakers that appear in no trial (VoxCeleb1's development
  speakers), the impostor cohort of AS-Norm.
* The named splits follow the folder rule of :mod:`sec4sr_core.builtins.datasets` over the trial speakers (so the
  attack tasks can run on them); ``train`` also holds every cohort speaker.

A trial naming a file that does not exist, a malformed line, a label other than 0/1 or a list without both labels is
an error naming the file and line.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from pydantic import Field

from sec4sr_core.base.errors import Sec4srError
from sec4sr_core.base.params import Params
from sec4sr_core.builtins.datasets import (
    AUDIO_EXTS,
    FixedSplits,
    audio_files,
    list_dir,
    split_by_rule,
)
from sec4sr_core.sdk.interfaces import Utterance


class VoxCelebParams(Params):
    root: Path = Field(..., description="VoxCeleb1 folder holding wav/<speaker>/<video>/<utt>.wav")
    trials: Path = Field(..., description="trial list of 'label enroll test' lines (e.g. veri_test2.txt)")
    imposters: int = Field(0, ge=0, description="trial speakers (last by id) used as imposters in the splits")


class VoxCelebDataset(FixedSplits):
    """VoxCeleb1 layout wav/<speaker>/<video>/<utt>.wav with a 'label enroll test' trial list (veri_test2.txt)."""

    name = "voxceleb"
    Params = VoxCelebParams

    @cached_property
    def wav_root(self) -> Path:
        root = Path(self.params.root).expanduser()
        if not root.is_dir():
            raise Sec4srError(f"VoxCeleb folder not found: {root}")
        return root / "wav" if (root / "wav").is_dir() else root

    @cached_property
    def _files(self) -> dict[str, Path]:
        """``{id: path}`` of every audio file under the wav folder (``<speaker>/<video>/<utt>.wav``)."""
        out: dict[str, Path] = {}
        for e in list_dir(self.wav_root):
            if e.is_dir():
                for p in audio_files(Path(e.path), AUDIO_EXTS):
                    out[p.relative_to(self.wav_root).as_posix()] = p
        if not out:
            raise Sec4srError(f"no audio files under {self.wav_root}/<speaker>/<video>/")
        return out

    @cached_property
    def _trials(self) -> list[tuple[int, str, str]]:
        path = Path(self.params.trials).expanduser()
        if not path.is_file():
            raise Sec4srError(f"trial list not found: {path}")
        try:
            lines = path.read_text().splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise Sec4srError(f"cannot read trial list {path}: {exc}") from None
        out: list[tuple[int, str, str]] = []
        for no, line in enumerate(lines, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 3 or parts[0] not in ("0", "1"):
                raise Sec4srError(f"{path}:{no}: expected 'label enroll test' with label 0 or 1, got {line.strip()!r}")
            for rel in parts[1:]:
                if rel not in self._files:
                    raise Sec4srError(f"{path}:{no}: {rel} is not under {self.wav_root}")
            out.append((int(parts[0]), parts[1], parts[2]))
        labels = {t[0] for t in out}
        if labels != {0, 1}:
            raise Sec4srError(f"trial list {path} needs both target (1) and non-target (0) trials, has {sorted(labels)}")
        return out

    def _utt(self, rel: str) -> Utterance:
        return Utterance(self._files[rel], rel.split("/", 1)[0], rel)

    def sv_trials(self) -> list[tuple[int, Utterance, Utterance]]:
        """The trial list as ``(label, enroll, test)`` utterances, in file order."""
        return [(lab, self._utt(a), self._utt(b)) for lab, a, b in self._trials]

    @cached_property
    def _trial_speakers(self) -> set[str]:
        return {rel.split("/", 1)[0] for _, a, b in self._trials for rel in (a, b)}

    def cohort(self) -> list[Utterance]:
        """Utterances of the speakers in no trial (AS-Norm's impostor cohort), sorted by id."""
        return [self._utt(rel) for rel in sorted(self._files) if rel.split("/", 1)[0] not in self._trial_speakers]

    @cached_property
    def _splits(self) -> dict[str, list[Utterance]]:
        speakers: dict[str, list[Path]] = {}
        for rel, p in sorted(self._files.items()):
            spk = rel.split("/", 1)[0]
            if spk in self._trial_speakers:
                speakers.setdefault(spk, []).append(p)
        out = split_by_rule(speakers, self.params.imposters,
                            lambda spk, p: p.relative_to(self.wav_root).as_posix())
        out["train"] = out["train"] + self.cohort()
        return out

