"""Readers for the layouts benchmark datasets are published in, so that every command reads them
as a source, written `KIND:PATH?key=value&...` wherever a manifest path goes (`--data`,
`data.train`, `data.sources[].path`):

    coco:annotations/captions_val2017.json?root=val2017        COCO captions: one row per caption
    karpathy:dataset_coco.json?split=test&root=images          Karpathy splits (COCO, Flickr30k, Flickr8k)
    audiocaps:test.csv?root=audio&file={youtube_id}.wav        AudioCaps: one row per caption
    clotho:clotho_captions_evaluation.csv?root=evaluation      Clotho: five rows per clip
    esc50:meta/esc50.csv?root=audio&fold=1                     ESC-50: a sound and its class (label)
    msrvtt:train_val_videodatainfo.json?split=test&root=videos  MSR-VTT: one row per caption (20 per video)
    msrvtt:MSRVTT_JSFUSION_test.csv?root=videos                MSR-VTT's 1k-A test split (one caption per video)
    vggsound:vggsound.csv?split=test&root=video                VGGSound: a clip (its frames and sound) and its label
    vqa2:v2_OpenEnded_mscoco_val2014_questions.json?annotations=v2_mscoco_val2014_annotations.json&root=val2014

`root` is where the media files are (default: the folder of PATH). The rows hold the columns
every command reads (image, text, audio, video, label; VQA: image, question, answers, question_type,
answer_type, question_id) plus the benchmark's own ids, so several captions of one image or clip
share its path and `eval retrieval` scores them as one item.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from urllib.parse import parse_qsl

from modalities.errors import DataError

KINDS = ("coco", "karpathy", "audiocaps", "clotho", "esc50", "vqa2", "msrvtt", "vggsound")


def parse_spec(path: str) -> tuple[str, Path, dict[str, str]] | None:
    """`KIND:PATH?k=v&...` -> (kind, path, params), or None for an ordinary path."""
    kind, sep, rest = path.partition(":")
    if not sep or kind not in KINDS:
        return None
    file, _, query = rest.partition("?")
    return kind, Path(file), dict(parse_qsl(query, keep_blank_values=True))


def read_benchmark(path: str, split: str | None = None) -> tuple[list[dict], Path]:
    """The rows of a benchmark spec and the folder their media paths are relative to."""
    kind, file, params = parse_spec(path)
    if not file.is_file():
        raise DataError(f"{kind}: no such file: {file}")
    root = Path(params.pop("root", file.parent))
    reader = {"coco": _coco, "karpathy": _karpathy, "audiocaps": _audiocaps, "clotho": _clotho,
              "esc50": _esc50, "vqa2": _vqa2, "msrvtt": _msrvtt, "vggsound": _vggsound}[kind]
    try:
        rows = reader(file, params, split)
    except (KeyError, ValueError, TypeError, json.JSONDecodeError, csv.Error) as e:
        raise DataError(f"{kind}:{file} is not in the published {kind} layout ({type(e).__name__}: {e})") from None
    if params:
        raise DataError(f"{kind}: unknown setting(s) {', '.join(sorted(params))} in '{path}'")
    if not rows:
        raise DataError(f"{kind}:{file}: no rows" + (f" in split '{split}'" if split else ""))
    return rows, root


def _coco(file: Path, params: dict, split: str | None) -> list[dict]:
    """captions_*.json: {"images": [{"id", "file_name"}], "annotations": [{"image_id", "id", "caption"}]}."""
    data = json.loads(file.read_text())
    names = {im["id"]: im["file_name"] for im in data["images"]}
    return [{"image": names[a["image_id"]], "text": a["caption"].strip(), "image_id": a["image_id"],
             "caption_id": a["id"]} for a in data["annotations"]]


def _karpathy(file: Path, params: dict, split: str | None) -> list[dict]:
    """dataset_coco.json / dataset_flickr30k.json: {"images": [{"filepath"?, "filename", "split",
    "imgid", "sentences": [{"raw"}]}]}. split=train also takes "restval", as the splits are used."""
    split = params.pop("split", split) or "test"
    wanted = {"train", "restval"} if split == "train" else {split}
    rows = []
    for im in json.loads(file.read_text())["images"]:
        if im["split"] not in wanted:
            continue
        image = str(Path(im.get("filepath", "")) / im["filename"])
        rows += [{"image": image, "text": s["raw"].strip(), "image_id": im["imgid"]} for s in im["sentences"]]
    return rows


def _audiocaps(file: Path, params: dict, split: str | None) -> list[dict]:
    """train.csv / val.csv / test.csv: audiocap_id, youtube_id, start_time, caption. The clip file is
    named by `file` (a template over those columns; default {youtube_id}.wav)."""
    template = params.pop("file", "{youtube_id}.wav")
    with open(file, newline="", encoding="utf-8") as f:
        return [{"audio": template.format(**r), "text": r["caption"].strip(), "audiocap_id": r["audiocap_id"],
                 "youtube_id": r["youtube_id"]} for r in csv.DictReader(f)]


def _clotho(file: Path, params: dict, split: str | None) -> list[dict]:
    """clotho_captions_<split>.csv: file_name, caption_1 .. caption_5."""
    with open(file, newline="", encoding="utf-8") as f:
        return [{"audio": r["file_name"], "text": r[f"caption_{i}"].strip()}
                for r in csv.DictReader(f) for i in range(1, 6)]


def _esc50(file: Path, params: dict, split: str | None) -> list[dict]:
    """meta/esc50.csv: filename, fold, target, category, ...; `fold=N` keeps one fold. The label is
    the category with underscores as spaces ("chirping birds"), the class name prompts are made of."""
    fold = params.pop("fold", None)
    with open(file, newline="", encoding="utf-8") as f:
        return [{"audio": r["filename"], "label": r["category"].replace("_", " "), "fold": int(r["fold"]),
                 "target": int(r["target"])} for r in csv.DictReader(f) if fold is None or r["fold"] == fold]


def _vqa2(file: Path, params: dict, split: str | None) -> list[dict]:
    """v2_OpenEnded_mscoco_<sub>_questions.json {"data_subtype", "questions": [{"image_id", "question",
    "question_id"}]} with `annotations=` v2_mscoco_<sub>_annotations.json {"annotations": [{"question_id",
    "question_type", "answer_type", "answers": [{"answer"}]}]}; images COCO_<sub>_<image_id:012d>.jpg."""
    ann_file = params.pop("annotations", None)
    questions = json.loads(file.read_text())
    sub = questions.get("data_subtype", "")
    annotations = {}
    if ann_file is not None:
        if not Path(ann_file).is_file():
            raise DataError(f"vqa2: no such annotations file: {ann_file}")
        annotations = {a["question_id"]: a for a in json.loads(Path(ann_file).read_text())["annotations"]}
    rows = []
    for q in questions["questions"]:
        row = {"image": f"COCO_{sub}_{q['image_id']:012d}.jpg", "question": q["question"],
               "question_id": q["question_id"], "image_id": q["image_id"]}
        a = annotations.get(q["question_id"])
        if a is not None:
            row.update(answers=[x["answer"] for x in a["answers"]], question_type=a["question_type"],
                       answer_type=a["answer_type"])
        elif ann_file is not None:
            raise DataError(f"vqa2: question {q['question_id']} has no annotation in {ann_file}")
        rows.append(row)
    return rows


MSRVTT_SPLITS = {"train": "train", "val": "validate", "validate": "validate", "test": "test"}


def _msrvtt(file: Path, params: dict, split: str | None) -> list[dict]:
    """MSR-VTT's own train_val_videodatainfo.json / test_videodatainfo.json: {"videos": [{"video_id",
    "split" (train, validate, test), "category"}], "sentences": [{"video_id", "caption", "sen_id"}]},
    `split=` keeping one (default: every video of the file); or the 1k-A retrieval split as
    CLIP4Clip and Frozen ship it, MSRVTT_JSFUSION_test.csv: key, vid_key, video_id, sentence. The clip
    file is named by `file` (a template over video_id; default {video_id}.mp4)."""
    template = params.pop("file", "{video_id}.mp4")
    if file.suffix == ".csv":
        with open(file, newline="", encoding="utf-8") as f:
            return [{"video": template.format(video_id=r["video_id"]), "text": r["sentence"].strip(),
                     "video_id": r["video_id"]} for r in csv.DictReader(f)]
    wanted = params.pop("split", split)
    if wanted is not None and wanted not in MSRVTT_SPLITS:
        raise DataError(f"msrvtt: split={wanted}: expected one of {', '.join(MSRVTT_SPLITS)}")
    data = json.loads(file.read_text())
    videos = {v["video_id"]: v for v in data["videos"]
              if wanted is None or v["split"] == MSRVTT_SPLITS[wanted]}
    return [{"video": template.format(video_id=s["video_id"]), "text": s["caption"].strip(), "video_id": s["video_id"],
             "category": videos[s["video_id"]].get("category"), "sen_id": s.get("sen_id")}
            for s in data["sentences"] if s["video_id"] in videos]


def _vggsound(file: Path, params: dict, split: str | None) -> list[dict]:
    """vggsound.csv, no header: youtube_id, start_seconds, label, split (train, test); `split=` keeps
    one. The clip file (frames and sound: `data.audio_from_video=true` reads its sound as the audio)
    is named by `file`, a template over youtube_id and start_seconds (an integer; default
    {youtube_id}_{start_seconds:06d}.mp4, the name the dataset's own download gives)."""
    template = params.pop("file", "{youtube_id}_{start_seconds:06d}.mp4")
    wanted = params.pop("split", split)
    rows = []
    with open(file, newline="", encoding="utf-8") as f:
        for n, r in enumerate(csv.reader(f), 1):
            if len(r) != 4:
                raise ValueError(f"line {n} has {len(r)} fields, expected 4 (youtube_id, start_seconds, label, split)")
            ytid, start, label, part = (x.strip() for x in r)
            if wanted is not None and part != wanted:
                continue
            start = int(start)
            rows.append({"video": template.format(youtube_id=ytid, start_seconds=start), "label": label,
                         "youtube_id": ytid, "start_seconds": start, "split": part})
    return rows
