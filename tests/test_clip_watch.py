"""The clip's share of clipped steps is logged, and a clip that acts on every step is said, once."""

import json

import torch

from multijepa.cli import main
from multijepa.train.clip_watch import WINDOW, ClipWatch


def _feed(watch, norms_per_record, steps_per_record=10, total=300):
    said, records = [], []
    for i, norm in enumerate(norms_per_record):
        for _ in range(steps_per_record):
            watch.count(torch.tensor(norm))
        rec = {"step": (i + 1) * steps_per_record, "grad_norm": norm}
        watch.record(rec, total, said.append)
        records.append(rec)
    return said, records


def test_a_clip_below_the_steady_norm_is_said_once_and_a_guard_is_not():
    said, records = _feed(ClipWatch(1.0, warmup_steps=30, device=torch.device("cpu")), [36, 22, 6, 3, 2.5] + [2.0] * 20)
    assert [r["grad_clipped"] for r in records[:3]] == [1.0, 1.0, 1.0]
    assert len(said) == 1 and "optim.grad_clip=1 rescaled" in said[0] and "optim.grad_clip=6" in said[0]
    first = int(said[0].split(":")[0].split()[1])
    assert first >= 60 and first == 60 + 10 * (WINDOW - 1)  # after a fifth of the run, a full window
    said, records = _feed(ClipWatch(5.0, warmup_steps=30, device=torch.device("cpu")), [36, 22, 6, 3, 2.5] + [2.0] * 20)
    assert said == [] and records[0]["grad_clipped"] == 1.0 and records[-1]["grad_clipped"] == 0.0
    # spikes now and then are what a clip is for: no warning
    said, _ = _feed(ClipWatch(1.0, 30, torch.device("cpu")), [0.5, 0.5, 3.0, 0.5, 0.5] * 5)
    assert said == []


def test_a_pretrain_run_logs_the_share_of_clipped_steps_and_warns(demo, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["pretrain", "--config", "tiny", "--data", str(demo / "train.jsonl"), "--out", str(out), "--no-progress",
                 "--max-steps", "16", "optim.grad_clip=1e-6", "train.ckpt_every=16"])
    assert code == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(r["grad_clipped"] == 1.0 for r in records)
    assert capsys.readouterr().out.count("optim.grad_clip=1e-06 rescaled") == 1
