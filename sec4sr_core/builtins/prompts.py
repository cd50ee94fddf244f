"""The ``prompts`` dataset: real recorded human speech, offline — the Asterisk voice prompts Debian ships.

Seven professional voices (CC-BY-SA 3.0, from the apt packages in :data:`VOICES`), each a speaker:

=============  ========================================  ==========================  =========
speaker        folders under ``/usr/share/asterisk/sounds``  package(s)                  format
=============  ========================================  ==========================  =========
allison        ``en_US_f_Allison`` + ``es_MX_f_Allison``  asterisk-core-sounds-en/es-g722  G.722 16 kHz
june           ``fr_CA_f_June``                           asterisk-core-sounds-fr-g722     G.722 16 kHz
carlo          ``it_IT_m_Carlo``                          asterisk-core-sounds-it-g722     G.722 16 kHz
ivrvoice-ru    ``ru_RU_f_IvrvoiceRU``                     asterisk-core-sounds-ru-g722     G.722 16 kHz
menardi        ``it_IT_f_Menardi``                        asterisk-prompt-it-menardi-wav   WAV 8 kHz
es-co          ``es``                                     asterisk-prompt-es-co            GSM 8 kHz
armelle        ``fr``                                     asterisk-prompt-fr-armelle       GSM 8 kHz
=============  ========================================  ==========================  =========

Allison records the same prompts in English and Spanish: she is one speaker, so genuine trials cross languages.

**Selection** (deterministic, from file sizes and headers, no decoding): per speaker the ``prompts`` longest files
lasting ``min_s``–``max_s`` seconds (ties by name), split evenly over the speaker's folders (Allison: 20 English +
20 Spanish). Skipped: the non-speech prompts of :data:`NON_SPEECH` (``tt-monkeys`` records monkeys), a file whose
bytes occur in two voices' folders (not that voice's own recording), and the second of two identical files in one
folder (``invalid`` = ``pbx-invalid``).

**Decoding**: ffmpeg to 16-bit 16 kHz mono through in-memory pipes, files in parallel, into a cache of WAV files
under ``$XDG_CACHE_HOME/sec4sr/prompts`` (default ``~/.cache/sec4sr/prompts``; ``cache=DIR`` to choose) named by the
SHA-256 of the source file, so a second load only hashes the sources (and an upgraded package decodes again).

**Splits**: the rule of :mod:`sec4sr_core.builtins.datasets` (by file name: 3 enroll, 2 dev, rest test; the last
``imposters`` speakers by name are imposters, default 2: ``june`` and ``menardi``). Ids are the source path relative
to the sounds folder, with its extension (``en_US_f_Allison/demo-congrats.g722``).

**SV protocol**: :meth:`PromptsDataset.sv_trials` pairs every two selected prompts (all seven speakers,
VoxCeleb-style ``label enroll test``): 39 060 trials, 5 460 genuine (400 of them Allison English vs Spanish).
**Loudness**: :meth:`PromptsDataset.loudness` (RMS dBFS per speaker); ``sec4sr evaluate`` prints it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import wave
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
from pydantic import Field

from sec4sr_core.base.errors import AudioError, Sec4srError
from sec4sr_core.base.params import Params
from sec4sr_core.builtins.datasets import SPLITS, FixedSplits, split_by_rule
from sec4sr_core.sdk.interfaces import Utterance

SOUNDS = Path("/usr/share/asterisk/sounds")
#: bump when the decoding changes, so cached files decoded the old way are not reused
DECODER_VERSION = "1"


@dataclass(frozen=True)
class Voice:
    speaker: str
    folders: tuple[str, ...]
    ext: str  #: ".g722", ".gsm" or ".wav"
    packages: tuple[str, ...]  #: the apt package of each folder, in the same order


VOICES = (
    Voice("allison", ("en_US_f_Allison", "es_MX_f_Allison"), ".g722",
          ("asterisk-core-sounds-en-g722", "asterisk-core-sounds-es-g722")),
    Voice("june", ("fr_CA_f_June",), ".g722", ("asterisk-core-sounds-fr-g722",)),
    Voice("carlo", ("it_IT_m_Carlo",), ".g722", ("asterisk-core-sounds-it-g722",)),
    Voice("ivrvoice-ru", ("ru_RU_f_IvrvoiceRU",), ".g722", ("asterisk-core-sounds-ru-g722",)),
    Voice("menardi", ("it_IT_f_Menardi",), ".wav", ("asterisk-prompt-it-menardi-wav",)),
    Voice("es-co", ("es",), ".gsm", ("asterisk-prompt-es-co",)),
    Voice("armelle", ("fr",), ".gsm", ("asterisk-prompt-fr-armelle",)),
)
#: prompts that are not speech (tt-monkeys is a recording of monkeys, each voice folder has its own copy)
NON_SPEECH = frozenset({"tt-monkeys", "beep", "beeperr", "ascending-2tone", "descending-2tone"})
PACKAGES = tuple(p for v in VOICES for p in v.packages)
INSTALL_HINT = "sudo apt-get install -y " + " ".join(PACKAGES) + "   (or `make system-deps`)"


def duration_s(path: Path) -> float:
    """Duration of a prompt file in seconds, from its size (G.722: 8000 B/s; GSM 06.10: 33-byte frames of 20 ms)
    or its WAV header."""
    ext = path.suffix.lower()
    if ext == ".g722":
        return path.stat().st_size / 8000.0
    if ext == ".gsm":
        return path.stat().st_size / 33 * 0.02
    try:
        with wave.open(str(path), "rb") as fh:
            return fh.getnframes() / float(fh.getframerate())
    except (wave.Error, EOFError, OSError) as exc:
        raise AudioError(f"cannot read the WAV header of {path}: {exc}") from None


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def ffmpeg_binary() -> str:
    """The system ffmpeg (a venv shim may lack the G.722/GSM decoders), else the first on PATH."""
    for cand in ("/usr/bin/ffmpeg", shutil.which("ffmpeg")):
        if cand and os.access(cand, os.X_OK):
            return cand
    raise Sec4srError("the prompts dataset needs ffmpeg to decode G.722/GSM: sudo apt-get install -y ffmpeg")


def decode(path: Path, ffmpeg: str | None = None) -> np.ndarray:
    """Decode one prompt to int16 samples at 16 kHz mono through a pipe (no temporary file)."""
    fmt = {".g722": ["-f", "g722"], ".gsm": ["-f", "gsm"]}.get(path.suffix.lower(), [])
    cmd = [ffmpeg or ffmpeg_binary(), "-nostdin", "-v", "error", *fmt, "-i", str(path),
           "-ar", "16000", "-ac", "1", "-f", "s16le", "-"]
    proc = subprocess.run(cmd, capture_output=True, check=False)
    if proc.returncode != 0 or not proc.stdout:
        msg = proc.stderr.decode(errors="replace").strip().splitlines()
        raise AudioError(f"ffmpeg could not decode {path}: {msg[-1] if msg else 'no output'}")
    return np.frombuffer(proc.stdout, dtype="<i2")


def write_wav(path: Path, samples: np.ndarray) -> None:
    """Write int16 samples as a 16 kHz mono WAV, atomically (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with wave.open(str(tmp), "wb") as fh:
        fh.setnchannels(1)
        fh.setsampwidth(2)
        fh.setframerate(16000)
        fh.writeframes(samples.astype("<i2").tobytes())
    tmp.replace(path)


class PromptsParams(Params):
    root: str | Path = Field(str(SOUNDS), description="the Asterisk sounds folder")
    prompts: int = Field(40, ge=6, description="prompts per speaker (the longest within min_s..max_s)")
    min_s: float = Field(3.9, gt=0, description="shortest prompt used, in seconds (es-co has 39 distinct of >= 4 s)")
    max_s: float = Field(18.0, gt=0, description="longest prompt used, in seconds")
    imposters: int = Field(2, ge=0, le=6, description="number of speakers (last by name) used as imposters")
    workers: int = Field(0, ge=0, description="parallel decoders (0 = one per CPU)")
    cache: Path | None = Field(None, description="decoded-audio cache folder (default $XDG_CACHE_HOME/sec4sr/prompts)")


class PromptsDataset(FixedSplits):
    """Real recorded speech: seven voices of the Debian Asterisk prompt packages (16 kHz, CC-BY-SA 3.0)."""

    name = "prompts"
    Params = PromptsParams

    # -- selection ----------------------------------------------------------------------------------------------------
    def _check_installed(self) -> None:
        root = Path(self.params.root)
        missing = []
        for v in VOICES:
            for folder, pkg in zip(v.folders, v.packages):  # one package per folder
                d = root / folder
                if not d.is_dir() or not any(p.suffix.lower() == v.ext for p in d.iterdir() if p.is_file()):
                    missing.append(pkg)
        if missing:
            raise Sec4srError(f"the prompts dataset needs the voice-prompt packages {', '.join(dict.fromkeys(missing))} "
                              f"(no {', '.join(sorted({'*' + v.ext for v in VOICES}))} files under {root}); install "
                              f"them with: {INSTALL_HINT}")

    @cached_property
    def sources(self) -> dict[str, list[Path]]:
        """``{speaker: its selected source files}`` (see the module docstring), speakers in :data:`VOICES` order."""
        if self.params.min_s >= self.params.max_s:
            raise Sec4srError(f"prompts: min_s={self.params.min_s} must be below max_s={self.params.max_s}")
        self._check_installed()
        root = Path(self.params.root)
        ranked: dict[tuple[str, str], list[Path]] = {}
        for v in VOICES:
            for folder in v.folders:
                files = [p for p in (root / folder).iterdir()
                         if p.is_file() and p.suffix.lower() == v.ext and p.stem not in NON_SPEECH]
                timed = [(duration_s(p), p) for p in files]
                inside = [(d, p) for d, p in timed if self.params.min_s <= d <= self.params.max_s]
                ranked[(v.speaker, folder)] = [p for d, p in sorted(inside, key=lambda dp: (-dp[0], dp[1].name))]
        # bytes shared by two voices' folders are not either voice's speech (tt-monkeys, tones)
        owners: dict[str, set[str]] = {}
        digests: dict[Path, str] = {}
        for (spk, _), files in ranked.items():
            for p in files[: 3 * self.params.prompts]:
                digests[p] = sha256(p)
                owners.setdefault(digests[p], set()).add(spk)
        out: dict[str, list[Path]] = {}
        used: set[str] = set()
        for v in VOICES:
            share, extra = divmod(self.params.prompts, len(v.folders))
            chosen: list[Path] = []
            for i, folder in enumerate(v.folders):
                want = share + (1 if i < extra else 0)
                good = []
                for p in ranked[(v.speaker, folder)]:
                    if p in digests and len(owners[digests[p]]) == 1 and digests[p] not in used:
                        used.add(digests[p])  # a second copy under another name (invalid = pbx-invalid) is skipped
                        good.append(p)
                if len(good) < want:
                    raise Sec4srError(f"prompts: {root / folder} has only {len(good)} prompts of {self.params.min_s}–"
                                      f"{self.params.max_s} s, {want} wanted; lower prompts= or widen min_s/max_s")
                chosen += good[:want]
            out[v.speaker] = chosen
        self._digests = digests
        return out

    # -- decoding and cache -------------------------------------------------------------------------------------------
    @property
    def cache_dir(self) -> Path:
        """Where decoded prompts go: ``cache=``, else ``$XDG_CACHE_HOME/sec4sr/prompts`` (``~/.cache/...``). Not
        under ``$SEC4SR_HOME``: files are named by their source's hash, so every model store can share them."""
        if self.params.cache is not None:
            return Path(self.params.cache).expanduser()
        return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sec4sr" / "prompts"

    def cached_path(self, source: Path) -> Path:
        return self.cache_dir / f"{self._digests[source][:24]}-d{DECODER_VERSION}.wav"

    def _decode_missing(self) -> None:
        todo = [p for files in self.sources.values() for p in files if not self.cached_path(p).is_file()]
        if not todo:
            return
        ffmpeg = ffmpeg_binary()
        workers = self.params.workers or os.cpu_count() or 1

        def one(p: Path) -> None:
            write_wav(self.cached_path(p), decode(p, ffmpeg))

        with ThreadPoolExecutor(max_workers=min(workers, len(todo))) as pool:
            list(pool.map(one, todo))

    def _relative_id(self, p: Path) -> str:
        return p.relative_to(Path(self.params.root)).as_posix()

    @cached_property
    def _splits(self) -> dict[str, list[Utterance]]:
        sources = self.sources
        self._decode_missing()
        by_source = split_by_rule(sources, self.params.imposters, lambda spk, p: self._relative_id(p),
                                  order=lambda s: s)
        return {name: [Utterance(self.cached_path(u.path), u.speaker, u.id) for u in utts]
                for name, utts in by_source.items()}


    def fingerprint(self) -> str:
        """Split membership plus each source file's SHA-256 (stable across machines and cache rebuilds)."""
        h = hashlib.sha256()
        for name in self.split_names():
            for u in self.split(name):
                h.update(f"{name}|{u.id}|{u.speaker}|{u.path.name}".encode())
        return h.hexdigest()[:12]

    # -- protocol and report ------------------------------------------------------------------------------------------
    def utterances(self) -> list[Utterance]:
        """Every selected prompt once, sorted by id."""
        seen = {u.id: u for name in SPLITS for u in self._splits[name]}
        return [seen[k] for k in sorted(seen)]

    def sv_trials(self) -> list[tuple[int, Utterance, Utterance]]:
        """The SV trial list ``(label, enroll, test)``: every pair of selected prompts (ids ascending), label 1 when
        both are the same speaker (Allison's English/Spanish pairs included)."""
        utts = self.utterances()
        return [(int(a.speaker == b.speaker), a, b) for i, a in enumerate(utts) for b in utts[i + 1:]]

    def loudness(self) -> dict[str, float]:
        """RMS level per speaker in dBFS over all its selected prompts (16-bit full scale = 0 dBFS)."""
        import soundfile as sf

        energy: dict[str, list[float]] = {}
        for u in self.utterances():
            x = sf.read(str(u.path), dtype="float64")[0]
            e = energy.setdefault(u.speaker, [0.0, 0.0])
            e[0] += float(np.square(x).sum())
            e[1] += x.size
        return {spk: 10.0 * float(np.log10(max(e[0] / max(e[1], 1), 1e-20))) for spk, e in sorted(energy.items())}
