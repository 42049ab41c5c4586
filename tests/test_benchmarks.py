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


def test_vs_clip_benchmark_runs_every_arm_and_prints_the_headline_figures(tmp_path):
    out = _run("vs_clip.py", "--config", "tiny", "--seconds", "2", "--fractions", "1.0", "0.5", "--n", "24",
               "--n-test", "12", "--vqa-steps", "2", "--caption-steps", "2", "--caption-config", "caption_tiny",
               "--steps", "clip=3", "--pred-only", "--ablations", "--work", str(tmp_path / "work"),
               "--json", str(tmp_path / "r.json"))
    result = json.loads((tmp_path / "r.json").read_text())
    for key in ("quality_ratio_vs_clip_paired", "quality_ratio_vs_clip_scarce", "quality_ratio_vs_clip_pairs_only_scarce",
                "step_time_ratio_vs_clip", "frozen_vqa_delta_vs_clip", "retrieval_delta_vs_flip_paired",
                "frozen_caption_delta_vs_clip", "frozen_caption_delta_vs_flip", "frozen_vqa_delta_vs_clip_scarce"):
        assert f"\n{key}: {result[key]:.3f}\n" in out + "\n" and result[f"{key}_s0"] == result[key]
    assert f"order_accuracy: {json.dumps(result['order_accuracy'])}" in out
    arms = {(r["arm"], r["paired_fraction"]) for r in result["results"]}
    ablations = {"jepa_early", "jepa_start60", "jepa_start90", "jepa_nopred", "jepa_flip", "jepa_clipa", "jepa_ctx", "jepa_sigreg"}
    assert arms == {("jepa", 1.0), ("clip", 1.0), ("flip", 1.0), ("pred_only", 1.0), ("jepa", 0.5), ("clip", 0.5),
                    ("flip", 0.5), ("clip_mix", 0.5), ("jepa_nofloor", 0.5),
                    *((a, f) for a in ablations for f in (1.0, 0.5))}
    for r in result["results"]:
        assert set(r["probe"]) == {"image", "text", "audio"} and len(r["P@1"]) == 6 and r["steps"] > 0
        assert ("vqa_accuracy" in r) == ("caption" in r) == (r["arm"] != "pred_only")
        assert r["steps"] == 3 if r["arm"] == "clip" else True  # --steps clip=3 replaces its time budget
        assert r["order"]["n"] > 0 and 0 <= r["order"]["text"] <= 1 and 0 <= r["order"]["audio"] <= 1
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

    model, data = load_run(tmp_path / "work/run_pred_only_1_s0"), tmp_path / "work/data_1"
    untrained = supervised_probes(model, data / "train.jsonl", data / "test.jsonl", steps=0)
    assert untrained == pred_only["probe_random_init"]
    assert not any(k.startswith(("target_encoders.", "predictors.")) for k in _weights(tmp_path / "work/run_clip_1_s0"))


def test_vs_clip_reuses_the_runs_an_earlier_call_trained_and_refuses_other_settings(tmp_path):
    args = ["--config", "tiny", "--fractions", "1.0", "--n", "24", "--n-test", "12", "--arms", "clip",
            "--vqa-steps", "0", "--work", str(tmp_path / "work")]
    _run("vs_clip.py", *args, "--steps", "clip=2", "--caption-steps", "0", "--json", str(tmp_path / "first.json"))
    trained = (tmp_path / "work/run_clip_1_s0/metrics.jsonl").read_text()
    _run("vs_clip.py", *args, "--steps", "clip=2", "--caption-steps", "2", "--caption-config", "caption_tiny",
         "--reuse-runs", "--json", str(tmp_path / "again.json"))
    first, again = (json.loads((tmp_path / f).read_text())["results"][0] for f in ("first.json", "again.json"))
    assert (tmp_path / "work/run_clip_1_s0/metrics.jsonl").read_text() == trained  # not trained again
    assert again["steps"] == first["steps"] == 2 and again["mean_P@1"] == first["mean_P@1"]
    assert "caption" in again and "caption" not in first
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    other = subprocess.run([sys.executable, str(ROOT / "benchmarks/vs_clip.py"), *args, "--steps", "clip=3",
                            "--caption-steps", "0", "--reuse-runs"], capture_output=True, text=True, env=env, cwd=ROOT)
    assert other.returncode != 0 and "trained with other settings (train.max_steps)" in other.stderr
    assert "Traceback" not in other.stderr


def test_vs_clip_side_by_side_trains_the_arms_at_once_one_thread_each(tmp_path):
    from multijepa.model import read_run_config

    work = tmp_path / "work"
    out = _run("vs_clip.py", "--config", "tiny", "--fractions", "1.0", "--n", "24", "--n-test", "12", "--arms", "clip",
               "jepa", "--steps", "clip=2", "jepa=3", "--vqa-steps", "0", "--caption-steps", "0", "--side-by-side",
               "--work", str(work), "--json", str(tmp_path / "r.json"))
    assert "seed 0: training clip jepa side by side" in out
    results = {r["arm"]: r for r in json.loads((tmp_path / "r.json").read_text())["results"]}
    assert results["clip"]["steps"] == 2 and results["jepa"]["steps"] == 3
    for arm in ("clip", "jepa"):
        assert read_run_config(work / f"run_{arm}_1_s0").train.threads == 1
        assert (work / f"run_{arm}_1_s0.log").exists()  # each process's own output
    both = subprocess.run([sys.executable, str(ROOT / "benchmarks/vs_clip.py"), "--side-by-side", "--reuse-runs"],
                          capture_output=True, text=True, cwd=ROOT)
    assert both.returncode == 2 and "give one" in both.stderr


def test_vs_clip_mask_arms_train_with_their_masks_and_unknown_arms_are_refused(tmp_path):
    from multijepa.model import read_run_config

    _run("vs_clip.py", "--config", "tiny", "--fractions", "1.0", "--n", "24", "--n-test", "12", "--arms",
         "jepa_ctx_random", "--steps", "jepa_ctx_random=2", "--vqa-steps", "0", "--caption-steps", "0",
         "--work", str(tmp_path / "work"))
    cfg = read_run_config(tmp_path / "work/run_jepa_ctx_random_1_s0")
    assert cfg.model.image.mask.kind == cfg.model.audio.mask.kind == "random"
    assert cfg.loss.bind_input == "context" and cfg.loss.pred_start == 0
    typo = subprocess.run([sys.executable, str(ROOT / "benchmarks/vs_clip.py"), "--arms", "jepa_ctx_randm"],
                          capture_output=True, text=True, cwd=ROOT)
    assert typo.returncode == 2 and "invalid choice: 'jepa_ctx_randm'" in typo.stderr


def test_vs_clip_judges_a_cross_only_arm_as_the_default_with_headline(tmp_path):
    from multijepa.model import read_run_config

    _run("vs_clip.py", "--config", "tiny", "--fractions", "1.0", "--n", "24", "--n-test", "12", "--arms", "clip",
         "jepa_cross", "--headline", "jepa_cross", "--steps", "clip=2", "jepa_cross=2", "--vqa-steps", "0",
         "--caption-steps", "0", "--work", str(tmp_path / "work"), "--json", str(tmp_path / "r.json"))
    cfg = read_run_config(tmp_path / "work/run_jepa_cross_1_s0")
    assert cfg.model.predictor.own_context is False
    result = json.loads((tmp_path / "r.json").read_text())
    p1 = {r["arm"]: r["mean_P@1"] for r in result["results"]}
    assert result["quality_ratio_vs_clip_paired"] == p1["jepa_cross"] / p1["clip"]
    absent = subprocess.run([sys.executable, str(ROOT / "benchmarks/vs_clip.py"), "--arms", "clip", "--headline", "flip"],
                            capture_output=True, text=True, cwd=ROOT)
    assert absent.returncode == 2 and "--headline flip is not among --arms" in absent.stderr


def _weights(run):
    from safetensors import safe_open

    from multijepa.checkpoint import latest_checkpoint

    with safe_open(str(latest_checkpoint(run) / "model.safetensors"), "pt") as f:
        return list(f.keys())


def test_gpu_check_runs_its_checks_on_the_cpu_in_quick_mode(tmp_path):
    """The GPU check's code paths, on the CPU at the tiny flavour: it cannot rot between GPU sessions."""
    out = _run("gpu_check.py", "--quick", "--json", str(tmp_path / "r.json"))
    result = json.loads((tmp_path / "r.json").read_text())
    assert set(result["steps"]) == {f"{k}/{p}" for k in ("transformer", "mamba", "hybrid") for p in ("fp32", "bf16")}
    for r in result["steps"].values():
        assert r["finite"] and len(r["losses"]) == 3
    assert result["mamba_kernel"]["agrees"]
    assert result["vs_open_clip"] == {"skipped": "--quick"}
    assert f"all_steps_finite_and_falling: {result['all_steps_finite_and_falling']}" in out
