"""Held-out retrieval while pretraining (`train.eval_data`): scored as `eval retrieval` scores the
checkpoint, the run trained as without it, resumed exactly, the best checkpoint kept and loadable."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from multijepa.checkpoint import checkpoint_dir, list_checkpoints, save_checkpoint
from multijepa.cli import main
from multijepa.config import ConfigError, load_config
from multijepa.model import load_run
from multijepa.train.heldout import PATIENCE, SCORE, HeldOutEval


def _pretrain(demo, out, *extra, steps=6):
    args = ["pretrain", "--config", "tiny", "--data", str(demo / "train.jsonl"), "--out", str(out), "--no-progress",
            "--max-steps", str(steps), "train.ckpt_every=2", *extra]
    assert main(args) == 0


def _heldout(out) -> list[dict]:
    return [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if SCORE in r]


def test_held_out_scores_agree_with_eval_retrieval_and_leave_training_unchanged(demo, tmp_path):
    plain, scored = tmp_path / "plain", tmp_path / "scored"
    _pretrain(demo, plain)
    _pretrain(demo, scored, f"train.eval_data={demo / 'test.jsonl'}", "train.eval_every=3", "train.keep_checkpoints=1")
    records = _heldout(scored)
    assert [r["step"] for r in records] == [3, 6]  # every eval_every steps (each with a checkpoint), and the last
    best = max(records, key=lambda r: r[SCORE])
    assert all(r["heldout/best_step"] == best["step"] for r in records[1:])
    # the best checkpoint outlives keep_checkpoints=1 beside the newest
    assert {p.name for p in list_checkpoints(scored)} == {checkpoint_dir(scored, s).name for s in {best["step"], 6}}
    card = (scored / "MODEL_CARD.md").read_text()
    assert "## Held-out retrieval" in card and f"kept as `{checkpoint_dir(scored, best['step'])}`" in card
    # evaluation draws none of the run's random numbers and is not training: the same weights
    a, b = load_file(str(checkpoint_dir(plain, 6) / "model.safetensors")), load_file(str(checkpoint_dir(scored, 6) / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # each record is what `eval retrieval` says of that step's checkpoint, given as --checkpoint
    for rec in records:
        if not checkpoint_dir(scored, rec["step"]).exists():
            continue
        js = tmp_path / f"eval_{rec['step']}.json"
        assert main(["eval", "retrieval", "--checkpoint", str(checkpoint_dir(scored, rec["step"])),
                     "--data", str(demo / "test.jsonl"), "--json", str(js)]) == 0
        results = json.loads(js.read_text())
        assert rec[SCORE] == pytest.approx(sum(r["R@1"] for r in results.values()) / len(results), abs=1e-6)
        assert rec["heldout/P@1"] == pytest.approx(sum(r["P@1"] for r in results.values()) / len(results), abs=1e-6)


def test_a_resumed_run_keeps_its_best_and_scores_as_the_uninterrupted_one(demo, tmp_path):
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    extra = (f"train.eval_data={demo / 'test.jsonl'}", "train.keep_checkpoints=0")
    _pretrain(demo, whole, *extra)
    _pretrain(demo, cut, *extra)
    for step in (4, 6):  # as if killed after step 2's checkpoint
        shutil.rmtree(checkpoint_dir(cut, step))
    _pretrain(demo, cut, *extra, "--resume")  # from step 2: steps 3-6 trained and scored again
    assert _heldout(cut) == _heldout(whole)  # exact: the best step came back with the checkpoint
    assert [r["step"] for r in _heldout(whole)] == [2, 4, 6]


def test_a_run_past_its_best_is_said_with_the_checkpoint_to_take(run, demo, tmp_path):
    """A dip is noise; a best that is PATIENCE evaluations old, with a score below it, is said."""
    said = []
    model = load_run(run)
    heldout = HeldOutEval(str(demo / "test.jsonl"), model, 0, run, said.append)
    heldout.load_state_dict({"best_step": 2, "best": 1.0, "since_best": 0})  # as if step 2 had retrieved every row
    for i in range(1, PATIENCE + 2):  # the i-th evaluation after the best, at step 2 + 2i
        rec = heldout.evaluate(model, 2 + 2 * i, torch.device("cpu"))
        assert rec["heldout/best_step"] == 2 and rec[SCORE] < 1.0
        warned = [line for line in said if line.startswith("warning:")]
        assert len(warned) == max(0, i - PATIENCE + 1)
    assert f"step {2 + 2 * PATIENCE}: held-out mean R@1" in warned[0] and str(checkpoint_dir(run, 2)) in warned[0]
    assert model.training  # back to training mode
    assert heldout.state_dict()["since_best"] == PATIENCE + 1  # kept in checkpoints: a resumed run counts on


def test_a_checkpoint_folder_loads_that_checkpoint(demo, tmp_path):
    out = tmp_path / "r"
    _pretrain(demo, out, "train.keep_checkpoints=0", steps=4)
    early = load_run(checkpoint_dir(out, 2))
    saved = load_file(str(checkpoint_dir(out, 2) / "model.safetensors"))
    state, latest = early.state_dict(), load_run(out).state_dict()  # the run folder: its latest, step 4
    assert all(torch.equal(state[k], saved[k]) for k in saved)
    assert any(not torch.equal(latest[k], saved[k]) for k in saved)
    assert main(["eval", "retrieval", "--checkpoint", str(out / "checkpoints"), "--data", str(demo / "test.jsonl")]) != 0


def test_save_checkpoint_prunes_around_the_protected_one(tmp_path):
    for step in (1, 2, 3, 4):
        save_checkpoint(tmp_path, step, {"w": torch.zeros(1)}, {"step": step}, keep=2,
                        protect=checkpoint_dir(tmp_path, 1))
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000001", "step_00000003", "step_00000004"]


def test_bad_held_out_settings_are_named_before_training(demo, tmp_path, capsys):
    with pytest.raises(ConfigError, match="train.eval_every"):
        load_config("tiny", ["train.eval_every=-1"]).validate()
    code = main(["pretrain", "--config", "tiny", "--data", str(demo / "train.jsonl"), "--out", str(tmp_path / "x"),
                 "--no-progress", "--max-steps", "2", f"train.eval_data={tmp_path / 'missing.jsonl'}"])
    assert code != 0
    err = capsys.readouterr().err
    assert "missing.jsonl" in err and "Traceback" not in err
    assert not list_checkpoints(tmp_path / "x")
    captions = tmp_path / "captions.jsonl"  # one modality: nothing to retrieve between
    rows = [json.loads(line) for line in (demo / "test.jsonl").read_text().splitlines()]
    captions.write_text("".join(json.dumps({"text": r["text"]}) + "\n" for r in rows))
    code = main(["pretrain", "--config", "tiny", "--data", str(demo / "train.jsonl"), "--out", str(tmp_path / "y"),
                 "--no-progress", "--max-steps", "2", f"train.eval_data={captions}"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and err.startswith(f"error: train.eval_data={captions}") and "\n" not in err
