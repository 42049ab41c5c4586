"""Zero-shot classification: class prompts, accuracy, the command on the demo data."""

import json

import pytest
import torch

from modalities.errors import DataError
from multijepa.cli import main
from multijepa.model import MultiJEPA
from multijepa.retrieval.zeroshot import accuracy, read_classes, read_templates, zero_shot_classifier, zero_shot_eval


def test_accuracy_on_hand_made_logits():
    logits = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.3, 0.5], [0.1, 0.7, 0.2]])
    target = torch.tensor([0, 1, 2])
    acc = accuracy(logits, target, ks=(1, 2))
    assert acc["top1"] == pytest.approx(1 / 3) and acc["top2"] == pytest.approx(1.0)


def test_class_embeddings_are_the_normalised_mean_of_their_prompts(run):
    model = MultiJEPA.from_pretrained(run)
    classes, templates = ["red circle", "blue square", "green cross"], ["a {}.", "the sound of a {}."]
    w = zero_shot_classifier(model, classes, templates)
    assert w.shape == (model.cfg.embed_dim, 3)
    for c, name in enumerate(classes):
        mean = model.embed_texts([t.format(name) for t in templates]).mean(0)
        assert torch.allclose(w[:, c], mean / mean.norm(), atol=1e-5)


def test_zero_shot_on_the_demo_images_and_audio(run, demo, tmp_path, capsys):
    out = tmp_path / "zs.json"
    code = main(["eval", "zeroshot", "--checkpoint", str(run), "--data", str(demo / "test.jsonl"),
                 "--classes", str(demo / "classes.txt"), "--templates", "a {}.", "a {} on grey", "--json", str(out)])
    assert code == 0
    res = json.loads(out.read_text())
    assert set(res) == {"image", "audio"}
    for r in res.values():
        assert r["n"] == 24 and r["classes"] == 24 and 0 <= r["top1"] <= r["top5"] <= 1
    assert "top-1" in capsys.readouterr().out


def test_a_perfect_embedding_classifies_perfectly(run, demo, monkeypatch):
    """Route the image tower to the class prompts of each row's label: accuracy must be 1."""
    model = MultiJEPA.from_pretrained(run)
    classes = read_classes(demo / "classes.txt")
    weights = zero_shot_classifier(model, classes, ["a {}."])
    labels = [json.loads(line)["label"] for line in (demo / "test.jsonl").read_text().splitlines()]
    target = iter(weights[:, [classes.index(lab) for lab in labels]].T)
    real = model.encode
    monkeypatch.setattr(model, "encode", lambda m, x: torch.stack([next(target) for _ in range(len(x))]) if m == "image" else real(m, x))
    res = zero_shot_eval(model, demo / "test.jsonl", classes, ["a {}."], ["image"], progress=False)
    assert res["image"]["top1"] == 1.0


def test_bad_class_lists_and_templates_are_named(run, demo, tmp_path):
    with pytest.raises(DataError, match="at least 2"):
        (tmp_path / "one.txt").write_text("red circle\n")
        read_classes(tmp_path / "one.txt")
    with pytest.raises(DataError, match="twice"):
        (tmp_path / "dup.txt").write_text("a\nb\na\n")
        read_classes(tmp_path / "dup.txt")
    with pytest.raises(DataError, match="exactly one"):
        read_templates(["no placeholder"])
    (tmp_path / "few.txt").write_text("red circle\nblue square\n")
    with pytest.raises(DataError, match="not in the class list"):
        zero_shot_eval(MultiJEPA.from_pretrained(run), demo / "test.jsonl", read_classes(tmp_path / "few.txt"), ["a {}."], progress=False)
