"""The scripts in examples/ run as a user would run them, on the tiny configs."""

import csv
import json
import runpy
from pathlib import Path

EXAMPLES = Path(__file__).parent.parent / "examples"


def _main(name: str):
    return runpy.run_path(str(EXAMPLES / name), run_name="example")["main"]


def test_embed_and_search(run, demo, tmp_path, capsys):
    _main("embed_and_search.py")(["--checkpoint", str(run), "--data", str(demo / "test.jsonl"), "--out", str(tmp_path / "index"),
                                  "--text", "a small red circle", "--top-k", "3"])
    out = capsys.readouterr().out
    assert "indexed 24 rows" in out and "image for 'a small red circle':" in out
    hits = [line for line in out.splitlines() if line.strip().startswith(("1.", "2.", "3."))]
    assert len(hits) == 6  # image and audio, three each
    best_image = hits[0].split()[-1]
    assert Path(best_image).is_file()
    assert "cosine similarity of the best image" in out
    assert (tmp_path / "index" / "index.json").is_file()


def test_train_on_a_csv_of_pairs(demo, tmp_path, capsys):
    for split in ("train", "test"):
        rows = [json.loads(line) for line in (demo / f"{split}.jsonl").read_text().splitlines()]
        with open(tmp_path / f"{split}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["image", "text"])
            for r in rows:
                w.writerow([str(demo / r["image"]), r["text"]])
    _main("train_on_csv.py")(["--train", str(tmp_path / "train.csv"), "--test", str(tmp_path / "test.csv"),
                              "--out", str(tmp_path / "run"), "--config", "tiny", "--steps", "3"])
    out = capsys.readouterr().out
    assert "trained 3 steps" in out and "image->text" in out and "text->image" in out
    from multijepa.config import load_run_config

    assert load_run_config(tmp_path / "run" / "config.yaml").model.modalities == ["image", "text"]
    assert (tmp_path / "run" / "MODEL_CARD.md").is_file()


def test_finetune_vqa(run, demo, tmp_path, capsys):
    _main("finetune_vqa.py")(["--checkpoint", str(run), "--train", str(demo / "vqa_train.jsonl"),
                              "--test", str(demo / "vqa_test.jsonl"), "--out", str(tmp_path / "vqa"),
                              "--config", "vqa_tiny", "train.max_steps=3"])
    out = capsys.readouterr().out
    assert "VQA v2 accuracy on" in out and "Q: " in out
    assert (tmp_path / "vqa" / "model.safetensors").is_file()
