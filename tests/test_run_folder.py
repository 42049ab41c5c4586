"""A run folder has one writer, keeps to one run, and survives Ctrl-C / SIGTERM and half-written files."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from multijepa.checkpoint import latest_checkpoint
from multijepa.cli import main
from multijepa.run_folder import LOCK_NAME

CLI = [sys.executable, "-m", "multijepa.cli"]
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def _args(demo, steps):
    return ["--config", "tiny", "--data", str(demo / "train.jsonl"), "--max-steps", str(steps), "--no-progress",
            "train.ckpt_every=1000", "train.log_every=1", "train.threads=1"]


def _wait_for_step(run, proc, step, timeout=120):
    deadline = time.time() + timeout
    while True:
        lines = (run / "metrics.jsonl").read_text().splitlines() if (run / "metrics.jsonl").exists() else []
        if lines and json.loads(lines[-1])["step"] >= step:
            return
        assert proc.poll() is None and time.time() < deadline, "the run ended before the test could act"
        time.sleep(0.02)


def _weights(run):
    ckpt = latest_checkpoint(run)
    return load_file(str(ckpt / "model.safetensors")), ckpt.name


def test_a_second_writer_stops_at_once_and_the_first_logs_each_step_once(demo, tmp_path, capsys):
    run, steps = tmp_path / "run", 300
    first = subprocess.Popen(CLI + ["pretrain", *_args(demo, steps), "--out", str(run)], env=ENV,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _wait_for_step(run, first, 1)
    t0 = time.time()
    code = main(["pretrain", *_args(demo, steps), "--out", str(run)])
    err = capsys.readouterr().err.strip()
    assert code == 1 and time.time() - t0 < 10
    assert len(err.splitlines()) == 1 and f"pid {first.pid}" in err and "in use" in err, err
    assert first.wait(timeout=300) == 0, first.stderr.read()
    logged = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert logged == list(range(1, steps + 1))
    assert (run / LOCK_NAME).read_text() == "", "a finished run leaves its lock released"


def test_sigterm_writes_a_checkpoint_and_the_printed_command_resumes_to_the_same_weights(demo, tmp_path):
    steps = 24
    ref = tmp_path / "ref"
    subprocess.run(CLI + ["pretrain", *_args(demo, steps), "--out", str(ref)], check=True, env=ENV, capture_output=True)

    run = tmp_path / "stopped"
    proc = subprocess.Popen(CLI + ["pretrain", *_args(demo, steps), "--out", str(run)], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_step(run, proc, 5)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err
    stopped_at = latest_checkpoint(run)
    assert stopped_at is not None and stopped_at.name < f"step_{steps:08d}", "no checkpoint, or the signal came too late"
    command = err.strip().splitlines()[-1].split("Continue with: ")[1]
    assert command == f"multijepa pretrain --out {run} --resume"
    subprocess.run(CLI + command.split()[1:] + ["--no-progress"], check=True, env=ENV, capture_output=True)

    resumed, name = _weights(run)
    reference, ref_name = _weights(ref)
    assert name == ref_name == f"step_{steps:08d}"
    for k in reference:
        assert torch.equal(resumed[k], reference[k]), k
    logged = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert logged == list(range(1, steps + 1))


def test_a_lock_left_by_a_dead_process_is_taken_over_with_a_notice(demo, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK_NAME).write_text("pid 999999 on elsewhere (multijepa pretrain, since yesterday)\n")
    assert main(["pretrain", *_args(demo, 2), "--out", str(run)]) == 0
    assert "taking over the lock of pid 999999" in capsys.readouterr().err


def test_a_folder_with_another_runs_files_is_refused_and_left_unchanged(demo, tmp_path, capsys):
    run = tmp_path / "died_early"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"step": 1}\n')
    (run / "tokenizer.model").write_bytes(b"old")
    before = sorted(p.name for p in run.iterdir())
    assert main(["pretrain", *_args(demo, 2), "--out", str(run)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "metrics.jsonl" in err and "--resume" in err
    assert sorted(p.name for p in run.iterdir() if p.name != LOCK_NAME) == before
    assert (run / "metrics.jsonl").read_text() == '{"step": 1}\n'


def test_resume_refuses_a_config_that_changes_the_model_or_the_data(run, demo, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    for override, key in (("model.embed_dim=32", "model.embed_dim"), ("data.batch_size=4", "data.batch_size")):
        assert main(["pretrain", "--out", str(copy), "--resume", "--no-progress", override]) == 1
        err = capsys.readouterr().err
        assert key in err and "--resume" in err


def test_half_written_and_truncated_checkpoints_are_cleared_and_passed_over(run, demo, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    ckpts = sorted((copy / "checkpoints").glob("step_*"))
    assert [c.name for c in ckpts] == ["step_00000002", "step_00000004"]
    (copy / "checkpoints" / ".tmp-step_00000006-4242").mkdir()
    weights = ckpts[-1] / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])

    assert latest_checkpoint(copy).name == "step_00000002"
    assert "skipping checkpoint" in capsys.readouterr().err
    assert main(["pretrain", "--out", str(copy), "--resume", "--no-progress", "--max-steps", "6"]) == 0
    out = capsys.readouterr().out
    assert "removed 1 half-written" in out and "unreadable-step_00000004" in out
    names = sorted(p.name for p in (copy / "checkpoints").iterdir())
    assert names == ["step_00000004", "step_00000006", "unreadable-step_00000004"]
    assert latest_checkpoint(copy).name == "step_00000006"


def test_overrides_may_stand_anywhere_among_the_options():
    from multijepa.cli import _parse

    args = _parse(["pretrain", "a.b=1", "--out", "x", "c.d=2", "--max-steps", "3", "e.f=[1,2]"])
    assert args.overrides == ["a.b=1", "c.d=2", "e.f=[1,2]"] and args.out == "x" and args.max_steps == 3
    args = _parse(["data", "check", "m1.jsonl", "--config", "tiny", "m2.jsonl", "data.batch_size=4"])
    assert args.items == ["m1.jsonl", "m2.jsonl", "data.batch_size=4"]


def test_without_data_the_quick_starts_demo_folder_is_used(tmp_path, monkeypatch, capsys):
    from multijepa.data.demo_paths import resolve_manifest

    (tmp_path / "data" / "demo").mkdir(parents=True)
    (tmp_path / "data" / "demo" / "test.jsonl").write_text("{}\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MULTIJEPA_DEMO_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert resolve_manifest(None, "test") == Path("data/demo/test.jsonl")
    assert "data/demo" in capsys.readouterr().err
    assert not (tmp_path / "home").exists(), "nothing generated in the home cache"


def test_a_stop_on_a_step_that_trained_nothing_writes_a_checkpoint_and_says_how_to_resume(demo, tmp_path, monkeypatch):
    """A signal that arrives while a step draws nothing to learn from (every row bad, or no pair to bind)
    stops the run as on any step: a checkpoint, and the interruption reported (not a run said to be done)."""
    from multijepa.config import load_config
    from multijepa.interrupts import TrainingInterrupted
    from multijepa.train.loop import pretrain
    from multijepa.train.step import TrainStep

    real = TrainStep.__call__

    def step_that_learns_nothing_at_3(self, batch, step, measure_terms=False):
        if step == 2:  # the third step: a stop request arrives, and the step has nothing to learn from
            os.kill(os.getpid(), signal.SIGTERM)
            return None
        return real(self, batch, step, measure_terms=measure_terms)

    monkeypatch.setattr(TrainStep, "__call__", step_that_learns_nothing_at_3)
    cfg = load_config("tiny", [f"data.train={demo / 'train.jsonl'}", "train.max_steps=10", "train.ckpt_every=1000",
                               "train.threads=1"])
    run = tmp_path / "stopped"
    with pytest.raises(TrainingInterrupted, match=r"stopped at step 3 of 10; checkpoint written.*--resume"):
        pretrain(cfg, run, progress=False)  # not a run that ends as if it were done
    assert latest_checkpoint(run).name == "step_00000003"
