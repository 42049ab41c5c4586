"""`multijepa vqa score`: score any model's answers against a VQA manifest, with the same metric
code as `vqa eval` (metric.py, equal per question to the official vqaEval.py).

Predictions: JSON lines `{"row": N, "answer": ...}` (what `vqa eval --predictions` writes, whose
older files say "prediction") or `{"question_id": ID, "answer": ...}`, or the official results
JSON `[{"question_id": ID, "answer": ...}, ...]`. Question ids are looked up in the manifest's
`question_id` column (`columns.question_id=...` for another name). Every manifest row needs
exactly one answer; a missing, repeated or unknown one is an error that names it.
"""

from __future__ import annotations

import json
from pathlib import Path

from modalities.errors import DataError

from ..config import SourceConfig
from ..data.sources import open_source
from .data import TYPE_KEYS, column_answers
from .metric import score_predictions


def read_predictions(path: str | Path) -> list[dict]:
    """The predictions file as a list of {"row" | "question_id", "answer"}."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    try:
        if text.lstrip().startswith("["):
            items = json.loads(text)
        else:
            items = [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not JSON lines or a JSON list ({e})") from None
    out = []
    for i, item in enumerate(items):
        answer = item.get("answer", item.get("prediction")) if isinstance(item, dict) else None
        key = next((k for k in ("question_id", "row") if isinstance(item, dict) and k in item), None)
        if not isinstance(answer, str) or key is None:
            raise DataError(f"{path} item {i}: needs a string 'answer' and a 'question_id' or 'row', got {item!r}")
        out.append({key: item[key], "answer": answer})
    return out


def score_file(predictions: str | Path, manifest: str | Path, columns: dict[str, str] | None = None) -> dict:
    """VQA accuracy of a predictions file on a manifest: {"accuracy", "n", "per_type"}."""
    cols = {"image": "image", "question": "question", "answers": "answers", "question_id": "question_id",
            **(columns or {})}
    type_cols = {k: cols.get(k, k) for k in TYPE_KEYS}
    src = open_source(SourceConfig(path=str(manifest), name=Path(str(manifest)).stem), {"text": cols["question"]},
                      ["text"], streaming=False, extra=(cols["answers"], cols["question_id"], *type_cols.values()))
    ds = src.ds
    if cols["answers"] not in ds.column_names:
        raise DataError(f"{manifest}: no '{cols['answers']}' column (columns: {ds.column_names}); "
                        "map yours with columns.answers=...")
    ids = ds[cols["question_id"]] if cols["question_id"] in ds.column_names else None
    by_id = {str(q): i for i, q in enumerate(ids)} if ids is not None else {}
    chosen: dict[int, str] = {}
    for p in read_predictions(predictions):
        if "row" in p:
            row = p["row"]
            if not isinstance(row, int) or not 0 <= row < len(ds):
                raise DataError(f"{predictions}: row {row!r} is not a row of {manifest} ({len(ds)} rows)")
        else:
            if ids is None:
                raise DataError(f"{predictions}: answers by question_id, but {manifest} has no "
                                f"'{cols['question_id']}' column (map it with columns.question_id=...)")
            row = by_id.get(str(p["question_id"]))
            if row is None:
                raise DataError(f"{predictions}: question_id {p['question_id']!r} is not in {manifest}")
        if row in chosen:
            raise DataError(f"{predictions}: two answers for row {row} of {manifest}")
        chosen[row] = p["answer"]
    if len(chosen) != len(ds):
        missing = next(i for i in range(len(ds)) if i not in chosen)
        name = f"question_id {ids[missing]!r}" if ids is not None else f"row {missing}"
        raise DataError(f"{predictions}: {len(ds) - len(chosen)} of {len(ds)} questions have no answer, "
                        f"the first {name}")
    answers = column_answers(ds, cols["answers"], manifest)
    types = {k: ds[c] for k, c in type_cols.items() if c in ds.column_names}
    rows = [{"answers": a, **{k: str(v[i]) for k, v in types.items() if v[i] is not None}} for i, a in enumerate(answers)]
    return score_predictions([chosen[i] for i in range(len(ds))], rows)
