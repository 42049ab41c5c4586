import pytest
import torch

from multijepa.retrieval.metrics import format_table, ranks_of_matches, retrieval_metrics


def test_ranks_on_a_hand_made_similarity_matrix():
    sim = torch.tensor(
        [
            [0.9, 0.1, 0.2],  # right answer first -> rank 1
            [0.8, 0.5, 0.7],  # right answer (0.5) third -> rank 3
            [0.1, 0.9, 0.3],  # right answer second -> rank 2
        ]
    )
    assert ranks_of_matches(sim).tolist() == [1, 3, 2]
    # a block of rows of a bigger problem: query i's answer is column offset + i
    assert ranks_of_matches(sim[1:], offset=1).tolist() == [3, 2]
    # ties count against the query: a constant score is not a perfect score
    assert ranks_of_matches(torch.ones(4, 4)).tolist() == [4, 4, 4, 4]


def test_metrics_over_paired_rows_only():
    e = torch.eye(4)
    image = (e, torch.tensor([0, 1, 2, 3]))
    # text exists for rows 1, 2, 3 only; its row-2 embedding points at image row 3 instead
    text = (torch.stack([e[1], e[3], e[3]]), torch.tensor([1, 2, 3]))
    res = retrieval_metrics({"image": image, "text": text}, ties="pessimistic")
    assert set(res) == {"image->text", "text->image"}
    t2i = res["text->image"]
    assert t2i["n"] == 3 and t2i["ties"] == "pessimistic"
    assert abs(t2i["R@1"] - 2 / 3) < 1e-6  # rows 1 and 3 right, row 2 ties with row 3 -> rank 2
    assert t2i["R@5"] == 1.0 and t2i["median_rank"] == 1.0
    assert "text->image" in format_table(res)


def test_perfect_embeddings_give_perfect_recall():
    z = torch.nn.functional.normalize(torch.randn(50, 8), dim=-1)
    rows = torch.arange(50)
    res = retrieval_metrics({"audio": (z, rows), "text": (z.clone(), rows)})
    assert res["audio->text"]["R@1"] == 1.0 and res["text->audio"]["median_rank"] == 1.0


def test_mean_rank_and_class_match_on_a_hand_made_matrix():
    from multijepa.retrieval.metrics import class_match

    sim = torch.tensor(
        [
            [0.9, 0.8, 0.1, 0.0],  # label a; gallery labels a, b, a, b
            [0.7, 0.6, 0.9, 0.1],  # label b
            [0.2, 0.3, 0.4, 0.5],  # label a
            [0.0, 0.1, 0.2, 0.3],  # no label
        ]
    )
    labels = torch.tensor([0, 1, 0, -1])
    top1, ap = class_match(sim, labels, labels)
    # query 0: order 0(a) 1(b) 2(a) 3  -> top-1 right; AP = (1/1 + 2/3) / 2
    # query 1: order 2(a) 0(a) 1(b) 3  -> top-1 wrong; AP = (1/3) / 1
    # query 2: order 3 2(a) 1(b) 0(a)  -> top-1 wrong; AP = (1/2 + 2/4) / 2
    assert top1.tolist()[:3] == [True, False, False]
    assert torch.allclose(ap[:3], torch.tensor([(1 + 2 / 3) / 2, 1 / 3, (1 / 2 + 2 / 4) / 2]))

    e = torch.eye(4)
    z = (sim, torch.arange(4))
    res = retrieval_metrics({"image": (e, torch.arange(4)), "text": z}, labels=["a", "b", "a", None])
    t2i = res["text->image"]  # text query i scores image j by sim[i, j]
    assert t2i["mean_rank"] == (1 + 3 + 2 + 1) / 4 and t2i["median_rank"] == 1.5
    assert t2i["n_labelled"] == 3
    assert abs(t2i["P@1"] - 1 / 3) < 1e-6
    assert abs(t2i["mAP"] - ((1 + 2 / 3) / 2 + 1 / 3 + 0.5) / 3) < 1e-6
    assert "mAP" in format_table(res)


def test_metrics_chunking_does_not_change_the_results():
    g = torch.Generator().manual_seed(0)
    z = torch.nn.functional.normalize(torch.randn(60, 8, generator=g), dim=-1)
    w = torch.nn.functional.normalize(z + 0.8 * torch.randn(60, 8, generator=g), dim=-1)
    labels = [str(i % 7) for i in range(60)]
    embs = {"audio": (z, torch.arange(60)), "text": (w, torch.arange(60))}
    assert retrieval_metrics(embs, labels) == retrieval_metrics(embs, labels, max_cells=100)


def test_eval_retrieval_on_a_coco_style_manifest_equals_clip_benchmark(run, demo, tmp_path):
    """Several caption rows per image, as COCO and Flickr30k are stored: `eval retrieval --json`
    against CLIP_benchmark's recall_at_k on the same embeddings."""
    import json

    from multijepa.cli import main
    from multijepa.model import MultiJEPA
    from tests.test_conformance import clip_benchmark_metrics

    rows = [json.loads(line) for line in (demo / "test.jsonl").read_text().splitlines()][:12]
    coco = []
    for r in rows:  # 3 captions per image: its own, and two of its objects' words rearranged
        words = r["text"].split()
        for caption in (r["text"], " ".join(words[::-1]), " ".join(words[1:] + words[:1])):
            coco.append({"image": r["image"], "text": caption})
    manifest = demo / "coco_style.jsonl"
    manifest.write_text("".join(json.dumps(c) + "\n" for c in coco))
    assert main(["eval", "retrieval", "--checkpoint", str(run), "--data", str(manifest), "--json", str(tmp_path / "r.json")]) == 0
    ours = json.loads((tmp_path / "r.json").read_text())

    model = MultiJEPA.from_pretrained(run)
    images = model.embed_images([str(demo / r["image"]) for r in rows])
    texts = model.embed_texts([c["text"] for c in coco])
    ref = clip_benchmark_metrics(images, texts, torch.arange(len(rows)).repeat_interleave(3))
    for k in (1, 5, 10):
        assert ours["text->image"][f"R@{k}"] == pytest.approx(ref[f"text->image R@{k}"], abs=1e-9)
        assert ours["image->text"][f"R@{k}"] == pytest.approx(ref[f"image->text R@{k}"], abs=1e-9)
    assert ours["text->image"]["n_items"] == 12 and ours["text->image"]["n"] == 36
    assert ours["text->image"]["grouping"] == "image path"
    # an explicit --group-by column gives the same items
    for c, r in zip(coco, [r for r in rows for _ in range(3)]):
        c["image_id"] = r["id"]
    manifest.write_text("".join(json.dumps(c) + "\n" for c in coco))
    assert main(["eval", "retrieval", "--checkpoint", str(run), "--data", str(manifest), "--group-by", "image_id",
                 "--json", str(tmp_path / "g.json")]) == 0
    by_id = json.loads((tmp_path / "g.json").read_text())
    assert by_id["text->image"]["R@1"] == ours["text->image"]["R@1"] and by_id["text->image"]["grouping"] == "column image_id"


def test_ties_conventions_on_a_constant_similarity():
    """A collapsed model (every score equal): pessimistic ranks every query last; topk picks some
    of the tied items as CLIP_benchmark does, and ranks are the expected rank of a random order."""
    z = torch.ones(6, 4) / 2
    embs = {"image": (z, torch.arange(6)), "text": (z.clone(), torch.arange(6))}
    worst = retrieval_metrics(embs, ties="pessimistic")["image->text"]
    assert worst["R@1"] == 0.0 and worst["median_rank"] == 6.0 and worst["R@5"] == 0.0
    ref = retrieval_metrics(embs)["image->text"]  # the default: topk
    assert ref["ties"] == "topk" and ref["mean_rank"] == pytest.approx(1 + 5 / 2)  # 5 tied negatives, 1 positive
    top1 = torch.topk(z @ z.T, 1, dim=1).indices[:, 0]
    assert ref["R@1"] == pytest.approx(float((top1 == torch.arange(6)).float().mean()))
    assert ref["R@10"] == 1.0
    with pytest.raises(ValueError, match="ties='best'"):
        retrieval_metrics(embs, ties="best")
