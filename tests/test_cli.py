"""The command line end to end on the tiny config and a small demo dataset."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import torch
from safetensors.torch import load_file

from multijepa.cli import main
from multijepa.model import MultiJEPA


def test_pretrain_writes_a_complete_run_folder(run):
    assert (run / "config.yaml").is_file() and (run / "tokenizer.model").is_file()
    assert (run / "checkpoints" / "step_00000004" / "model.safetensors").is_file()
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4]
    for key in ("loss", "loss/pred", "loss/bind", "lr", "samples_per_s", "std_target/image", "std_pred/audio", "rankme/text"):
        assert all(np.isfinite(r[key]) for r in records), key


def test_eval_retrieval_writes_all_six_directions(run, demo, tmp_path, capsys):
    out = tmp_path / "ret.json"
    assert main(["eval", "retrieval", "--checkpoint", str(run), "--data", str(demo / "test.jsonl"), "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    mods = ("image", "text", "audio")
    assert set(res) == {f"{a}->{b}" for a in mods for b in mods if a != b}
    for r in res.values():
        assert 0 <= r["R@1"] <= r["R@5"] <= r["R@10"] <= 1 and r["median_rank"] >= 1 and r["n"] == 24
    assert "image->text" in capsys.readouterr().out


def test_embed_and_the_python_api_agree(run, demo, tmp_path):
    assert main(["embed", "--checkpoint", str(run), "--data", str(demo / "test.jsonl"), "--out", str(tmp_path)]) == 0
    model = MultiJEPA.from_pretrained(run)
    rows = [json.loads(line) for line in (demo / "test.jsonl").read_text().splitlines()]
    for m, api in (("image", model.embed_images), ("text", model.embed_texts), ("audio", model.embed_audio)):
        z = np.load(tmp_path / f"{m}.npy")
        r = np.load(tmp_path / f"{m}_rows.npy")
        assert z.dtype == np.float32 and r.dtype == np.int64 and z.shape == (24, model.cfg.embed_dim)
        assert np.allclose(np.linalg.norm(z, axis=1), 1, atol=1e-5) and r.tolist() == list(range(24))
        values = [row[m] if m == "text" else str(demo / row[m]) for row in rows[:3]]
        direct = api(values)
        assert direct.shape == (3, model.cfg.embed_dim)
        assert torch.allclose(direct, torch.from_numpy(z[:3]), atol=1e-4)


def test_an_existing_run_is_not_overwritten(run, demo, capsys):
    code = main(["pretrain", "--config", "tiny", "--data", str(demo / "train.jsonl"), "--out", str(run), "--no-progress"])
    assert code == 1 and "--resume" in capsys.readouterr().err


def test_a_bad_row_stops_with_its_name(demo, tmp_path, capsys):
    rows = [json.loads(line) for line in (demo / "train.jsonl").read_text().splitlines()]
    rows[5]["image"] = "images/does_not_exist.png"
    manifest = demo / "broken.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code = main(["pretrain", "--config", "tiny", "--data", str(manifest), "--out", str(tmp_path / "r"), "--no-progress", "train.max_steps=6"])
    err = capsys.readouterr().err
    assert code == 1
    assert "row 5" in err and "does_not_exist.png" in err and "Traceback" not in err


def _final_weights(run_dir):
    ckpts = sorted((run_dir / "checkpoints").iterdir())
    return load_file(str(ckpts[-1] / "model.safetensors")), ckpts[-1].name


def test_kill_9_then_resume_equals_an_uninterrupted_run(demo, tmp_path):
    steps = 40
    args = ["--config", "tiny", "--data", str(demo / "train.jsonl"), "--max-steps", str(steps), "--no-progress",
            "train.ckpt_every=5", "train.log_every=5", "train.threads=1"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "multijepa.cli", "pretrain"]

    ref = tmp_path / "ref"
    subprocess.run(cmd + args + ["--out", str(ref)], check=True, env=env, capture_output=True)

    run = tmp_path / "killed"
    proc = subprocess.Popen(cmd + args + ["--out", str(run)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (run / "checkpoints" / "step_00000010").exists():
        assert proc.poll() is None and time.time() < deadline, "the run ended before it could be killed"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    _, last = _final_weights(run)
    assert last < f"step_{steps:08d}", "the kill came too late to interrupt training"

    subprocess.run(cmd + args + ["--out", str(run), "--resume"], check=True, env=env, capture_output=True)
    resumed, name = _final_weights(run)
    reference, ref_name = _final_weights(ref)
    assert name == ref_name == f"step_{steps:08d}"
    logged = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert logged == list(range(5, steps + 1, 5)), "steps logged twice or missing after the resume"
    assert resumed.keys() == reference.keys()
    for k in reference:
        assert torch.allclose(resumed[k].float(), reference[k].float(), atol=1e-6), k
