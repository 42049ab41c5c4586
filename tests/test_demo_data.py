"""The demo dataset: files decode, captions/sounds/VQA agree with the scene, runs are reproducible."""

import json
import math
import os
import re
import stat
import sys
from collections import Counter

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from modalities.errors import DataError
from multijepa.data.demo import AMPLITUDES, COLOURS, PITCHES, SHAPES, SIZES, generate_demo

SMALL = dict(n_train=20, n_test=10, progress=False)
SIZE_WORDS = {"small": {"small", "little", "tiny"}, "large": {"large", "big"}}


def _read(path):
    return [json.loads(line) for line in open(path, encoding="utf-8")]


def _tree(root):
    """{relative path: bytes} of every file under root."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = os.path.join(dirpath, f)
            out[os.path.relpath(p, root)] = open(p, "rb").read()
    return out


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    summary = generate_demo(root, **SMALL)
    return root, summary


@pytest.fixture(scope="module")
def scenes(demo):
    root, _ = demo
    return _read(root / "train.jsonl") + _read(root / "test.jsonl")


@pytest.fixture(scope="module")
def questions(demo, scenes):
    """VQA rows with the objects of their scene attached."""
    root, _ = demo
    by_image = {s["image"]: s["objects"] for s in scenes}
    rows = _read(root / "vqa_train.jsonl") + _read(root / "vqa_test.jsonl")
    return [(q, by_image[q["image"]]) for q in rows]


def test_counts_and_summary(demo):
    root, s = demo
    assert len(_read(root / "train.jsonl")) == s["n_train"] == 20
    assert len(_read(root / "test.jsonl")) == s["n_test"] == 10
    assert len(_read(root / "vqa_train.jsonl")) == s["n_vqa_train"] == 40
    assert len(_read(root / "vqa_test.jsonl")) == s["n_vqa_test"] == 20
    assert os.path.samefile(s["train"], root / "train.jsonl")


def test_files_decode_with_the_right_format(demo, scenes):
    root, _ = demo
    assert [s["id"] for s in scenes[:2]] == ["train_00000", "train_00001"]
    assert scenes[20]["id"] == "test_00000"
    for s in scenes:
        with Image.open(root / s["image"]) as im:
            im.load()
            assert im.size == (64, 64) and im.mode == "RGB"
        info = sf.info(str(root / s["audio"]))
        assert (info.samplerate, info.channels, info.frames) == (16000, 1, 32000)
        assert info.subtype == "PCM_16"
        x, _ = sf.read(str(root / s["audio"]))
        assert np.isfinite(x).all() and 0.05 < np.abs(x).max() < 1.0


def test_scene_rules(scenes):
    keys = set()
    for s in scenes:
        objs = s["objects"]
        assert 1 <= len(objs) <= 3
        assert len({o["colour"] for o in objs}) == len(objs)  # colours unique
        assert len({(o["row"], o["col"]) for o in objs}) == len(objs)  # cells distinct
        for o in objs:
            assert o["shape"] in SHAPES and o["colour"] in COLOURS and o["size"] in SIZES
            assert o["row"] in (0, 1, 2) and o["col"] in (0, 1, 2)
        # label = first-mentioned object = largest, ties broken top-left first
        main = min(objs, key=lambda o: (o["size"] != "large", o["row"], o["col"]))
        assert objs[0] == main and s["label"] == f"{main['colour']} {main['shape']}"
        keys.add(frozenset(tuple(sorted(o.items())) for o in objs))
    assert len(keys) == len(scenes)  # no scene repeats, within or across splits


def test_captions_name_every_object(scenes):
    for s in scenes:
        words = re.findall(r"[a-z]+", s["text"].lower())
        assert len(words) <= 45, s["text"]
        for o in s["objects"]:
            assert f"{o['colour']} {o['shape']}" in s["text"], (s["text"], o)
            # the size word sits right before the colour
            before = re.search(rf"(\w+) {o['colour']} {o['shape']}", s["text"]).group(1)
            assert before in SIZE_WORDS[o["size"]], s["text"]
    assert len({s["text"].split()[0] for s in scenes}) > 3  # templates vary


def test_image_shows_each_colour(demo, scenes):
    root, _ = demo
    s = scenes[0]
    img = np.asarray(Image.open(root / s["image"]), dtype=float)
    cell = 64 / 3
    for o in s["objects"]:
        cy, cx = int((o["row"] + 0.5) * cell), int((o["col"] + 0.5) * cell)
        patch = img[cy - 2:cy + 3, cx - 2:cx + 3].reshape(-1, 3).mean(0)
        assert np.abs(patch - COLOURS[o["colour"]]).max() < 40, (o, patch)


def test_audio_encodes_the_scene(demo, scenes):
    """Column -> time slot, colour -> pitch (strongest peak), size -> loudness."""
    root, _ = demo
    checked = 0
    for s in scenes:
        x, sr = sf.read(str(root / s["audio"]))
        slots = np.split(x[: len(x) // 3 * 3], 3)
        for col, seg in enumerate(slots):
            here = [o for o in s["objects"] if o["col"] == col]
            if not here:
                assert np.abs(seg).max() < 0.02  # only the faint noise
            elif len(here) == 1:
                o = here[0]
                # loudest 25 ms frame has the RMS of a sine of the size's amplitude
                frames = seg[: len(seg) // 400 * 400].reshape(-1, 400)
                rms = np.sqrt((frames**2).mean(1)).max()
                assert abs(rms / (AMPLITUDES[o["size"]] / math.sqrt(2)) - 1) < 0.1, (o, rms)
                spec = np.abs(np.fft.rfft(seg * np.hanning(len(seg))))
                peak = np.fft.rfftfreq(len(seg), 1 / sr)[spec.argmax()]
                assert abs(peak / PITCHES[o["colour"]] - 1) < 0.1, (o, peak)
                checked += 1
    assert checked >= 10
    a, _ = sf.read(str(root / scenes[0]["audio"]))
    b, _ = sf.read(str(root / scenes[1]["audio"]))
    assert scenes[0]["objects"] != scenes[1]["objects"] and np.abs(a - b).mean() > 0.01


def test_same_seed_is_byte_identical_and_other_seed_differs(tmp_path, demo):
    root, _ = demo
    generate_demo(tmp_path / "a", **SMALL)
    generate_demo(tmp_path / "b", seed=1, **SMALL)
    same, other = _tree(tmp_path / "a"), _tree(tmp_path / "b")
    assert same == _tree(root)
    assert same.keys() == other.keys()
    for name in ("train.jsonl", "test.jsonl", "images/train_00000.png", "audio/test_00000.wav"):
        assert same[name] != other[name]


def test_train_and_test_use_different_streams(demo, scenes):
    assert scenes[0]["objects"] != scenes[20]["objects"]


def test_vqa_rows(demo, questions):
    root, _ = demo
    assert {q["question_type"] for q, _ in questions} == {"relational", "non-relational"}
    assert {q["answer_type"] for q, _ in questions} == {"yes/no", "number", "other"}
    for q, _ in questions:
        assert len(q["answers"]) == 10 and all(isinstance(a, str) and a for a in q["answers"])
        top, count = Counter(q["answers"]).most_common(1)[0]
        assert count >= 6
        if q["answer_type"] == "yes/no":
            assert top in ("yes", "no")
        if q["answer_type"] == "number":
            assert top.isdigit()
        assert (root / q["image"]).is_file()
    ids = [q["id"] for q, _ in questions]
    assert len(set(ids)) == len(ids)


def _canonical(q):
    return Counter(q["answers"]).most_common(1)[0][0]


def _find(objs, colour):
    (o,) = [o for o in objs if o["colour"] == colour]
    return o


def test_answers_agree_with_the_scene_geometry(questions):
    checked = Counter()
    for q, objs in questions:
        text, ans = q["question"], _canonical(q)
        m = re.fullmatch(r"What (shape|colour|size) is the object (closest to|farthest from) "
                         r"the (\w+) \w+\?", text)
        if m:
            attr, rel, colour = m.groups()
            ref = _find(objs, colour)
            others = [o for o in objs if o is not ref]
            d = [math.dist((ref["row"], ref["col"]), (o["row"], o["col"])) for o in others]
            best = max(d) if rel == "farthest from" else min(d)
            assert d.count(best) == 1
            assert ans == others[d.index(best)][attr], (text, objs)
            assert q["question_type"] == "relational"
            checked["closest/farthest"] += 1
        m = re.fullmatch(r"Is there an object (to the left of|to the right of|above|below) "
                         r"the (\w+) \w+\?", text)
        if m:
            rel, colour = m.groups()
            ref = _find(objs, colour)
            key, sign = {"to the left of": ("col", -1), "to the right of": ("col", 1),
                         "above": ("row", -1), "below": ("row", 1)}[rel]
            yes = any(sign * (o[key] - ref[key]) > 0 for o in objs)
            assert ans == ("yes" if yes else "no"), (text, objs)
            checked["left/right/above/below"] += 1
        m = re.fullmatch(r"How many other objects have the same (shape|size) as the (\w+) \w+\?", text)
        if m:
            attr, colour = m.groups()
            ref = _find(objs, colour)
            assert ans == str(sum(o[attr] == ref[attr] for o in objs) - 1), (text, objs)
            checked["count"] += 1
        m = re.fullmatch(r"What (shape|size) is the (\w+) object\?", text)
        if m:
            assert ans == _find(objs, m.group(2))[m.group(1)]
            checked["attribute"] += 1
    assert sum(checked.values()) >= 15 and len(checked) >= 3, checked


def test_bad_arguments_raise_data_error(tmp_path):
    with pytest.raises(DataError, match="n_test"):
        generate_demo(tmp_path, n_test=-1, progress=False)
    with pytest.raises(DataError, match="sample_rate"):
        generate_demo(tmp_path, sample_rate=1000, progress=False)


def test_speech_without_espeak_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # nowhere to find espeak-ng
    with pytest.raises(RuntimeError, match="apt-get install espeak-ng"):
        generate_demo(tmp_path / "out", speech=True, **SMALL)


def test_speech_uses_espeak_and_resamples(tmp_path, monkeypatch):
    """A stand-in espeak-ng writes 0.5 s at 22.05 kHz; rows get it at 16 kHz."""
    pytest.importorskip("torchaudio")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "espeak-ng"
    fake.write_text(
        f"#!{sys.executable}\n"
        "import sys, numpy as np, soundfile as sf\n"
        "a = sys.argv; path = a[a.index('-w') + 1]\n"
        "t = np.arange(11025) / 22050\n"
        "sf.write(path, 0.5 * np.sin(2 * np.pi * 440 * t), 22050, subtype='PCM_16')\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    s = generate_demo(tmp_path / "out", n_train=2, n_test=1, speech=True, progress=False)
    for row in _read(s["train"]) + _read(s["test"]):
        x, sr = sf.read(str(tmp_path / "out" / row["audio"]))
        assert sr == 16000 and abs(len(x) - 8000) <= 2 and 0.8 < np.abs(x).max() < 0.95
