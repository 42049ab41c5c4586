"""torchrun on CPU (gloo): 2 processes train exactly as 1 process with the same global batch."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node(demo: Path, out: Path, port: int, host: bool, *overrides: str, timeout: int = 120) -> subprocess.Popen:
    """One torchrun agent of a 2-node job (one process per node), c10d rendezvous on 127.0.0.1:
    as scripts/slurm_pretrain.sh runs on every node."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
           "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "two-nodes",
           "--rdzv-conf", f"is_host={str(host).lower()},join_timeout={timeout},read_timeout={timeout}",
           "-m", "multijepa", "pretrain", "--config", "tiny", "--data", str(demo / "train.jsonl"), "--out", str(out),
           "--no-progress", "train.log_every=1", "train.ckpt_every=1", "train.keep_checkpoints=50", "train.threads=1",
           "data.batch_size=8", "optim.eps=1e-3", *overrides]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, start_new_session=True)


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


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_held_out_evaluation_scores_as_one_process(demo, tmp_path, parallel):
    """`train.eval_data` under torchrun: every process embeds the held-out rows (FSDP2 gathers the
    sharded weights as it goes), rank 0 writes the records, and they are one process's."""
    held = f"train.eval_data={demo / 'test.jsonl'}"
    _pretrain(demo, tmp_path / "one", 1, held)
    _pretrain(demo, tmp_path / parallel, 2, held, f"train.parallel={parallel}")
    scores = []
    for run in (tmp_path / "one", tmp_path / parallel):
        records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        scores.append([(r["step"], r["heldout/R@1"], r["heldout/P@1"]) for r in records if "heldout/R@1" in r])
    assert [s[0] for s in scores[0]] == [s[0] for s in scores[1]] == [1, 2, 3]
    # float noise between the runs may reorder a near tie: at most one of the 6 x 24 queries
    assert torch.allclose(torch.tensor(scores[0]), torch.tensor(scores[1]), atol=1 / 144 + 1e-6), scores


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


# ---------------------------------------------------------------- review findings (issue 30)


def _without(demo: Path, modality: str, keep_every: int) -> Path:
    """The demo's rows, only every `keep_every`-th of them with `modality`: one source with every
    column, whose rows lack it one by one (as skipped bad rows would leave them)."""
    rows = [json.loads(line) for line in (demo / "train.jsonl").read_text().splitlines()]
    rows = [r if i % keep_every == 0 else {**r, modality: None} for i, r in enumerate(rows)]
    path = demo / f"without_{modality}_{keep_every}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_a_process_without_rows_of_a_modality_trains_as_one(demo, tmp_path):
    """One source with every column, 5 of 6 rows without an image: with 4 rows per process, some
    steps give a process no image at all, so its image encoder, predictor and head take no part in
    its loss. Every process still gives every weight a gradient (zero there), so DDP, which does not
    search for unused weights, does not wait for one that never comes."""
    path = _without(demo, "image", 6)
    src = f"data.sources=[{{path: {path}}}]"
    _pretrain(demo, tmp_path / "one", 1, src, "train.max_steps=5")
    _pretrain(demo, tmp_path / "two", 2, src, "train.max_steps=5")
    _assert_same_training(tmp_path / "one", tmp_path / "two", steps=5, atol=1e-4)


def test_learned_temperature_on_mixed_sources_trains_as_one(demo, tmp_path):
    """The learned temperature is read by the loss, outside the model's forward: with processes that
    lack a modality, it is still reduced once per step like every other weight."""
    m = demo / "train.jsonl"
    sources = (f"data.sources=[{{path: {m}, name: it, weight: 1, modalities: [image, text]}}, "
               f"{{path: {m}, name: ia, weight: 5, modalities: [image, audio]}}]")
    for nproc in (1, 2):
        _pretrain(demo, tmp_path / f"p{nproc}", nproc, sources, "model.learn_temperature=true", "train.max_steps=4")
    _assert_same_training(tmp_path / "p1", tmp_path / "p2", steps=4, atol=1e-4)


def test_a_non_finite_loss_on_one_process_stops_every_process():
    """Process 1's batch holds a NaN: both processes stop with the same one-line error at step 0,
    neither waits in the next collective for the other."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
           "-m", "tests.workers.nonfinite_step"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    out = done.stdout + done.stderr
    for rank in (0, 1):
        assert f"rank {rank}: FloatingPointError: step 0: the loss is not finite on process(es) 1" in out, out[-3000:]


@pytest.mark.parametrize("terms", [("loss.variance_weight=1", "loss.sigreg_weight=0.5"), ("loss.bind_input=context",)],
                         ids=["variance-sigreg", "context-binding"])
def test_batch_statistics_are_those_of_the_global_batch(demo, tmp_path, terms):
    """The variance hinge (over the shared embeddings), SIGReg (over the context tokens) and, where
    binding embeds the prediction context, the heads' running statistics of whole inputs are
    statistics of the whole global batch: 2 processes of 4 rows train as 1 process of 8."""
    _pretrain(demo, tmp_path / "one", 1, *terms)
    _pretrain(demo, tmp_path / "two", 2, *terms)
    _assert_same_training(tmp_path / "one", tmp_path / "two")


def test_a_resumed_run_gives_every_process_its_own_random_state(demo, tmp_path):
    """SIGReg samples at most 1,024 context tokens per process, from the process's own generator (64 px
    images: ~1,500 tokens on each). A 2-process run killed after step 2 and resumed on 2 processes
    draws what the uninterrupted run drew, on every process."""
    big = ("model.image.size=64", "loss.sigreg_weight=1", "data.batch_size=16", "train.max_steps=4")
    _pretrain(demo, tmp_path / "whole", 2, *big)
    _pretrain(demo, tmp_path / "cut", 2, *big)
    for c in sorted((tmp_path / "cut" / "checkpoints").iterdir())[2:]:
        shutil.rmtree(c)  # killed after step 2
    _pretrain(demo, tmp_path / "cut", 2, *big, resume=True)
    wa = load_file(str(latest_checkpoint(tmp_path / "whole") / "model.safetensors"))
    wb = load_file(str(latest_checkpoint(tmp_path / "cut") / "model.safetensors"))
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


def test_position_centred_targets_are_those_of_the_global_batch(demo, tmp_path):
    """model.target_norm=instance_position takes out each position's mean over the whole global
    batch (one all_reduce, captions padded to the longest): 2 processes train as 1."""
    _pretrain(demo, tmp_path / "one", 1, "model.target_norm=instance_position")
    _pretrain(demo, tmp_path / "two", 2, "model.target_norm=instance_position")
    _assert_same_training(tmp_path / "one", tmp_path / "two")


# ---------------------------------------------------------------- several nodes (issue 30, item 1)


def test_two_nodes_killed_mid_run_resume_on_one_and_train_as_one_process(demo, tmp_path):
    """Two torchrun agents, as two nodes would run them (`--nnodes 2`, c10d rendezvous), pretrain
    together; both are killed (SIGKILL, no goodbye) once a few checkpoints are written; the run
    resumes on one process and ends with the weights of one process that trained every step."""
    steps = 12
    args = (f"train.max_steps={steps}",)
    _pretrain(demo, tmp_path / "one", 1, *args, "train.keep_checkpoints=50")
    run, port = tmp_path / "nodes", _free_port()
    nodes = [_node(demo, run, port, host, *args) for host in (True, False)]
    try:
        deadline = time.time() + 240
        while not (run / "checkpoints" / "step_00000003").exists():
            assert time.time() < deadline and all(n.poll() is None for n in nodes), \
                "the nodes stopped before step 3: " + "".join(n.stderr.read()[-2000:] for n in nodes if n.poll() is not None)
            time.sleep(0.02)
    finally:
        for n in nodes:
            os.killpg(n.pid, signal.SIGKILL)
            n.wait()
    written = sorted(c.name for c in (run / "checkpoints").iterdir())
    assert f"step_{steps:08d}" not in written, f"the nodes finished before they were killed: {written}"
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert len({json.loads(line)["step"] for line in lines}) == len(lines)  # rank 0 alone logs
    _pretrain(demo, run, 1, *args, "train.keep_checkpoints=50", resume=True)
    _assert_same_training(tmp_path / "one", run, steps=steps, atol=2e-4)


def test_a_node_that_cannot_reach_the_rendezvous_stops(demo, tmp_path):
    """The second node of a job whose first never comes up: it gives up after its timeout with an
    error naming the rendezvous endpoint, and writes nothing."""
    port = _free_port()  # nothing listens there
    node = _node(demo, tmp_path / "r", port, False, "train.max_steps=2", timeout=10)
    try:
        _, err = node.communicate(timeout=240)
    finally:
        if node.poll() is None:
            os.killpg(node.pid, signal.SIGKILL)
    assert node.returncode != 0
    assert f"127.0.0.1:{port}" in err, err[-2000:]
    assert not (tmp_path / "r").exists()


# ---------------------------------------------------------------- embed and index spread (issue 30, item 2)


def _cli(nproc: int, *args: str) -> None:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--standalone"] \
        if nproc > 1 else [sys.executable]
    done = subprocess.run([*launcher, "-m", "multijepa", *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def test_embed_and_index_with_two_processes_equal_one(run, demo, tmp_path):
    """`embed` and `index` under torchrun: each process embeds its share of the rows and writes
    its own shard, process 0 joins them; the vectors, row ids and search results are one process's."""
    import numpy as np

    from multijepa.retrieval.index import EmbeddingIndex

    data = str(demo / "test.jsonl")
    for nproc in (1, 2):
        _cli(nproc, "embed", "--checkpoint", str(run), "--data", data, "--out", str(tmp_path / f"emb{nproc}"))
        _cli(nproc, "index", "--checkpoint", str(run), "--data", data, "--out", str(tmp_path / f"idx{nproc}"),
             "--no-progress", "chunk_rows=5")  # 24 rows: 5 parts, 3 embedded by process 0 and 2 by process 1
    for m in ("image", "text", "audio"):
        assert np.array_equal(np.load(tmp_path / "emb1" / f"{m}_rows.npy"), np.load(tmp_path / "emb2" / f"{m}_rows.npy"))
        assert np.allclose(np.load(tmp_path / "emb1" / f"{m}.npy"), np.load(tmp_path / "emb2" / f"{m}.npy"), atol=1e-5)
    assert not (tmp_path / "emb2" / "shards").exists() and not (tmp_path / "idx2" / "parts").exists()
    one, two = EmbeddingIndex(tmp_path / "idx1"), EmbeddingIndex(tmp_path / "idx2")
    assert one.info["modalities"] == two.info["modalities"]
    queries = np.load(tmp_path / "emb1" / "text.npy")
    for m in one.modalities:
        assert np.array_equal(one.rows[m], two.rows[m])
        s1, r1 = one.search(queries, m, k=5)
        s2, r2 = two.search(queries, m, k=5)
        assert np.array_equal(r1, r2) and np.allclose(s1, s2, atol=1e-5)


def test_index_of_shards_with_two_processes_equals_one(run, demo, tmp_path):
    """The same for a corpus of WebDataset shards (the format streamed in training)."""
    import numpy as np

    from multijepa.config import SourceConfig
    from multijepa.data.shards import write_shards
    from multijepa.data.sources import open_source
    from multijepa.retrieval.index import EmbeddingIndex

    src = open_source(SourceConfig(path=str(demo / "test.jsonl"), name="test"), {}, ["image", "text", "audio"], streaming=False)
    write_shards(src, tmp_path / "shards", ["image", "text", "audio"], shard_size=10)
    columns = ("data.columns.image=png", "data.columns.text=txt", "data.columns.audio=wav")
    for nproc in (1, 2):
        _cli(nproc, "index", "--checkpoint", str(run), "--data", str(tmp_path / "shards" / "shard-*.tar"),
             "--out", str(tmp_path / f"idx{nproc}"), "--no-progress", "chunk_rows=7", *columns)
    one, two = EmbeddingIndex(tmp_path / "idx1"), EmbeddingIndex(tmp_path / "idx2")
    assert one.info["modalities"] == two.info["modalities"] == {"image": 24, "text": 24, "audio": 24}
    assert [one.metadata(i)["__key__"] for i in range(24)] == [two.metadata(i)["__key__"] for i in range(24)]
    for m in one.modalities:
        q = np.stack([one.vector(int(r), m) for r in one.rows[m][:6]])
        assert np.array_equal(one.search(q, m, k=5)[1], two.search(q, m, k=5)[1])
