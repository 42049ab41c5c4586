import torch

from multijepa.retrieval import format_table, ranks_of_matches, retrieval_metrics


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
    res = retrieval_metrics({"image": image, "text": text})
    assert set(res) == {"image->text", "text->image"}
    t2i = res["text->image"]
    assert t2i["n"] == 3
    assert abs(t2i["R@1"] - 2 / 3) < 1e-6  # rows 1 and 3 right, row 2 ties with row 3 -> rank 2
    assert t2i["R@5"] == 1.0 and t2i["median_rank"] == 1.0
    assert "text->image" in format_table(res)


def test_perfect_embeddings_give_perfect_recall():
    z = torch.nn.functional.normalize(torch.randn(50, 8), dim=-1)
    rows = torch.arange(50)
    res = retrieval_metrics({"audio": (z, rows), "text": (z.clone(), rows)})
    assert res["audio->text"]["R@1"] == 1.0 and res["text->audio"]["median_rank"] == 1.0
