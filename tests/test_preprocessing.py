"""Preprocessing of the three modalities: odd but valid inputs work, bad inputs raise DataError."""

from __future__ import annotations

import math
import pickle
import re

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from modalities.audio import AudioPreprocessor
from modalities.errors import DataError
from modalities.image import ImagePreprocessor, load_image
from modalities.text import TextTokenizer

# ----------------------------------------------------------------------------- image


def _gradient(w: int, h: int) -> np.ndarray:
    """(h, w, 3) uint8 with distinct content along both axes."""
    x = np.linspace(0, 255, w, dtype=np.float32)[None, :]
    y = np.linspace(0, 255, h, dtype=np.float32)[:, None]
    return np.stack([x + 0 * y, y + 0 * x, np.full((h, w), 128.0)], -1).astype(np.uint8)


def _png_rgb16(arr: np.ndarray) -> bytes:
    """A 16-bit-per-channel RGB PNG (Pillow cannot write one)."""
    import struct
    import zlib

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    h, w, _ = arr.shape
    rows = b"".join(b"\0" + row.astype(">u2").tobytes() for row in arr)
    header = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def _write_images(d):
    rgb = Image.fromarray(_gradient(40, 30))
    files = {}
    rgb.save(d / "rgb.png")
    files["rgb"] = "rgb.png"
    rgb.convert("RGBA").save(d / "rgba.png")
    files["rgba"] = "rgba.png"
    rgb.convert("P").save(d / "p.png")
    files["p"] = "p.png"
    rgb.convert("L").save(d / "l.png")
    files["l"] = "l.png"
    Image.fromarray((np.arange(30 * 40).reshape(30, 40) * 50).astype(np.uint16)).save(d / "grey16.png")
    files["grey16"] = "grey16.png"
    (d / "rgb16.png").write_bytes(_png_rgb16(_gradient(40, 30).astype(np.uint16) * 257))
    files["rgb16"] = "rgb16.png"
    rgb.convert("CMYK").save(d / "cmyk.jpg")
    files["cmyk"] = "cmyk.jpg"
    Image.fromarray(_gradient(300, 90)).save(d / "wide.png")
    files["wide"] = "wide.png"
    Image.fromarray(_gradient(5, 200)).save(d / "tall.png")
    files["tall"] = "tall.png"
    return files


def test_image_modes_and_sizes_give_normalised_tensor(tmp_path):
    files = _write_images(tmp_path)
    pre = ImagePreprocessor(size=32)
    for kind, rel in files.items():
        x = pre(rel, base_dir=tmp_path)
        assert x.shape == (3, 32, 32) and x.dtype == torch.float32, kind
        assert torch.isfinite(x).all(), kind
        assert -2.5 < x.min() and x.max() < 2.5, kind  # CLIP-normalised range
    # 16-bit grey keeps its full range (not clipped to white at 255).
    grey = np.asarray(load_image(tmp_path / files["grey16"]))
    assert grey.min() < 10 and 200 < grey.max() and grey.std() > 30
    assert np.abs(np.asarray(load_image(tmp_path / files["rgb16"])).astype(int) - _gradient(40, 30)).max() <= 1
    assert Image.open(tmp_path / files["cmyk"]).mode == "CMYK"


def test_image_transparency_is_composited_on_white(tmp_path):
    arr = np.zeros((8, 8, 4), np.uint8)  # fully transparent black
    Image.fromarray(arr, "RGBA").save(tmp_path / "clear.png")
    assert np.asarray(load_image(tmp_path / "clear.png")).min() == 255
    p = Image.new("P", (8, 8), 0)
    p.putpalette([0, 0, 0] * 256)
    p.info["transparency"] = 0
    p.save(tmp_path / "clear_p.png", transparency=0)
    assert np.asarray(load_image(tmp_path / "clear_p.png")).min() == 255


def test_image_exif_orientation_swaps_width_and_height(tmp_path):
    img = Image.fromarray(_gradient(40, 20))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 CW
    img.save(tmp_path / "rot.jpg", exif=exif.tobytes())
    assert Image.open(tmp_path / "rot.jpg").size == (40, 20)
    assert load_image("rot.jpg", base_dir=tmp_path).size == (20, 40)


def test_image_value_kinds_agree(tmp_path):
    arr = _gradient(24, 16)
    Image.fromarray(arr).save(tmp_path / "a.png")
    data = (tmp_path / "a.png").read_bytes()
    pre = ImagePreprocessor(size=16)
    ref = pre(tmp_path / "a.png")
    for value in [str(tmp_path / "a.png"), data, {"bytes": data, "path": None},
                  {"bytes": None, "path": "a.png"}, Image.fromarray(arr), arr]:
        torch.testing.assert_close(pre(value, base_dir=tmp_path), ref)
    assert pre(arr[:, :, 0]).shape == (3, 16, 16)  # HxW grey array


def test_image_bad_inputs_raise_dataerror_naming_the_file(tmp_path):
    Image.fromarray(_gradient(64, 64)).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "trunc.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.png").write_text("not an image")
    Image.new("RGB", (1, 1)).save(tmp_path / "dot.png")
    (tmp_path / "zero.png").write_bytes(b"")
    for name, message, code in [("trunc.png", "truncated", "undecodable"), ("missing.png", "not found", "missing_file"),
                                ("dot.png", "absurd size", "absurd_size"), ("text.png", "not an image", "undecodable"),
                                ("zero.png", "empty", "empty_file")]:
        with pytest.raises(DataError, match=message) as e:
            load_image(name, base_dir=tmp_path)
        assert str(tmp_path / name) in str(e.value) and e.value.reason == code
    for value in [np.zeros((4, 4, 2), np.uint8), 12345]:
        with pytest.raises(DataError) as e:
            load_image(value)
        assert e.value.reason == "unsupported_value"


# ----------------------------------------------------------------------------- audio

FRAMES = 50  # a short target keeps the tests fast; the config's default is 208


def _sine(freq: float, sr: int, seconds: float = 0.6, channels: int = 1) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    wav = 0.5 * np.sin(2 * np.pi * freq * t).astype(np.float32)
    return np.stack([wav] * channels, 1) if channels > 1 else wav  # (samples[, channels])


def test_audio_rates_channels_formats_and_values(tmp_path):
    pre = AudioPreprocessor(target_frames=FRAMES)
    sf.write(tmp_path / "a8k.wav", _sine(440, 8000), 8000)
    sf.write(tmp_path / "a22k.wav", _sine(440, 22050), 22050)
    sf.write(tmp_path / "a44k.wav", _sine(440, 44100), 44100)
    sf.write(tmp_path / "a96k.wav", _sine(440, 96000, 0.3), 96000)
    sf.write(tmp_path / "stereo.wav", _sine(440, 16000, channels=2), 16000)
    sf.write(tmp_path / "six.wav", _sine(440, 16000, channels=6), 16000, subtype="PCM_16")
    sf.write(tmp_path / "a.flac", _sine(440, 16000), 16000)
    sf.write(tmp_path / "long.wav", _sine(440, 16000, seconds=3.0), 16000)
    values = [f.name for f in tmp_path.iterdir()]
    values += [(tmp_path / "a.flac").read_bytes(),
               {"bytes": (tmp_path / "a22k.wav").read_bytes(), "path": "a22k.wav"},
               {"path": "stereo.wav", "bytes": None},
               {"array": _sine(440, 16000), "sampling_rate": 16000},
               (_sine(440, 44100, channels=2), 44100),  # soundfile layout (samples, channels)
               ((_sine(440, 16000) * 32767).astype(np.int16), 16000)]
    outs = []
    for v in values:
        x = pre(v, base_dir=tmp_path)
        assert x.shape == (128, FRAMES) and x.dtype == torch.float32, v if isinstance(v, str) else type(v)
        assert torch.isfinite(x).all()
        outs.append(x)
    # The same 440 Hz tone at every rate/layout lands on the same strongest mel bin.
    peaks = {int(x[:, 0].argmax()) for x in outs}
    assert max(peaks) - min(peaks) <= 1, peaks
    # Shorter than one 25 ms window: padded to give one frame, the rest is padding.
    tiny = pre((_sine(440, 16000, seconds=0.005), 16000))
    assert torch.isfinite(tiny).all() and tiny[:, 0].abs().sum() > 0 and tiny[:, 1:].eq(0).all()


def test_audio_pads_short_and_crops_long(tmp_path):
    pre = AudioPreprocessor(target_frames=FRAMES)
    short = pre((_sine(440, 16000, seconds=0.1), 16000))  # 8 frames
    assert torch.all(short[:, 10:] == 0)  # padding is 0 after normalisation
    assert short[:, :8].abs().sum() > 0
    # A long clip keeps its start: equal to the same clip cut at ~0.6 s.
    long = _sine(440, 16000, seconds=5.0)
    long[16000:] = 0
    torch.testing.assert_close(pre((long, 16000)), pre((long[:16000], 16000)), atol=1e-4, rtol=0)


def _mel_bin(freq: float, n_mels: int = 128, low: float = 20.0, high: float = 8000.0) -> float:
    mel = lambda f: 1127.0 * math.log(1.0 + f / 700.0)  # noqa: E731 (kaldi/htk mel scale)
    delta = (mel(high) - mel(low)) / (n_mels + 1)
    return (mel(freq) - mel(low)) / delta - 1


def test_audio_sine_peaks_at_expected_mel_bin():
    pre = AudioPreprocessor(target_frames=FRAMES)
    peak = {}
    for f in (200, 1000):
        x = pre((_sine(f, 16000, seconds=1.0), 16000))
        peak[f] = int(x.mean(1).argmax())
        assert abs(peak[f] - _mel_bin(f)) <= 2, (f, peak[f], _mel_bin(f))
    assert peak[200] < peak[1000]


def test_audio_bad_inputs_raise_dataerror_naming_the_file(tmp_path):
    sf.write(tmp_path / "empty.wav", np.zeros((0,), np.float32), 16000)
    (tmp_path / "zero.wav").write_bytes(b"")
    (tmp_path / "junk.wav").write_bytes(b"RIFF not really a wave file" * 10)
    nan = _sine(440, 16000)
    nan[100] = np.nan
    sf.write(tmp_path / "nan.wav", nan, 16000, subtype="FLOAT")
    pre = AudioPreprocessor(target_frames=FRAMES)
    for name, message, code in [("empty.wav", "zero samples", "zero_length_audio"),
                                ("zero.wav", "empty", "empty_file"), ("junk.wav", "cannot decode", "undecodable"),
                                ("nan.wav", "non-finite", "non_finite_audio"), ("missing.wav", "not found", "missing_file")]:
        with pytest.raises(DataError, match=message) as e:
            pre(name, base_dir=tmp_path)
        assert str(tmp_path / name) in str(e.value) and e.value.reason == code
    with pytest.raises(DataError, match="sample rate") as e:
        pre.decode((_sine(440, 16000), 0))
    assert e.value.reason == "bad_sample_rate"
    with pytest.raises(DataError, match="sampling_rate"):
        pre.decode({"array": _sine(440, 16000)})
    with pytest.raises(DataError) as e:
        pre.decode(3.14)
    assert e.value.reason == "unsupported_value"


# ----------------------------------------------------------------------------- text

COLOURS = "red green blue yellow gray purple orange".split()
SHAPES = "circle square triangle cross star".split()
PLACES = "left of|right of|above|below|next to".split("|")


def _captions(n: int = 50) -> list[str]:
    rng = np.random.default_rng(0)
    pick = lambda xs: xs[rng.integers(len(xs))]  # noqa: E731
    return [f"a {pick(['small', 'large', 'tiny', 'big'])} {pick(COLOURS)} {pick(SHAPES)} is "
            f"{pick(PLACES)} the {pick(COLOURS)} {pick(SHAPES)}." for _ in range(n)]


def test_sentencepiece_train_save_load_round_trip(tmp_path):
    caps = _captions()
    tok = TextTokenizer.train(caps, tmp_path / "sp.model", vocab_size=1000, max_len=24)
    assert (tmp_path / "sp.model").is_file() and list(tmp_path.iterdir()) == [tmp_path / "sp.model"]
    assert tok.pad_id == 0 and (tok.bos_id, tok.eos_id) == (2, 3)
    assert 4 < tok.vocab_size <= 1000

    ids, lengths = tok(caps[:8])
    assert lengths[0] <= len(caps[0].split()) + 3  # whole words are pieces, not characters
    assert ids.shape == (8, 24) and ids.dtype == torch.int64 and lengths.dtype == torch.int64
    for row, n in zip(ids, lengths):
        assert row[0] == 2 and row[n - 1] == 3  # [bos] pieces [eos]
        assert torch.all(row[n:] == 0) and torch.all(row[1 : n - 1] > 3)  # pad after, no specials inside

    tok.save(tmp_path / "copy" / "tok.model")
    for again in (TextTokenizer.load(tmp_path / "sp.model", max_len=24),
                  TextTokenizer.load(tmp_path / "copy" / "tok.model", max_len=24),
                  pickle.loads(pickle.dumps(tok))):
        a_ids, a_len = again(caps[:8])
        assert torch.equal(a_ids, ids) and torch.equal(a_len, lengths)


def test_truncation_keeps_eos_and_bad_texts_raise(tmp_path):
    tok = TextTokenizer.train(_captions(), tmp_path / "sp.model", max_len=6)
    ids, lengths = tok(["a large red circle is left of the blue square", "a"])
    assert lengths.tolist()[0] == 6 and ids[0, 0] == 2 and ids[0, -1] == 3
    assert 3 <= lengths[1] < 6 and ids[1, lengths[1] - 1] == 3
    for bad in ["", "   \n", None, 42]:
        with pytest.raises(DataError, match=re.escape(repr(bad))):
            tok(["fine caption", bad])
    with pytest.raises(DataError, match="not found"):
        TextTokenizer.load(tmp_path / "nope.model")


def test_clip_tokenizer_works_offline():
    tok = TextTokenizer.clip(max_len=10)
    assert tok.vocab_size == 49408 and tok.pad_id == 0
    ids, lengths = tok(["A red circle.", "a " * 40])
    assert ids.shape == (2, 10)
    assert ids[0, 0] == tok.bos_id and ids[0, lengths[0] - 1] == tok.eos_id and ids[0, lengths[0]:].eq(0).all()
    assert lengths[1] == 10 and ids[1, -1] == tok.eos_id
    with pytest.raises(DataError, match="empty"):
        tok([" "])


def test_training_on_no_usable_text_fails_clearly(tmp_path):
    with pytest.raises(DataError, match="cannot train"):
        TextTokenizer.train(["", "  ", None], tmp_path / "sp.model")
    assert not (tmp_path / "sp.model").exists()
