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


def test_vs_clip_benchmark_runs_both_arms_and_prints_both_ratios(tmp_path):
    out = _run("vs_clip.py", "--config", "tiny", "--seconds", "2", "--fractions", "1.0", "0.5", "--n", "24",
               "--n-test", "12", "--vqa-steps", "2", "--pred-only", "--work", str(tmp_path / "work"),
               "--json", str(tmp_path / "r.json"))
    result = json.loads((tmp_path / "r.json").read_text())
    lines = out.strip().splitlines()
    assert lines[-2] == f"quality_ratio_vs_clip_paired: {result['quality_ratio_vs_clip_paired']:.3f}"
    assert lines[-1] == f"quality_ratio_vs_clip_scarce: {result['quality_ratio_vs_clip_scarce']:.3f}"
    arms = {(r["arm"], r["paired_fraction"]) for r in result["results"]}
    assert arms == {("jepa", 1.0), ("clip", 1.0), ("pred_only", 1.0), ("jepa", 0.5), ("clip", 0.5), ("clip_mix", 0.5)}
    assert f"quality_ratio_vs_clip_pairs_only_scarce: {result['quality_ratio_vs_clip_pairs_only_scarce']:.3f}" in out
    for r in result["results"]:
        assert set(r["probe"]) == {"image", "text", "audio"} and len(r["P@1"]) == 6 and r["steps"] > 0
        assert ("vqa_accuracy" in r) == (r["arm"] != "pred_only")
    pred_only = next(r for r in result["results"] if r["arm"] == "pred_only")
    assert set(pred_only["probe_random_init"]) == set(pred_only["probe_input"]) == {"image", "text", "audio"}
    assert set(pred_only["probe_supervised"]) == {"image", "text", "audio"}
    assert "random init: image lin" in out and "the inputs, no encoder: image lin" in out
    assert "the towers trained on the label, same steps: image lin" in out
    # the label-trained reference starts from the very towers probed as "random init"
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from vs_clip import supervised_probes
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    from multijepa.model import load_run

    model, data = load_run(tmp_path / "work/run_pred_only_1"), tmp_path / "work/data_1"
    untrained = supervised_probes(model, data / "train.jsonl", data / "test.jsonl", steps=0)
    assert untrained == pred_only["probe_random_init"]
    assert not any(k.startswith(("target_encoders.", "predictors.")) for k in _weights(tmp_path / "work/run_clip_1"))


def _weights(run):
    from safetensors import safe_open

    from multijepa.checkpoint import latest_checkpoint

    with safe_open(str(latest_checkpoint(run) / "model.safetensors"), "pt") as f:
        return list(f.keys())
