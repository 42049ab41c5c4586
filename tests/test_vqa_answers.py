"""VQA answer vocabulary and soft targets: counting, ordering, the 0.3-per-vote scores, save/load."""

import json

import pytest
import torch

from multijepa.vqa.answers import AnswerVocab, coverage, soft_targets


def test_build_counts_normalised_answers_and_orders_by_count_then_name():
    vocab = AnswerVocab.build([["Yes", "yes.", "no"], ["two", "2", "no"], ["cat", "dog"]])
    # yes: 2, 2: 2, no: 2, cat: 1, dog: 1
    assert vocab.answers == ["2", "no", "yes", "cat", "dog"]
    assert len(vocab) == 5


def test_build_min_count_and_top_k():
    lists = [["a cat"] * 3 + ["dog"] * 2 + ["bird"]]
    assert AnswerVocab.build(lists, min_count=2).answers == ["cat", "dog"]
    assert AnswerVocab.build(lists, top_k=1).answers == ["cat"]
    assert AnswerVocab.build(lists, min_count=2, top_k=5).answers == ["cat", "dog"]


def test_empty_vocab_raises():
    with pytest.raises(ValueError, match="empty"):
        AnswerVocab.build([["cat"]], min_count=2)
    with pytest.raises(ValueError, match="empty"):
        AnswerVocab.build([])
    with pytest.raises(ValueError):
        AnswerVocab.build([["cat"]], top_k=0)


def test_index_normalises_and_returns_none_when_unknown():
    vocab = AnswerVocab(["2", "don't", "apple"])
    assert vocab.index("Two.") == 0
    assert vocab.index("dont") == 1
    assert vocab.index("an apple") == 2
    assert vocab.index("banana") is None


def test_save_load_round_trip(tmp_path):
    vocab = AnswerVocab.build([["yes", "no", "no", "café"]])
    path = tmp_path / "answers.json"
    vocab.save(path)
    assert json.loads(path.read_text(encoding="utf-8")) == {"answers": ["no", "café", "yes"]}
    assert [p.name for p in tmp_path.iterdir()] == ["answers.json"]
    loaded = AnswerVocab.load(path)
    assert loaded.answers == vocab.answers
    assert loaded.index("Yes") == 2


def test_load_rejects_other_json(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('["yes"]')
    with pytest.raises(ValueError, match="answer vocabulary"):
        AnswerVocab.load(path)


def test_soft_targets_score_by_number_of_votes():
    vocab = AnswerVocab(["a1", "a2", "a3", "a4", "a5", "never"])
    answers = ["a1"] + ["a2"] * 2 + ["a3"] * 3 + ["a4"] * 4 + ["a5"] * 5 + ["unknown"]
    targets = soft_targets([answers, ["unknown"]], vocab)
    assert targets.dtype == torch.float32
    assert targets.shape == (2, 6)
    expected = torch.tensor([[0.3, 0.6, 0.9, 1.0, 1.0, 0.0], [0.0] * 6])
    assert torch.equal(targets, expected)


def test_soft_targets_match_normalised_vocab():
    vocab = AnswerVocab(["0", "2"])
    targets = soft_targets([["Zero.", "none", "two", "unknown"]], vocab)
    assert torch.equal(targets, torch.tensor([[0.6, 0.3]]))


def test_coverage_uses_most_common_answer():
    vocab = AnswerVocab(["yes", "2"])
    lists = [["yes", "yes", "no"], ["no", "no", "yes"], ["two", "2", "3"], ["cat"]]
    assert coverage(lists, vocab) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        coverage([], vocab)
