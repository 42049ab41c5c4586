"""Pretraining on a manifest the project did not write: mixed rows, relative paths, odd files."""

import json

import numpy as np
import soundfile as sf
from PIL import Image

from multijepa.cli import main


def _tone(sr, seconds, channels=1, freq=440.0):
    t = np.arange(int(sr * seconds)) / sr
    x = 0.3 * np.sin(2 * np.pi * freq * t)
    return np.stack([x] * channels, axis=1) if channels > 1 else x


def test_pretrain_on_a_mixed_user_manifest(tmp_path):
    root = tmp_path / "my data"
    (root / "media" / "img").mkdir(parents=True)
    (root / "media" / "snd").mkdir(parents=True)
    rng = np.random.default_rng(0)
    images = []
    for i, (size, mode, ext) in enumerate(
        [((40, 30), "RGB", "png"), ((64, 80), "RGBA", "png"), ((20, 20), "L", "png"), ((33, 57), "RGB", "jpg"), ((50, 50), "P", "png"), ((90, 32), "CMYK", "jpg")]
    ):
        img = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).convert(mode)
        path = root / "media" / "img" / f"im {i}.{ext}"
        img.save(path)
        images.append(f"media/img/im {i}.{ext}")
    sounds = []
    for i, (sr, ch, sec) in enumerate([(8000, 1, 1.0), (22050, 2, 0.5), (16000, 1, 3.0), (44100, 2, 1.5), (22050, 1, 0.2), (8000, 2, 2.0)]):
        path = root / "media" / "snd" / f"s{i}.wav"
        sf.write(path, _tone(sr, sec, ch, 200.0 + 100 * i), sr)
        sounds.append(f"media/snd/s{i}.wav")
    captions = ["a red thing", "two blue things on the left", "noise", "a small green circle", "something loud", "stripes"]
    rows = []
    for i in range(24):
        k = i % 6
        kind = i % 7  # every subset of the three modalities
        row = {}
        if kind in (0, 1, 2, 4):
            row["image"] = images[k]
        if kind in (0, 1, 3, 5):
            row["text"] = captions[k]
        if kind in (0, 2, 3, 6):
            row["audio"] = sounds[k]
        rows.append(row)
    manifest = root / "pairs.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))

    out = tmp_path / "run"
    code = main(["pretrain", "--config", "tiny", "--data", str(manifest), "--out", str(out), "--max-steps", "3", "--no-progress"])
    assert code == 0
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["step"] == 3 and np.isfinite(metrics[-1]["loss"])
    assert (out / "checkpoints" / "step_00000003").is_dir()

    # the same data as CSV: empty cells are missing modalities
    import csv

    csv_path = root / "pairs.csv"
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["image", "text", "audio"])
        w.writeheader()
        w.writerows(rows)
    code = main(["pretrain", "--config", "tiny", "--data", str(csv_path), "--out", str(tmp_path / "run_csv"), "--max-steps", "2", "--no-progress"])
    assert code == 0
