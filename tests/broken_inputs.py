"""Broken and odd-but-valid inputs, written on the fly: one manifest row per case.

Each bad row has exactly one bad column (`bad`, with the DataError `reason` it must give);
its other columns are valid, so a loader that skips bad rows keeps every good one. Files are
tiny (images 16-32 px, audio <= 0.5 s) so tests using them stay fast.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf
from PIL import Image

SR = 16000
COLOURS = [(220, 40, 40), (40, 180, 60), (40, 80, 220), (230, 200, 40), (150, 60, 200), (240, 140, 30)]


def _image_array(i: int, size: int = 24) -> np.ndarray:
    """(size, size, 3) uint8: a colour per `i` with a gradient, so images differ."""
    ramp = np.linspace(0.5, 1.0, size, dtype=np.float32)[None, :, None]
    colour = np.array(COLOURS[i % len(COLOURS)], np.float32)[None, None, :]
    return np.broadcast_to(ramp * colour, (size, size, 3)).astype(np.uint8)


def _tone(i: int, sr: int = SR, seconds: float = 0.5) -> np.ndarray:
    """(samples,) float32: a sine whose pitch depends on `i`."""
    t = np.arange(int(sr * seconds)) / sr
    return (0.4 * np.sin(2 * np.pi * (300.0 + 150.0 * i) * t)).astype(np.float32)


def _caption(i: int) -> str:
    names = ["red", "green", "blue", "yellow", "purple", "orange"]
    return f"a {names[i % len(names)]} square with a {300 + 150 * i} hertz tone"


def _can_write_mp3() -> bool:
    """libsndfile >= 1.1 writes MP3 (through LAME); older builds cannot."""
    return "MP3" in sf.available_formats()


def make_broken_inputs(root: str | Path) -> list[dict]:
    """Write the cases under `root` (images/, audio/) and return their rows.

    Row: {"image", "text", "audio": path relative to `root` or caption (None if absent),
    "case": name, "bad": the bad column or None, "reason": its DataError reason or None}.
    The MP3 row is left out where libsndfile cannot write MP3 (see `_can_write_mp3`).
    """
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "audio").mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    n = 0  # row counter: each row's good media get their own content

    def good_image(name: str | None = None) -> str:
        rel = f"images/{name or f'good_{n}.png'}"
        Image.fromarray(_image_array(n)).save(root / rel)
        return rel

    def good_audio(name: str | None = None) -> str:
        rel = f"audio/{name or f'good_{n}.wav'}"
        sf.write(root / rel, _tone(n), SR, subtype="PCM_16")
        return rel

    def add(case: str, image=None, text=None, audio=None, bad: str | None = None, reason: str | None = None):
        nonlocal n
        row = {"image": image, "text": text, "audio": audio}
        for col, make in (("image", good_image), ("audio", good_audio)):  # fill the good columns
            if row[col] is None:
                row[col] = make()
        if row["text"] is None:
            row["text"] = _caption(n)
        rows.append({**row, "case": case, "bad": bad, "reason": reason})
        n += 1

    # --- plain good rows
    for k in range(4):
        add(f"good_{k}")

    # --- images
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / "images/truncated.png")
    data = (root / "images/truncated.png").read_bytes()
    (root / "images/truncated.png").write_bytes(data[: len(data) // 2])  # noise: IDAT is cut, not the header
    add("truncated_png", image="images/truncated.png", bad="image", reason="undecodable")

    Image.new("RGB", (1, 1), (200, 30, 30)).save(root / "images/one_pixel.png")
    add("one_pixel_image", image="images/one_pixel.png", bad="image", reason="absurd_size")

    Image.fromarray(_image_array(n, 20)).convert("CMYK").save(root / "images/cmyk.jpg")
    add("cmyk_jpeg", image="images/cmyk.jpg")

    grey16 = (np.arange(24 * 24).reshape(24, 24) * 113).astype(np.uint16)  # up to 64,979: full 16-bit range
    Image.fromarray(grey16).save(root / "images/grey16.png")  # mode I;16
    add("png_16bit", image="images/grey16.png")

    add("missing_path", image="images/does not exist.png", bad="image", reason="missing_file")

    add("non_ascii_path", image=good_image("café photo ü.png"), audio=good_audio("çà et là ß.wav"))

    # --- text
    add("empty_caption", text="", bad="text", reason="empty_text")
    add("long_caption", text=("a long caption about a red square " * 300)[:10_000])

    # --- audio
    (root / "audio/zero_bytes.wav").write_bytes(b"")
    add("zero_byte_wav", audio="audio/zero_bytes.wav", bad="audio", reason="empty_file")

    nan = _tone(n)
    nan[1000:1010] = np.nan
    sf.write(root / "audio/nan.wav", nan, SR, subtype="FLOAT")
    add("nan_wav", audio="audio/nan.wav", bad="audio", reason="non_finite_audio")

    sf.write(root / "audio/zero_samples.wav", np.zeros((0,), np.float32), SR)  # valid header, 0 frames
    add("zero_sample_wav", audio="audio/zero_samples.wav", bad="audio", reason="zero_length_audio")

    six = np.stack([_tone(n, 96000, 0.2) * (c + 1) / 6 for c in range(6)], 1)  # (samples, 6)
    sf.write(root / "audio/six_channel_96k.wav", six, 96000, subtype="PCM_16")
    add("six_channel_96k", audio="audio/six_channel_96k.wav")

    sf.write(root / "audio/tone.flac", _tone(n), SR)
    add("flac", audio="audio/tone.flac")

    sf.write(root / "audio/tone.ogg", _tone(n, 22050), 22050, format="OGG", subtype="VORBIS")
    add("ogg_vorbis", audio="audio/tone.ogg")

    if _can_write_mp3():
        sf.write(root / "audio/tone.mp3", _tone(n, 24000), 24000, format="MP3")
        add("mp3", audio="audio/tone.mp3")
    return rows


def write_manifest(rows: list[dict], path: str | Path) -> Path:
    """Write `rows` as JSONL with only the image/text/audio keys (None -> null), UTF-8."""
    path = Path(path)
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps({k: row.get(k) for k in ("image", "text", "audio")}, ensure_ascii=False) + "\n")
    return path
