"""The command line on broken inputs, as a user meets them: each case runs `multijepa` in a
subprocess and must end with its exit status, one `error:` line on stderr naming the culprit, no
traceback, nothing written outside the folders the command was given, and a run folder it refused
left as it was."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from multijepa.cli import main
from multijepa.run_folder import LOCK_NAME


def _tree(root: Path) -> dict:
    """Every file under root -> (size, mtime): what 'unchanged' compares (the lock file aside: a
    refusing command may take and release it, leaving it empty as it found it)."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != LOCK_NAME} if root.exists() else {}


@pytest.fixture(scope="module")
def world(run, demo, tmp_path_factory):
    """A sandbox: the demo data, a trained run, an index and a VQA folder, and broken copies of each."""
    w = tmp_path_factory.mktemp("fuzz")
    data = w / "data"
    shutil.copytree(demo, data)
    rows = [json.loads(line) for line in (data / "train.jsonl").read_text().splitlines()]
    (data / "not_utf8.jsonl").write_bytes(b'{"image": "images/train_00000.png", "text": "caf\xe9"}\n')
    (data / "empty.jsonl").write_text("")
    (data / "one_row.jsonl").write_text(json.dumps(rows[0]) + "\n")
    (data / "text_only.jsonl").write_text("".join(json.dumps({"text": r["text"]}) + "\n" for r in rows))
    shutil.copytree(run, w / "run")
    assert main(["index", "--checkpoint", str(w / "run"), "--data", str(data / "test.jsonl"), "--out", str(w / "index"),
                 "--no-progress"]) == 0
    for name, damage in (("cut_faiss", lambda d: _cut(d / "text.faiss", 100)),
                         ("random_faiss", lambda d: (d / "text.faiss").write_bytes(os.urandom(4096))),
                         ("cut_rows", lambda d: _cut(d / "rows.jsonl", 200))):
        shutil.copytree(w / "index", w / name)
        damage(w / name)
    broken = w / "run_cut_weights"
    shutil.copytree(run, broken)
    for ckpt in (broken / "checkpoints").iterdir():
        _cut(ckpt / "model.safetensors", 1000)
    vqa_rows = data / "vqa_train.jsonl"
    assert main(["vqa", "train", "--checkpoint", str(w / "run"), "--data", str(vqa_rows), "--out", str(w / "vqa"),
                 "--config", "vqa_tiny", "--no-progress"]) == 0
    shutil.copytree(w / "vqa", w / "vqa_cut")
    _cut(w / "vqa_cut" / "model.safetensors", 1000)
    (w / "shards").mkdir()
    (w / "shards" / "shard-000000.tar").write_bytes(b"old")
    return w


def _cut(path: Path, keep: int) -> None:
    path.write_bytes(path.read_bytes()[:keep])


PRE = ["pretrain", "--config", "tiny", "--no-progress"]
# (id, arguments ({w} = the sandbox), exit status, what the error line must name, the folder it must leave as it was)
CASES = [
    ("ckpt_every_0", PRE + ["--data", "{w}/data/train.jsonl", "--out", "{w}/new", "train.ckpt_every=0"], 1, "train.ckpt_every", "{w}/new"),
    ("negative_lr", PRE + ["--out", "{w}/new", "optim.lr=-1", "--data", "{w}/data/train.jsonl"], 1, "optim.lr", "{w}/new"),
    ("max_steps_0", PRE + ["--data", "{w}/data/train.jsonl", "--out", "{w}/new", "--max-steps", "0"], 1, "train.max_steps", "{w}/new"),
    ("unordered_scale", PRE + ["--data", "{w}/data/train.jsonl", "--out", "{w}/new", "model.image.mask.target_scale=[0.3,0.1]"],
     1, "model.image.mask.target_scale", "{w}/new"),
    ("unknown_key", PRE + ["--data", "{w}/data/train.jsonl", "--out", "{w}/new", "optim.lrr=1"], 1, "optim.lrr", "{w}/new"),
    ("no_such_config", ["pretrain", "--config", "nosuch", "--out", "{w}/new"], 1, "nosuch", "{w}/new"),
    ("not_utf8", PRE + ["--data", "{w}/data/not_utf8.jsonl", "--out", "{w}/new"], 1, "not_utf8.jsonl line 1", "{w}/new"),
    ("empty_manifest", PRE + ["--data", "{w}/data/empty.jsonl", "--out", "{w}/new"], 1, "empty.jsonl is empty", "{w}/new"),
    ("missing_manifest", PRE + ["--data", "{w}/data/nothing.jsonl", "--out", "{w}/new"], 1, "nothing.jsonl", "{w}/new"),
    ("one_row", PRE + ["--data", "{w}/data/one_row.jsonl", "--out", "{w}/new"], 1, "fewer than one batch", "{w}/new"),
    ("modality_no_source_has", PRE + ["--data", "{w}/data/text_only.jsonl", "--out", "{w}/new"], 1, "image, audio", "{w}/new"),
    ("another_runs_folder", PRE + ["--data", "{w}/data/train.jsonl", "--out", "{w}/run"], 1, "--resume", "{w}/run"),
    ("resume_changes_model", ["pretrain", "--out", "{w}/run", "--resume", "model.embed_dim=32"], 1, "model.embed_dim", "{w}/run"),
    ("tokenizer_far_below", ["tokenizer", "train", "--data", "{w}/data/train.jsonl", "--vocab-size", "300", "--out",
                             "{w}/tok/t.model"], 2, "--vocab-size 300", "{w}/tok"),
    ("shards_into_old_shards", ["data", "shards", "{w}/data/train.jsonl", "--out", "{w}/shards"], 2, "{w}/shards", "{w}/shards"),
    ("search_no_index", ["search", "--index", "{w}/nothing", "--text", "x"], 1, "{w}/nothing", None),
    ("search_cut_faiss", ["search", "--index", "{w}/cut_faiss", "--text", "x"], 1, "text.faiss", "{w}/cut_faiss"),
    ("search_random_faiss", ["search", "--index", "{w}/random_faiss", "--text", "x"], 1, "text.faiss", "{w}/random_faiss"),
    ("search_cut_rows", ["search", "--index", "{w}/cut_rows", "--text", "x"], 1, "rows.jsonl", "{w}/cut_rows"),
    ("search_missing_image", ["search", "--index", "{w}/index", "--image", "{w}/no.png"], 1, "no.png", "{w}/index"),
    ("embed_cut_weights", ["embed", "--checkpoint", "{w}/run_cut_weights", "--out", "{w}/emb"], 1, "run_cut_weights", "{w}/run_cut_weights"),
    ("embed_not_a_run", ["embed", "--checkpoint", "{w}/data", "--out", "{w}/emb"], 1, "config.yaml", "{w}/data"),
    ("retrieval_empty", ["eval", "retrieval", "--checkpoint", "{w}/run", "--data", "{w}/data/empty.jsonl"], 1, "empty.jsonl", "{w}/run"),
    ("vqa_batch_0", ["vqa", "train", "--checkpoint", "{w}/run", "--data", "{w}/data/vqa_train.jsonl", "--out", "{w}/vqa_new",
                     "train.batch_size=0"], 1, "train.batch_size", "{w}/vqa_new"),
    ("vqa_cut_weights", ["vqa", "eval", "--checkpoint", "{w}/vqa_cut", "--data", "{w}/data/vqa_test.jsonl"], 1, "model.safetensors", "{w}/vqa_cut"),
    ("vqa_missing_image", ["vqa", "predict", "--checkpoint", "{w}/vqa", "--image", "{w}/no.png", "--question", "what?"], 1, "no.png", "{w}/vqa"),
    ("index_bad_kind", ["index", "--checkpoint", "{w}/run", "--data", "{w}/data/test.jsonl", "--out", "{w}/idx_new", "kind=annoy"],
     1, "kind", "{w}/idx_new"),
]


def _run(world: Path, args: list[str]) -> subprocess.CompletedProcess:
    home = world / "home"  # HOME and the working folder: nothing may land there (bar the datasets cache)
    home.mkdir(exist_ok=True)
    env = {**os.environ, "HOME": str(home), "HF_HOME": str(world / "hf_cache"), "OMP_NUM_THREADS": "1",
           "MULTIJEPA_DEMO_DIR": str(world / "no_demo")}
    env.pop("MULTIJEPA_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "multijepa.cli", *args], cwd=home, env=env, capture_output=True,
                          text=True, timeout=300)


def test_broken_inputs_end_in_one_line(world):
    def fill(x: str, name: str) -> str:  # each case its own new folder: two run at once, and a folder has one owner
        return x.replace("{w}/new", f"{world}/new_{name}").replace("{w}", str(world))

    watched = {c[0]: Path(fill(c[4], c[0])) for c in CASES if c[4]}
    before = {k: _tree(p) for k, p in watched.items()}
    with ThreadPoolExecutor(2) as pool:  # torch's import dominates each case: two at a time
        results = list(pool.map(lambda c: _run(world, [fill(a, c[0]) for a in c[1]]), CASES))
    failures = []
    for (name, _, code, culprit, _), r in zip(CASES, results):
        errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
        problems = []
        if r.returncode != code:
            problems.append(f"exit {r.returncode}, expected {code}")
        if "Traceback" in r.stderr:
            problems.append("a traceback")
        if len(errors) != 1 or fill(culprit, name) not in errors[0]:
            problems.append(f"not one error line naming {fill(culprit, name)!r}")
        if name in watched and _tree(watched[name]) != before[name]:
            problems.append(f"{watched[name]} changed")
        if problems:
            failures.append(f"{name}: {'; '.join(problems)}\n    stderr: {r.stderr.strip()[-600:]}")
    assert not failures, "\n".join(failures)
    assert _tree(world / "home") == {}, "written outside the given folders"
    assert not (world / "no_demo").exists(), "the demo data was generated although --data was given"
