"""VQA rows: an image, a question, the human answers (and optional question/answer types).

Two schemas are read: our JSONL (`answers` a list of 1-10 strings) and VQA v2 as `datasets`
hosts it (`answers` a list of `{"answer": ..., "answer_confidence": ..., "answer_id": ...}`).
Images and questions go through the pretraining run's decoders and tokenizer; a bad row
comes back as an error record naming it, and the loop stops with that line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from modalities.errors import EMPTY_ROW, INVALID, DataError

from ..config import SourceConfig
from ..data.dataset import PairedDataset
from ..data.sources import open_source
from ..processors import Processors
from .answers import AnswerVocab, soft_targets

TYPE_KEYS = ("question_type", "answer_type")


def answers_of(value: Any) -> list[str]:
    """A row's human answers as strings, from either schema."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value:
        raise DataError(f"'answers' must be a non-empty list, got {value!r}", reason=INVALID)
    out = []
    for a in value:
        if isinstance(a, dict):
            a = a.get("answer")
        if not isinstance(a, str):
            raise DataError(f"an answer must be a string (or {{'answer': str}}), got {a!r}", reason=INVALID)
        out.append(a)
    return out


def column_answers(ds, column: str, manifest) -> list[list[str]]:
    """Every row's human answers from one column of a `datasets` table; a bad one names its row."""
    out = []
    for i, value in enumerate(ds[column]):
        try:
            out.append(answers_of(value))
        except DataError as e:
            raise DataError(f"{manifest} row {i} column '{column}': {e}", reason=e.reason) from None
    return out


class VQADataset(Dataset):
    """Rows -> {"row", "image" (3, H, W), "text" (ids, length), "answers", [types]} or {"error": record}."""

    def __init__(self, manifest: str | Path, processors: Processors, columns: dict[str, str] | None = None,
                 need_answers: bool = True):
        cols = {"image": "image", "question": "question", "answers": "answers", **(columns or {})}
        self.answers_col = cols["answers"]
        self.type_cols = {k: cols.get(k, k) for k in TYPE_KEYS}
        src = open_source(
            SourceConfig(path=str(manifest), name=Path(str(manifest)).stem),
            {"image": cols["image"], "text": cols["question"]},
            ["image", "text"],
            streaming=False,
            extra=(self.answers_col, *self.type_cols.values()),
        )
        names = src.ds.column_names
        missing = [f"'{cols[k]}'" for k, m in (("image", "image"), ("question", "text")) if m not in src.columns]
        if need_answers and self.answers_col not in names:
            missing.append(f"'{self.answers_col}'")
        if missing:
            raise DataError(f"{manifest}: no {', '.join(missing)} column (columns: {names}); "
                            "map yours with columns.image=..., columns.question=..., columns.answers=...")
        self.manifest = manifest
        self.paired = PairedDataset(src, processors)
        self.has_answers = self.answers_col in names

    def __len__(self) -> int:
        return len(self.paired)

    def __getitem__(self, i: int) -> dict:
        row, item = self.paired.read(i)
        if "error" in item:
            return item
        if "image" not in item or "text" not in item:
            what = "image" if "image" not in item else "question"
            return self.paired.decoder.error(i, row, what, None, DataError(f"the row has no {what}", reason=EMPTY_ROW))
        if self.has_answers:
            try:
                item["answers"] = answers_of(row[self.answers_col])
            except DataError as e:
                return self.paired.decoder.error(i, row, self.answers_col, None, e)
        for key, col in self.type_cols.items():
            if row.get(col) is not None:
                item[key] = str(row[col])
        return item

    def answer_lists(self) -> list[list[str]]:
        """Every row's answers, read without decoding images (to build the answer vocabulary)."""
        return column_answers(self.paired.ds, self.answers_col, self.manifest)


class VQACollator:
    """items -> {"rows", "image" (B, 3, H, W), "tokens" (B, L), "answers", "targets" (B, A) soft, types};
    error records are listed in "errors" and left out."""

    def __init__(self, vocab: AnswerVocab | None = None):
        self.vocab = vocab

    def __call__(self, items: list[dict]) -> dict:
        errors = [it["error"] for it in items if "error" in it]
        items = [it for it in items if "error" not in it]
        batch: dict = {"errors": errors, "size": len(items), "rows": [it["row"] for it in items]}
        if not items:
            return batch
        lengths = torch.stack([it["text"][1] for it in items])
        batch["tokens"] = torch.stack([it["text"][0] for it in items])[:, : int(lengths.max())]  # (B, L)
        batch["image"] = torch.stack([it["image"] for it in items])  # (B, 3, H, W)
        if "answers" in items[0]:
            batch["answers"] = [it["answers"] for it in items]
            if self.vocab is not None:
                batch["targets"] = soft_targets(batch["answers"], self.vocab)  # (B, A)
        for key in TYPE_KEYS:
            batch[key] = [it.get(key) for it in items]
        return batch
