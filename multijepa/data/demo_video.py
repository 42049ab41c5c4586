"""Synthetic video clips for `multijepa data demo --video`: one of the demo's shapes moving across
the frame, with its sound, and a caption that says where it goes.

Why: direction of motion is something only the order of the frames tells. A clip of an object
moving right and one of the same object moving left along the same lane cover the same pixels:
their mean frames have one distribution (start and end points are drawn from one symmetric law
and swapped by the direction), so a model that averages frames cannot tell left from right; it
can at most tell a horizontal path from a vertical one. Only a model that reads the frames in
order can.

A clip: ``frames`` frames at ``fps`` (2 s at 8 fps by default) of ``size`` pixels, H.264 in an .mp4
with an AAC sound track (what browsers play and what most real corpora hold). One object (shape,
colour, size as the image demo) moves in one of four directions along a lane: right or left along
a row (top, middle, bottom), up or down along a column (left, center, right), from about half a
cell in from one edge to about half a cell from the other (each end drawn in 0.35..0.8 cell).

Its sound plays while it moves: the image demo's tone for its colour (pitch), shape (timbre) and
size (loudness), gliding ``GLIDE_SEMITONES`` up when the object moves right or up and down when it
moves left or down; an object moving up or down pulses at ``PULSE_HZ``, one moving sideways holds
its note. So the sound tells the direction too, and what moves.

The caption names the object, its direction and its lane in varied words ("a small red circle
moving to the right along the top", "A big blue cross goes down the left side."). ``label`` is the
direction ("moving right"), for class-match P@1, probes and zero-shot (``directions.txt``).
Rows have no ``audio`` column: the sound comes from the file (``data.audio_from_video``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from tqdm import tqdm

from modalities.errors import DataError

from .demo import _COLOUR_NAMES, _SIZE_WORDS, AMPLITUDES, COLOURS, NOISE_STD, PITCHES, SHAPES, SIZES, _pick, render_frame

DIRECTIONS = ("right", "left", "up", "down")
GLIDE_SEMITONES = 3.0  # colours are 7.3 semitones apart: a rising and a falling glide never meet
PULSE_HZ = 4.0
_LANES = {"row": ("top", "middle", "bottom"), "col": ("left", "center", "right")}
_STREAMS = ("scene", "text", "video", "audio")


def _sample_motion(rng: np.random.Generator) -> dict:
    """One moving object: what it is, where it goes, and its path in grid cells (0..3)."""
    direction = DIRECTIONS[int(rng.integers(4))]
    lane = int(rng.integers(3))
    lo, hi = rng.uniform(0.35, 0.8), 3 - rng.uniform(0.35, 0.8)  # the same law for both directions
    start, end = (lo, hi) if direction in ("right", "down") else (hi, lo)
    return {"shape": SHAPES[int(rng.integers(len(SHAPES)))], "colour": _COLOUR_NAMES[int(rng.integers(len(COLOURS)))],
            "size": SIZES[int(rng.integers(len(SIZES)))], "direction": direction, "lane": lane,
            "start": round(float(start), 4), "end": round(float(end), 4),
            "jitter": round(float(rng.uniform(-0.06, 0.06)), 4)}


def _position(m: dict, t: float) -> tuple[float, float]:
    """(x, y) in grid cells at time t in [0, 1]."""
    along = m["start"] + (m["end"] - m["start"]) * t
    across = m["lane"] + 0.5 + m["jitter"]
    return (along, across) if m["direction"] in ("right", "left") else (across, along)


def _direction_phrase(direction: str, rng: np.random.Generator) -> str:
    options = {"right": ("moving to the right", "moving right", "going from left to right", "heading right"),
               "left": ("moving to the left", "moving left", "going from right to left", "heading left"),
               "up": ("moving up", "moving upwards", "going from bottom to top", "rising"),
               "down": ("moving down", "moving downwards", "going from top to bottom", "falling")}
    return _pick(rng, options[direction])


def _lane_phrase(m: dict, rng: np.random.Generator) -> str:
    if m["direction"] in ("right", "left"):
        name = _LANES["row"][m["lane"]]
        return _pick(rng, (f"along the {name}", f"across the {name}", f"in the {name} row"))
    name = _LANES["col"][m["lane"]]
    if name == "center":
        return _pick(rng, ("in the center column", "through the middle", "in the middle column"))
    return _pick(rng, (f"on the {name} side", f"in the {name} column", f"along the {name} edge"))


def _caption(m: dict, rng: np.random.Generator) -> str:
    noun = f"{_pick(rng, _SIZE_WORDS[m['size']])} {m['colour']} {m['shape']}"
    where, lane = _direction_phrase(m["direction"], rng), _lane_phrase(m, rng)
    form = int(rng.integers(3))
    if form == 0:
        return f"a {noun} {where} {lane}"
    if form == 1:
        return f"A {noun} is {where} {lane}."
    return f"{lane[0].upper()}{lane[1:]}, a {noun} {where}."


def _frames(m: dict, n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """(n, size, size, 3) uint8."""
    bg = int(rng.integers(80, 116))
    ts = np.linspace(0.0, 1.0, n)
    return np.stack([np.asarray(render_frame([(m, *_position(m, float(t)))], size, bg, rng)) for t in ts])


def _sound(m: dict, sample_rate: int, seconds: float, rng: np.random.Generator) -> np.ndarray:
    """(samples,) float32: the object's tone gliding with its direction, pulsing when vertical."""
    n = int(round(seconds * sample_rate))
    t = np.arange(n) / sample_rate
    f0 = PITCHES[m["colour"]]
    sign = 1.0 if m["direction"] in ("right", "up") else -1.0
    freq = f0 * 2 ** (sign * GLIDE_SEMITONES / 12 * t / max(seconds, 1e-9))  # (n,) Hz
    phase = 2 * np.pi * np.cumsum(freq) / sample_rate
    fmax = min(0.42 * sample_rate, 7000.0)
    top = int(fmax // (f0 * 2 ** (GLIDE_SEMITONES / 12)))
    if m["shape"] == "circle":
        x = np.sin(phase)
    elif m["shape"] in ("square", "triangle"):
        ks = range(1, top + 1, 2) if m["shape"] == "square" else range(1, top + 1)
        x = sum(np.sin(k * phase) / k for k in ks)
    else:  # cross: a warble, as in the image demo's sound
        x = np.sin(phase + 0.08 * f0 / 12 * np.sin(2 * np.pi * 12 * t))
    x = x / max(np.sqrt(2 * np.mean(x**2)), 1e-9)
    if m["direction"] in ("up", "down"):
        x = x * (0.5 - 0.5 * np.cos(2 * np.pi * PULSE_HZ * t))  # pulses, silent between notes
    fade = np.clip(np.minimum(t, seconds - t) / 0.01, 0, 1)  # no click at either end
    out = AMPLITUDES[m["size"]] * fade * x + NOISE_STD * rng.standard_normal(n)
    return out.astype(np.float32)


def write_clip(path: Path, m: dict, frames: int, fps: int, size: int, sample_rate: int, rng: dict) -> None:
    from modalities.video import write_video

    pixels = _frames(m, frames, size, rng["video"])
    sound = _sound(m, sample_rate, frames / fps, rng["audio"])
    write_video(path, pixels, fps=fps, audio=sound, sample_rate=sample_rate, codec="libx264",
                options={"crf": "18", "preset": "veryfast"})


def generate_demo_video(out_dir, n_train: int = 2400, n_test: int = 600, seed: int = 0, size: int = 64,
                        frames: int = 16, fps: int = 8, sample_rate: int = 16000, progress: bool = True) -> dict:
    """Write videos/<split>_<i>.mp4, video_train.jsonl, video_test.jsonl and directions.txt under
    ``out_dir`` (paths relative to it); return counts and manifest paths. Seeded by (seed, split,
    stream): the same call writes the same rows and frames."""
    for ok, msg in ((n_train >= 0 and n_test >= 0, f"n_train={n_train}, n_test={n_test} must be >= 0"),
                    (size >= 16 and size % 2 == 0, f"size={size} must be an even number >= 16 (H.264, yuv420p)"),
                    (frames >= 2 and fps >= 1, f"frames={frames} must be >= 2 and fps={fps} >= 1"),
                    (sample_rate >= 8000, f"sample_rate={sample_rate} must be >= 8000 Hz")):
        if not ok:
            raise DataError(f"generate_demo_video: {msg}")
    out = Path(out_dir)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    summary: dict = {"out_dir": str(out), "video_size": size, "video_frames": frames, "fps": fps}
    bar = tqdm(total=n_train + n_test, desc="demo video", unit="clip", disable=not progress)
    for split_id, (split, n) in enumerate((("train", n_train), ("test", n_test))):
        rng = {s: np.random.default_rng([seed, 100 + split_id, k]) for k, s in enumerate(_STREAMS)}
        rows = []
        for i in range(n):
            sid = f"video_{split}_{i:05d}"
            m = _sample_motion(rng["scene"])
            video = f"videos/{split}_{i:05d}.mp4"
            write_clip(out / video, m, frames, fps, size, sample_rate, rng)
            rows.append({"id": sid, "video": video, "text": _caption(m, rng["text"]),
                         "label": f"moving {m['direction']}", "object": f"{m['colour']} {m['shape']}", "motion": m})
            bar.update(1)
        path = out / f"video_{split}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        summary[f"video_{split}"], summary[f"n_video_{split}"] = str(path), len(rows)
    bar.close()
    classes = out / "directions.txt"
    classes.write_text("".join(f"moving {d}\n" for d in DIRECTIONS), encoding="utf-8")
    summary["directions"] = str(classes)
    return summary
