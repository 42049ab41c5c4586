"""VQA v2 accuracy: the official answer normalisation and leave-one-out scoring, by hand-worked cases."""

import json

import pytest

from multijepa.vqa.metric import normalize_answer, score_predictions, vqa_accuracy


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("Two.", "2"),
        ("two", "2"),
        ("None", "0"),
        ("an apple", "apple"),
        ("The Red Car", "red car"),
        ("Yes", "yes"),
        ("yes.", "yes"),
        ("dont", "don't"),
        ("don't", "don't"),  # the apostrophe is not in the official punctuation list
        ("whats", "what's"),
        ("isnt", "isn't"),
        ("1,000", "1000"),  # a digit-comma-digit deletes the comma outright
        ("1,000 cats, dogs", "1000 cats dogs"),  # ... and then every other mark too
        ("red,blue", "red blue"),  # a mark between letters becomes a space
        ("red, blue", "red blue"),  # a mark next to a space is deleted
        ("2.5", "2.5"),  # a period before a digit stays
        ("hi!", "hi"),
        ("  left\tside\n", "left side"),
    ],
)
def test_normalize_answer_matches_official(raw, expected):
    assert normalize_answer(raw) == expected


def test_equivalent_spellings_score_as_matches_when_the_humans_disagree():
    """As vqaEval.py: answers are normalised only when the ten human answers differ as strings
    (VQA v2's were normalised when the dataset was made); identical ones compare as written."""
    assert vqa_accuracy("Two.", ["2"] * 9 + ["3"]) == 1.0
    assert vqa_accuracy("an apple", ["apple"] * 9 + ["pear"]) == 1.0
    assert vqa_accuracy("dont", ["don't"] * 9 + ["no"]) == 1.0
    assert vqa_accuracy("Yes", ["yes."] * 9 + ["no"]) == 1.0
    assert vqa_accuracy("Two.", ["2"] * 10) == 0.0
    assert vqa_accuracy("2", ["2"] * 10) == 1.0
    # fewer than ten answers (not VQA v2's layout): always normalised
    assert vqa_accuracy("Two.", ["2"] * 3) == 1.0


@pytest.mark.parametrize(
    "matching, expected",
    [
        (10, 1.0),
        (4, 1.0),  # every leave-one-out subset still holds >= 3 matches
        (3, 0.9),  # 3 subsets drop a match: 2/3; 7 keep all 3: 1 -> (3 * 2/3 + 7) / 10
        (2, 0.6),  # 2 subsets hold 1/3, 8 hold 2/3 -> (2/3 + 16/3) / 10
        (1, 0.3),  # 1 subset holds 0, 9 hold 1/3 -> 3 / 10
        (0, 0.0),
    ],
)
def test_ten_answers_leave_one_out(matching, expected):
    answers = ["cat"] * matching + ["dog"] * (10 - matching)
    assert vqa_accuracy("cat", answers) == pytest.approx(expected)


def test_fewer_answers_use_threshold_min_3_n_minus_1():
    assert vqa_accuracy("cat", ["cat"]) == 1.0
    assert vqa_accuracy("dog", ["cat"]) == 0.0
    # n = 2, threshold 1: dropping "cat" leaves 0, dropping "dog" leaves 1
    assert vqa_accuracy("cat", ["cat", "dog"]) == pytest.approx(0.5)
    assert vqa_accuracy("cat", ["cat", "cat"]) == 1.0
    # n = 3, threshold 2: subsets hold 1, 1, 2 matches -> (1/2 + 1/2 + 1) / 3
    assert vqa_accuracy("cat", ["cat", "cat", "dog"]) == pytest.approx(2 / 3)
    assert vqa_accuracy("cat", ["cat"] * 3) == 1.0


def test_empty_answers_raise():
    with pytest.raises(ValueError):
        vqa_accuracy("cat", [])


def test_score_predictions_per_type():
    rows = [
        {"answers": ["yes"] * 10, "question_type": "is the", "answer_type": "yes/no"},
        {"answers": ["no"] * 10, "question_type": "is the", "answer_type": "yes/no"},
        {"answers": ["2"] * 3 + ["3"] * 7, "question_type": "how many", "answer_type": "number"},
    ]
    result = score_predictions(["yes", "yes", "two"], rows)
    assert result["n"] == 3
    assert result["accuracy"] == pytest.approx((1.0 + 0.0 + 0.9) / 3)
    assert result["per_type"]["question_type"]["is the"] == {"accuracy": 0.5, "n": 2}
    assert result["per_type"]["question_type"]["how many"]["accuracy"] == pytest.approx(0.9)
    assert result["per_type"]["answer_type"]["yes/no"] == {"accuracy": 0.5, "n": 2}
    assert result["per_type"]["answer_type"]["number"]["n"] == 1
    json.dumps(result)


def test_score_predictions_reports_only_present_type_keys():
    rows = [{"answers": ["cat"] * 10, "answer_type": "other"}, {"answers": ["dog"] * 10}]
    result = score_predictions(["cat", "cat"], rows)
    assert result["accuracy"] == 0.5
    assert set(result["per_type"]) == {"answer_type"}
    assert result["per_type"]["answer_type"] == {"other": {"accuracy": 1.0, "n": 1}}
    assert score_predictions(["dog"], rows[1:])["per_type"] == {}


def test_score_predictions_rejects_mismatched_or_empty_input():
    with pytest.raises(ValueError):
        score_predictions(["cat"], [])
    with pytest.raises(ValueError):
        score_predictions([], [])
