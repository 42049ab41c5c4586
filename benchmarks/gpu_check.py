"""The CUDA paths of MultiJEPA, checked in one script on one GPU (under 8 minutes on an H100/H200).

It prints each check as it goes and writes them all to a JSON file:

1. `steps`: a few pretraining steps (the real `TrainStep`: schedules, forward, objective, backward,
   clipping, AdamW, EMA) per encoder kind (transformer, mamba, hybrid) in fp32 and in bf16, with
   `train.compile` on, on the same synthetic batches: the losses must be finite and fall. Each also
   times its steps after the first two (compilation) and reports its peak memory.
2. `cpu_agreement`: the first step's loss of the same seeded model and batch, fp32, on CUDA and on
   the CPU (the encoders' attention kernels differ): |difference| <= 1e-3.
3. `mamba_kernel`: the CUDA kernel of `mamba-ssm`, when it is installed, against our pure-PyTorch
   chunked scan on the same inputs; otherwise why it was skipped.
4. `vs_open_clip`: `step_throughput.py --config vit_b16_gpu --precision bf16`: MultiJEPA's ViT-B/16-sized
   image+text step over open_clip's CLIP with the same towers (`ratio_vs_open_clip`), MFU and peak
   memory of each.
5. `fsdp2`: with two GPUs or more, two processes of `torchrun` pretraining the demo config for a few
   steps with `train.parallel=fsdp`; otherwise skipped, saying so.

`--quick` runs the same code on the CPU at the tiny flavour (fp32 and bf16, no compile, no base
benchmark), in seconds: the tests run it, so the script cannot rot between GPU sessions.

    python benchmarks/gpu_check.py --json gpu_check.json      # on a GPU machine
    python benchmarks/gpu_check.py --quick                     # anywhere
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

from multijepa.config import load_config
from multijepa.data.collate import move_batch
from multijepa.train.builder import build_training

from common import machine, write_result
from step_throughput import build_batches, vocab_size

ROOT = Path(__file__).resolve().parent.parent
KINDS = ("transformer", "mamba", "hybrid")


def kind_config(config: str, kind: str, precision: str, compile_: bool, device: str, batch: int):
    """The config with every encoder of `kind`, at `precision`, compiled or not; prediction from the
    first step (the whole step is exercised), timed by steps."""
    depth = ["model.text.encoder.depth=2"] if kind == "hybrid" and config == "tiny" else []  # Mamba, then attention
    return load_config(config, [*(f"model.{m}.encoder.kind={kind}" for m in ("image", "text", "audio")), *depth,
                                f"train.precision={precision}", f"train.compile={str(compile_).lower()}",
                                f"train.device={device}", f"data.batch_size={batch}", "loss.pred_start=0",
                                "optim.warmup_steps=1", "train.max_steps=1000"])


def train_steps(cfg, steps: int, device: torch.device) -> dict:
    """`steps` training steps of a fresh seeded model on cycled synthetic batches -> losses, times, memory."""
    torch.manual_seed(0)
    training = build_training(cfg, device, vocab_size=vocab_size(cfg))
    batches = [move_batch(b, device) for b in build_batches(cfg, cfg.data.batch_size)]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    losses, times = [], []
    for i in range(steps):
        t0 = time.perf_counter()
        result = training.step(batches[i % len(batches)], i)
        loss = float(result.loss)  # waits for the device
        times.append(time.perf_counter() - t0)
        losses.append(loss)
    timed = times[2:] or times
    out = {"losses": losses, "finite": all(map(lambda x: x == x and abs(x) != float("inf"), losses)),
           "falls": losses[-1] < losses[0], "first_steps_s": times[:2], "ms_per_step": 1000 * sum(timed) / len(timed)}
    if device.type == "cuda":
        out["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return out


def first_loss(cfg, device: torch.device) -> float:
    """The first step's loss of the seeded model on the first synthetic batch (forward only)."""
    torch.manual_seed(0)
    training = build_training(cfg, device, vocab_size=vocab_size(cfg))
    batch = move_batch(build_batches(cfg, cfg.data.batch_size)[0], device)
    training.model.train()
    with torch.no_grad():
        loss, _ = training.objective(training.wrapped(batch), training.model.logit_scale)
    return float(loss)


def mamba_kernel_check(device: torch.device) -> dict:
    """Our chunked scan on `device` (mamba-ssm's CUDA kernel in its place when that is installed)
    against the step-by-step recurrence in float64 on the CPU."""
    from modalities.ssm import _cuda_kernel, naive_scan, ssd_scan

    kernel = device.type == "cuda" and _cuda_kernel() is not None
    torch.manual_seed(0)
    b, L, H, P, N = 2, 96, 4, 16, 8
    x, B, C = torch.randn(b, L, H, P), torch.randn(b, L, N), torch.randn(b, L, N)
    dt, A = torch.rand(b, L, H) * 0.2, -torch.rand(H) - 0.1
    ref = naive_scan(*(t.double() for t in (x, dt, A, B, C)))
    ours = ssd_scan(*(t.to(device) for t in (x, dt, A, B, C)), chunk=32).cpu().double()
    err = float((ours - ref).abs().max() / ref.abs().max())
    return {"scan": "mamba-ssm CUDA kernel" if kernel else f"pure PyTorch chunked scan on {device.type}",
            "mamba_ssm_installed": importlib.util.find_spec("mamba_ssm") is not None,
            "max_rel_err_vs_recurrence": err, "agrees": err < 1e-4}


def vs_open_clip(quick: bool, tmp: Path) -> dict:
    """step_throughput.py on the ViT-B/16-sized config in bf16 (not in --quick)."""
    if quick:
        return {"skipped": "--quick"}
    out = tmp / "throughput.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "step_throughput.py"), "--config", "vit_b16_gpu", "--precision", "bf16",
           "--device", "cuda", "--batch-size", "64", "--steps", "10", "--warmup", "3", "--json", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    if done.returncode != 0:
        return {"error": (done.stdout + done.stderr)[-1500:]}
    res = json.loads(out.read_text())
    return {"ratio_vs_open_clip": res.get("ratio_vs_open_clip"), "rows": res.get("results"), "tail": done.stdout[-1500:]}


def fsdp2_check(tmp: Path) -> dict:
    """Two torchrun processes pretraining the tiny config with FSDP2, when two GPUs are there."""
    if torch.cuda.device_count() < 2:
        return {"skipped": f"{torch.cuda.device_count()} GPU(s): FSDP2 over processes needs two"}
    demo = tmp / "demo"
    from multijepa.data.demo import generate_demo

    generate_demo(demo, n_train=64, n_test=16, progress=False)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone", "-m", "multijepa",
           "pretrain", "--config", "demo", "--data", str(demo / "train.jsonl"), "--out", str(tmp / "fsdp"),
           "--no-progress", "train.max_steps=5", "train.parallel=fsdp", "train.precision=bf16", "data.batch_size=16"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    return {"returncode": done.returncode, "tail": (done.stdout + done.stderr)[-1500:]}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="CPU, tiny flavour, no compile: seconds (what the tests run)")
    p.add_argument("--steps", type=int, default=None, help="steps per encoder kind and precision [12; --quick 3]")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the results to this JSON file")
    args = p.parse_args(argv)
    quick = args.quick or not torch.cuda.is_available()
    if not args.quick and quick:
        print("no CUDA device: running the --quick checks on the CPU", flush=True)
    device = torch.device("cpu" if quick else "cuda")
    config, batch, steps = ("tiny", 8, args.steps or 3) if quick else ("demo", 64, args.steps or 12)
    report: dict = {"machine": machine(), "quick": quick, "config": config, "torch": torch.__version__}
    print(f"machine: {json.dumps(report['machine'])}", flush=True)

    def check(name: str, fn):
        t0 = time.perf_counter()
        try:
            report[name] = fn()
        except Exception as e:  # a check that fails is a finding, not the end of the others
            report[name] = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-3000:]}
        print(f"{name} ({time.perf_counter() - t0:.0f} s): {json.dumps(report[name], default=str)[:1500]}", flush=True)
        if args.json:  # after every check, so a run cut short still leaves what it found
            Path(args.json).write_text(json.dumps(report, indent=2, default=str) + "\n")

    report["steps"] = {}
    for kind in KINDS:
        for precision in ("fp32", "bf16"):
            cfg = kind_config(config, kind, precision, not quick, device.type, batch)
            check(f"steps/{kind}/{precision}", lambda cfg=cfg: train_steps(cfg, steps, device))
            report["steps"][f"{kind}/{precision}"] = report.pop(f"steps/{kind}/{precision}")
    if not quick:
        cfg = kind_config(config, "transformer", "fp32", False, "cuda", batch)
        cpu_cfg = kind_config(config, "transformer", "fp32", False, "cpu", batch)

        def agreement():
            a, b = first_loss(cfg, torch.device("cuda")), first_loss(cpu_cfg, torch.device("cpu"))
            return {"cuda": a, "cpu": b, "abs_diff": abs(a - b), "agrees": abs(a - b) <= 1e-3}

        check("cpu_agreement", agreement)
    check("mamba_kernel", lambda: mamba_kernel_check(device))
    with tempfile.TemporaryDirectory() as tmp:
        check("vs_open_clip", lambda: vs_open_clip(quick, Path(tmp)))
        check("fsdp2", lambda: fsdp2_check(Path(tmp)) if not quick else {"skipped": "--quick"})
    ok = [r["finite"] and r["falls"] for r in report["steps"].values() if "finite" in r]
    report["all_steps_finite_and_falling"] = bool(ok) and all(ok) and len(ok) == len(report["steps"])
    print(f"all_steps_finite_and_falling: {report['all_steps_finite_and_falling']}", flush=True)
    write_result(args.json, report)
    return report


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
