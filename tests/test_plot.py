"""`multijepa plot`: the figure of one run and of two overlaid, and the one pretrain writes."""

from __future__ import annotations

import json
import shutil

import pytest
from PIL import Image

from multijepa.cli import main


def test_plot_one_and_two_runs(run, demo, tmp_path, capsys):
    second = tmp_path / "second"
    assert main(["pretrain", "--config", "tiny", "--data", str(demo / "train.jsonl"), "--out", str(second),
                 "--max-steps", "4", "--no-progress", "train.plot=true"]) == 0
    assert Image.open(second / "metrics.png").size == (1600, 900)  # pretrain draws its own at the end
    assert main(["plot", str(run), "--out", str(tmp_path / "one.png")]) == 0
    assert main(["plot", str(run), "--compare", str(second), "--out", str(tmp_path / "two.png")]) == 0
    for name in ("one.png", "two.png"):
        assert Image.open(tmp_path / name).size == (1600, 900)
    assert (tmp_path / "one.png").read_bytes() != (tmp_path / "two.png").read_bytes()


def test_a_bad_metrics_line_is_named(tmp_path, capsys):
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss": 2.0}) + "\n{oops\n")
    assert main(["plot", str(tmp_path)]) == 1
    assert "metrics.jsonl line 2: not JSON" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError):
        from multijepa.plot import read_metrics

        read_metrics(tmp_path / "nothing")


def test_tensorboard_events_follow_metrics_jsonl_across_a_resume(demo, tmp_path):
    """train.tensorboard=true writes every logged number as a scalar; a resumed run purges the
    steps it trains again, so each step has one value, as in metrics.jsonl."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "tb"
    args = ["pretrain", "--config", "tiny", "--data", str(demo / "train.jsonl"), "--out", str(out), "--no-progress",
            "train.tensorboard=true", "train.ckpt_every=2", "train.log_every=1"]
    assert main([*args, "--max-steps", "3"]) == 0
    shutil.rmtree(out / "checkpoints" / "step_00000003")  # as if killed before it was written
    assert main([*args, "--max-steps", "5", "--resume"]) == 0  # from step 2: step 3 is trained again
    board = EventAccumulator(str(out / "tensorboard"))
    board.Reload()
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [e.step for e in board.Scalars("loss")] == [r["step"] for r in logged] == [1, 2, 3, 4, 5]
    assert [e.value for e in board.Scalars("loss")] == pytest.approx([r["loss"] for r in logged], rel=1e-6)
    assert {"lr", "loss/pred", "loss/bind", "samples_per_s"} <= set(board.Tags()["scalars"])
