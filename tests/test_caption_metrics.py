"""The caption metrics against pycocoevalcap itself, and the pure-Python PTB tokenizer against
Stanford's (its recorded output, and the Java program live where Java is installed)."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest

from multijepa.caption.metrics import CiderD, bleu, caption_scores, rouge_l, score_captions
from multijepa.caption.ptb import PUNCTUATIONS, ptb_tokenize

FIXTURE = Path(__file__).parent / "fixtures" / "ptb_tokens.jsonl"
ROWS = [json.loads(line) for line in FIXTURE.read_text().splitlines()]


def test_ptb_tokens_agree_with_stanfords_on_every_recorded_caption():
    # the fixture: CoreNLP 3.4.1 PTBTokenizer -preserveLines -lowerCase, as pycocoevalcap runs it
    for row in ROWS:
        want = [w for w in row["ptb"].split(" ") if w not in PUNCTUATIONS]
        assert ptb_tokenize(row["caption"]) == want, row["caption"]


@pytest.mark.skipif(shutil.which("java") is None, reason="Java is not installed: the recorded output is checked instead")
def test_ptb_tokens_agree_with_the_java_tokenizer_live():
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    rng = random.Random(0)
    words = [w for r in ROWS for w in r["caption"].split()]
    captions = [r["caption"] for r in ROWS] + [" ".join(rng.choices(words, k=rng.randint(1, 14))) for _ in range(200)]
    java = PTBTokenizer().tokenize({i: [{"caption": c}] for i, c in enumerate(captions)})
    for i, c in enumerate(captions):
        assert " ".join(ptb_tokenize(c)) == java[i][0], c


def _corpus(n: int = 300, seed: int = 0) -> tuple[dict, dict]:
    """Tokenized references (1-5 per item) and hypotheses: exact copies, edits, shuffles, one word,
    empty, long run-ons: the cases where the definitions differ if anything does."""
    rng = random.Random(seed)
    sentences = [" ".join(ptb_tokenize(r["caption"])) for r in ROWS if ptb_tokenize(r["caption"])]
    refs, hyps = {}, {}
    for i in range(n):
        group = rng.sample(sentences, rng.randint(1, 5))
        refs[i] = group
        words = rng.choice(group).split()
        kind = i % 6
        if kind == 0:
            hyp = words
        elif kind == 1:
            hyp = [w for w in words if rng.random() > 0.3] or words[:1]
        elif kind == 2:
            hyp = rng.sample(words, len(words))
        elif kind == 3:
            hyp = words[:1]
        elif kind == 4:
            hyp = words + rng.choice(sentences).split()
        else:
            hyp = [] if i % 12 == 5 else rng.choice(sentences).split()
        hyps[i] = " ".join(hyp)
    return refs, hyps


def test_bleu_rouge_cider_agree_with_pycocoevalcap():
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    refs, hyps = _corpus()
    res = {k: [v] for k, v in hyps.items()}
    want_bleu, want_bleu_items = Bleu(4).compute_score(refs, res, verbose=0)
    got_bleu, got_bleu_items = bleu(refs, hyps)
    assert got_bleu == pytest.approx(want_bleu, rel=1e-12, abs=1e-15)
    for k in range(4):
        assert got_bleu_items[k] == pytest.approx(want_bleu_items[k], rel=1e-12, abs=1e-15)
    want_cider, want_cider_items = Cider().compute_score(refs, res)
    got_cider, got_cider_items = CiderD(refs).corpus(hyps)
    assert got_cider == pytest.approx(float(want_cider), rel=1e-12)
    assert got_cider_items == pytest.approx(list(want_cider_items), rel=1e-12, abs=1e-12)
    want_rouge, want_rouge_items = Rouge().compute_score(refs, res)
    got_rouge, got_rouge_items = rouge_l(refs, hyps)
    assert got_rouge == pytest.approx(float(want_rouge), rel=1e-12)
    assert got_rouge_items == pytest.approx(list(want_rouge_items), rel=1e-12, abs=1e-15)


def test_hand_examples():
    refs = {"a": ["a red circle in the top left", "a small red circle at the top left"],
            "b": ["a blue square in the center", "the blue square sits in the middle"],
            "c": ["two green triangles at the bottom", "green triangles in the bottom row"]}
    same = {k: v[0] for k, v in refs.items()}
    scores = caption_scores(refs, same)
    worse = caption_scores(refs, {"a": "a red square", "b": "a blue square in the center", "c": "a dog"})
    assert all(scores[m] > worse[m] for m in scores)
    cider = CiderD(refs)
    for k, v in refs.items():  # the reference itself scores best among these hypotheses
        others = [cider.score(k, h) for h in ("", "a", v[0] + " extra words here", refs["b" if k == "a" else "a"][0])]
        assert cider.score(k, v[0]) > max(others)
    assert cider.score("a", "") == 0.0
    assert caption_scores({"x": ["a b c d"]}, {"x": "a b c d"})["BLEU-4"] == pytest.approx(1.0)


def test_score_captions_tokenizes_first_and_names_a_mismatch():
    refs = {1: ["A red circle, top left."], 2: ["Two dogs (brown)."]}
    tokenized = caption_scores({1: ["a red circle top left"], 2: ["two dogs -lrb- brown -rrb-"]},
                               {1: "a red circle top left", 2: "two dogs"})
    assert score_captions(refs, {1: "a red circle top left!", 2: "Two dogs."}) == tokenized
    with pytest.raises(ValueError, match="different items"):
        caption_scores(refs, {1: "x"})
