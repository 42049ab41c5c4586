"""The benchmark scripts run (on the tiny flavour, a step or two), so they stay in step with the
builder and data pipeline they import. Their figures are not checked here: no timed assertions."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent


def _run(script: str, *args: str) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args], capture_output=True, text=True,
                          env=env, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done.stdout


def test_step_throughput_runs_and_prints_its_ratio(tmp_path):
    out = _run("step_throughput.py", "--config", "tiny", "--steps", "1", "--warmup", "0", "--json", str(tmp_path / "r.json"))
    result = json.loads((tmp_path / "r.json").read_text())
    assert f"ratio_vs_open_clip: {result['ratio_vs_open_clip']:.3f}\n" in out
    assert result["ratio_vs_open_clip"] > 0 and len(result["results"]) == 3


def test_loader_benchmark_runs(demo, tmp_path):
    _run("loader.py", "--data", str(demo / "train.jsonl"), "--config", "tiny", "--batches", "2", "--warmup", "1",
         "--workers", "0", "--steps", "1", "--step-warmup", "1", "--json", str(tmp_path / "r.json"))
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["step"]["samples_per_s"] > 0 and result["loader"][0]["samples_per_s"] > 0
