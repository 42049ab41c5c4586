"""The saved index: faiss kinds against exact search, save/load, resume, search from the CLI."""

import json

import numpy as np
import pytest
import torch

from multijepa.cli import main
from multijepa.config import ConfigError
from multijepa.model import MultiJEPA
from multijepa.retrieval import embed as embedding
from multijepa.retrieval.embed import embed_manifest
from multijepa.retrieval.index import (
    EmbeddingIndex,
    IndexFolderError,
    build_faiss_index,
    build_index,
    build_ivfpq_from_parts,
    index_config,
    ivf_lists,
    read_ondisk_index,
    rerank_search,
)
from multijepa.retrieval.search import embed_query


def _clustered(n, d, seed=0):
    """Unit vectors around 50 centres: neighbourhoods an approximate index can find."""
    g = np.random.default_rng(seed)
    centres = g.standard_normal((50, d))
    x = centres[g.integers(50, size=n)] + 0.5 * g.standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _exact_topk(x, q, k):
    return torch.from_numpy(q @ x.T).topk(k, dim=1)


def test_flat_index_equals_exact_topk():
    x, q = _clustered(2000, 32), _clustered(50, 32, seed=1)
    scores, ids = build_faiss_index(x, index_config()).search(q, 10)
    exact = _exact_topk(x, q, 10)
    assert np.array_equal(ids, exact.indices.numpy())
    assert np.allclose(scores, exact.values.numpy(), atol=1e-5)


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_indexes_find_the_true_neighbours(kind):
    x, q = _clustered(4000, 32), _clustered(100, 32, seed=1)
    cfg = index_config([f"kind={kind}", "nprobe=16"])
    _, ids = build_faiss_index(x, cfg).search(q, 10)
    exact = _exact_topk(x, q, 10).indices.numpy()
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, exact)])
    assert recall >= 0.9, recall


def _parts(x: np.ndarray, folder, parts: int) -> list:
    """x written as `multijepa index`'s parts (image vectors and their rows), `parts` files."""
    folder.mkdir()
    paths = []
    for i, rows in enumerate(np.array_split(np.arange(len(x)), parts)):
        paths.append(folder / f"part-{i:06d}.npz")
        with open(paths[-1], "wb") as f:
            np.savez(f, z_image=x[rows], rows_image=rows + 1000, errors=np.array("[]"))
    return paths


def test_ivfpq_from_parts_on_disk_finds_the_true_neighbours(tmp_path):
    """IVF-PQ filled part by part, lists merged on disk: the codes alone find most of the true top 10,
    the exact re-rank from the stored vectors nearly all, with the exact scores; 1 part or 5 give one
    index; the folder can move (the lists are found beside the index file)."""
    x, q = _clustered(12_000, 32), _clustered(100, 32, seed=1)
    cfg = index_config(["kind=ivfpq", "nlist=64", "nprobe=16", "pq_m=8", "rerank=10"])
    exact = _exact_topk(x, q, 10)
    found = {}
    for parts in (1, 5):
        out = tmp_path / f"p{parts}"
        build_ivfpq_from_parts(_parts(x, out, parts), "image", len(x), 32, cfg, out)
        moved = tmp_path / f"moved{parts}"
        out.rename(moved)
        index = read_ondisk_index(moved / "image.faiss")
        index.nprobe = cfg.nprobe
        vectors = np.load(moved / "image_vectors.npy", mmap_mode="r")
        assert np.array_equal(vectors, x) and np.array_equal(np.load(moved / "image_rows.npy"), np.arange(len(x)) + 1000)
        assert not any(moved.glob("*.tmp")) and not (moved / "image.shards").exists()
        _, plain = index.search(q, 10)
        scores, ids = rerank_search(index, vectors, q, 10, cfg.rerank)
        recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, exact.indices.numpy())])
        assert recall >= 0.95, recall
        assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(plain, exact.indices.numpy())]) < recall
        right = ids == exact.indices.numpy()
        assert np.allclose(scores[right], exact.values.numpy()[right], atol=1e-5)  # exact, not code, scores
        assert (moved / "image.ivfdata").stat().st_size <= x.nbytes / 4  # codes and ids: 8 + 8 of 128 bytes a vector
        found[parts] = ids
    assert np.array_equal(found[1], found[5])


def test_ivf_list_count_follows_the_corpus_size():
    assert ivf_lists(1_000_000) == 4000
    assert ivf_lists(100) == 2  # at least 39 training points per list
    assert ivf_lists(10_000, nlist=64) == 64


def test_an_ivfpq_index_folder_searches_like_torch(run, demo, tmp_path):
    """kind=ivfpq through `multijepa index` on a small corpus (fewer PQ bits, one list): with the
    re-rank every candidate is re-scored exactly, so the results are exact search's."""
    model = MultiJEPA.from_pretrained(run)
    build_index(model, demo / "test.jsonl", tmp_path / "idx", index_config(["kind=ivfpq", "chunk_rows=7"]),
                progress=False)
    again = EmbeddingIndex(tmp_path / "idx")
    assert {p.name for p in (tmp_path / "idx").glob("image*")} >= {"image.faiss", "image.ivfdata", "image_vectors.npy"}
    embs = embed_manifest(model, demo / "test.jsonl", progress=False)
    q = embed_query(model, text="a large red circle")
    for m, (z, rows) in embs.items():
        scores, found = again.search(q.unsqueeze(0), m, k=5)
        exact = (z @ q).topk(5)
        assert found[0].tolist() == rows[exact.indices].tolist()
        assert np.allclose(scores[0], exact.values.numpy(), atol=1e-5)


def test_index_settings_are_checked_by_name():
    with pytest.raises(ConfigError, match="nprobes"):
        index_config(["nprobes=4"])
    with pytest.raises(ConfigError, match="annoy"):
        index_config(["kind=annoy"])


def test_built_index_loads_and_searches_like_torch(run, demo, tmp_path):
    model = MultiJEPA.from_pretrained(run)
    index = build_index(model, demo / "test.jsonl", tmp_path / "idx", index_config(), progress=False)
    again = EmbeddingIndex(tmp_path / "idx")  # from disk
    assert again.modalities == ["image", "text", "audio"] and again.info["rows"] == 24
    embs = embed_manifest(model, demo / "test.jsonl", progress=False)
    q = embed_query(model, text="a large red circle", image=demo / "images" / "test_00003.png")
    for m, (z, rows) in embs.items():
        scores, found = again.search(q.unsqueeze(0), m, k=5)
        exact = (z @ q).topk(5)
        assert found[0].tolist() == rows[exact.indices].tolist()
        assert np.allclose(scores[0], exact.values.numpy(), atol=1e-5)
    meta = index.metadata(3)
    rows = [json.loads(line) for line in (demo / "test.jsonl").read_text().splitlines()]
    assert meta["row"] == 3 and meta["text"] == rows[3]["text"] and meta["image"] == str(demo.resolve() / rows[3]["image"])  # absolute
    assert meta["label"] == rows[3]["label"]
    with pytest.raises(KeyError, match="no row 24"):
        index.metadata(24)
    with pytest.raises(KeyError, match="no row -1"):  # not the last row, as a numpy index would give
        index.metadata(-1)


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw", "ivfpq"])
def test_an_indexed_rows_vector_comes_back(run, demo, tmp_path, kind):
    """`vector(row, m)` (what "more like this" searches with) is the row's embedding, for every kind."""
    model = MultiJEPA.from_pretrained(run)
    index = build_index(model, demo / "test.jsonl", tmp_path / "idx", index_config([f"kind={kind}"]), progress=False)
    embs = embed_manifest(model, demo / "test.jsonl", progress=False)
    for m, (z, rows) in embs.items():
        for i in (0, 5, len(rows) - 1):
            assert index.position(int(rows[i]), m) is not None
            assert np.allclose(index.vector(int(rows[i]), m), z[i].numpy(), atol=1e-5)
    assert index.vector(24, "image") is None and index.vector(3, "smell") is None


def test_a_killed_build_resumes_with_the_missing_parts_only(run, demo, tmp_path, monkeypatch):
    model = MultiJEPA.from_pretrained(run)
    cfg = index_config(["chunk_rows=5"])  # 24 rows -> 5 parts
    calls = []
    real = embedding.embed_rows

    def dies_on_third_part(*args, **kwargs):
        calls.append(args[2])
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr("multijepa.retrieval.index.embed_rows", dies_on_third_part)
    with pytest.raises(KeyboardInterrupt):
        build_index(model, demo / "test.jsonl", tmp_path / "idx", cfg, progress=False)
    assert len(list((tmp_path / "idx" / "parts").glob("part-*.npz"))) == 2
    with pytest.raises(IndexFolderError, match="did not finish"):
        EmbeddingIndex(tmp_path / "idx")
    calls.clear()
    monkeypatch.setattr("multijepa.retrieval.index.embed_rows", lambda *a, **k: (calls.append(a[2]), real(*a, **k))[1])
    resumed = build_index(model, demo / "test.jsonl", tmp_path / "idx", cfg, progress=False)
    assert calls == [range(10, 15), range(15, 20), range(20, 24)]
    fresh = build_index(model, demo / "test.jsonl", tmp_path / "fresh", index_config(), progress=False)
    for m in fresh.modalities:
        assert np.array_equal(resumed.rows[m], fresh.rows[m])
        a, b = resumed.indexes[m], fresh.indexes[m]
        assert np.allclose(a.reconstruct_n(0, a.ntotal), b.reconstruct_n(0, b.ntotal), atol=1e-6)
    assert not (tmp_path / "idx" / "parts").exists()


def test_an_unfinished_build_of_something_else_is_not_mixed_in(run, demo, tmp_path, monkeypatch):
    model = MultiJEPA.from_pretrained(run)
    monkeypatch.setattr("multijepa.retrieval.index.embed_rows", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        build_index(model, demo / "test.jsonl", tmp_path / "idx", index_config(), progress=False)
    monkeypatch.undo()
    with pytest.raises(IndexFolderError, match="manifest"):
        build_index(model, demo / "train.jsonl", tmp_path / "idx", index_config(), progress=False)


def test_index_and_search_commands(run, demo, tmp_path, capsys):
    out = tmp_path / "idx"
    assert main(["index", "--checkpoint", str(run), "--data", str(demo / "test.jsonl"), "--out", str(out), "--no-progress", "kind=hnsw"]) == 0
    info = json.loads((out / "index.json").read_text())
    assert info["config"]["kind"] == "hnsw" and info["modalities"] == {"image": 24, "text": 24, "audio": 24}
    assert main(["index", "--checkpoint", str(run), "--data", str(demo / "test.jsonl"), "--out", str(out)]) == 1
    assert "already holds an index" in capsys.readouterr().err

    image, audio = demo / "images" / "test_00001.png", demo / "audio" / "test_00002.wav"
    for query, searched in (
        (["--text", "a small blue square"], {"image", "audio"}),
        (["--image", str(image)], {"text", "audio"}),
        (["--audio", str(audio)], {"image", "text"}),
        (["--text", "a small blue square", "--image", str(image)], {"audio"}),
        (["--text", "a small blue square", "--modality", "text"], {"text"}),
    ):
        assert main(["search", "--index", str(out), "--top-k", "3", "--json", *query]) == 0
        res = json.loads(capsys.readouterr().out)
        assert set(res["results"]) == searched
        for hits in res["results"].values():
            assert [h["rank"] for h in hits] == [1, 2, 3]
            assert hits[0]["score"] >= hits[1]["score"] >= hits[2]["score"]
            assert all(0 <= h["row"] < 24 and h["text"] for h in hits)

    assert main(["search", "--index", str(out), "--checkpoint", str(run), "--audio", str(audio)]) == 0
    table = capsys.readouterr().out
    assert "image (24 indexed)" in table and "images/test_" in table
    assert main(["search", "--index", str(out)]) != 0
    assert main(["search", "--index", str(tmp_path / "nothing"), "--text", "x"]) == 1
    assert "no such file or folder (the --index folder)" in capsys.readouterr().err


def test_search_refuses_an_index_of_another_model(run, demo, tmp_path, capsys):
    out = tmp_path / "idx"
    assert main(["index", "--checkpoint", str(run), "--data", str(demo / "test.jsonl"), "--out", str(out), "--no-progress"]) == 0
    info = json.loads((out / "index.json").read_text())
    info["fingerprint"] = "0" * 16
    (out / "index.json").write_text(json.dumps(info))
    assert main(["search", "--index", str(out), "--text", "a red circle"]) == 1
    assert "another model" in capsys.readouterr().err


def test_skip_leaves_bad_rows_out_and_lists_them(run, demo, tmp_path):
    rows = [json.loads(line) for line in (demo / "test.jsonl").read_text().splitlines()]
    rows[4]["image"] = "images/missing.png"
    manifest = demo / "test_one_bad.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "idx"
    assert main(["index", "--checkpoint", str(run), "--data", str(manifest), "--out", str(out), "--no-progress"]) == 1
    assert main(["index", "--checkpoint", str(run), "--data", str(manifest), "--out", str(out), "--no-progress", "--on-error", "skip"]) == 0
    index = EmbeddingIndex(out)
    assert index.info["bad_rows"] == 1 and all(4 not in index.rows[m] for m in index.modalities)
    bad = [json.loads(line) for line in (out / "bad_rows.jsonl").read_text().splitlines()]
    assert bad[0]["row"] == 4 and bad[0]["reason"] == "missing_file"


def test_an_index_of_shards_shows_the_sample_keys(run, demo, tmp_path, capsys):
    from multijepa.config import SourceConfig
    from multijepa.data.shards import write_shards
    from multijepa.data.sources import open_source

    src = open_source(SourceConfig(path=str(demo / "test.jsonl"), name="test"), {}, ["image", "text", "audio"], streaming=False)
    write_shards(src, tmp_path / "shards", ["image", "text", "audio"], shard_size=10)
    out = tmp_path / "idx"
    code = main(["index", "--checkpoint", str(run), "--data", str(tmp_path / "shards" / "shard-*.tar"), "--out", str(out),
                 "--no-progress", "data.columns.image=png", "data.columns.text=txt", "data.columns.audio=wav"])
    assert code == 0
    capsys.readouterr()
    index = EmbeddingIndex(out)
    assert index.info["modalities"] == {"image": 24, "text": 24, "audio": 24}
    meta = index.metadata(0)
    assert meta["__key__"] and meta["png"] is None and meta["txt"]  # bytes are never copied into the metadata
    assert main(["search", "--index", str(out), "--text", "a red circle", "--modality", "audio", "--top-k", "2"]) == 0
    shown = capsys.readouterr().out.splitlines()[3:5]  # the two result lines
    keys = {index.metadata(i)["__key__"] for i in range(24)}
    assert all(line.split()[3] in keys for line in shown), shown
