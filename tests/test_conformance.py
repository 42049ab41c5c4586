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


# ----------------------------------------------------------------------------- retrieval: CLIP_benchmark's recall_at_k

def clip_benchmark_recall_at_k(scores, positive_pairs, k):
    """LAION-AI/CLIP_benchmark, clip_benchmark/metrics/zeroshot_retrieval.py (commit 082089f),
    `recall_at_k`, as written there; `evaluate` then reports `(recall_at_k(...) > 0).mean()`."""
    import torch

    nb_texts, nb_images = scores.shape
    topk_indices = torch.topk(scores, k, dim=1)[1]
    nb_positive = positive_pairs.sum(dim=1)
    topk_indices_onehot = torch.nn.functional.one_hot(topk_indices, num_classes=nb_images)
    positive_pairs_reshaped = positive_pairs.view(nb_texts, 1, nb_images)
    nb_true_positive = (topk_indices_onehot * positive_pairs_reshaped).sum(dim=(1, 2))
    return nb_true_positive / nb_positive


def clip_benchmark_metrics(images_emb, texts_emb, texts_image_index, ks=(1, 5, 10)):
    """CLIP_benchmark's `evaluate` after the embeddings: image_retrieval (text -> image) and
    text_retrieval (image -> text) recall@k."""
    import torch

    scores = texts_emb @ images_emb.t()
    positive_pairs = torch.zeros_like(scores, dtype=bool)
    positive_pairs[torch.arange(len(scores)), texts_image_index] = True
    out = {}
    for k in ks:
        out[f"text->image R@{k}"] = (clip_benchmark_recall_at_k(scores, positive_pairs, k) > 0).float().mean().item()
        out[f"image->text R@{k}"] = (clip_benchmark_recall_at_k(scores.T, positive_pairs.T, k) > 0).float().mean().item()
    return out


def _coco_layout(n_images: int, captions: int, dim: int, noise: float, seed: int):
    """One row per caption, the image repeated: (embeddings dict, groups, images, texts, text->image index)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    images = torch.nn.functional.normalize(torch.randn(n_images, dim, generator=g), dim=-1)
    index = torch.arange(n_images).repeat_interleave(captions)
    texts = torch.nn.functional.normalize(images[index] + noise * torch.randn(len(index), dim, generator=g), dim=-1)
    rows = torch.arange(len(index))
    embs = {"image": (images[index], rows), "text": (texts, rows)}
    groups = [f"images/{i:04d}.jpg" for i in index.tolist()]
    return embs, groups, images, texts, index


@pytest.mark.parametrize("n_images, captions, noise, seed", [(20, 5, 1.0, 0), (200, 5, 1.5, 1), (300, 3, 2.0, 2), (50, 1, 1.0, 3)])
def test_retrieval_recall_equals_clip_benchmark_on_coco_layouts(n_images, captions, noise, seed):
    from multijepa.retrieval.metrics import retrieval_metrics

    embs, groups, images, texts, index = _coco_layout(n_images, captions, 16, noise, seed)
    ours = retrieval_metrics(embs, groups=groups, grouping="image path")
    ref = clip_benchmark_metrics(images, texts, index)
    for k in (1, 5, 10):
        assert ours["text->image"][f"R@{k}"] == pytest.approx(ref[f"text->image R@{k}"], abs=1e-9)
        assert ours["image->text"][f"R@{k}"] == pytest.approx(ref[f"image->text R@{k}"], abs=1e-9)
    assert ours["text->image"]["n"] == n_images * captions and ours["text->image"]["n_items"] == n_images
    assert ours["image->text"]["n"] == n_images and ours["image->text"]["n_items"] == n_images * captions


@pytest.mark.parametrize("copies, seed", [(40, 0), (5, 1), (2, 2)])
def test_retrieval_recall_equals_clip_benchmark_with_duplicate_captions(copies, seed):
    """Templated captions: `copies` images share one caption word for word (COCO repeats too). The
    default (`ties="topk"`) agrees with the reference, ties included; the pessimistic convention
    ranks every copy of another image's caption above the image's own. Embeddings are multiples
    of 1/8, so every dot product is exact and the copies tie exactly, whatever the summation order."""
    import torch

    from multijepa.retrieval.metrics import retrieval_metrics

    g = torch.Generator().manual_seed(seed)
    n = 60
    images = torch.randint(-3, 4, (n, 16), generator=g).float() / 8
    texts = images + torch.randint(-2, 3, (n, 16), generator=g).float() / 8
    texts[:copies] = texts[0]  # the first `copies` images' captions are one sentence
    rows = torch.arange(n)
    embs = {"image": (images, rows), "text": (texts, rows)}
    groups = [f"images/{i:04d}.jpg" for i in range(n)]
    ours = retrieval_metrics(embs, groups=groups)
    ref = clip_benchmark_metrics(images, texts, rows)
    for k in (1, 5, 10):
        assert ours["text->image"][f"R@{k}"] == pytest.approx(ref[f"text->image R@{k}"], abs=1e-9)
        assert ours["image->text"][f"R@{k}"] == pytest.approx(ref[f"image->text R@{k}"], abs=1e-9)
    worst = retrieval_metrics(embs, groups=groups, ties="pessimistic")["image->text"]
    best_positive = (images * texts).sum(1)  # (n,) each image's score for its own caption
    ahead = ((images @ texts.T) > best_positive[:, None]).sum(1).float()  # negatives strictly above
    tied = ((images @ texts.T) == best_positive[:, None]).sum(1).float() - 1  # the other copies
    assert worst["mean_rank"] == pytest.approx(float((1 + ahead + tied).mean()))
    assert ours["image->text"]["mean_rank"] == pytest.approx(float((1 + ahead + tied / 2).mean()))
    if copies > 1:
        assert worst["R@1"] <= (n - copies) / n  # no duplicated image can be first


def test_row_pairing_would_miss_what_grouping_finds():
    """The failure the grouping fixes: five identical image rows per item tie with each other."""
    from multijepa.retrieval.metrics import retrieval_metrics

    embs, groups, images, texts, index = _coco_layout(20, 5, 16, 0.3, 0)
    per_row = retrieval_metrics(embs, ties="pessimistic")
    grouped = retrieval_metrics(embs, groups=groups)
    assert per_row["text->image"]["R@1"] == 0.0  # the right image ties with its four copies
    assert grouped["text->image"]["R@1"] == clip_benchmark_metrics(images, texts, index)["text->image R@1"] > 0.8


# ----------------------------------------------------------------------------- class-match mAP: sklearn

def test_class_match_ap_equals_sklearn_ties_included():
    import torch
    from sklearn.metrics import average_precision_score

    from multijepa.retrieval.metrics import class_match

    # the hand case: a tie between a relevant and an irrelevant item is one step
    p1, ap = class_match(torch.tensor([[0.5, 0.5, 0.1]]), torch.tensor([0]), torch.tensor([0, 1, 0]))
    assert float(ap[0]) == pytest.approx(average_precision_score([1, 0, 1], [0.5, 0.5, 0.1])) == pytest.approx(7 / 12)
    assert float(p1[0]) == 0.5  # one of the two tied at the top is relevant
    g = torch.Generator().manual_seed(0)
    for trial in range(300):
        q, n, classes = 4, int(torch.randint(2, 40, (1,), generator=g)), int(torch.randint(2, 5, (1,), generator=g))
        levels = int(torch.randint(2, 8, (1,), generator=g))  # few distinct scores: many ties
        sim = torch.randint(0, levels, (q, n), generator=g).float() / levels
        gallery = torch.randint(0, classes, (n,), generator=g)
        query = torch.randint(0, classes, (q,), generator=g)
        p1, ap = class_match(sim, query, gallery)
        for i in range(q):
            relevant = (gallery == query[i]).numpy()
            if relevant.any():
                assert float(ap[i]) == pytest.approx(average_precision_score(relevant, sim[i].numpy()), abs=1e-6), trial
                top = sim[i] == sim[i].max()
                assert float(p1[i]) == pytest.approx(float(relevant[top.numpy()].mean()))


def test_grouping_holds_when_modalities_cover_different_rows():
    """Rows without a caption (or without an image) must not shift which group is which."""
    import torch

    from multijepa.retrieval.metrics import retrieval_metrics

    embs, groups, images, texts, index = _coco_layout(30, 4, 16, 1.0, 5)
    # prepend 3 image-only rows of other images: text rows keep their groups, rows shift by 3
    g = torch.Generator().manual_seed(9)
    extra = torch.nn.functional.normalize(torch.randn(3, 16, generator=g), dim=-1)
    (zi, ri), (zt, rt) = embs["image"], embs["text"]
    shifted = {"image": (torch.cat([extra, zi]), torch.arange(len(ri) + 3)), "text": (zt, rt + 3)}
    shifted_groups = ["extra/a.jpg", "extra/b.jpg", "extra/c.jpg", *groups]
    ours = retrieval_metrics(shifted, groups=shifted_groups)
    ref = clip_benchmark_metrics(images, texts, index)  # the extra images have no caption: not in the gallery
    for k in (1, 5, 10):
        assert ours["text->image"][f"R@{k}"] == pytest.approx(ref[f"text->image R@{k}"], abs=1e-9)
        assert ours["image->text"][f"R@{k}"] == pytest.approx(ref[f"image->text R@{k}"], abs=1e-9)
