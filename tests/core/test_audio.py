"""Audio I/O at the boundary: 16-bit round trips, clipping, formats, downmix/resample notices, bad files."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sec4sr_core.sdk import audio as audio_mod
from sec4sr_core.sdk.audio import fit_length, load_audio, load_batch, quantize_16bit, save_audio, to_int16
from sec4sr_core.base.errors import AudioError, Sec4srError

SR = 16000


def _ref_int16(x: np.ndarray) -> np.ndarray:
    """Independent reference: round half to even (numpy), then clip to the int16 range."""
    return np.clip(np.rint(x.astype(np.float64) * 32768.0), -32768, 32767).astype(np.int16)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-1.25, 1.25, allow_nan=False, width=32), min_size=1, max_size=64))
def test_to_int16_matches_reference(values):
    x = np.asarray(values, dtype=np.float32)
    np.testing.assert_array_equal(to_int16(torch.from_numpy(x)), _ref_int16(x))


@pytest.mark.parametrize("ext", ["wav", "flac"])
def test_save_load_round_trip_is_exact_16bit(tmp_path, ext):
    g = torch.Generator().manual_seed(0)
    wave = (torch.rand(1, 8000, generator=g) * 2 - 1) * 0.9
    path = save_audio(tmp_path / f"x.{ext}", wave)
    info = sf.info(str(path))
    assert (info.samplerate, info.channels, info.subtype, info.frames) == (SR, 1, "PCM_16", 8000)
    back = load_audio(path)
    assert back.shape == (1, 8000) and back.dtype == torch.float32
    expected = torch.from_numpy(_ref_int16(wave.numpy()).astype(np.float32) / 32768.0)
    assert torch.equal(back, expected)
    assert torch.equal(back, quantize_16bit(wave))
    # what a listener gets back is within half a 16-bit step of the original
    assert float((back - wave).abs().max()) <= 0.5 / 32768 + 1e-9
    # a second round trip changes nothing
    assert torch.equal(load_audio(save_audio(tmp_path / f"y.{ext}", back)), back)


def test_clipping_at_plus_minus_one_without_wrap_around(tmp_path):
    """The predecessor wrote 1.0 as 32768, which wraps to -32768 in int16 (a full-scale click)."""
    wave = torch.tensor([[1.0, 1.5, 0.99999, -1.0, -1.5, 0.0, 32767.4 / 32768]])
    expected = np.array([32767, 32767, 32767, -32768, -32768, 0, 32767], dtype=np.int16)
    np.testing.assert_array_equal(to_int16(wave).reshape(-1), expected)
    path = save_audio(tmp_path / "clip.wav", wave)
    raw, _ = sf.read(str(path), dtype="int16")
    np.testing.assert_array_equal(raw, expected)
    back = load_audio(path)
    assert float(back[0, 0]) > 0.999 and float(back[0, 3]) == -1.0
    q = quantize_16bit(wave)
    assert float(q.max()) == 32767 / 32768 and float(q.min()) == -1.0


def test_save_creates_folders_and_accepts_flat_waves(tmp_path):
    path = save_audio(tmp_path / "a" / "b" / "c.wav", torch.zeros(100))
    assert path.exists() and sf.info(str(path)).frames == 100


def test_load_float_file_keeps_values_in_range(tmp_path):
    x = np.array([0.5, -0.25, 1.7, -3.0], dtype=np.float32)
    sf.write(str(tmp_path / "f.wav"), x, SR, subtype="FLOAT")
    back = load_audio(tmp_path / "f.wav")
    assert torch.allclose(back[0], torch.tensor([0.5, -0.25, 1.0, -1.0]))


def test_stereo_is_downmixed_with_a_notice(tmp_path, capsys):
    t = np.arange(4000) / SR
    left, right = 0.5 * np.sin(2 * np.pi * 300 * t), 0.2 * np.cos(2 * np.pi * 500 * t)
    sf.write(str(tmp_path / "st.wav"), np.stack([left, right], axis=1), SR, subtype="FLOAT")
    back = load_audio(tmp_path / "st.wav")
    assert back.shape == (1, 4000)
    np.testing.assert_allclose(back[0].numpy(), ((left + right) / 2).astype(np.float32), atol=1e-6)
    err = capsys.readouterr().err
    assert "notice:" in err and "st.wav" in err and "2 channels downmixed to mono" in err


@pytest.mark.parametrize("sr", [8000, 44100])
def test_wrong_sample_rate_is_resampled_with_a_notice(tmp_path, capsys, sr):
    seconds, freq = 0.5, 440.0
    t = np.arange(int(sr * seconds)) / sr
    sf.write(str(tmp_path / "r.flac"), 0.5 * np.sin(2 * np.pi * freq * t), sr, subtype="PCM_16")
    back = load_audio(tmp_path / "r.flac")
    assert back.shape == (1, int(SR * seconds))
    spectrum = np.abs(np.fft.rfft(back[0].numpy() * np.hanning(back.shape[1])))
    peak_hz = np.argmax(spectrum) * SR / back.shape[1]
    assert abs(peak_hz - freq) <= 2.0
    # the amplitude survives resampling (away from the edges)
    assert abs(float(back[0, 1000:-1000].abs().max()) - 0.5) < 0.02
    err = capsys.readouterr().err
    assert f"resampled from {sr} Hz to {SR} Hz" in err and err.startswith("notice:")


def test_no_notice_for_a_clean_file(tmp_path, capsys):
    save_audio(tmp_path / "ok.wav", torch.zeros(1, 160))
    load_audio(tmp_path / "ok.wav")
    assert capsys.readouterr().err == ""


def test_bad_files_raise_audio_errors(tmp_path):
    cases = {}
    cases["missing"] = (tmp_path / "nope.wav", "not found")
    (tmp_path / "dir.wav").mkdir()
    cases["dir"] = (tmp_path / "dir.wav", "folder")
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF\x00\x00garbage" + bytes(range(200)))
    cases["corrupt"] = (tmp_path / "corrupt.wav", "cannot read")
    (tmp_path / "zero.flac").write_bytes(b"")
    cases["zero-byte"] = (tmp_path / "zero.flac", "cannot read")
    sf.write(str(tmp_path / "empty.wav"), np.zeros(0, dtype=np.int16), SR, subtype="PCM_16")
    cases["empty"] = (tmp_path / "empty.wav", "empty")
    sf.write(str(tmp_path / "nan.wav"), np.array([0.0, np.nan, 0.1], dtype=np.float32), SR, subtype="FLOAT")
    cases["nan"] = (tmp_path / "nan.wav", "nan")
    for case, (path, needle) in cases.items():
        with pytest.raises(AudioError) as info:
            load_audio(path)
        msg = str(info.value)
        assert isinstance(info.value, Sec4srError)
        assert "\n" not in msg, case
        assert needle in msg.lower(), (case, msg)
        assert path.name in msg, (case, msg)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 50), st.integers(0, 50), st.integers(1, 3))
def test_fit_length_crops_from_start_or_zero_pads_at_end(t, length, b):
    wave = torch.arange(1, b * t + 1, dtype=torch.float32).reshape(b, 1, t)
    out = fit_length(wave, length)
    assert out.shape == (b, 1, length)
    keep = min(t, length)
    assert torch.equal(out[..., :keep], wave[..., :keep])
    assert torch.all(out[..., keep:] == 0)


def test_load_batch_pads_to_longest_or_given_length(tmp_path):
    paths = []
    for i, n in enumerate([100, 300, 200]):
        paths.append(save_audio(tmp_path / f"{i}.wav", torch.full((1, n), 0.25 * (i + 1))))
    batch = load_batch(paths)
    assert batch.shape == (3, 1, 300) and batch.dtype == torch.float32
    assert torch.all(batch[0, 0, :100] == 0.25) and torch.all(batch[0, 0, 100:] == 0)
    assert torch.all(batch[1, 0] == 0.5)
    fixed = load_batch(paths, length=150)
    assert fixed.shape == (3, 1, 150)
    assert torch.equal(fixed[1], batch[1, :, :150])
    with pytest.raises(AudioError, match="no audio files"):
        load_batch([])
    with pytest.raises(AudioError, match="not found"):
        load_batch(paths + [tmp_path / "missing.wav"])


def test_truncated_wav_is_refused_with_both_frame_counts(tmp_path):
    path = tmp_path / "cut.wav"
    save_audio(path, torch.full((1, 24000), 0.1))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 2 * (24000 - 11989)])
    assert audio_mod.wav_header_frames(path) == (24000, 11989)
    with pytest.raises(AudioError, match=r"truncated: .*cut.wav holds 11989 of the 24000 frames"):
        load_audio(path)
    # a WAV with a chunk after its data, and a streamed WAV with an open size, are whole
    whole = save_audio(tmp_path / "whole.wav", torch.full((1, 160), 0.1))
    whole.write_bytes(whole.read_bytes() + b"LIST\x04\x00\x00\x00abcd")
    assert load_audio(whole).shape == (1, 160)
    assert audio_mod.wav_header_frames(tmp_path / "missing.wav") is None


def test_clipped_file_gets_one_notice(tmp_path, capsys):
    wave = torch.linspace(-1, 1, 1000).reshape(1, -1) * 3  # a third of it beyond full scale
    save_audio(tmp_path / "loud.wav", wave.clamp(-1, 1))
    load_audio(tmp_path / "loud.wav")
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "notice: loud.wav:" in err and "clipped" in err
    save_audio(tmp_path / "peak.wav", torch.cat([torch.ones(1, 3), torch.zeros(1, 997)], dim=1))
    load_audio(tmp_path / "peak.wav")  # three full-scale samples are a peak, not clipping
    assert capsys.readouterr().err == ""


def test_fifo_is_refused_without_blocking(tmp_path):
    import os

    os.mkfifo(tmp_path / "pipe.wav")
    with pytest.raises(AudioError, match="not a regular file") as info:
        load_audio(tmp_path / "pipe.wav")
    assert "pipe.wav" in str(info.value)


def test_names_without_an_extension_for_libsndfile_are_written_as_wav(tmp_path):
    for name in ("....wav", "..wav", "take"):
        path = save_audio(tmp_path / name, torch.full((1, 160), 0.25))
        assert sf.info(str(path)).format == "WAV"
        assert torch.allclose(load_audio(path), torch.full((1, 160), 0.25), atol=1 / 32768)
