"""VQA fine-tuning end to end on the tiny flavour: every fusion variant trains, saves, loads and
predicts; encoders start from the pretraining run (or not, --from-scratch); the VQA v2 schema reads."""

import json

import pytest
import torch

from modalities.errors import DataError
from multijepa.cli import main
from multijepa.model import MultiJEPA
from multijepa.vqa.config import load_vqa_config
from multijepa.vqa.data import VQACollator, VQADataset, answers_of
from multijepa.vqa.model import load_vqa


@pytest.fixture(scope="module")
def vqa_small(demo, tmp_path_factory):
    """The first 40 training and 24 held-out demo questions (the tiny runs need no more)."""
    root = demo
    for split, n in (("vqa_train", 40), ("vqa_test", 24)):
        lines = (root / f"{split}.jsonl").read_text().splitlines()[:n]
        (root / f"{split}_small.jsonl").write_text("\n".join(lines) + "\n")
    return root / "vqa_train_small.jsonl", root / "vqa_test_small.jsonl"


@pytest.mark.parametrize("kind,slots", [("cross", 0), ("coattention", 2), ("merged", 2)])
def test_each_fusion_trains_saves_loads_and_predicts(run, demo, vqa_small, tmp_path, kind, slots, capsys):
    train, test = vqa_small
    out = tmp_path / kind
    code = main(["vqa", "train", "--checkpoint", str(run), "--data", str(train), "--eval-data", str(test), "--out", str(out),
                 "--config", "vqa_tiny", "--no-progress", f"fusion.kind={kind}", f"fusion.memory_slots={slots}"])
    assert code == 0
    for f in ("model.safetensors", "vqa_config.yaml", "model_config.yaml", "tokenizer.model", "answers.json", "metrics.jsonl", "eval.json"):
        assert (out / f).is_file(), f
    res = json.loads((out / "eval.json").read_text())
    assert 0 <= res["accuracy"] <= 1 and res["n"] == 24
    assert set(res["per_type"]["question_type"]) <= {"relational", "non-relational"}

    # loaded from disk, the model gives the same answers as the evaluation at the end of training
    assert main(["vqa", "eval", "--checkpoint", str(out), "--data", str(test), "--json", str(tmp_path / "e.json")]) == 0
    assert json.loads((tmp_path / "e.json").read_text()) == res
    capsys.readouterr()
    row = json.loads(test.read_text().splitlines()[0])
    assert main(["vqa", "predict", "--checkpoint", str(out), "--image", str(demo / row["image"]),
                 "--question", row["question"], "--top-k", "3", "--json"]) == 0
    top = json.loads(capsys.readouterr().out)
    vocab = json.loads((out / "answers.json").read_text())["answers"]
    assert len(top) == 3 and all(t["answer"] in vocab and 0 < t["score"] < 1 for t in top)
    assert top[0]["score"] >= top[1]["score"] >= top[2]["score"]
    assert load_vqa(out).cfg.fusion.kind == kind


def test_encoders_start_from_the_pretraining_run_unless_from_scratch(run, vqa_small, tmp_path):
    train, _ = vqa_small
    pre = MultiJEPA.from_pretrained(run)
    target = pre.target_encoders["image"].state_dict()
    for scratch in (False, True):
        out = tmp_path / f"s{scratch}"
        args = ["vqa", "train", "--checkpoint", str(run), "--data", str(train), "--out", str(out), "--config", "vqa_tiny",
                "--no-progress", "--freeze-encoders"] + (["--from-scratch"] if scratch else [])
        assert main(args) == 0
        image = load_vqa(out).model.image_encoder.state_dict()
        same = all(torch.equal(image[k], target[k]) for k in target)
        assert same != scratch  # frozen: the pretrained weights are still there, untouched by training


def test_the_head_is_trained_and_the_loss_goes_down(run, vqa_small, tmp_path):
    train, _ = vqa_small
    out = tmp_path / "v"
    assert main(["vqa", "train", "--checkpoint", str(run), "--data", str(train), "--out", str(out), "--config", "vqa_tiny",
                 "--no-progress", "--max-steps", "30", "train.log_every=5", "optim.lr=3e-3"]) == 0
    losses = [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 6 and losses[-1] < 0.7 * losses[0], losses


def test_vqa_v2_schema_and_bad_rows(run, demo, tmp_path):
    pre = MultiJEPA.from_pretrained(run)
    rows = [json.loads(line) for line in (demo / "vqa_test.jsonl").read_text().splitlines()[:4]]
    hf = [{"image": r["image"], "question": r["question"], "question_type": r["question_type"],
           "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": i + 1} for i, a in enumerate(r["answers"])]}
          for r in rows]
    (demo / "vqa_hf.jsonl").write_text("".join(json.dumps(r) + "\n" for r in hf))
    ds = VQADataset(demo / "vqa_hf.jsonl", pre.processors)
    assert ds.answer_lists()[0] == rows[0]["answers"]
    batch = VQACollator()([ds[i] for i in range(4)])
    assert batch["image"].shape[0] == 4 and batch["question_type"] == [r["question_type"] for r in rows]
    assert answers_of("yes") == ["yes"]
    with pytest.raises(DataError, match="non-empty"):
        answers_of([])
    hf[2]["answers"] = []
    (demo / "vqa_bad.jsonl").write_text("".join(json.dumps(r) + "\n" for r in hf))
    with pytest.raises(DataError, match="row 2"):
        VQADataset(demo / "vqa_bad.jsonl", pre.processors).answer_lists()
    with pytest.raises(DataError, match="'answers'"):
        VQADataset(demo / "test.jsonl", pre.processors)


def test_vqa_config_checks_names():
    from multijepa.config import ConfigError

    with pytest.raises(ConfigError, match="fusion.kind"):
        load_vqa_config("vqa_tiny", ["fusion.kind=late"])
    with pytest.raises(ConfigError, match="fusion.widht"):
        load_vqa_config("vqa_tiny", ["fusion.widht=3"])
    with pytest.raises(ConfigError, match="encoder_lr_scale"):
        load_vqa_config("vqa_tiny", ["optim.encoder_lr_scale=-1"])
    assert load_vqa_config("vqa_tiny", ["fusion.memory_slots=5"]).fusion.memory_slots == 5


def test_batch_order_is_the_dataloaders_and_skips_for_a_resume():
    import itertools

    from torch.utils.data import DataLoader

    from multijepa.data.sampler import shuffled_batches

    loader = DataLoader(range(23), batch_size=5, shuffle=True, drop_last=True, generator=torch.Generator().manual_seed(7))
    expected = [b.tolist() for _ in range(3) for b in loader]  # three epochs
    got = list(itertools.islice(shuffled_batches(23, 5, seed=7), 12))
    assert got == expected
    assert list(itertools.islice(shuffled_batches(23, 5, seed=7, start_step=6), 6)) == expected[6:]


def test_a_killed_vqa_run_resumes_to_the_same_weights(run, vqa_small, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    import multijepa.vqa.train as vqa_train

    train, _ = vqa_small
    cfg = load_vqa_config("vqa_tiny", ["train.max_steps=7", "train.ckpt_every=2", "train.threads=1"])
    vqa_train.train_vqa(run, train, tmp_path / "straight", cfg, progress=False)

    real = vqa_train.save_checkpoint

    def dies_after_step_4(out, step, *a, **k):
        real(out, step, *a, **k)
        if step == 4:
            raise KeyboardInterrupt

    monkeypatch.setattr(vqa_train, "save_checkpoint", dies_after_step_4)
    with pytest.raises(KeyboardInterrupt):
        vqa_train.train_vqa(run, train, tmp_path / "killed", cfg, progress=False)
    monkeypatch.undo()
    with pytest.raises(FileExistsError, match="--resume"):
        vqa_train.train_vqa(run, train, tmp_path / "killed", cfg, progress=False)
    vqa_train.train_vqa(run, train, tmp_path / "killed", cfg, resume=True, progress=False)
    a, b = load_file(str(tmp_path / "straight" / "model.safetensors")), load_file(str(tmp_path / "killed" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    steps = [json.loads(line)["step"] for line in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [2, 4, 6, 7]
    assert not (tmp_path / "killed" / "checkpoints").exists()


def test_vqa_train_resume_from_the_command_line_uses_the_saved_config(run, vqa_small, tmp_path, monkeypatch, capsys):
    """`multijepa vqa train --resume` on a folder holding vqa_config.yaml (a NameError once crashed it)."""
    from safetensors.torch import load_file

    import multijepa.vqa.train as vqa_train

    train, _ = vqa_small
    args = ["vqa", "train", "--checkpoint", str(run), "--data", str(train), "--config", "vqa_tiny", "--no-progress",
            "--max-steps", "5", "train.ckpt_every=2", "train.threads=1", "fusion.kind=merged"]
    assert main([*args, "--out", str(tmp_path / "straight")]) == 0

    real = vqa_train.save_checkpoint

    def dies_after_step_2(out, step, *a, **k):
        real(out, step, *a, **k)
        raise KeyboardInterrupt

    monkeypatch.setattr(vqa_train, "save_checkpoint", dies_after_step_2)
    assert main([*args, "--out", str(tmp_path / "killed")]) == 130
    monkeypatch.undo()
    assert (tmp_path / "killed" / "vqa_config.yaml").is_file()
    capsys.readouterr()
    # resumed with no fusion override: the saved config (merged fusion) must be the one used
    resume = [a for a in args if a != "fusion.kind=merged"]
    assert main([*resume, "--out", str(tmp_path / "killed"), "--resume"]) == 0
    printed = capsys.readouterr().out
    assert "resuming with the run's saved config" in printed and "merged fusion" in printed
    a, b = load_file(str(tmp_path / "straight" / "model.safetensors")), load_file(str(tmp_path / "killed" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_vqa_score_agrees_with_vqa_eval_and_reads_the_official_results_format(demo, tmp_path, capsys):
    from pathlib import Path

    from tests.test_conformance import official_question_accuracy

    folder = Path(__file__).parent / "fixtures" / "legacy" / "vqa_cross"
    data = demo / "vqa_test.jsonl"
    assert main(["vqa", "eval", "--checkpoint", str(folder), "--data", str(data), "--json", str(tmp_path / "eval.json"),
                 "--predictions", str(tmp_path / "p.jsonl")]) == 0
    assert main(["vqa", "score", "--predictions", str(tmp_path / "p.jsonl"), "--data", str(data),
                 "--json", str(tmp_path / "score.json")]) == 0
    evaluated, scored = (json.loads((tmp_path / f).read_text()) for f in ("eval.json", "score.json"))
    assert scored == evaluated

    # the official results JSON, by question id (the demo calls it `id`), in another order
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    preds = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    official = [{"question_id": rows[p["row"]]["id"], "answer": p["prediction"]} for p in reversed(preds)]
    (tmp_path / "results.json").write_text(json.dumps(official))
    assert main(["vqa", "score", "--predictions", str(tmp_path / "results.json"), "--data", str(data),
                 "columns.question_id=id", "--json", str(tmp_path / "official.json")]) == 0
    assert json.loads((tmp_path / "official.json").read_text()) == evaluated
    expected = sum(official_question_accuracy(p["prediction"], rows[p["row"]]["answers"]) for p in preds) / len(rows)
    assert evaluated["accuracy"] == pytest.approx(expected, abs=1e-12)

    # a question without an answer is named
    (tmp_path / "short.json").write_text(json.dumps(official[1:]))
    capsys.readouterr()
    assert main(["vqa", "score", "--predictions", str(tmp_path / "short.json"), "--data", str(data),
                 "columns.question_id=id"]) == 1
    assert f"question_id '{rows[-1]['id']}'" in capsys.readouterr().err
