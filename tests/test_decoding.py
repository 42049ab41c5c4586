"""Decoding of broken inputs gives the documented DataError reason; audio crop modes."""

from __future__ import annotations

import io
import pickle
import struct
import zlib

import numpy as np
import pytest
import soundfile as sf
import torch

import modalities.audio as audio_mod
from modalities.audio import AudioPreprocessor, DecodedAudio
from modalities.errors import REASONS, DataError
from modalities.image import ImagePreprocessor, load_image
from modalities.text import _check_text
from tests.broken_inputs import _can_write_mp3, make_broken_inputs, write_manifest

FRAMES = 50  # short windows keep the tests fast; the config's default is 208
REQUIRED_CASES = {
    "truncated_png", "zero_byte_wav", "nan_wav", "zero_sample_wav", "six_channel_96k", "one_pixel_image",
    "cmyk_jpeg", "png_16bit", "missing_path", "non_ascii_path", "empty_caption", "long_caption", "flac",
    "ogg_vorbis",
}


def _reason(fn, *args, **kwargs) -> DataError:
    with pytest.raises(DataError) as e:
        fn(*args, **kwargs)
    assert e.value.reason in REASONS, e.value.reason
    return e.value


# ----------------------------------------------------------------------------- broken inputs


def test_each_case_gives_its_reason_and_good_columns_decode(tmp_path):
    rows = make_broken_inputs(tmp_path)
    cases = {r["case"] for r in rows}
    assert REQUIRED_CASES <= cases and len(cases) == len(rows)
    assert sum(r["bad"] is None for r in rows) >= 8
    img_pre, aud_pre = ImagePreprocessor(size=16), AudioPreprocessor(target_frames=FRAMES)
    decoders = {
        "image": lambda v: img_pre(v, tmp_path),
        "text": _check_text,
        "audio": lambda v: aud_pre.crop(aud_pre.decode(v, tmp_path)),
    }
    for row in rows:
        for col, decode in decoders.items():
            if col == row["bad"]:
                e = _reason(decode, row[col])
                assert e.reason == row["reason"], (row["case"], e.reason, str(e))
                if col != "text":
                    assert str(tmp_path / row[col]) in str(e), row["case"]  # the message names the file
                continue
            out = decode(row[col])
            if col == "image":
                assert out.shape == (3, 16, 16) and torch.isfinite(out).all(), row["case"]
            elif col == "audio":
                assert out.shape == (128, FRAMES) and torch.isfinite(out).all(), row["case"]
                assert out[:, 0].abs().sum() > 0, row["case"]  # a tone, not only padding

    # The odd but valid files really are odd.
    from PIL import Image

    assert Image.open(tmp_path / "images/cmyk.jpg").mode == "CMYK"
    assert Image.open(tmp_path / "images/grey16.png").mode == "I;16"
    assert np.asarray(load_image("images/grey16.png", tmp_path)).max() > 200  # 16 bits rescaled, not clipped
    info = sf.info(tmp_path / "audio/six_channel_96k.wav")
    assert (info.channels, info.samplerate) == (6, 96000)
    assert "ü" in next(r["image"] for r in rows if r["case"] == "non_ascii_path")


def test_mp3_decodes():
    if not _can_write_mp3():
        pytest.skip("this libsndfile build cannot write MP3 (needs libsndfile >= 1.1 with LAME)")
    buf = io.BytesIO()
    sf.write(buf, np.sin(np.arange(8000) / 5).astype(np.float32) * 0.3, 16000, format="MP3")
    x = AudioPreprocessor(target_frames=FRAMES)(buf.getvalue())
    assert x.shape == (128, FRAMES) and torch.isfinite(x).all()


def test_write_manifest_keeps_only_the_columns(tmp_path):
    rows = make_broken_inputs(tmp_path)
    path = write_manifest(rows, tmp_path / "manifest.jsonl")
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(rows)
    back = [__import__("json").loads(line) for line in lines]
    assert all(set(b) == {"image", "text", "audio"} for b in back)
    assert [b["image"] for b in back] == [r["image"] for r in rows]
    write_manifest([{"image": None, "text": "t", "audio": None, "case": "x"}], tmp_path / "one.jsonl")
    assert (tmp_path / "one.jsonl").read_text() == '{"image": null, "text": "t", "audio": null}\n'


def _png_header_only(w: int, h: int) -> bytes:
    """A tiny PNG that claims w x h pixels: a decompression bomb as far as PIL can tell."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def test_other_bad_values_give_their_reason(tmp_path, monkeypatch):
    assert _reason(load_image, _png_header_only(30000, 30000)).reason == "absurd_size"
    assert _reason(load_image, b"").reason == "empty_file"
    assert _reason(load_image, b"GIF89a nonsense").reason == "undecodable"
    assert _reason(load_image, {"neither": 1}).reason == "unsupported_value"
    assert _reason(load_image, np.zeros((4, 4), np.complex64)).reason == "unsupported_value"

    assert _check_text("x" * 100_000) == "x" * 100_000
    assert _reason(_check_text, "x" * 100_001).reason == "absurd_size"
    for bad in ["", " \t\n", None, 42, b"bytes"]:
        assert _reason(_check_text, bad).reason == "empty_text"

    tone = np.sin(np.arange(16000) / 5).astype(np.float32)
    pre = AudioPreprocessor(target_frames=FRAMES)
    for rate in [0, 44100.5, None, "16k", 5_000_000]:
        assert _reason(pre.decode, (tone, rate)).reason == "bad_sample_rate", rate
    assert _reason(pre.decode, {"array": tone}).reason == "bad_sample_rate"
    assert _reason(pre.decode, b"").reason == "empty_file"
    assert _reason(pre.decode, b"RIFF junk" * 20).reason == "undecodable"
    assert _reason(pre.decode, (np.zeros((2, 0), np.float32), 16000)).reason == "zero_length_audio"
    assert _reason(pre.decode, (np.full(100, np.inf, np.float32), 16000)).reason == "non_finite_audio"
    for value in [3.14, (np.zeros((2, 2, 2)), 16000), {"other": 1}, (np.array(["a", "b"]), 16000)]:
        assert _reason(pre.decode, value).reason == "unsupported_value"
    sf.write(tmp_path / "a.wav", tone, 16000)
    monkeypatch.setattr(audio_mod, "MAX_SECONDS", 0.5)  # a real 4 h file would be slow to write
    assert _reason(pre.decode, "a.wav", tmp_path).reason == "absurd_size"
    assert _reason(pre.decode, (tone, 16000)).reason == "absurd_size"

    e = pickle.loads(pickle.dumps(DataError("x is gone", "missing_file")))  # crosses DataLoader workers
    assert (str(e), e.reason) == ("x is gone", "missing_file")
    assert DataError("no reason given").reason == "invalid"


# ----------------------------------------------------------------------------- audio crops


def _noise(seconds: float, sr: int = 16000, seed: int = 0) -> np.ndarray:
    """Noise with a slowly moving level, so windows at different starts differ."""
    rng = np.random.default_rng(seed)
    n = int(sr * seconds)
    return (0.3 * rng.standard_normal(n) * (0.2 + np.abs(np.sin(np.arange(n) / sr * 3)))).astype(np.float32)


def test_crop_modes_shapes_determinism_and_spacing():
    pre = AudioPreprocessor(target_frames=FRAMES)
    d = pre.decode((_noise(2.0), 16000))
    assert not d.lazy and d.fbank.shape == (128, d.num_frames) and d.num_frames == 198
    T, last = FRAMES, d.num_frames - FRAMES

    start = pre.crop(d)
    assert start.shape == (128, T) and torch.equal(start, d.fbank[:, :T])
    assert torch.equal(pre((_noise(2.0), 16000)), start)  # __call__ = crop(decode)

    def rand(seed):
        return pre.crop(d, "random", torch.Generator().manual_seed(seed))

    assert rand(0).shape == (128, T) and torch.equal(rand(0), rand(0))
    outs = [rand(s) for s in range(8)]
    assert len({tuple(o[0, :3].tolist()) for o in outs}) >= 4  # starts vary across seeds
    for o in outs:  # each is a real window of the clip
        assert any(torch.equal(o, d.fbank[:, s : s + T]) for s in range(last + 1))

    clips = pre.crop(d, "clips", num_clips=3)
    assert clips.shape == (3, 128, T)
    assert torch.equal(clips[0], start)
    assert torch.equal(clips[1], d.fbank[:, last // 2 : last // 2 + T])
    assert torch.equal(clips[2], d.fbank[:, -T:])  # the end of the audio
    assert pre.crop(d, "clips", num_clips=1).shape == (1, 128, T)
    with pytest.raises(ValueError, match="crop mode"):
        pre.crop(d, "middle")


def test_short_audio_is_padded_and_clips_are_equal():
    pre = AudioPreprocessor(target_frames=FRAMES)
    d = pre.decode((_noise(0.3), 16000))  # 28 frames
    assert d.num_frames == 28
    x = pre.crop(d)
    assert x[:, :28].abs().sum() > 0 and x[:, 28:].eq(0).all()
    g = torch.Generator().manual_seed(0)
    assert torch.equal(pre.crop(d, "random", g), x)
    clips = pre.crop(d, "clips", num_clips=3)
    assert all(torch.equal(c, x) for c in clips)


def test_cropped_fbank_equals_fbank_of_cropped_waveform():
    pre = AudioPreprocessor(target_frames=FRAMES)
    wav = _noise(2.0) + 0.2  # a DC offset: removed per frame, so it cannot leak across crops
    full = pre.decode((wav, 16000)).fbank
    for s in (0, 7, 60, 148):
        piece = pre((wav[s * pre.hop : s * pre.hop + pre.max_samples], 16000))
        torch.testing.assert_close(piece, full[:, s : s + FRAMES], atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("kind", ["wav16k", "wav44k_bytes", "six_channel_96k", "ogg", "mp3", "array"])
def test_lazy_long_audio_matches_full_decode(tmp_path, kind):
    if kind == "mp3" and not _can_write_mp3():
        pytest.skip("this libsndfile build cannot write MP3 (needs libsndfile >= 1.1 with LAME)")
    sr = {"wav44k_bytes": 44100, "six_channel_96k": 96000, "ogg": 22050, "mp3": 24000}.get(kind, 16000)
    wav = _noise(3.0, sr)
    if kind == "mp3":  # a tone: low bitrate, so the bit reservoir spans frames (see MP3_PREROLL)
        wav = (0.5 * np.sin(2 * np.pi * 440 * np.arange(3 * sr) / sr)).astype(np.float32)
    if kind == "six_channel_96k":
        wav = np.stack([wav * (c + 1) / 6 for c in range(6)], 1)
    fmt = {"ogg": "OGG", "mp3": "MP3"}.get(kind, "WAV")
    sf.write(tmp_path / "long", wav, sr, format=fmt, subtype="VORBIS" if kind == "ogg" else None)
    value = {"wav44k_bytes": (tmp_path / "long").read_bytes(), "array": (wav, sr)}.get(kind, str(tmp_path / "long"))

    full_pre = AudioPreprocessor(target_frames=FRAMES)
    lazy_pre = AudioPreprocessor(target_frames=FRAMES, max_full_seconds=1.0)
    full, lazy = full_pre.decode(value), lazy_pre.decode(value)
    assert not full.lazy and lazy.lazy and lazy.fbank is None
    assert lazy.num_frames == full.num_frames and (lazy.num_samples, lazy.sample_rate) == (3 * sr, sr)
    if isinstance(value, str):
        assert len(pickle.dumps(lazy)) < 2000  # a reference, not samples
    restored = pickle.loads(pickle.dumps(lazy))
    assert isinstance(restored, DecodedAudio) and restored.lazy
    tol = dict(atol=1e-4, rtol=1e-4) if sr == 16000 else dict(atol=2e-3, rtol=1e-3)
    torch.testing.assert_close(lazy_pre.crop(restored, "clips", num_clips=5), full_pre.crop(full, "clips", num_clips=5),
                               **tol)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    torch.testing.assert_close(lazy_pre.crop(lazy, "random", g1), full_pre.crop(full, "random", g2), **tol)


def test_lazy_audio_reports_nan_when_the_window_is_read(tmp_path):
    wav = _noise(3.0)
    wav[40000:40010] = np.nan  # at 2.5 s: past the first window
    sf.write(tmp_path / "late_nan.wav", wav, 16000, subtype="FLOAT")
    pre = AudioPreprocessor(target_frames=FRAMES, max_full_seconds=1.0)
    d = pre.decode("late_nan.wav", tmp_path)
    assert pre.crop(d).shape == (128, FRAMES)
    e = _reason(pre.crop, d, "clips")
    assert e.reason == "non_finite_audio" and "late_nan.wav" in str(e)
    wav[100] = np.nan  # in the first window: decode finds it
    sf.write(tmp_path / "early_nan.wav", wav, 16000, subtype="FLOAT")
    assert _reason(pre.decode, "early_nan.wav", tmp_path).reason == "non_finite_audio"


def test_a_cut_short_wav_is_bad_but_a_streamed_one_is_not(tmp_path):
    """libsndfile reads a WAV cut short as a shorter clip; we call it what it is. A header written
    before the length was known (data size 0 or 0xFFFFFFFF) is not a cut."""
    buf = io.BytesIO()
    sf.write(buf, (0.1 * np.random.default_rng(0).standard_normal(16000)).astype(np.float32), 16000,
             format="WAV", subtype="PCM_16")
    whole = buf.getvalue()
    pre = AudioPreprocessor(FRAMES, 16000, 32)
    assert pre.decode(whole).num_samples == 16000
    (tmp_path / "cut.wav").write_bytes(whole[: len(whole) // 2])
    for value in (whole[: len(whole) // 2], str(tmp_path / "cut.wav")):
        e = _reason(pre.decode, value)
        assert e.reason == "undecodable" and "truncated WAV" in str(e) and "32000 bytes" in str(e)
    at = whole.index(b"data")
    streamed = whole[: at + 4] + struct.pack("<I", 0xFFFFFFFF) + whole[at + 8 : len(whole) // 2]
    assert pre.decode(streamed).num_samples > 0
