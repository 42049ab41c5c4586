"""The answer vocabulary of a classification VQA head, and its soft training targets.

VQA is trained as multi-label classification over the frequent answers: each candidate gets a
soft score from how many of the humans gave it, so partly-agreed answers still teach something.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import torch

from .metric import normalize_answer

# score by number of matching human answers (0, 1, 2, 3, >=4): the bottom-up-attention VQA
# convention, min(1, 0.3 * count), written out so 3 matches give exactly 0.9
_SOFT_SCORES = (0.0, 0.3, 0.6, 0.9, 1.0)


class AnswerVocab:
    """Normalised answers; an answer's position is its class id."""

    def __init__(self, answers: Sequence[str]):
        if not answers:
            raise ValueError("the answer vocabulary is empty: no answers, or none kept by min_count/top_k")
        self.answers = list(answers)
        self._ids = {a: i for i, a in enumerate(self.answers)}
        if len(self._ids) != len(self.answers):
            raise ValueError("the answer vocabulary has duplicate answers")

    @classmethod
    def build(cls, answer_lists: Sequence[Sequence[str]], min_count: int = 1, top_k: int | None = None) -> AnswerVocab:
        """Count every normalised human answer across all questions; keep those seen at least
        `min_count` times, most frequent first (ties alphabetical), at most `top_k` of them."""
        if top_k is not None and top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}")
        counts = Counter(normalize_answer(a) for answers in answer_lists for a in answers)
        kept = sorted((a for a, c in counts.items() if c >= min_count), key=lambda a: (-counts[a], a))
        return cls(kept[:top_k])

    def __len__(self) -> int:
        return len(self.answers)

    def index(self, answer: str) -> int | None:
        """Class id of `answer` (normalised first), or None when it is not in the vocabulary."""
        return self._ids.get(normalize_answer(answer))

    def save(self, path: str | Path) -> None:
        """Write {"answers": [...]} as JSON, atomically, so a killed run never leaves half a file."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps({"answers": self.answers}, ensure_ascii=False, indent=1), encoding="utf-8")
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | Path) -> AnswerVocab:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        if not isinstance(data, dict) or not isinstance(data.get("answers"), list):
            raise ValueError(f"{path}: not an answer vocabulary (expected a JSON object with an 'answers' list)")
        return cls(data["answers"])


def soft_targets(answer_lists: Sequence[Sequence[str]], vocab: AnswerVocab) -> torch.Tensor:
    """(B, len(vocab)) float32 targets: 0 / 0.3 / 0.6 / 0.9 / 1.0 for 0 / 1 / 2 / 3 / 4+ humans
    giving that answer. Answers outside the vocabulary are ignored."""
    targets = torch.zeros(len(answer_lists), len(vocab), dtype=torch.float32)
    for row, answers in enumerate(answer_lists):
        for answer, count in Counter(normalize_answer(a) for a in answers).items():
            col = vocab._ids.get(answer)
            if col is not None:
                targets[row, col] = _SOFT_SCORES[min(count, 4)]
    return targets


def coverage(answer_lists: Sequence[Sequence[str]], vocab: AnswerVocab) -> float:
    """Share of questions whose most common normalised answer (first seen wins a tie) is in the
    vocabulary: the accuracy ceiling a classifier over this vocabulary roughly has."""
    if not answer_lists:
        raise ValueError("coverage needs at least one question")
    covered = 0
    for answers in answer_lists:
        counts = Counter(normalize_answer(a) for a in answers)
        covered += bool(counts) and counts.most_common(1)[0][0] in vocab._ids
    return covered / len(answer_lists)
