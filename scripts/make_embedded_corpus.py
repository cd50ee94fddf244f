#!/usr/bin/env python3
"""Regenerate the small embedded speech corpus shipped with sec4sr_core.

The corpus is synthetic: a fixed list of public-domain English sentences
(Harvard / IEEE 1969 "Recommended Practice for Speech Quality Measurements"
sentences) is spoken by a fixed list of voices of three free text-to-speech
engines (eSpeak NG, Flite, Festival).  Every voice is treated as one speaker.

Pipeline for every utterance (all steps are deterministic, so running the
script twice on the same machine gives bit-identical files):

1. synthesise a WAV with the engine's command-line tool (fixed voice and rate
   options; espeak-ng/flite/festival contain no randomness);
2. convert it with ``sox -R -D`` (repeatable, no dither) to 16 kHz mono,
   written as 32-bit float so that no intermediate quantisation happens;
3. trim leading/trailing silence with a numpy frame-energy detector
   (threshold relative to the loudest 10 ms frame, 50 ms margin kept);
4. normalise the RMS level to -32 dBFS (a quiet read-speech level: the study's L∞ budget
   ε = 0.002 is then an SNR of about 22 dB, as on the read-speech corpora the budget was
   chosen for; loud, peak-normalised TTS would make every budget look ~14 dB smaller)
   and round to 16-bit PCM in numpy;
5. write FLAC with soundfile/libsndfile (no timestamps are stored).

It then writes ``speakers.tsv``, ``manifest.tsv`` (splits), ``SHA256SUMS``
and ``README.md`` next to the ``audio/`` folder.  See ``docs/corpus.md``.

Usage (from the repository root)::

    .venv/bin/python scripts/make_embedded_corpus.py
    .venv/bin/python scripts/make_embedded_corpus.py --out /tmp/corpus_copy

Requires the programs ``espeak-ng``, ``flite``, ``festival`` (``text2wave``)
and ``sox`` (Debian packages: espeak-ng, flite, festival, festvox-kdlpc16k,
sox) and the Python packages numpy and soundfile.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

SAMPLE_RATE = 16000
UTTERANCES_PER_SPEAKER = 12
N_ENROLLED = 16
RMS_DBFS = -32.0
TRIM_THRESHOLD_DB = -40.0  # frame RMS relative to the loudest frame
TRIM_FRAME_S = 0.010
TRIM_MARGIN_S = 0.050
FLAC_COMPRESSION_LEVEL = 1.0  # libFLAC level 8 (smallest files; lossless)

DEFAULT_OUT = "sec4sr_core/data/embedded"

# Public-domain Harvard sentences (IEEE Subcommittee on Subjective
# Measurements, 1969), chosen to last roughly 2-4 s when spoken.
SENTENCES = (
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "It is easy to tell the depth of a well.",
    "These days a chicken leg is a rare dish.",
    "Rice is often served in round bowls.",
    "The juice of lemons makes fine punch.",
    "The box was thrown beside the parked truck.",
    "The hogs were fed chopped corn and garbage.",
    "Four hours of steady work faced us.",
    "A large size in stockings is hard to sell.",
    "The boy was there when the sun rose.",
    "A rod is used to catch pink salmon.",
    "The source of the huge river is the clear spring.",
    "Kick the ball straight and follow through.",
)


@dataclass(frozen=True)
class Voice:
    """One synthetic speaker: an engine, a voice name and a speaking rate.

    ``rate`` is engine specific: words per minute for espeak-ng, a duration
    stretch factor for flite and festival (1.0 = the voice's default).
    """

    engine: str  # "espeak-ng" | "flite" | "festival"
    voice: str
    rate: float


# Order matters: the first N_ENROLLED voices are the enrolled speakers
# (s01..s16), the rest are imposters.  Speaker ids are assigned in this order.
VOICES = (
    # enrolled: s01..s16
    Voice("flite", "kal16", 1.35),
    Voice("flite", "awb", 1.00),
    Voice("flite", "slt", 1.15),
    Voice("festival", "ked_diphone", 1.30),
    Voice("espeak-ng", "en-us+f1", 150),
    Voice("espeak-ng", "en-us+Annie", 150),
    Voice("espeak-ng", "en-us+belinda", 150),
    Voice("espeak-ng", "en-us+steph", 150),
    Voice("espeak-ng", "en-us+Andrea", 120),
    Voice("espeak-ng", "en-us+david", 150),
    Voice("espeak-ng", "en-us+paul", 150),
    Voice("espeak-ng", "en-us+travis", 150),
    Voice("espeak-ng", "en-us+edward", 150),
    Voice("espeak-ng", "en-us+boris", 150),
    Voice("espeak-ng", "en-us+m3", 150),
    Voice("espeak-ng", "en-us+anika", 125),
    # imposters: s17..s24
    Voice("flite", "rms", 1.00),
    Voice("espeak-ng", "en-us+Alicia", 150),
    Voice("espeak-ng", "en-us+zac", 150),
    Voice("espeak-ng", "en-us+sandro", 150),
    Voice("espeak-ng", "en-us+Lee", 150),
    Voice("espeak-ng", "en-us+Andy", 150),
    Voice("espeak-ng", "en-us+grandma", 150),
    Voice("espeak-ng", "en-us+Storm", 150),
)

REQUIRED_TOOLS = {
    "espeak-ng": "espeak-ng (Debian package espeak-ng)",
    "flite": "flite (Debian package flite)",
    "festival": "festival (Debian package festival)",
    "text2wave": "text2wave (Debian package festival)",
    "sox": "sox (Debian package sox)",
}


class CorpusError(RuntimeError):
    """Raised when a tool is missing or a synthesis step fails."""


def speaker_id(index: int) -> str:
    """Stable short id of the index-th voice (0-based): s01, s02, ..."""
    return f"s{index + 1:02d}"


def sentence_for(speaker_index: int, utt_index: int) -> str:
    """Sentence spoken in an utterance; rotated per speaker for variety."""
    return SENTENCES[(utt_index + speaker_index) % len(SENTENCES)]


def check_tools(engines: set[str]) -> None:
    """Fail with a clear message naming every missing external program."""
    needed = ["sox"]
    if "espeak-ng" in engines:
        needed.append("espeak-ng")
    if "flite" in engines:
        needed.append("flite")
    if "festival" in engines:
        needed += ["festival", "text2wave"]
    missing = [t for t in needed if shutil.which(t) is None]
    if missing:
        lines = "\n".join(f"  - {REQUIRED_TOOLS[t]}" for t in missing)
        raise CorpusError(
            "make_embedded_corpus: required tool(s) not found on PATH:\n"
            f"{lines}\nInstall them (e.g. apt-get install espeak-ng flite "
            "festival festvox-kdlpc16k sox) and rerun."
        )


def _capture(cmd: list[str]) -> str:
    env = dict(os.environ, LC_ALL="C", LANG="C")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    return proc.stdout + proc.stderr


def check_voices(voices) -> None:
    """Fail clearly if a voice is not installed.

    flite and espeak-ng silently fall back to a default voice for an unknown
    name, which would give duplicate speakers, so check explicitly.
    """
    missing = []
    engines = {v.engine for v in voices}
    flite_voices = _capture(["flite", "-lv"]).split() if "flite" in engines else []
    espeak_variants = set()
    espeak_langs = set()
    if "espeak-ng" in engines:
        for line in _capture(["espeak-ng", "--voices=variant"]).splitlines()[1:]:
            fields = line.split()
            if len(fields) >= 5 and fields[4].startswith("!v/"):
                espeak_variants.add(fields[4][3:])
        for line in _capture(["espeak-ng", "--voices"]).splitlines()[1:]:
            fields = line.split()
            if len(fields) >= 2:
                espeak_langs.add(fields[1])
    for v in voices:
        if v.engine == "flite":
            ok = v.voice in flite_voices
        elif v.engine == "espeak-ng":
            lang, _, variant = v.voice.partition("+")
            ok = lang in espeak_langs and (not variant or variant in espeak_variants)
        elif v.engine == "festival":
            probe = _capture(["festival", "--batch", f"(voice_{v.voice})"])
            ok = "error" not in probe.lower()
        else:
            ok = False
        if not ok:
            missing.append(f"  - {v.engine} voice {v.voice}")
    if missing:
        raise CorpusError(
            "make_embedded_corpus: voice(s) not installed:\n" + "\n".join(missing)
            + "\n(festival ked_diphone: Debian package festvox-kdlpc16k)"
        )


def _run(cmd: list[str], stdin_text: str | None = None) -> None:
    env = dict(os.environ, LC_ALL="C", LANG="C")
    proc = subprocess.run(
        cmd,
        input=stdin_text,
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if proc.returncode != 0:
        raise CorpusError(
            f"command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr.strip()}"
        )


def synthesise(voice: Voice, text: str, wav_path: Path) -> None:
    """Write the engine's raw output for ``text`` to ``wav_path``."""
    if voice.engine == "espeak-ng":
        cmd = ["espeak-ng", "-v", voice.voice, "-s", str(int(voice.rate)),
               "-w", str(wav_path), text]
        _run(cmd)
    elif voice.engine == "flite":
        cmd = ["flite", "-voice", voice.voice,
               "--setf", f"duration_stretch={voice.rate:.3f}",
               "-t", text, "-o", str(wav_path)]
        _run(cmd)
    elif voice.engine == "festival":
        cmd = ["text2wave",
               "-eval", f"(voice_{voice.voice})",
               "-eval", f"(Parameter.set 'Duration_Stretch {voice.rate:.3f})",
               "-o", str(wav_path)]
        _run(cmd, stdin_text=text + "\n")
    else:
        raise CorpusError(f"unknown engine {voice.engine!r}")
    if not wav_path.exists() or wav_path.stat().st_size <= 44:
        raise CorpusError(f"{voice.engine} {voice.voice} produced no audio for {text!r}")


def resample(src: Path, dst: Path) -> None:
    """16 kHz mono float32 WAV via sox (-R repeatable, -D no dither)."""
    _run(["sox", "-R", "-D", str(src), "-e", "floating-point", "-b", "32",
          str(dst), "remix", "-", "rate", "-h", str(SAMPLE_RATE)])


def trim_silence(x, sr: int = SAMPLE_RATE):
    """Cut leading/trailing frames quieter than TRIM_THRESHOLD_DB re. loudest frame."""
    import numpy as np

    frame = int(round(TRIM_FRAME_S * sr))
    n_frames = len(x) // frame
    if n_frames == 0:
        return x
    frames = x[: n_frames * frame].reshape(n_frames, frame)
    energy = np.mean(frames * frames, axis=1)
    ref = float(energy.max())
    if ref <= 0.0:
        raise CorpusError("silent utterance")
    active = np.nonzero(energy >= ref * 10.0 ** (TRIM_THRESHOLD_DB / 10.0))[0]
    margin = int(round(TRIM_MARGIN_S * sr))
    start = max(0, int(active[0]) * frame - margin)
    stop = min(len(x), (int(active[-1]) + 1) * frame + margin)
    return x[start:stop]


def to_pcm16(x):
    """Scale so that the RMS level is RMS_DBFS and round to int16 (refusing to clip)."""
    import numpy as np

    rms = float(np.sqrt(np.mean(np.square(x.astype(np.float64)))))
    if rms <= 0.0:
        raise CorpusError("silent utterance")
    gain = (10.0 ** (RMS_DBFS / 20.0)) / rms
    if float(np.max(np.abs(x))) * gain >= 1.0:
        raise CorpusError("RMS normalisation would clip")
    y = np.round(x.astype(np.float64) * gain * 32767.0)
    return np.clip(y, -32768, 32767).astype(np.int16)


def make_utterance(voice: Voice, text: str, flac_path: Path, workdir: Path) -> float:
    """Synthesise, post-process and write one FLAC file; return its duration (s)."""
    import numpy as np
    import soundfile as sf

    raw = workdir / (flac_path.stem + "_raw.wav")
    res = workdir / (flac_path.stem + "_16k.wav")
    synthesise(voice, text, raw)
    resample(raw, res)
    x, sr = sf.read(str(res), dtype="float64", always_2d=False)
    if sr != SAMPLE_RATE:
        raise CorpusError(f"sox produced {sr} Hz instead of {SAMPLE_RATE}")
    pcm = to_pcm16(trim_silence(np.asarray(x, dtype=np.float64)))
    flac_path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(flac_path), pcm, SAMPLE_RATE, format="FLAC", subtype="PCM_16",
             compression_level=FLAC_COMPRESSION_LEVEL)
    raw.unlink()
    res.unlink()
    return len(pcm) / SAMPLE_RATE


def split_rows(n_speakers: int, n_utts: int, n_enrolled: int) -> list[tuple[str, str, str]]:
    """Manifest rows (path, speaker, split) following the corpus contract."""
    rows = []
    for s in range(n_speakers):
        spk = speaker_id(s)
        enrolled = s < n_enrolled

        def add(split: str, utts) -> None:
            for u in utts:
                rows.append((f"audio/{spk}/{spk}_{u:02d}.flac", spk, split))

        if enrolled:
            add("enroll", range(0, 3))
            add("dev", range(3, 5))
            add("test", range(5, n_utts))
        else:
            add("imposter-dev", range(0, 5))
            add("imposter-test", range(5, n_utts))
        add("train", range(0, n_utts - 3))
        add("heldout", range(n_utts - 3, n_utts))
    return rows


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 16), b""):
            h.update(block)
    return h.hexdigest()


def readme_text(voices, n_utts: int, n_enrolled: int, durations: list[float]) -> str:
    total = sum(durations)
    return f"""# Embedded speech corpus (synthetic)

A tiny speaker-recognition corpus shipped inside `sec4sr_core` so that tests,
examples and smoke runs work without downloading anything.

* {len(voices)} synthetic speakers (`s01`..`{speaker_id(len(voices) - 1)}`), one per
  text-to-speech voice; see `speakers.tsv` for the engine/voice of each.
  The first {n_enrolled} are `enrolled`, the other {len(voices) - n_enrolled} are `imposter`.
* {n_utts} utterances per speaker, {len(durations)} in total, {total / 60:.1f} min;
  durations {min(durations):.2f}-{max(durations):.2f} s.
* 16 kHz, mono, 16-bit PCM FLAC, leading/trailing silence trimmed,
  RMS-normalised to {RMS_DBFS:g} dBFS.
* `audio/<spk>/<spk>_<NN>.flac`; `manifest.tsv` lists `path speaker split`
  (a file can be in several splits); `SHA256SUMS` checks the audio.

Splits (utterance numbers per speaker, N = {n_utts}):

| split | speakers | utterances |
|---|---|---|
| enroll | enrolled | 0-2 |
| dev | enrolled | 3-4 |
| test | enrolled | 5-{n_utts - 1} |
| imposter-dev | imposter | 0-4 |
| imposter-test | imposter | 5-{n_utts - 1} |
| train | all | 0-{n_utts - 4} |
| heldout | all | {n_utts - 3}-{n_utts - 1} |

## How it was made

Generated (bit-for-bit reproducibly on a given machine) by

    .venv/bin/python scripts/make_embedded_corpus.py

which synthesises Harvard sentences with eSpeak NG, Flite and Festival,
resamples with `sox -R -D`, trims silence and normalises in numpy and writes
FLAC with soundfile.  Verify with `sha256sum -c SHA256SUMS` in this folder.

## Licence

The audio was generated with free/open-source speech synthesisers: eSpeak NG
(GPL-3.0), Flite and its CMU ARCTIC-derived voices (BSD-style CMU licence) and
Festival with the festvox `ked_diphone` voice (X11-style licences).  None of
these licences places restrictions on the audio they produce.  The sentences
are Harvard sentences (IEEE 1969), which are public domain.
"""


def build(out: Path, voices=VOICES, n_utts: int = UTTERANCES_PER_SPEAKER,
          n_enrolled: int = N_ENROLLED, jobs: int = 2) -> list[float]:
    """Generate the whole corpus under ``out``; return per-file durations."""
    check_tools({v.engine for v in voices})
    check_voices(voices)
    if n_utts < 8:
        raise CorpusError("need at least 8 utterances per speaker for the splits")
    out.mkdir(parents=True, exist_ok=True)
    audio_dir = out / "audio"
    if audio_dir.exists():
        shutil.rmtree(audio_dir)

    tasks = []
    for s, voice in enumerate(voices):
        spk = speaker_id(s)
        for u in range(n_utts):
            tasks.append((voice, sentence_for(s, u), audio_dir / spk / f"{spk}_{u:02d}.flac"))

    with tempfile.TemporaryDirectory(prefix="sec4sr_corpus_") as tmp:
        workdir = Path(tmp)
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            durations = list(pool.map(lambda t: make_utterance(t[0], t[1], t[2], workdir), tasks))

    with open(out / "speakers.tsv", "w", encoding="utf-8", newline="\n") as f:
        f.write("speaker\trole\tengine\tvoice\n")
        for s, voice in enumerate(voices):
            role = "enrolled" if s < n_enrolled else "imposter"
            f.write(f"{speaker_id(s)}\t{role}\t{voice.engine}\t{voice.voice}\n")

    with open(out / "manifest.tsv", "w", encoding="utf-8", newline="\n") as f:
        f.write("path\tspeaker\tsplit\n")
        for row in split_rows(len(voices), n_utts, n_enrolled):
            f.write("\t".join(row) + "\n")

    with open(out / "SHA256SUMS", "w", encoding="utf-8", newline="\n") as f:
        for _, _, path in tasks:
            rel = path.relative_to(out).as_posix()
            f.write(f"{sha256_of(path)}  {rel}\n")

    with open(out / "README.md", "w", encoding="utf-8", newline="\n") as f:
        f.write(readme_text(voices, n_utts, n_enrolled, durations))
    return durations


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(DEFAULT_OUT),
                        help=f"output folder (default: {DEFAULT_OUT})")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="parallel synthesis jobs (output does not depend on it)")
    args = parser.parse_args(argv)
    try:
        durations = build(args.out, jobs=args.jobs)
    except CorpusError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {len(durations)} utterances of {len(VOICES)} speakers to {args.out} "
          f"({min(durations):.2f}-{max(durations):.2f} s, total {sum(durations):.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
