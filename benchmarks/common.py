"""What every benchmark script reports the same way: the machine it ran on, and its JSON file.
(The scripts are run as `python benchmarks/NAME.py`, so this folder is on their path.)"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import torch


def machine(device: torch.device | None = None) -> dict:
    """CPU cores usable by this process, torch threads and versions (and the device, when given)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    m = {"cpu_cores": cores, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
         "torch": torch.__version__, "python": platform.python_version(), "platform": platform.platform()}
    if device is not None:
        m["device"] = str(device)
        if device.type == "cuda":
            m["gpu"] = torch.cuda.get_device_name(device)
    return m


def write_result(path: str | None, result: dict) -> None:
    """--json FILE: the whole result, for tables and later comparison."""
    if path:
        Path(path).write_text(json.dumps(result, indent=2) + "\n")
        print(f"results written to {path}")


def logged_step_seconds(run: Path, batch: int = 64) -> float:
    """Seconds per training step of a pretraining run folder, from its metrics.jsonl (samples/s per
    logging interval), leaving out the first interval, which holds the start-up."""
    logged = [json.loads(line) for line in (Path(run) / "metrics.jsonl").read_text().splitlines()]
    rates = [r["samples_per_s"] for r in logged[1:]]
    return batch * len(rates) / sum(rates)


def small_demo(work: Path, n: int) -> Path:
    """A demo dataset of n training scenes under work/data -> its train.jsonl."""
    from multijepa.data.demo import generate_demo

    generate_demo(Path(work) / "data", n_train=n, n_test=8, progress=False)
    return Path(work) / "data" / "train.jsonl"
