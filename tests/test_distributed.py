"""torchrun on CPU (gloo): 2 processes train exactly as 1 process with the same global batch."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from multijepa.checkpoint import latest_checkpoint

STEPS = 3


def _pretrain(demo: Path, out: Path, nproc: int, *overrides: str, resume: bool = False) -> None:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
                "--standalone"] if nproc > 1 else [sys.executable]
    data = [] if any(o.startswith("data.sources=") for o in overrides) else ["--data", str(demo / "train.jsonl")]
    cmd = [*launcher, "-m", "multijepa", "pretrain", "--config", "tiny", *data,
           "--out", str(out), "--no-progress", *(["--resume"] if resume else []),
           f"train.max_steps={STEPS}", "train.log_every=1", "train.ckpt_every=1", "train.keep_checkpoints=5",
           "train.threads=1", "data.batch_size=8", "optim.eps=1e-3", *overrides]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def _losses(run: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def _assert_same_training(a: Path, b: Path, steps: int = STEPS, atol: float = 3e-5) -> None:
    la, lb = _losses(a), _losses(b)
    assert len(la) == len(lb) == steps
    assert torch.allclose(torch.tensor(la), torch.tensor(lb), rtol=1e-4, atol=1e-5), (la, lb)
    wa = load_file(str(latest_checkpoint(a) / "model.safetensors"))
    wb = load_file(str(latest_checkpoint(b) / "model.safetensors"))
    assert wa.keys() == wb.keys()
    # Online, predictor, head, EMA-target weights and BatchNorm running statistics. The two runs
    # sum in a different order, so gradients differ by float32 noise (~1e-7); AdamW divides each
    # update by its gradient's size, which blows that noise up to a full step for weights whose
    # gradient is itself ~0. The encoders' last LayerNorm bias is such a weight (the heads'
    # BatchNorm cancels most of it): its gradient is ~1.5e-5, 500x below the others', and float32
    # noise is 10-20% of it. optim.eps=1e-3 (above that gradient, below the others') turns AdamW's
    # update of it into a small SGD-like step, so noise stays noise and the comparison can be tight
    # for every tensor. (With eps=1e-5 whether it passed depended on the masks drawn.)
    for k in wa:
        assert torch.allclose(wa[k], wb[k], rtol=1e-4, atol=atol), k


@pytest.fixture(scope="module")
def single(demo, tmp_path_factory):
    out = tmp_path_factory.mktemp("dist") / "one"
    _pretrain(demo, out, 1)
    return out


def test_two_processes_train_as_one_and_resume_on_one(demo, single, tmp_path):
    two = tmp_path / "two"
    _pretrain(demo, two, 2)
    assert (two / "metrics.jsonl").read_text().count('"step": 1,') == 1  # rank 0 writes alone
    _assert_same_training(single, two)

    # the 2-process run's checkpoint after step 2 resumes on 1 process: step 3 as before
    shutil.rmtree(latest_checkpoint(two))
    _pretrain(demo, two, 1, resume=True)
    _assert_same_training(single, two)


def test_gradient_accumulation_gives_the_prediction_loss_of_the_whole_batch(demo, single, tmp_path):
    """Two micro-batches of 4: the same prediction loss at step 1 (the binding loss sees 4 rows)."""
    _pretrain(demo, tmp_path / "accum", 1, "train.grad_accum=2")
    first = [json.loads(line) for line in (tmp_path / "accum" / "metrics.jsonl").read_text().splitlines()][0]
    ref = json.loads((single / "metrics.jsonl").read_text().splitlines()[0])
    assert abs(first["loss/pred"] - ref["loss/pred"]) < 1e-4 * ref["loss/pred"]
    assert first["loss/bind"] < ref["loss/bind"]  # fewer negatives per row: an easier InfoNCE


def test_two_processes_train_as_one_on_mixed_sources(demo, tmp_path):
    """Image-text rows and five times as many image-audio rows: processes hold different numbers
    of each modality and pair, and at step 4 one holds no caption at all, so the binding loss
    gathers uneven counts (a process with no pair still joins the gather and its backward), the
    logs differ in keys, and DDP meets unused weights."""
    m = demo / "train.jsonl"
    sources = (f"data.sources=[{{path: {m}, name: it, weight: 1, modalities: [image, text]}}, "
               f"{{path: {m}, name: ia, weight: 5, modalities: [image, audio]}}]")
    _pretrain(demo, tmp_path / "one", 1, sources, "train.max_steps=6")
    _pretrain(demo, tmp_path / "two", 2, sources, "train.max_steps=6")
    # six steps let the noise on the LayerNorm biases (see above) grow to ~5e-5
    _assert_same_training(tmp_path / "one", tmp_path / "two", steps=6, atol=1e-4)


def test_fsdp2_trains_as_one_process(demo, single, tmp_path):
    """FSDP2 shards weights, gradients and AdamW state; checkpoints still hold the full state."""
    _pretrain(demo, tmp_path / "fsdp", 2, "train.parallel=fsdp")
    _assert_same_training(single, tmp_path / "fsdp")


def test_fsdp2_with_mamba_encoders_trains_as_one_process(demo, tmp_path):
    """Mamba and hybrid encoders shard block by block like the transformer's."""
    kinds = ("model.audio.encoder.kind=mamba", "model.image.encoder.kind=hybrid")
    _pretrain(demo, tmp_path / "one", 1, *kinds)
    _pretrain(demo, tmp_path / "fsdp", 2, "train.parallel=fsdp", *kinds)
    _assert_same_training(tmp_path / "one", tmp_path / "fsdp")


def test_steps_without_pairs_are_skipped_alike_on_every_process(demo, tmp_path):
    """The CLIP objective on one manifest of 20 pairs in 104 rows, drawn as it comes: some global
    batches of 8 hold fewer than two pairs. Every process skips those steps together (the decision
    comes from the counts they share), so 2 processes train as 1 and neither waits on the other."""
    from tests.test_late_prediction import _mixture

    path = _mixture(demo, 20)
    runs = []
    for nproc in (1, 2):
        out = tmp_path / f"p{nproc}"
        _pretrain(demo, out, nproc, "loss.objective=clip", "data.min_pair_fraction=0", "train.max_steps=8",
                  f"data.sources=[{{path: {path}}}]")
        runs.append(out)
    logs = [[json.loads(line) for line in (r / "metrics.jsonl").read_text().splitlines()] for r in runs]
    assert [r["step"] for r in logs[0]] == [r["step"] for r in logs[1]]
    skipped = [max(r.get("no_pair_steps", 0) for r in log) for log in logs]
    assert skipped[0] == skipped[1] > 0
    wa, wb = (load_file(str(latest_checkpoint(r) / "model.safetensors")) for r in runs)
    assert latest_checkpoint(runs[1]).name == "step_00000008"
    for k in wa:
        assert torch.allclose(wa[k], wb[k], rtol=1e-4, atol=3e-5), k
