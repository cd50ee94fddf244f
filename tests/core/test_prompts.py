"""The ``prompts`` real-speech dataset. Skipped only where the Debian voice-prompt packages are not installed (they
are in CI and ``make test`` installs them)."""

from __future__ import annotations

import hashlib
import json
import wave
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from sec4sr_core.base.errors import Sec4srError
from sec4sr_core.builtins import prompts as P
from sec4sr_core.cli import main

from .helpers import assert_one_line_error

INSTALLED = all((P.SOUNDS / f).is_dir() for v in P.VOICES for f in v.folders)
pytestmark = pytest.mark.skipif(not INSTALLED, reason="voice-prompt packages absent: " + P.INSTALL_HINT)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """Six prompts per speaker, decoded into a fresh cache."""
    d = P.PromptsDataset(prompts=6, cache=tmp_path_factory.mktemp("prompt-cache"))
    d.split("enroll")  # decodes the 42 prompts
    return d


def test_selection_seven_voices_longest_prompts_deterministic():
    d = P.PromptsDataset()
    src = d.sources  # selection needs no decoding
    assert list(src) == [v.speaker for v in P.VOICES] and all(len(f) == 40 for f in src.values())
    folders = [p.parent.name for p in src["allison"]]
    assert folders.count("en_US_f_Allison") == 20 and folders.count("es_MX_f_Allison") == 20
    digests = [hashlib.sha256(p.read_bytes()).hexdigest() for files in src.values() for p in files]
    assert len(set(digests)) == 280  # no file twice, none shared between voices (tt-monkeys is everywhere)
    assert not any(p.stem == "tt-monkeys" for files in src.values() for p in files)
    for v in P.VOICES:
        for folder in v.folders:
            chosen = [p for p in src[v.speaker] if p.parent.name == folder]
            durs = [P.duration_s(p) for p in chosen]
            assert all(d.params.min_s <= x <= d.params.max_s for x in durs) and durs == sorted(durs, reverse=True)
            # nothing longer (within range, distinct) was left out
            rest = [p for p in (P.SOUNDS / folder).iterdir() if p.suffix == v.ext and p not in chosen]
            longer = [p for p in rest if min(durs) < P.duration_s(p) <= d.params.max_s
                      and hashlib.sha256(p.read_bytes()).hexdigest() not in digests]
            assert all(p.stem in P.NON_SPEECH for p in longer), longer
    assert P.PromptsDataset().sources == src


def test_durations_from_size_match_the_decoded_audio(small):
    for spk, files in small.sources.items():
        p = files[0]
        with wave.open(str(small.cached_path(p))) as fh:
            assert fh.getframerate() == 16000 and fh.getnchannels() == 1
            got = fh.getnframes() / 16000
        assert got == pytest.approx(P.duration_s(p), rel=0.01, abs=0.03), (spk, p)


def test_wav_decode_matches_an_independent_resampling(small):
    import torch
    import torchaudio.functional as AF

    p = small.sources["menardi"][0]
    ref, sr = sf.read(str(p), dtype="float32")
    assert sr == 8000
    ref16 = AF.resample(torch.from_numpy(ref)[None], 8000, 16000)[0].numpy()
    got = P.decode(p).astype(np.float32) / 32768
    n = min(len(ref16), len(got))
    assert abs(len(ref16) - len(got)) <= 16
    assert np.corrcoef(ref16[:n], got[:n])[0, 1] > 0.99


def test_splits_ids_and_the_cache(small, monkeypatch):
    enroll, test = small.split("enroll"), small.split("test")
    assert small.enrolled_speakers() == ["allison", "armelle", "carlo", "es-co", "ivrvoice-ru"]
    assert small.speakers("imposter-test") == ["june", "menardi"] and len(enroll) == 15
    ids = [u.id for s in small.split_names() for u in small.split(s)]
    assert "en_US_f_Allison" in {i.split("/")[0] for i in ids} and all(Path(i).suffix in (".g722", ".gsm", ".wav")
                                                                       for i in ids)
    assert all(u.path.is_file() and u.path.parent == small.cache_dir for u in enroll + test)
    # a second load decodes nothing: the cache is keyed by the sources' hashes
    monkeypatch.setattr(P, "decode", lambda *a, **k: pytest.fail("decoded again"))
    again = P.PromptsDataset(prompts=6, cache=small.cache_dir)
    assert [u.path for u in again.split("test")] == [u.path for u in test]
    assert again.fingerprint() == small.fingerprint()
    with pytest.raises(Sec4srError, match="unknown split"):
        small.split("nope")


def test_full_size_split_counts_without_decoding(monkeypatch):
    monkeypatch.setattr(P.PromptsDataset, "_decode_missing", lambda self: None)
    d = P.PromptsDataset()
    assert len(d.split("test")) == 5 * 35 and len(d.split("imposter-test")) == 40
    closed = P.PromptsDataset(imposters=0)
    assert len(closed.enrolled_speakers()) == 7 and len(closed.split("test")) == 245


def test_sv_trial_list_crosses_languages(monkeypatch):
    monkeypatch.setattr(P.PromptsDataset, "_decode_missing", lambda self: None)
    trials = P.PromptsDataset().sv_trials()
    assert len(trials) == 280 * 279 // 2 and sum(lab for lab, _, _ in trials) == 7 * 40 * 39 // 2
    cross = [t for t in trials if t[0] and {t[1].id.split("/")[0], t[2].id.split("/")[0]}
             == {"en_US_f_Allison", "es_MX_f_Allison"}]
    assert len(cross) == 400
    assert all(a.id < b.id for _, a, b in trials)


def test_loudness_is_the_rms_over_each_speakers_prompts(small):
    levels = small.loudness()
    assert set(levels) == {v.speaker for v in P.VOICES}
    x = np.concatenate([sf.read(str(u.path))[0] for u in small.utterances() if u.speaker == "carlo"])
    assert levels["carlo"] == pytest.approx(20 * np.log10(np.sqrt(np.mean(x ** 2))), abs=1e-9)
    assert all(-30 < v < -10 for v in levels.values())


def test_missing_packages_name_them_and_the_install_command(tmp_path, capsys):
    with pytest.raises(Sec4srError, match="apt-get install") as exc:
        P.PromptsDataset(root=tmp_path).split("test")
    assert "asterisk-prompt-es-co" in str(exc.value) and "asterisk-core-sounds-en-g722" in str(exc.value)
    assert main(["evaluate", "--model", "ge2e", "--dataset", f"prompts:root={tmp_path}"]) == 2
    assert_one_line_error(capsys.readouterr().err, "apt-get install", "asterisk-prompt-fr-armelle")


def test_evaluate_prints_sv_protocol_and_loudness(small, capsys):
    spec = f"prompts:prompts=6,cache={small.cache_dir}"
    assert main(["evaluate", "--model", "ge2e", "--dataset", spec, "--task", "sv"]) == 0
    out = capsys.readouterr().out
    assert "minDCF@0.01" in out and "minDCF@0.05" in out and "trial list (861 trials, 105 targets)" in out
    assert "loudness (RMS dBFS): allison" in out
    assert main(["evaluate", "--model", "ge2e", "--dataset", spec, "--task", "sv", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    proto = doc["tasks"]["sv"]["protocol"]
    assert proto["trials"] == 861 and 0 <= proto["eer"] < 0.5 and set(doc["loudness_dbfs"]) >= {"menardi"}
    assert doc["tasks"]["sv"]["min_dcf_0.05"] is not None
    assert main(["evaluate", "--model", "ge2e", "--dataset", spec, "--task", "sv", "--as-norm", "10"]) == 2
    assert_one_line_error(capsys.readouterr().err, "cohort")
