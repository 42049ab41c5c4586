"""Our metrics against faithful ports of the field's reference code, on hand cases and thousands
of random ones.

- VQA accuracy: GT-Vision-Lab/VQA, PythonEvaluationTools/vqaEvaluation/vqaEval.py at commit
  a013f00 ("Fixed processing answers bug"), `VQAEval.evaluate` / `processPunctuation` /
  `processDigitArticle`, ported line by line below (Python 2 -> 3; answers as the official
  {"answer", "answer_id"} dicts, mutated in place as the original does).
"""

import random
import re

import pytest

from multijepa.vqa.metric import ARTICLES, CONTRACTIONS, NUMBER_WORDS, PUNCT, vqa_accuracy

# ----------------------------------------------------------------------------- the official VQA evaluator, ported

_OFFICIAL_PUNCT = [";", r"/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!"]
_OFFICIAL_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
_OFFICIAL_COMMA_STRIP = re.compile(r"(\d)(\,)(\d)")


def _official_process_punctuation(in_text):
    out_text = in_text
    for p in _OFFICIAL_PUNCT:
        if (p + " " in in_text or " " + p in in_text) or (re.search(_OFFICIAL_COMMA_STRIP, in_text) is not None):
            out_text = out_text.replace(p, "")
        else:
            out_text = out_text.replace(p, " ")
    out_text = _OFFICIAL_PERIOD_STRIP.sub("", out_text, re.UNICODE)  # sic: re.UNICODE lands in `count`
    return out_text


def _official_process_digit_article(in_text, manual_map, articles, contractions):
    out_text = []
    for word in in_text.lower().split():
        word = manual_map.setdefault(word, word)
        if word not in articles:
            out_text.append(word)
    for word_id, word in enumerate(out_text):
        if word in contractions:
            out_text[word_id] = contractions[word]
    return " ".join(out_text)


def official_question_accuracy(res_answer: str, gt_answers: list[str]) -> float:
    """`VQAEval.evaluate` for one question: avgGTAcc."""
    manual_map, articles, contractions = dict(NUMBER_WORDS), list(ARTICLES), CONTRACTIONS
    answers = [{"answer": a, "answer_id": i + 1} for i, a in enumerate(gt_answers)]
    for ans_dic in answers:
        ans_dic["answer"] = ans_dic["answer"].replace("\n", " ")
        ans_dic["answer"] = ans_dic["answer"].replace("\t", " ")
        ans_dic["answer"] = ans_dic["answer"].strip()
    res_ans = res_answer
    res_ans = res_ans.replace("\n", " ")
    res_ans = res_ans.replace("\t", " ")
    res_ans = res_ans.strip()
    gt_acc = []
    gt_answer_strings = [ans["answer"] for ans in answers]
    if len(set(gt_answer_strings)) > 1:
        for ans_dic in answers:
            ans_dic["answer"] = _official_process_punctuation(ans_dic["answer"])
            ans_dic["answer"] = _official_process_digit_article(ans_dic["answer"], manual_map, articles, contractions)
        res_ans = _official_process_punctuation(res_ans)
        res_ans = _official_process_digit_article(res_ans, manual_map, articles, contractions)
    for gt_ans_datum in answers:
        other_gt_ans = [item for item in answers if item != gt_ans_datum]
        matching_ans = [item for item in other_gt_ans if item["answer"] == res_ans]
        acc = min(1, float(len(matching_ans)) / 3)
        gt_acc.append(acc)
    return float(sum(gt_acc)) / len(gt_acc)


def test_the_official_tables_are_the_ones_we_use():
    """The port above takes its tables from ours: check ours against vqaEval.py's own."""
    assert dict(NUMBER_WORDS) == {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
                                  "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
    assert set(ARTICLES) == {"a", "an", "the"}
    assert list(PUNCT) == _OFFICIAL_PUNCT
    # the whole table was compared key by key with vqaEval.py's at a013f00 (equal, 120 entries)
    assert len(CONTRACTIONS) == 120 and CONTRACTIONS["dont"] == "don't" and CONTRACTIONS["somebody'd"] == "somebodyd"


@pytest.mark.parametrize("prediction, answers, expected", [
    ("Yes", ["yes"] * 10, 0.0),  # identical human answers: compared as written
    ("yes", ["yes"] * 10, 1.0),
    ("Two.", ["2"] * 10, 0.0),
    ("Two.", ["2"] * 9 + ["two"], 1.0),  # the humans disagree (as strings): everything is normalised
    ("an apple", ["apple"] * 3 + ["pear"] * 7, 0.9),
    ("a" + "." * 40 + "b", ["ab"] * 5 + ["x"] * 5, 0.0),  # only 32 periods go: "a........b" stays unlike "ab"
])
def test_vqa_accuracy_hand_cases_agree_with_the_official_code(prediction, answers, expected):
    assert official_question_accuracy(prediction, answers) == pytest.approx(expected)
    assert vqa_accuracy(prediction, answers) == official_question_accuracy(prediction, answers)


_WORDS = ["yes", "no", "Yes", "NO", "2", "two", "Two", "none", "zero", "0", "10", "ten", "red", "Red car", "the red car",
          "a dog", "an apple", "apple", "dont", "don't", "whats", "what's", "isnt", "1,000", "1000", "2.5", "red/blue",
          "red, blue", "left-side", "left side", "hi!", "(left)", "c'mon", "o'clock", "oclock", "yall", "Im", "im"]
_MARKS = ["", ".", "!", "?", ",", " .", "...", "-", "/", ";", "\t", "\n", "  ", '"', "_"]


def _noisy(rng: random.Random) -> str:
    word = rng.choice(_WORDS)
    if rng.random() < 0.3:
        word = rng.choice(["", "the ", "a ", "an ", "The "]) + word
    if rng.random() < 0.4:
        word = word + rng.choice(_MARKS)
    if rng.random() < 0.1:
        word = rng.choice(_MARKS) + word
    if rng.random() < 0.05:
        word = word + "." * rng.randint(30, 40) + "x"
    return word


def test_vqa_accuracy_equals_the_official_code_on_random_questions():
    rng = random.Random(0)
    cases = 0
    for _ in range(6000):
        if rng.random() < 0.25:  # identical-answer rows, as many VQA v2 questions are
            answers = [_noisy(rng)] * 10
        else:
            pool = [_noisy(rng) for _ in range(rng.randint(1, 4))]
            answers = [rng.choice(pool) for _ in range(10)]
        prediction = rng.choice([_noisy(rng), rng.choice(answers)])
        assert vqa_accuracy(prediction, answers) == official_question_accuracy(prediction, answers), (prediction, answers)
        cases += 1
    assert cases == 6000
