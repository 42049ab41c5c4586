"""Synthetic paired image / caption / sound dataset (plus Sort-of-CLEVR VQA), made locally.

Why: every command needs data that exists with no download, where the three modalities
describe the *same* scene, so cross-modal prediction and retrieval can actually be learned.

A scene holds 1-3 objects, each with a shape (circle, square, triangle, cross), a colour
(red, green, blue, yellow, purple, orange; unique within a scene, so "the red object" names
one object), a size (small, large) and a cell of a 3x3 grid (row 0..2 = top/middle/bottom,
col 0..2 = left/center/right; distinct cells, small jitter in the image). No scene repeats,
within or across the splits (test scenes never repeat a train scene).

Image: ``image_size`` RGB PNG, shapes drawn with PIL at 4x and box-downsampled, on a gray
background with a little pixel noise.

Caption: varied English templates (list, one sentence per object, counted list, position
first), size synonyms (small/little/tiny, large/big) and position phrasings. The main object
(largest; ties broken top-left first) is mentioned first, the others in a shuffled order;
``objects`` in the manifest follows the caption order and ``label`` is "<colour> <shape>"
of the main object.

Sound (what the model sees as a kaldi log-mel fbank, 25 ms / 10 ms, 128 bins): each object
is a tone of its own, summed, with a little white noise (std 0.002).

- colour -> pitch: ``PITCHES`` (220 Hz to 1.8 kHz, 7.3 semitones apart, so no colour's
  pitch is a low harmonic of another's; about 7 mel bins apart at the low end);
- shape -> timbre: circle = sine, square = odd harmonics (square wave), triangle = all
  harmonics (sawtooth), cross = warble (sine with a 12 Hz, +-8 % vibrato, a wavy band);
  harmonics are kept below min(0.42 * sample_rate, 7 kHz);
- size -> loudness: every tone has the RMS of a sine of amplitude ``AMPLITUDES[size]``
  (large 0.22, small 0.07, 10 dB apart); three large objects together stay below full
  scale, so nothing is rescaled and loudness means size in every clip;
- column -> onset: the clip is cut in three equal time slots (left, center, right); a sound
  plays in the middle 80 % of its column's slot (+-3 % jitter of the slot);
- row -> rhythm: top = one long note, middle = two notes, bottom = three short notes.

With ``speech=True`` the sound is instead the caption spoken by ``espeak-ng`` (its natural
length, not ``duration``), resampled to ``sample_rate``.

VQA rows (``vqa_<split>.jsonl``) ask about the same images: non-relational (attribute of the
X object, which side, colour at a position, is there an X, how many) and relational
(attribute of the object closest to / farthest from X on the cell grid, Euclidean on
(row, col), asked only when that object is unique; how many other objects share X's shape
or size; is there an object left of / right of / above / below X, meaning strictly smaller
or larger column / row).

Scarce pairs (``paired_fraction`` < 1, the common case of real corpora: far more images without
captions and sounds without text than pairs): only that share of the training scenes stays one
row with all three modalities; every other scene becomes three rows holding one modality each
(same label). ``train.jsonl`` holds them all, ``train_paired.jsonl`` / ``train_single.jsonl`` the
two kinds apart, for a mixture that weights them (or a CLIP run, which can use pairs only). The
test split stays whole, as retrieval needs.

Everything is drawn from numpy Generators seeded by (seed, split, stream), so one call
with the same arguments writes byte-identical files.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path

import numpy as np
import soundfile as sf
from PIL import Image, ImageDraw
from tqdm import tqdm

from modalities.errors import DataError

SHAPES = ("circle", "square", "triangle", "cross")
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (50, 90, 235),
    "yellow": (240, 220, 40),
    "purple": (160, 60, 200),
    "orange": (250, 140, 20),
}
SIZES = ("small", "large")
ROWS = ("top", "middle", "bottom")
COLS = ("left", "center", "right")
PITCHES = {c: 220.0 * 2 ** (7.3 * i / 12) for i, c in enumerate(COLOURS)}  # Hz
AMPLITUDES = {"small": 0.07, "large": 0.22}
RADIUS = {"small": 0.25, "large": 0.42}  # in grid cells
NOISE_STD = 0.002

_COLOUR_NAMES = tuple(COLOURS)
_SIZE_WORDS = {"small": ("small", "little", "tiny"), "large": ("large", "big")}
_NUMBER_WORDS = ("zero", "one", "two", "three")
_STREAMS = ("scene", "text", "image", "audio", "vqa")


# ----------------------------------------------------------------------------- scenes


def _sample_scene(rng: np.random.Generator, seen: set) -> list[dict]:
    """Objects of one new scene (never one in ``seen``); colours and cells are distinct."""
    while True:
        n = int(rng.choice([1, 2, 3], p=[0.1, 0.3, 0.6]))
        colours = rng.choice(len(COLOURS), n, replace=False)
        cells = rng.choice(9, n, replace=False)
        shapes = rng.integers(len(SHAPES), size=n)
        sizes = rng.integers(len(SIZES), size=n)
        objs = [
            {"shape": SHAPES[s], "colour": _COLOUR_NAMES[c], "size": SIZES[z],
             "row": int(cell // 3), "col": int(cell % 3)}
            for s, c, z, cell in zip(shapes, colours, sizes, cells)
        ]
        key = frozenset(tuple(o.values()) for o in objs)
        if key not in seen:
            seen.add(key)
            return objs


def _order_objects(objs: list[dict], rng: np.random.Generator) -> list[dict]:
    """Main object (largest, then top-left first) first; the others shuffled."""
    objs = sorted(objs, key=lambda o: (o["size"] != "large", o["row"], o["col"]))
    rest = [objs[i] for i in rng.permutation(len(objs) - 1) + 1]
    return [objs[0]] + rest


def position_name(row: int, col: int) -> str:
    """Canonical name of a grid cell: "top left", "middle right", "center", ..."""
    if row == 1 and col == 1:
        return "center"
    return f"{ROWS[row]} {COLS[col]}"


# ----------------------------------------------------------------------------- captions


def _pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def _position_phrase(o: dict, rng: np.random.Generator) -> str:
    """A varied prepositional phrase for the object's cell, e.g. "in the upper left corner"."""
    r, c = o["row"], o["col"]
    prep = _pick(rng, ("in", "at"))
    vert = {0: ("top", "upper"), 2: ("bottom", "lower")}
    edge = {0: "top", 2: "bottom"}
    if r != 1 and c != 1:
        v = _pick(rng, vert[r])
        return _pick(rng, (f"{prep} the {v} {COLS[c]}", f"in the {v} {COLS[c]} corner"))
    if r != 1:  # top / bottom center
        v = _pick(rng, vert[r])
        return _pick(rng, (f"{prep} the {v} center", f"{prep} the {v} middle",
                           f"in the middle of the {edge[r]} edge"))
    if c != 1:  # middle left / right
        return _pick(rng, (f"{prep} the middle {COLS[c]}", f"{prep} the center {COLS[c]}",
                           f"in the middle of the {COLS[c]} edge"))
    return _pick(rng, ("in the center", "in the middle", "in the centre",
                       "at the center of the image"))


def _noun_phrase(o: dict, rng: np.random.Generator) -> str:
    return f"a {_pick(rng, _SIZE_WORDS[o['size']])} {o['colour']} {o['shape']}"


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _caption(objs: list[dict], rng: np.random.Generator) -> str:
    """One English caption naming every object's size, colour, shape and position."""
    nps = [_noun_phrase(o, rng) for o in objs]
    pps = [_position_phrase(o, rng) for o in objs]
    kind = int(rng.integers(4))
    if kind == 0:  # "a big red circle in the top left and a small blue square ..."
        prefix = _pick(rng, ("", "an image of ", "a picture showing ", "a scene with "))
        return prefix + _join([f"{n} {p}" for n, p in zip(nps, pps)])
    if kind == 1:  # one sentence per object
        out = []
        for n, p in zip(nps, pps):
            form = int(rng.integers(4))
            if form == 0:
                out.append(f"There is {n} {p}.")
            elif form == 1:
                out.append(f"{n[0].upper()}{n[1:]} is {p}.")
            elif form == 2:
                out.append(f"{p[0].upper()}{p[1:]}, there is {n}.")
            else:
                out.append(f"You can see {n} {p}.")
        return " ".join(out)
    if kind == 2:  # "Two shapes: a ... in the ..., and ..."
        noun = _pick(rng, ("shape", "object")) + ("s" if len(objs) > 1 else "")
        head = _NUMBER_WORDS[len(objs)].capitalize() if len(objs) > 1 else "One"
        return f"{head} {noun}: " + _join([f"{n} {p}" for n, p in zip(nps, pps)]) + "."
    # position first: "top left: a big red circle; bottom right: a small blue square"
    return "; ".join(f"{position_name(o['row'], o['col'])}: {n}" for o, n in zip(objs, nps))


# ----------------------------------------------------------------------------- images


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, fill) -> None:
    """One object of radius ``r`` centred at (cx, cy): the demo's four shapes."""
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif shape == "square":
        h = 0.8 * r
        draw.rectangle((cx - h, cy - h, cx + h, cy + h), fill=fill)
    elif shape == "triangle":
        top, base = cy - 0.85 * r, cy + 0.65 * r
        draw.polygon([(cx, top), (cx - 0.9 * r, base), (cx + 0.9 * r, base)], fill=fill)
    else:  # cross
        t = 0.3 * r
        draw.rectangle((cx - r, cy - t, cx + r, cy + t), fill=fill)
        draw.rectangle((cx - t, cy - r, cx + t, cy + r), fill=fill)


def render_frame(objs: list[tuple[dict, float, float]], size: int, bg: int, rng: np.random.Generator) -> Image.Image:
    """(object, x, y) with x, y in grid cells (0..3) -> the scene drawn at 4x, box-downsampled to
    ``size``, with faint gray noise."""
    ss = 4
    big = size * ss
    cell = big / 3
    img = Image.new("RGB", (big, big), (bg, bg, bg))
    draw = ImageDraw.Draw(img)
    for o, x, y in objs:
        draw_shape(draw, o["shape"], x * cell, y * cell, RADIUS[o["size"]] * cell, COLOURS[o["colour"]])
    arr = np.asarray(img.reduce(ss), dtype=np.int16)  # (S, S, 3)
    arr = arr + rng.integers(-3, 4, size=(size, size, 1), dtype=np.int16)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def _render_image(objs: list[dict], size: int, rng: np.random.Generator) -> Image.Image:
    """Draw the scene: each object in its cell, jittered a little."""
    bg = int(rng.integers(80, 116))
    placed = []
    for o in objs:
        jx, jy = rng.uniform(-0.06, 0.06, size=2)  # keeps the shape inside its cell
        placed.append((o, o["col"] + 0.5 + jx, o["row"] + 0.5 + jy))
    return render_frame(placed, size, bg, rng)


# ----------------------------------------------------------------------------- sounds


@lru_cache(maxsize=4)
def _tone_bank(sample_rate: int, n: int) -> np.ndarray:
    """Full-length tones with the RMS of a unit sine, one per (shape, colour): (4, 6, n) float32."""
    t = np.arange(n) / sample_rate
    fmax = min(0.42 * sample_rate, 7000.0)
    bank = np.zeros((len(SHAPES), len(COLOURS), n), dtype=np.float32)
    for ci, f in enumerate(PITCHES.values()):
        ks = np.arange(1, int(fmax // f) + 1)
        for si, shape in enumerate(SHAPES):
            if shape == "circle":
                x = np.sin(2 * np.pi * f * t)
            elif shape in ("square", "triangle"):
                ks_s = ks[ks % 2 == 1] if shape == "square" else ks
                x = sum(np.sin(2 * np.pi * k * f * t) / k for k in ks_s)
            else:  # cross: warble, 12 Hz vibrato of +-8 % (constant envelope, like a sine)
                x = np.sin(2 * np.pi * f * t + 0.08 * f / 12 * np.sin(2 * np.pi * 12 * t))
            bank[si, ci] = x / max(np.sqrt(2 * np.mean(x**2)), 1e-9)  # peak <= ~1.45 (sawtooth)
    return bank


@lru_cache(maxsize=4)
def _envelopes(sample_rate: int, n: int) -> np.ndarray:
    """Gain envelope for each grid cell: (3 rows, 3 cols, n) float32 in [0, 1]."""
    notes = {0: [(0.0, 1.0)], 1: [(0.0, 0.4), (0.6, 0.4)],
             2: [(0.0, 0.25), (0.375, 0.25), (0.75, 0.25)]}  # (start, length) in span units
    slot = n / 3
    env = np.zeros((3, 3, n), dtype=np.float32)
    idx = np.arange(n)
    for col in range(3):
        start, span = col * slot + 0.1 * slot, 0.8 * slot
        for row in range(3):
            for a, length in notes[row]:
                s0, s1 = start + a * span, start + (a + length) * span
                ramp = max(min(0.01 * sample_rate, (s1 - s0) / 4), 1.0)
                # raised-cosine attack and release: no clicks, clean in the log-mel
                up = np.clip((idx - s0) / ramp, 0, 1)
                down = np.clip((s1 - idx) / ramp, 0, 1)
                env[row, col] += (0.5 - 0.5 * np.cos(np.pi * np.minimum(up, down))).astype(np.float32)
    return env


def _render_audio(objs: list[dict], sample_rate: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """Mix the scene's tones: (n,) float32, peak below 1."""
    bank, env = _tone_bank(sample_rate, n), _envelopes(sample_rate, n)
    jit = max(int(0.03 * n / 3), 0)
    out = (NOISE_STD * rng.standard_normal(n)).astype(np.float32)
    for o in objs:
        tone = bank[SHAPES.index(o["shape"]), _COLOUR_NAMES.index(o["colour"])]
        e = np.roll(env[o["row"], o["col"]], int(rng.integers(-jit, jit + 1)))
        out += AMPLITUDES[o["size"]] * e * tone
    peak = np.abs(out).max()
    return out / peak * 0.99 if peak > 0.99 else out  # safety net only; never hit by design


def _speak(text: str, exe: str, sample_rate: int, tmp: str) -> np.ndarray:
    """The caption spoken by espeak-ng, mono float32 at ``sample_rate``, peak 0.9."""
    import torch
    import torchaudio.functional as AF

    path = os.path.join(tmp, "speech.wav")
    subprocess.run([exe, "-v", "en-us", "-w", path, text], check=True, capture_output=True)
    x, sr = sf.read(path, dtype="float32", always_2d=True)  # (T, C)
    x = x.mean(axis=1)
    if sr != sample_rate:
        x = AF.resample(torch.from_numpy(x), sr, sample_rate).numpy()
    peak = np.abs(x).max()
    if peak == 0:
        raise DataError(f"espeak-ng produced silence for the caption {text!r}")
    return (0.9 * x / peak).astype(np.float32)


# ----------------------------------------------------------------------------- VQA


def _dist(a: dict, b: dict) -> float:
    return float(np.hypot(a["row"] - b["row"], a["col"] - b["col"]))


def _question(objs: list[dict], relational: bool, rng: np.random.Generator):
    """One (question, canonical answer, answer_type), or None when the draw is not answerable."""
    ref = objs[int(rng.integers(len(objs)))]
    c = ref["colour"]
    name = _pick(rng, (f"the {c} object", f"the {c} {ref['shape']}"))
    if not relational:
        kind = int(rng.integers(6))
        if kind == 0:
            return f"What shape is the {c} object?", ref["shape"], "other"
        if kind == 1:
            return f"What size is the {c} object?", ref["size"], "other"
        if kind == 2:
            if ref["col"] != 1:
                return f"Is {name} on the left or the right?", COLS[ref["col"]], "other"
            if ref["row"] != 1:
                return f"Is {name} at the top or the bottom?", ROWS[ref["row"]], "other"
            return None
        if kind == 3:
            pos = position_name(ref["row"], ref["col"])
            where = "in the center" if pos == "center" else f"at the {pos}"
            return f"What colour is the object {where}?", c, "other"
        if kind == 4:  # half the time about a present object, else a random one
            if rng.random() < 0.5:
                qc, qs = c, ref["shape"]
            else:
                qc, qs = _pick(rng, _COLOUR_NAMES), _pick(rng, SHAPES)
            yes = any(o["colour"] == qc and o["shape"] == qs for o in objs)
            art = "an" if qc[0] in "aeiou" else "a"
            return f"Is there {art} {qc} {qs}?", "yes" if yes else "no", "yes/no"
        if rng.random() < 0.5:
            return "How many objects are there?", str(len(objs)), "number"
        z = _pick(rng, SIZES)
        return f"How many {z} objects are there?", str(sum(o["size"] == z for o in objs)), "number"

    others = [o for o in objs if o is not ref]
    kind = int(rng.integers(3))
    if kind == 0:  # closest / farthest
        if not others:
            return None
        far = rng.random() < 0.5
        d = [_dist(ref, o) for o in others]
        best = max(d) if far else min(d)
        if d.count(best) > 1:
            return None
        attr = _pick(rng, ("shape", "colour", "size"))
        rel = "farthest from" if far else "closest to"
        return f"What {attr} is the object {rel} {name}?", others[d.index(best)][attr], "other"
    if kind == 1:  # counting others that share an attribute
        attr = _pick(rng, ("shape", "size"))
        n = sum(o[attr] == ref[attr] for o in others)
        return f"How many other objects have the same {attr} as {name}?", str(n), "number"
    rel, key, sign = _pick(rng, (("to the left of", "col", -1), ("to the right of", "col", 1),
                                 ("above", "row", -1), ("below", "row", 1)))
    yes = any(sign * (o[key] - ref[key]) > 0 for o in others)
    return f"Is there an object {rel} {name}?", "yes" if yes else "no", "yes/no"


def _variant(answer: str, rng: np.random.Generator) -> str:
    """A natural human variant of a canonical answer (some normalise to it, some do not)."""
    if answer.isdigit() and int(answer) < len(_NUMBER_WORDS):
        return _pick(rng, (_NUMBER_WORDS[int(answer)], answer + "."))
    options = [answer.capitalize(), answer + "."]
    options += {"large": ["big"], "small": ["little"], "left": ["the left"],
                "right": ["the right"], "top": ["the top"], "bottom": ["the bottom"]}.get(answer, [])
    if answer in SHAPES:
        options.append(f"a {answer}")
    return _pick(rng, tuple(options))


def _vqa_rows(scene_id: str, image: str, objs: list[dict], k: int, rng: np.random.Generator):
    """``k`` distinct questions about one scene, each with 10 answers (>= 7 canonical)."""
    rows, asked = [], set()
    for _ in range(50 * k):
        if len(rows) == k:
            break
        relational = bool(rng.random() < 0.5)
        q = _question(objs, relational, rng)
        if q is None or q[0] in asked:
            continue
        asked.add(q[0])
        question, answer, atype = q
        answers = [answer] * 10
        for i in rng.choice(10, int(rng.integers(0, 4)), replace=False):
            answers[i] = _variant(answer, rng)
        rows.append({"id": f"{scene_id}_q{len(rows)}", "image": image, "question": question,
                     "answers": answers,
                     "question_type": "relational" if relational else "non-relational",
                     "answer_type": atype})
    return rows


# ----------------------------------------------------------------------------- driver


def split_pairs(rows: list[dict], paired_fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """-> (rows kept whole, one-modality rows): a seeded choice of round(fraction * n) scenes stays
    whole; each other scene becomes an image row, a text row and an audio row."""
    keep = set(np.random.default_rng([seed, 7]).permutation(len(rows))[: int(round(paired_fraction * len(rows)))].tolist())
    paired, single = [], []
    for i, r in enumerate(rows):
        if i in keep:
            paired.append(r)
            continue
        for m in ("image", "text", "audio"):
            single.append({**r, "id": f"{r['id']}/{m}", **{o: (r[o] if o == m else None) for o in ("image", "text", "audio")}})
    return paired, single


def _check_args(n_train, n_test, image_size, sample_rate, duration, vqa_per_scene, paired_fraction=1.0):
    checks = [
        (0.0 <= paired_fraction <= 1.0, f"paired_fraction={paired_fraction} must be in [0, 1]"),
        (n_train >= 0, f"n_train={n_train} must be >= 0"),
        (n_test >= 0, f"n_test={n_test} must be >= 0"),
        (image_size >= 16, f"image_size={image_size} must be >= 16 pixels"),
        (sample_rate >= 8000, f"sample_rate={sample_rate} must be >= 8000 Hz (highest pitch is "
                              f"{max(PITCHES.values()):.0f} Hz)"),
        (duration >= 0.3, f"duration={duration} must be >= 0.3 s (three time slots of notes)"),
        (vqa_per_scene >= 0, f"vqa_per_scene={vqa_per_scene} must be >= 0"),
    ]
    for ok, msg in checks:
        if not ok:
            raise DataError(f"generate_demo: {msg}")


def generate_demo(out_dir, n_train: int = 2400, n_test: int = 600, seed: int = 0,
                  speech: bool = False, image_size: int = 64, sample_rate: int = 16000,
                  duration: float = 2.0, vqa_per_scene: int = 2, progress: bool = True,
                  paired_fraction: float = 1.0) -> dict:
    """Write the demo dataset under ``out_dir``; return counts and manifest paths.

    Layout: images/<split>_<i>.png, audio/<split>_<i>.wav, train.jsonl, test.jsonl,
    vqa_train.jsonl, vqa_test.jsonl (paths in rows are relative to ``out_dir``), and
    classes.txt (the 24 "<colour> <shape>" labels); with paired_fraction < 1 also
    train_paired.jsonl and train_single.jsonl (see the module's docstring). Existing
    files of ours are overwritten.
    """
    _check_args(n_train, n_test, image_size, sample_rate, duration, vqa_per_scene, paired_fraction)
    exe = None
    if speech:
        exe = shutil.which("espeak-ng")
        if exe is None:
            raise RuntimeError("generate_demo(speech=True) needs the espeak-ng program on PATH, "
                               "which was not found: install it (apt-get install espeak-ng, "
                               "or brew install espeak-ng) or use speech=False")
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "audio").mkdir(parents=True, exist_ok=True)
    n_samples = int(round(duration * sample_rate))
    seen: set = set()  # scene keys, shared so test never repeats train
    summary = {"out_dir": str(out), "speech": speech, "image_size": image_size,
               "sample_rate": sample_rate, "duration": None if speech else duration}
    bar = tqdm(total=n_train + n_test, desc="demo data", unit="scene", disable=not progress)
    with tempfile.TemporaryDirectory() as tmp:
        for split_id, (split, n) in enumerate((("train", n_train), ("test", n_test))):
            rng = {s: np.random.default_rng([seed, split_id, k]) for k, s in enumerate(_STREAMS)}
            rows, vqa = [], []
            for i in range(n):
                sid = f"{split}_{i:05d}"
                objs = _order_objects(_sample_scene(rng["scene"], seen), rng["text"])
                text = _caption(objs, rng["text"])
                image, audio = f"images/{sid}.png", f"audio/{sid}.wav"
                _render_image(objs, image_size, rng["image"]).save(out / image, format="PNG")
                if speech:
                    wav = _speak(text, exe, sample_rate, tmp)
                else:
                    wav = _render_audio(objs, sample_rate, n_samples, rng["audio"])
                sf.write(out / audio, wav, sample_rate, subtype="PCM_16", format="WAV")
                rows.append({"id": sid, "image": image, "text": text, "audio": audio,
                             "label": f"{objs[0]['colour']} {objs[0]['shape']}", "objects": objs})
                vqa += _vqa_rows(sid, image, objs, vqa_per_scene, rng["vqa"])
                bar.update(1)
            outputs = [(split, rows), (f"vqa_{split}", vqa)]
            if split == "train" and paired_fraction < 1.0:
                paired, single = split_pairs(rows, paired_fraction, seed)
                outputs += [("train_paired", paired), ("train_single", single)]
                outputs[0] = (split, paired + single)
                summary["paired_fraction"] = paired_fraction
            for name, data in outputs:
                path = out / f"{name}.jsonl"
                path.write_text("".join(json.dumps(r) + "\n" for r in data), encoding="utf-8")
                summary[name] = str(path)
                summary[f"n_{name}"] = len(data)
    bar.close()
    # the label set, for zero-shot classification (`multijepa eval zeroshot --classes`)
    classes = out / "classes.txt"
    classes.write_text("".join(f"{c} {s}\n" for c in COLOURS for s in SHAPES), encoding="utf-8")
    summary["classes"] = str(classes)
    return summary
