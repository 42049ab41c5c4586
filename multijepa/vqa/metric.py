"""The VQA v2 accuracy metric, as the official evaluation computes it (GT-Vision-Lab/VQA,
PythonEvaluationTools/vqaEvaluation/vqaEval.py at commit a013f00, "Fixed processing answers bug").

Per question, for the VQA v2 layout of ten human answers, `vqa_accuracy` equals the official
score exactly (tests/test_conformance.py checks it against a line-by-line port on thousands of
random cases): answers are normalised (punctuation, number words, articles, contractions) only
when the humans disagree (VQA v2's annotations were normalised when the dataset was made); each
of the ten leave-one-out subsets scores min(1, matches / 3); the question scores their mean.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence

# Copied from the official vqaEval.py. Keys with capitals ("Im", "Ive", ...) never fire there
# either, since words are lowercased before the lookup; they are kept so the table stays verbatim.
CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've",
    "hasnt": "hasn't", "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've",
    "hes": "he's", "howd": "how'd", "howll": "how'll", "hows": "how's", "Id've": "I'd've",
    "I'dve": "I'd've", "Im": "I'm", "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've",
    "it'dve": "it'd've", "itll": "it'll", "let's": "let's", "maam": "ma'am", "mightnt": "mightn't",
    "mightnt've": "mightn't've", "mightn'tve": "mightn't've", "mightve": "might've", "mustnt": "mustn't",
    "mustve": "must've", "neednt": "needn't", "notve": "not've", "oclock": "o'clock", "oughtnt": "oughtn't",
    "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at", "shant": "shan't",
    "shed've": "she'd've", "she'dve": "she'd've", "she's": "she's", "shouldve": "should've",
    "shouldnt": "shouldn't", "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've",
    "somebody'd": "somebodyd", "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll", "somebodys": "somebody's", "someoned": "someone'd",
    "someoned've": "someone'd've", "someone'dve": "someone'd've", "someonell": "someone'll",
    "someones": "someone's", "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's",
    "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've", "therere": "there're",
    "theres": "there's", "theyd": "they'd", "theyd've": "they'd've", "they'dve": "they'd've",
    "theyll": "they'll", "theyre": "they're", "theyve": "they've", "twas": "'twas", "wasnt": "wasn't",
    "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've", "werent": "weren't", "whatll": "what'll",
    "whatre": "what're", "whats": "what's", "whatve": "what've", "whens": "when's", "whered": "where'd",
    "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've",
    "who'dve": "who'd've", "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll",
    "whyre": "why're", "whys": "why's", "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll",
    "y'allll": "y'all'll", "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've",
    "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll", "youre": "you're",
    "youve": "you've",
}
NUMBER_WORDS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
    "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}
ARTICLES = frozenset({"a", "an", "the"})
PUNCT = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!")
# The official lookbehind is misspelt as a lookahead, `(?!<=\d)`, which always passes: in effect
# every period not followed by a digit goes ("yes." -> "yes", "2.5" stays). Kept as written.
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
_COMMA_STRIP = re.compile(r"(\d)(,)(\d)")


def _process_punctuation(text: str) -> str:
    """Official rule: a mark next to a space, or any mark at all once the text holds a
    digit-comma-digit ("1,000"), is deleted; otherwise it becomes a space ("red/blue" -> "red blue")."""
    delete_all = _COMMA_STRIP.search(text) is not None
    out = text
    for p in PUNCT:
        if delete_all or p + " " in text or " " + p in text:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
        # the official call passes re.UNICODE (32) as the `count` argument: at most 32 periods go
    return _PERIOD_STRIP.sub("", out, count=32)


def _process_digit_article(text: str) -> str:
    words = [NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    return " ".join(CONTRACTIONS.get(w, w) for w in words if w not in ARTICLES)


def _clean(s: str) -> str:
    """What the official code does to every answer first: newlines and tabs to spaces, strip."""
    return s.replace("\n", " ").replace("\t", " ").strip()


def normalize_answer(s: str) -> str:
    """The official answer normalisation: punctuation, then lower case, number words to digits,
    articles dropped, contractions (the official order). The answer vocabulary and the soft
    training targets use it for every answer."""
    return _process_digit_article(_process_punctuation(_clean(s)))


def vqa_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """VQA accuracy of one prediction against the human answers of one question.

    Ten answers (or more), the VQA v2 layout: exactly the official rule. When the (cleaned)
    human answers are all the same string, nothing is normalised and the prediction must equal
    it as written ("Yes" against ten "yes" scores 0, as in vqaEval.py); otherwise prediction and
    answers are normalised. Each leave-one-out subset scores min(1, matches / 3).

    Fewer than ten answers (other sources; a deliberate difference, the official code assumes
    ten): answers are always normalised (such annotations are not pre-normalised), and the
    threshold is min(3, n - 1), the most matches a leave-one-out subset can hold, so that full
    agreement still scores 1; a single answer scores by (normalised) exact match.
    """
    if not answers:
        raise ValueError("vqa_accuracy needs at least one human answer")
    gts = [_clean(a) for a in answers]
    pred = _clean(prediction)
    n = len(gts)
    if len(set(gts)) > 1 or n < 10:
        gts = [_process_digit_article(_process_punctuation(a)) for a in gts]
        pred = _process_digit_article(_process_punctuation(pred))
    matches = [a == pred for a in gts]
    if n == 1:
        return float(matches[0])
    threshold = 3 if n >= 10 else min(3, n - 1)
    total = sum(matches)
    return sum(min(1.0, (total - m) / threshold) for m in matches) / n


def score_predictions(
    predictions: Sequence[str],
    rows: Sequence[dict],
    type_keys: Sequence[str] = ("question_type", "answer_type"),
) -> dict:
    """Mean VQA accuracy over a split, overall and broken down by question and answer type.

    `rows[i]["answers"]` holds the human answers for `predictions[i]`. A type key is reported
    only when some row has it; rows without it are left out of that breakdown.
    Returns {"accuracy", "n", "per_type": {key: {value: {"accuracy", "n"}}}}, JSON serialisable.
    """
    if len(predictions) != len(rows):
        raise ValueError(f"{len(predictions)} predictions for {len(rows)} rows")
    if not rows:
        raise ValueError("no predictions to score")
    scores = [vqa_accuracy(p, r["answers"]) for p, r in zip(predictions, rows)]
    per_type: dict[str, dict] = {}
    for key in type_keys:
        groups: dict[object, list[float]] = defaultdict(list)
        for score, row in zip(scores, rows):
            if row.get(key) is not None:
                groups[row[key]].append(score)
        if groups:
            per_type[key] = {value: _summary(s) for value, s in groups.items()}
    return {**_summary(scores), "per_type": per_type}


def _summary(scores: list[float]) -> dict:
    return {"accuracy": float(sum(scores) / len(scores)), "n": len(scores)}


def format_vqa(result: dict) -> str:
    """`score_predictions`' result as the lines `vqa train` and `vqa eval` print."""
    lines = [f"  accuracy {result['accuracy']:.4f} over {result['n']} questions"]
    for key, groups in result["per_type"].items():
        for value, r in sorted(groups.items()):
            lines.append(f"  {key} {value}: {r['accuracy']:.4f} (n={r['n']})")
    return "\n".join(lines)
