"""`multijepa plot`: the figure of one run and of two overlaid, and the one pretrain writes."""

from __future__ import annotations

import json

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
