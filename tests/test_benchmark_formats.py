"""Benchmark readers (multijepa/data/benchmarks.py) on tiny fixtures written here in the exact
published layouts, with the demo's images and sounds as media; each then feeds a real command."""

import csv
import json
import shutil
from pathlib import Path

import pytest

from modalities.errors import DataError
from multijepa.cli import main
from multijepa.data.benchmarks import parse_spec, read_benchmark


@pytest.fixture(scope="module")
def media(demo, tmp_path_factory):
    """8 demo scenes: images under images/, sounds under audio/, and their captions and labels."""
    root = tmp_path_factory.mktemp("bench")
    rows = [json.loads(line) for line in (demo / "test.jsonl").read_text().splitlines()][:8]
    (root / "images").mkdir()
    (root / "audio").mkdir()
    for i, r in enumerate(rows):
        shutil.copy(demo / r["image"], root / "images" / f"COCO_val2014_{i + 1:012d}.jpg")  # a PNG: our decoder sniffs
        shutil.copy(demo / r["audio"], root / "audio" / f"clip{i}.wav")
    return root, rows


def _captions(r: dict) -> list[str]:
    words = r["text"].split()
    return [r["text"], " ".join(words[::-1]), " ".join(words[1:] + words[:1])]


def _retrieval(run, spec, tmp_path) -> dict:
    assert main(["eval", "retrieval", "--checkpoint", str(run), "--data", spec, "--json", str(tmp_path / "r.json")]) == 0
    return json.loads((tmp_path / "r.json").read_text())


def test_coco_captions_json(run, media, tmp_path):
    root, rows = media
    data = {"images": [{"id": i + 1, "file_name": f"COCO_val2014_{i + 1:012d}.jpg", "height": 64, "width": 64}
                       for i in range(len(rows))],
            "annotations": [{"image_id": i + 1, "id": 100 * i + k, "caption": c}
                            for i, r in enumerate(rows) for k, c in enumerate(_captions(r))]}
    (root / "captions_val2014.json").write_text(json.dumps(data))
    res = _retrieval(run, f"coco:{root}/captions_val2014.json?root={root}/images", tmp_path)
    assert res["text->image"]["n"] == 24 and res["text->image"]["n_items"] == 8


def test_karpathy_split_pretrains_and_evaluates(media, tmp_path):
    root, rows = media
    images = [{"filepath": "images", "filename": f"COCO_val2014_{i + 1:012d}.jpg", "imgid": i,
               "split": ("train", "restval", "test", "val")[i % 4], "cocoid": i + 1,
               "sentences": [{"raw": c, "tokens": c.split(), "imgid": i, "sentid": 3 * i + k}
                             for k, c in enumerate(_captions(r))]} for i, r in enumerate(rows)]
    (root / "dataset_coco.json").write_text(json.dumps({"images": images, "dataset": "coco"}))
    spec = f"karpathy:{root}/dataset_coco.json"
    assert len(read_benchmark(spec + "?split=train")[0]) == 12  # train + restval
    assert len(read_benchmark(spec + "?split=test")[0]) == 6
    out = tmp_path / "run"
    assert main(["pretrain", "--config", "tiny", "--data", spec + "?split=train", "--out", str(out), "--max-steps", "3",
                 "--no-progress", "model.modalities=[image,text]", "data.batch_size=4"]) == 0
    res = _retrieval(out, spec + "?split=test", tmp_path)
    assert res["text->image"]["n_items"] == 2 and res["image->text"]["n"] == 2


def test_audiocaps_csv(run, media, tmp_path):
    root, rows = media
    with open(root / "test.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["audiocap_id", "youtube_id", "start_time", "caption"])
        for i, r in enumerate(rows):
            for k, c in enumerate(_captions(r)):
                w.writerow([1000 + 10 * i + k, f"clip{i}", 30, c])
    res = _retrieval(run, f"audiocaps:{root}/test.csv?root={root}/audio", tmp_path)
    assert res["text->audio"]["n"] == 24 and res["text->audio"]["n_items"] == 8


def test_clotho_csv(run, media, tmp_path):
    root, rows = media
    with open(root / "clotho_captions_evaluation.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file_name", *(f"caption_{k}" for k in range(1, 6))])
        for i, r in enumerate(rows):
            w.writerow([f"clip{i}.wav", *_captions(r), "a sound: " + r["text"], r["text"].upper()])
    res = _retrieval(run, f"clotho:{root}/clotho_captions_evaluation.csv?root={root}/audio", tmp_path)
    assert res["audio->text"]["n"] == 8 and res["audio->text"]["n_items"] == 40


def test_esc50_zero_shot(run, media, tmp_path):
    root, rows = media
    (root / "meta").mkdir(exist_ok=True)
    with open(root / "meta" / "esc50.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["filename", "fold", "target", "category", "esc10", "src_file", "take"])
        for i in range(len(rows)):
            w.writerow([f"clip{i}.wav", 1 + i % 2, i % 3, ("dog", "chirping_birds", "rain")[i % 3], "False", i, "A"])
    spec = f"esc50:{root}/meta/esc50.csv?root={root}/audio"
    assert {r["label"] for r in read_benchmark(spec)[0]} == {"dog", "chirping birds", "rain"}
    assert len(read_benchmark(spec + "&fold=1")[0]) == 4
    out = tmp_path / "zs.json"
    assert main(["eval", "zeroshot", "--checkpoint", str(run), "--data", spec, "--modality", "audio",
                 "--json", str(out)]) == 0
    assert json.loads(out.read_text())["audio"]["n"] == 8


def test_vqa_v2_questions_and_annotations(media, tmp_path):
    root, rows = media
    questions = {"data_subtype": "val2014", "task_type": "Open-Ended", "data_type": "mscoco",
                 "questions": [{"image_id": i + 1, "question": "What shape is it?", "question_id": 10 * i}
                               for i in range(len(rows))]}
    annotations = {"annotations": [{"question_id": 10 * i, "image_id": i + 1, "question_type": "what",
                                    "answer_type": "other", "multiple_choice_answer": "square",
                                    "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": k + 1}
                                                for k, a in enumerate(["square"] * 7 + ["circle"] * 3)]}
                                   for i in range(len(rows))]}
    (root / "q.json").write_text(json.dumps(questions))
    (root / "a.json").write_text(json.dumps(annotations))
    spec = f"vqa2:{root}/q.json?annotations={root}/a.json&root={root}/images"
    folder = Path(__file__).parent / "fixtures" / "legacy" / "vqa_cross"
    assert main(["vqa", "eval", "--checkpoint", str(folder), "--data", spec, "--json", str(tmp_path / "e.json"),
                 "--predictions", str(tmp_path / "p.jsonl")]) == 0
    assert json.loads((tmp_path / "e.json").read_text())["n"] == 8
    # the official results format scores the same, by question id
    preds = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    (tmp_path / "res.json").write_text(json.dumps([{"question_id": 10 * p["row"], "answer": p["prediction"]} for p in preds]))
    assert main(["vqa", "score", "--predictions", str(tmp_path / "res.json"), "--data", spec,
                 "--json", str(tmp_path / "s.json")]) == 0
    assert json.loads((tmp_path / "s.json").read_text()) == json.loads((tmp_path / "e.json").read_text())


def test_specs_and_bad_layouts_give_one_line_errors(tmp_path):
    assert parse_spec("data/train.jsonl") is None and parse_spec("C:/x.jsonl") is None
    assert parse_spec("clotho:/a/b.csv?root=/c") == ("clotho", Path("/a/b.csv"), {"root": "/c"})
    (tmp_path / "bad.csv").write_text("name,text\nx,y\n")
    with pytest.raises(DataError, match="published clotho layout"):
        read_benchmark(f"clotho:{tmp_path}/bad.csv")
    with pytest.raises(DataError, match="unknown setting"):
        (tmp_path / "e.csv").write_text("filename,fold,target,category\na.wav,1,0,dog\n")
        read_benchmark(f"esc50:{tmp_path}/e.csv?flod=1")
