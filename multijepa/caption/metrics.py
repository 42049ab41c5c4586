"""The COCO caption metrics: BLEU-1..4, ROUGE-L and CIDEr-D, as `pycocoevalcap` computes them.

Ported from pycocoevalcap 1.2 (`bleu_scorer.py`, `rouge.py`, `cider_scorer.py`), definitions and
quirks kept so that scores agree with it (tests/test_caption_metrics.py asserts it against the
package on a few hundred captions):

- BLEU: corpus-level, clipped n-gram counts, the "closest" reference length (ties to the shorter),
  brevity penalty over the corpus; the 1e-9 / 1e-15 smoothing constants of the reference.
- ROUGE-L: per item, the longest common subsequence against each reference, F-measure with
  beta = 1.2 from the best precision and the best recall; the mean over items.
- CIDEr-D: tf-idf n-gram vectors (n = 1..4) with document frequencies from the references of
  the scored set, counts clipped to the reference's, a Gaussian length penalty (sigma 6) on the
  difference of the sentences' *bigram* counts (the reference's `length` counts bigrams; that
  differs from the word counts' difference only for an empty sentence, which scores 0 anyway),
  the mean over n and over the references, times 10.

Inputs are already tokenized, space-joined strings (see `ptb.tokenize_captions`);
`score_captions` does both steps.
"""

from __future__ import annotations

import math
from collections import Counter

from .ptb import tokenize_captions


def ngram_counts(words: list[str], n: int = 4) -> Counter:
    return Counter(tuple(words[i:i + k]) for k in range(1, n + 1) for i in range(len(words) - k + 1))


def bleu(references: dict, predictions: dict, n: int = 4) -> tuple[list[float], list[list[float]]]:
    """{key: [ref, ...]}, {key: hyp} -> (corpus BLEU-1..n, per item BLEU-1..n lists)."""
    tiny, small = 1e-15, 1e-9
    total_guess, total_correct = [0] * n, [0] * n
    total_test = total_ref = 0
    per_item: list[list[float]] = [[] for _ in range(n)]
    for key in references:
        hyp = predictions[key].split()
        max_ref: Counter = Counter()
        ref_lens = []
        for ref in references[key]:
            words = ref.split()
            ref_lens.append(len(words))
            for g, c in ngram_counts(words, n).items():
                max_ref[g] = max(max_ref[g], c)
        test_len = len(hyp)
        ref_len = min((abs(length - test_len), length) for length in ref_lens)[1]  # closest, ties to shorter
        guess = [max(0, test_len - k) for k in range(n)]
        correct = [0] * n
        for g, c in ngram_counts(hyp, n).items():
            correct[len(g) - 1] += min(max_ref.get(g, 0), c)
        total_test, total_ref = total_test + test_len, total_ref + ref_len
        score = 1.0
        for k in range(n):
            total_guess[k] += guess[k]
            total_correct[k] += correct[k]
            score *= (correct[k] + tiny) / (guess[k] + small)
            per_item[k].append(score ** (1 / (k + 1)))
        ratio = (test_len + tiny) / (ref_len + small)
        if ratio < 1:
            for k in range(n):
                per_item[k][-1] *= math.exp(1 - 1 / ratio)
    corpus, score = [], 1.0
    for k in range(n):
        score *= (total_correct[k] + tiny) / (total_guess[k] + small)
        corpus.append(score ** (1 / (k + 1)))
    ratio = (total_test + tiny) / (total_ref + small)
    if ratio < 1:
        corpus = [b * math.exp(1 - 1 / ratio) for b in corpus]
    return corpus, per_item


def lcs_length(a: list[str], b: list[str]) -> int:
    if len(a) < len(b):
        a, b = b, a
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, 1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    return prev[-1]


def rouge_l(references: dict, predictions: dict, beta: float = 1.2) -> tuple[float, list[float]]:
    """{key: [ref, ...]}, {key: hyp} -> (mean ROUGE-L, per item)."""
    scores = []
    for key in references:
        cand = predictions[key].split(" ")  # split(" "), as the reference: an empty caption is one empty token
        prec, rec = [], []
        for ref in references[key]:
            words = ref.split(" ")
            lcs = lcs_length(words, cand)
            prec.append(lcs / len(cand))
            rec.append(lcs / len(words))
        p, r = max(prec), max(rec)
        scores.append((1 + beta**2) * p * r / (r + beta**2 * p) if p != 0 and r != 0 else 0.0)
    return sum(scores) / len(scores), scores


class CiderD:
    """CIDEr-D with document frequencies from `references` ({key: [ref, ...]}, tokenized): over the
    scored set itself for evaluation (as pycocoevalcap), over the training captions for SCST rewards."""

    def __init__(self, references: dict, n: int = 4, sigma: float = 6.0):
        self.n, self.sigma = n, sigma
        self.df: Counter = Counter()
        for refs in references.values():
            self.df.update({g for ref in refs for g in ngram_counts(ref.split(), n)})
        self.log_items = math.log(float(len(references)))
        self.refs = {k: [self._vector(ngram_counts(r.split(), n)) for r in refs] for k, refs in references.items()}

    def _vector(self, counts: Counter) -> tuple[list[dict], list[float], int]:
        vec: list[dict] = [{} for _ in range(self.n)]
        norm = [0.0] * self.n
        length = 0
        for g, tf in counts.items():
            k = len(g) - 1
            vec[k][g] = tf * (self.log_items - math.log(max(1.0, self.df[g])))
            norm[k] += vec[k][g] ** 2
            if k == 1:  # the reference's "length": the number of bigrams
                length += tf
        return vec, [math.sqrt(x) for x in norm], length

    def score(self, key, hypothesis: str) -> float:
        """CIDEr-D of one tokenized hypothesis against the references of `key`."""
        vec, norm, length = self._vector(ngram_counts(hypothesis.split(), self.n))
        refs = self.refs[key]
        total = [0.0] * self.n
        for vec_r, norm_r, length_r in refs:
            penalty = math.exp(-((length - length_r) ** 2) / (2 * self.sigma**2))
            for k in range(self.n):
                val = sum(min(w, vec_r[k].get(g, 0.0)) * vec_r[k].get(g, 0.0) for g, w in vec[k].items())
                if norm[k] != 0 and norm_r[k] != 0:
                    val /= norm[k] * norm_r[k]
                total[k] += val * penalty
        return sum(total) / self.n / len(refs) * 10.0

    def corpus(self, predictions: dict) -> tuple[float, list[float]]:
        """{key: hyp} for every key of the references -> (mean, per item)."""
        scores = [self.score(k, predictions[k]) for k in self.refs]
        return sum(scores) / len(scores), scores


def caption_scores(references: dict, predictions: dict) -> dict:
    """Tokenized {key: [ref, ...]} and {key: hyp} -> {"BLEU-1".."BLEU-4", "ROUGE-L", "CIDEr-D"}."""
    if set(references) != set(predictions):
        missing = sorted(set(references) ^ set(predictions), key=str)[:3]
        raise ValueError(f"predictions and references cover different items (e.g. {missing})")
    b, _ = bleu(references, predictions)
    out = {f"BLEU-{k + 1}": b[k] for k in range(4)}
    out["ROUGE-L"] = rouge_l(references, predictions)[0]
    out["CIDEr-D"] = CiderD(references).corpus(predictions)[0]
    return out


def score_captions(references: dict, predictions: dict) -> dict:
    """Raw captions {key: [ref, ...]}, {key: hyp} -> the metrics, after the PTB tokenization."""
    refs = tokenize_captions(references)
    preds = {k: v[0] for k, v in tokenize_captions({k: [p] for k, p in predictions.items()}).items()}
    return caption_scores(refs, preds)


def format_scores(result: dict) -> str:
    """The scores as one table row (percent, as papers print them), with the number of inputs."""
    names = ["BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ROUGE-L", "CIDEr-D"]
    head = "  ".join(f"{n:>7}" for n in names) + "        n"
    return head + "\n" + "  ".join(f"{100 * result[n]:7.1f}" for n in names) + f"  {result.get('n', ''):>7}"
