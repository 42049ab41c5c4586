"""A saved, searchable index of a corpus: one faiss index per modality plus the row metadata.

Layout of an index folder:

    index.json        what was indexed, with which model (fingerprint) and which settings
    image.faiss       one faiss index per modality (inner product on L2-normalised embeddings)
    image.ivfdata     kind ivfpq: its inverted lists (PQ codes and ids), on disk, memory-mapped
    image_vectors.npy kind ivfpq: the exact (n, E) float32 vectors, memory-mapped, for the re-rank
    image_rows.npy    (n,) int64: the manifest row of each indexed vector
    rows.jsonl        one line of metadata per manifest row (paths, caption, label, shard key)
    rows_offsets.npy  byte offset of every line of rows.jsonl, so a result is read without the rest
    bad_rows.jsonl    rows skipped as unreadable (with --on-error skip)

Building is resumable: rows are embedded in parts of `chunk_rows` rows, each written atomically
to `parts/`; a rerun with the same model and manifest embeds only the missing parts.
`index.json` is written last, so its presence means the index is complete.

Kind `ivfpq` is for corpora larger than memory: faiss `IndexIVFPQ` (each vector kept as `pq_m`
codes of `pq_nbits` bits), trained on a sample, then filled part by part (one part in memory at a
time) into per-part indexes that are merged into inverted lists on disk (faiss's
`OnDiskInvertedLists`, `faiss.contrib.ondisk.merge_ondisk`). A search takes `rerank` times k
candidates from the codes and re-scores them exactly against the stored vectors.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar

import faiss
import numpy as np
import torch
from tqdm import tqdm

from ..config import COUNT, NON_NEGATIVE, Range, check_ranges, load_settings
from ..data.bad_samples import BadRow
from ..distributed import World, barrier, gather_objects
from ..modality import is_media
from ..model import MultiJEPA
from ..run_folder import hold_run_folder
from .embed import embed_rows, open_manifest

KINDS = ("flat", "ivf", "hnsw", "ivfpq")
FORMAT_VERSION = 1


class IndexFolderError(FileNotFoundError):
    """An index folder that is missing, incomplete, or built with another model."""


@dataclass
class IndexConfig:
    """How to index. `flat` is exact; `ivf` and `hnsw` are approximate, for millions of rows;
    `ivfpq` compresses and keeps its lists on disk, for corpora larger than memory."""

    kind: str = "flat"  # flat | ivf | hnsw | ivfpq
    nlist: int = 0  # IVF, IVF-PQ: number of lists; 0 = 4 * sqrt(n), at most n / 39
    nprobe: int = 64  # IVF, IVF-PQ: lists visited per query (recall against speed)
    train_size: int = 0  # IVF, IVF-PQ: vectors k-means is trained on; 0 = 64 per list (at least 10,000 for PQ)
    pq_m: int = 0  # IVF-PQ: codes per vector (bytes per vector at 8 bits); 0 = dim / 8; must divide dim
    pq_nbits: int = 8  # IVF-PQ: bits per code (fewer when fewer than 2^nbits vectors train it)
    rerank: int = 10  # IVF-PQ: candidates re-scored exactly from the stored vectors, times k; 0 = none
    hnsw_m: int = 32  # HNSW: links per node
    ef_construction: int = 200  # HNSW: candidate list while building
    ef_search: int = 256  # HNSW: candidate list while searching (recall against speed)
    chunk_rows: int = 50_000  # rows embedded per resumable part
    seed: int = 0  # k-means initialisation and the training sample

    RANGES: ClassVar = {"nlist": NON_NEGATIVE, "nprobe": COUNT, "train_size": NON_NEGATIVE, "hnsw_m": COUNT,
                        "pq_m": NON_NEGATIVE, "pq_nbits": Range(1, 16), "rerank": NON_NEGATIVE,
                        "ef_construction": COUNT, "ef_search": COUNT, "chunk_rows": COUNT, "seed": NON_NEGATIVE}
    CHOICES: ClassVar = {"kind": KINDS}

    def __post_init__(self) -> None:  # also when built in code, not from settings
        check_ranges(self)


def index_config(overrides: list[str] | None = None, base: dict | None = None) -> IndexConfig:
    return load_settings(IndexConfig, base or {}, overrides)


# ----------------------------------------------------------------------------- faiss


def build_faiss_index(x: np.ndarray, cfg: IndexConfig) -> faiss.Index:
    """(n, d) float32 L2-normalised vectors -> a faiss index searched by inner product."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    n, d = x.shape
    if cfg.kind == "flat":
        index = faiss.IndexFlatIP(d)
    elif cfg.kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, cfg.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = cfg.ef_construction
    elif cfg.kind == "ivfpq":  # in memory, without re-rank (an index folder keeps it on disk: build_index)
        train_n = ivfpq_train_rows(n, cfg)
        sample = np.random.default_rng(cfg.seed).choice(n, train_n, replace=False) if train_n < n else slice(None)
        index = train_ivfpq(x[sample], n, cfg)
    else:
        nlist = ivf_lists(n, cfg.nlist)
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        train_n = min(n, cfg.train_size or 64 * nlist)
        sample = np.random.default_rng(cfg.seed).choice(n, train_n, replace=False) if train_n < n else slice(None)
        index.train(x[sample])
    index.add(x)
    set_search_params(index, cfg)
    return index


def pq_shape(d: int, n_train: int, cfg: IndexConfig) -> tuple[int, int]:
    """(codes per vector, bits per code) of an IVF-PQ index of width d trained on n_train vectors:
    `pq_m` (0: d / 8) must divide d; a code of b bits needs 2^b training vectors, so a small corpus
    gets fewer bits (faiss refuses otherwise)."""
    m = cfg.pq_m or max(1, d // 8)
    if d % m:
        raise ValueError(f"pq_m={m} does not divide the embedding width {d}: choose a divisor of {d}")
    return m, max(1, min(cfg.pq_nbits, int(math.log2(max(n_train, 2)))))


def train_ivfpq(sample: np.ndarray, n: int, cfg: IndexConfig) -> faiss.Index:
    """An empty IVF-PQ index of n vectors to come, trained (coarse k-means, then PQ) on `sample`."""
    sample = np.ascontiguousarray(sample, dtype=np.float32)
    d = sample.shape[1]
    nlist = min(ivf_lists(n, cfg.nlist), max(1, len(sample) // 39))
    m, nbits = pq_shape(d, len(sample), cfg)
    index = faiss.IndexIVFPQ(faiss.IndexFlatIP(d), d, nlist, m, nbits, faiss.METRIC_INNER_PRODUCT)
    index.train(sample)
    return index


def ivfpq_train_rows(n: int, cfg: IndexConfig) -> int:
    """How many of n vectors train an IVF-PQ index: 64 per list, at least 10,000 (PQ's 256 centroids)."""
    return min(n, cfg.train_size or max(64 * ivf_lists(n, cfg.nlist), 10_000))


def build_ondisk_ivfpq(trained: faiss.Index, shards, out: Path, name: str) -> faiss.Index:
    """Fill the `trained` IVF-PQ index from `shards`, an iterable of ((n_i, d) vectors, (n_i,) int64 ids),
    one in memory at a time: each is added to a copy of the empty trained index and written to a file,
    then the files' inverted lists are merged into one on-disk file, `out/name.ivfdata`, which
    `out/name.faiss` points to (read it back with `read_ondisk_index`). Peak memory: one shard and one
    shard index, whatever the number of shards."""
    from faiss.contrib.ondisk import merge_ondisk

    work = out / f"{name}.shards"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    files = []
    for i, (x, ids) in enumerate(shards):
        shard = faiss.clone_index(trained)
        shard.add_with_ids(np.ascontiguousarray(x, dtype=np.float32), np.ascontiguousarray(ids, dtype=np.int64))
        files.append(str(work / f"shard-{i:06d}.faiss"))
        faiss.write_index(shard, files[-1])
        del shard
    index = faiss.clone_index(trained)
    ivfdata = out / f"{name}.ivfdata"
    ivfdata.unlink(missing_ok=True)
    merge_ondisk(index, files, str(ivfdata))
    _atomic(out / f"{name}.faiss", lambda p: faiss.write_index(index, str(p)))
    shutil.rmtree(work)
    return index


def rerank_search(index: faiss.Index, vectors: np.ndarray, q: np.ndarray, k: int, rerank: int,
                  block: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """`rerank` * k candidates by the index's codes, re-scored exactly by inner product with the stored
    (n, E) vectors (a memory map: only the candidates' rows are read) -> the best k: (scores (q, k),
    positions (q, k), -1 = none), best first."""
    _, cand = index.search(q, min(index.ntotal, k * rerank))  # (q, c), -1 = none
    scores = np.full((len(q), k), -np.inf, dtype=np.float32)
    ids = np.full((len(q), k), -1, dtype=np.int64)
    for s in range(0, len(q), block):  # bounded memory: (block, c, E) candidate vectors at a time
        c = cand[s : s + block]
        ok = c >= 0
        if not ok.any():
            continue
        flat = np.unique(c[ok])  # sorted: the memory map is read in file order
        vecs = np.asarray(vectors[flat], dtype=np.float32)[np.searchsorted(flat, np.where(ok, c, flat[0]))]
        exact = np.where(ok, np.einsum("qcd,qd->qc", vecs, q[s : s + block]), -np.inf)
        best = np.argsort(-exact, axis=1, kind="stable")[:, :k]
        scores[s : s + block] = np.take_along_axis(exact, best, 1)
        ids[s : s + block] = np.where(np.isfinite(scores[s : s + block]), np.take_along_axis(c, best, 1), -1)
    return scores, ids


def read_ondisk_index(path: Path) -> faiss.Index:
    """A faiss index file; an on-disk IVF one finds its .ivfdata beside it, wherever the folder moved."""
    return faiss.read_index(str(path), faiss.IO_FLAG_ONDISK_SAME_DIR)


def ivf_lists(n: int, nlist: int = 0) -> int:
    """The IVF list count: as configured, else 4 * sqrt(n); never more than n / 39 (faiss wants
    at least 39 training points per centroid)."""
    want = nlist or int(4 * math.sqrt(n))
    return max(1, min(want, n // 39))


def set_search_params(index: faiss.Index, cfg: IndexConfig) -> None:
    if isinstance(index, faiss.IndexIVF):
        index.nprobe = min(cfg.nprobe, index.nlist)
    elif isinstance(index, faiss.IndexHNSW):
        index.hnsw.efSearch = cfg.ef_search


def model_fingerprint(model: MultiJEPA) -> str:
    """A short hash of the embedding heads' weights: the same checkpoint gives the same string."""
    h = hashlib.sha256()
    for name, t in sorted(model.heads.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


# ----------------------------------------------------------------------------- the index folder


def _read(path: Path, load):
    """One file of an index folder, or one line saying which is missing or broken."""
    if not path.is_file():
        raise IndexFolderError(f"{path}: missing (the index folder is incomplete: rebuild it)")
    try:
        return load(path)
    except Exception as e:  # faiss raises RuntimeError with its C++ trace, numpy ValueError/EOFError
        reason = str(e).strip().splitlines()[-1][:200] if str(e).strip() else type(e).__name__
        raise IndexFolderError(f"{path}: unreadable ({reason}): rebuild the index") from None


class EmbeddingIndex:
    """A loaded index folder: `search(query, modality, k)` and `metadata(row)`."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        meta_path = self.root / "index.json"
        if not meta_path.is_file():
            hint = " (its build did not finish: run `multijepa index` again to complete it)" if (self.root / "parts").is_dir() else ""
            raise IndexFolderError(f"{self.root} is not an index folder: no index.json{hint}")
        try:
            self.info = json.loads(meta_path.read_text())
            self.config = index_config(base=self.info["config"])
            modalities = list(self.info["modalities"])
        except (ValueError, KeyError, TypeError) as e:
            raise IndexFolderError(f"{meta_path}: not an index description ({type(e).__name__}: {e})") from None
        self.indexes: dict[str, faiss.Index] = {}
        self.rows: dict[str, np.ndarray] = {}
        self.vectors: dict[str, np.ndarray] = {}  # kind ivfpq: the exact vectors, memory-mapped
        for m in modalities:
            self.indexes[m] = _read(self.root / f"{m}.faiss", read_ondisk_index)
            set_search_params(self.indexes[m], self.config)
            self.rows[m] = _read(self.root / f"{m}_rows.npy", np.load)
            if self.config.kind == "ivfpq":
                self.vectors[m] = _read(self.root / f"{m}_vectors.npy", lambda p: np.load(p, mmap_mode="r"))
            if len(self.rows[m]) != self.indexes[m].ntotal:
                raise IndexFolderError(f"{self.root / f'{m}_rows.npy'} lists {len(self.rows[m])} rows, "
                                       f"{m}.faiss holds {self.indexes[m].ntotal}: rebuild the index")
        self._offsets = _read(self.root / "rows_offsets.npy", np.load)
        self._order: dict[str, np.ndarray] = {}
        base = self.info.get("base_dir")
        # the fields holding a file path, shown absolute whatever folder the search runs from
        self._paths = {c for m, c in self.info.get("columns", {}).items() if is_media(m)} if base else set()
        self._base = Path(base) if base else None

    @property
    def modalities(self) -> list[str]:
        return list(self.indexes)

    def check_model(self, model: MultiJEPA) -> None:
        if model_fingerprint(model) != self.info["fingerprint"]:
            raise IndexFolderError(
                f"{self.root} was built with another model ({self.info['checkpoint']}); "
                "its embeddings do not match this checkpoint's: rebuild it with `multijepa index`"
            )

    def search(self, query: torch.Tensor | np.ndarray, modality: str, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """query (q, E) normalised -> (scores (q, k'), manifest rows (q, k')), best first, k' = min(k, n)."""
        if modality not in self.indexes:
            raise KeyError(f"the index has no '{modality}' vectors (it has: {', '.join(self.indexes)})")
        q = query.detach().cpu().numpy() if isinstance(query, torch.Tensor) else np.asarray(query)
        q = np.ascontiguousarray(q.reshape(-1, q.shape[-1]), dtype=np.float32)
        index = self.indexes[modality]
        if modality in self.vectors and self.config.rerank:
            scores, ids = rerank_search(index, self.vectors[modality], q, min(k, index.ntotal), self.config.rerank)
        else:
            scores, ids = index.search(q, min(k, index.ntotal))
        found = ids >= 0  # approximate indexes may return fewer than k
        rows = np.where(found, self.rows[modality][np.clip(ids, 0, None)], -1)
        return np.where(found, scores, -np.inf), rows

    def position(self, row: int, modality: str) -> int | None:
        """Where manifest row `row` sits in `modality`'s faiss index, or None if it has no such vector."""
        if modality not in self.indexes:
            return None
        if modality not in self._order:  # rows are in build order: sort once, then binary search
            self._order[modality] = np.argsort(self.rows[modality], kind="stable")
        order, rows = self._order[modality], self.rows[modality]
        i = int(np.searchsorted(rows, row, sorter=order))
        return int(order[i]) if i < len(rows) and rows[order[i]] == row else None

    def vector(self, row: int, modality: str) -> np.ndarray | None:
        """The indexed (E,) embedding of manifest row `row` in `modality`, or None if it has none."""
        at = self.position(row, modality)
        if at is None:
            return None
        if modality in self.vectors:  # IVF-PQ keeps the exact vectors beside its codes
            return np.asarray(self.vectors[modality][at], dtype=np.float32)
        index = self.indexes[modality]
        if isinstance(index, faiss.IndexIVF) and not index.direct_map.type:
            index.make_direct_map()  # IVF lists do not know positions until asked
        return index.reconstruct(at)

    def __len__(self) -> int:
        """Manifest rows (indexed or not: rows without a modality, bad rows)."""
        return len(self._offsets)

    def metadata(self, row: int) -> dict:
        if not 0 <= row < len(self._offsets):
            raise KeyError(f"{self.root} has no row {row} (rows 0 to {len(self._offsets) - 1})")
        path = self.root / "rows.jsonl"
        try:
            with open(path, "rb") as f:
                f.seek(int(self._offsets[row]))
                rec = json.loads(f.readline())
        except (OSError, ValueError, IndexError) as e:
            raise IndexFolderError(f"{path}: row {row} cannot be read ({type(e).__name__}: {e}); the file is cut "
                                   "short or was changed: rebuild the index") from None
        for col in self._paths:
            value = rec.get(col)
            if isinstance(value, str) and value and "://" not in value and not Path(value).is_absolute():
                rec[col] = str(self._base / value)
        return rec


def build_index(
    model: MultiJEPA,
    manifest: str | Path,
    out: str | Path,
    cfg: IndexConfig,
    checkpoint: str | Path = "",
    batch_size: int = 128,
    num_workers: int = 0,
    on_error: str = "raise",
    progress: bool = True,
    world: World = World(),
) -> EmbeddingIndex:
    """Embed every row of `manifest` (resumably) and save the index folder `out`. Under torchrun
    (`world`) every process embeds its share of the parts (part i: process i mod W) and writes
    them; process 0 then builds the index from all of them, and every process returns it."""
    out = Path(out)
    with hold_run_folder(out, "multijepa index", hold=world.main):
        return _build_index(model, manifest, out, cfg, checkpoint, batch_size, num_workers, on_error, progress, world)


def _all_or_none(world: World, work) -> None:
    """Run `work` on this process; if it fails on any process, every process raises that error
    (one line), instead of the others waiting for it in the next collective."""
    try:
        work()
        failed = None
    except Exception as e:  # re-raised below, here or on every process
        failed = (type(e).__name__, str(e), world.rank)
        if not world.active:
            raise
    if world.active:
        failures = [f for f in gather_objects(failed, world) if f is not None]
        if failures:
            kind, message, rank = failures[0]
            raise IndexFolderError(message if rank == world.rank or kind == "IndexFolderError"
                                   else f"process {rank}: {kind}: {message}")


def _build_index(model: MultiJEPA, manifest, out: Path, cfg: IndexConfig, checkpoint, batch_size: int,
                 num_workers: int, on_error: str, progress: bool, world: World = World()) -> EmbeddingIndex:
    if (out / "index.json").exists():
        raise FileExistsError(f"{out} already holds an index; choose another --out or delete it")
    dataset = open_manifest(model, manifest)
    n = len(dataset)
    if n == 0:
        raise IndexFolderError(f"{manifest} has no rows to index")
    fingerprint = model_fingerprint(model)
    parts = out / "parts"
    spec = {"manifest": str(Path(str(manifest)).resolve()), "rows": n, "chunk_rows": cfg.chunk_rows, "fingerprint": fingerprint}
    _all_or_none(world, lambda: _start_parts(parts, spec) if world.main else None)

    chunks = [range(s, min(s + cfg.chunk_rows, n)) for s in range(0, n, cfg.chunk_rows)]
    done = [parts / f"part-{i:06d}.npz" for i in range(len(chunks))]
    mine = [i for i in range(len(chunks)) if i % world.size == world.rank]  # this process's share
    finished = sum(len(chunks[i]) for i in mine if done[i].exists())
    if finished and world.main:
        print(f"resuming: {finished} of {n} rows already embedded in {parts}")
    share = sum(len(chunks[i]) for i in mine)
    bar = tqdm(total=share, initial=finished, desc="index" if not world.active else f"index (process 0 of {world.size})",
               unit="row", disable=not (progress and world.main), dynamic_ncols=True)

    def embed_mine() -> None:
        for i in mine:
            if not done[i].exists():
                embs, errors = embed_rows(model, dataset, chunks[i], batch_size, num_workers, on_error=on_error, bar=bar)
                _save_part(done[i], embs, errors)

    _all_or_none(world, embed_mine)
    bar.close()
    if not world.main:
        barrier(world)  # process 0 builds the index from every process's parts
        return EmbeddingIndex(out)
    try:
        return _index_from_parts(model, dataset, manifest, out, cfg, checkpoint, done, spec, progress)
    finally:
        barrier(world)


def _index_from_parts(model: MultiJEPA, dataset, manifest, out: Path, cfg: IndexConfig, checkpoint, done: list[Path],
                      spec: dict, progress: bool) -> EmbeddingIndex:
    fingerprint = spec["fingerprint"]
    n = spec["rows"]
    parts = out / "parts"

    counts, errors = _part_contents(done)
    if not counts:
        raise IndexFolderError(f"no row of {manifest} could be embedded ({len(errors)} bad rows)")
    for m, count in counts.items():
        if progress:
            print(f"building the {cfg.kind} index of {count} {m} vectors")
        if cfg.kind == "ivfpq":  # part by part: never the whole corpus in memory
            build_ivfpq_from_parts(done, m, count, model.cfg.embed_dim, cfg, out)
            continue
        z, rows = _load_modality(done, m)
        _atomic(out / f"{m}.faiss", lambda p, z=z: faiss.write_index(build_faiss_index(z, cfg), str(p)))
        _atomic(out / f"{m}_rows.npy", lambda p, r=rows: _save_npy(p, r))
    _write_metadata(dataset, out)
    if errors:
        _atomic(out / "bad_rows.jsonl", lambda p: p.write_text("".join(e.to_json() + "\n" for e in errors)))
    info = {
        "version": FORMAT_VERSION,
        "checkpoint": str(checkpoint),
        "fingerprint": fingerprint,
        "manifest": spec["manifest"],
        "rows": n,
        "bad_rows": len(errors),
        "embed_dim": model.cfg.embed_dim,
        "modalities": counts,
        "columns": dict(dataset.source.columns),  # modality -> metadata field holding its path or caption
        "base_dir": str(dataset.source.base_dir.resolve()) if dataset.source.base_dir else None,
        "config": asdict(cfg),
    }
    _atomic(out / "index.json", lambda p: p.write_text(json.dumps(info, indent=2)))
    shutil.rmtree(parts)
    return EmbeddingIndex(out)


def _start_parts(parts: Path, spec: dict) -> None:
    """Create parts/ with its spec, or check that an unfinished build there is the same one."""
    spec_path = parts / "spec.json"
    if spec_path.exists():
        old = json.loads(spec_path.read_text())
        if old != spec:
            diff = ", ".join(k for k in spec if old.get(k) != spec[k])
            raise IndexFolderError(
                f"{parts.parent} holds an unfinished index of something else (different {diff}); "
                "choose another --out, or delete it to start over"
            )
        return
    parts.mkdir(parents=True, exist_ok=True)
    _atomic(spec_path, lambda p: p.write_text(json.dumps(spec)))


def _save_part(path: Path, embs: dict, errors: list[BadRow]) -> None:
    arrays = {}
    for m, (z, rows) in embs.items():
        arrays[f"z_{m}"] = z.numpy().astype(np.float32)
        arrays[f"rows_{m}"] = rows.numpy().astype(np.int64)
    arrays["errors"] = np.array(json.dumps([asdict(e) for e in errors]))

    def write(p: Path) -> None:
        with open(p, "wb") as f:
            np.savez(f, **arrays)

    _atomic(path, write)


def _part_contents(paths: list[Path]) -> tuple[dict[str, int], list[BadRow]]:
    """-> (vectors per modality over all parts, the bad rows), reading only the row ids."""
    counts: dict[str, int] = {}
    errors: list[BadRow] = []
    for p in paths:
        with np.load(p) as part:
            for key in part.files:
                if key.startswith("rows_"):
                    counts[key[5:]] = counts.get(key[5:], 0) + len(part[key])
            errors += [BadRow.from_dict(e) for e in json.loads(str(part["errors"]))]
    return counts, errors


def _part_vectors(paths: list[Path], m: str):
    """Each part's ((n_i, E) vectors, (n_i,) manifest rows) of modality m, one part loaded at a time."""
    for p in paths:
        with np.load(p) as part:
            if f"z_{m}" in part.files:
                yield part[f"z_{m}"], part[f"rows_{m}"]


def _load_modality(paths: list[Path], m: str) -> tuple[np.ndarray, np.ndarray]:
    zs, rows = zip(*_part_vectors(paths, m))
    return np.concatenate(zs), np.concatenate(rows)


def build_ivfpq_from_parts(paths: list[Path], m: str, count: int, dim: int, cfg: IndexConfig, out: Path,
                           trained: faiss.Index | None = None) -> None:
    """m's IVF-PQ index with on-disk lists (out/m.faiss, out/m.ivfdata), its exact vectors
    (out/m_vectors.npy) and manifest rows (out/m_rows.npy), from parts (`part-*.npz` of z_m, rows_m)
    read one at a time: a sample of every part trains it (unless `trained` is given), then each part
    fills it and is appended to the vector file. Memory: one part, whatever their number."""
    if trained is None:
        want = ivfpq_train_rows(count, cfg)
        rng = np.random.default_rng(cfg.seed)
        sample = [z[rng.random(len(z)) < want / count] if want < count else z for z, _ in _part_vectors(paths, m)]
        trained = train_ivfpq(np.concatenate(sample), count, cfg)
    with NpyAppender(out / f"{m}_vectors.npy", (count, dim), np.float32) as vectors, \
            NpyAppender(out / f"{m}_rows.npy", (count,), np.int64) as rows:

        def shards():
            for z, r in _part_vectors(paths, m):
                at = rows.written
                vectors.append(z)
                rows.append(r)
                yield z, np.arange(at, at + len(z), dtype=np.int64)  # ids: positions, as every kind's

        build_ondisk_ivfpq(trained, shards(), out, m)


class NpyAppender:
    """A .npy file of known shape written block by block through a plain file (no memory map, so the
    pages written never count in this process's memory), renamed into place when complete."""

    def __init__(self, path: Path, shape: tuple, dtype):
        self.path, self.shape, self.dtype = path, shape, np.dtype(dtype)
        self.tmp = path.with_name(path.name + ".tmp")
        self.written = 0

    def __enter__(self) -> "NpyAppender":
        self.f = open(self.tmp, "wb")
        np.lib.format.write_array_header_1_0(self.f, {"descr": np.lib.format.dtype_to_descr(self.dtype),
                                                       "fortran_order": False, "shape": self.shape})
        return self

    def append(self, block: np.ndarray) -> None:
        self.f.write(np.ascontiguousarray(block, dtype=self.dtype).tobytes())
        self.written += len(block)

    def __exit__(self, kind, value, tb) -> None:
        self.f.close()
        if kind is None:
            if self.written != self.shape[0]:
                raise IndexFolderError(f"{self.path}: {self.written} rows written of {self.shape[0]}")
            os.replace(self.tmp, self.path)


def _write_metadata(dataset, out: Path) -> None:
    """rows.jsonl: per row the paths, caption, label and shard key (never the media bytes)."""
    src = dataset.source
    cols = list(src.columns.values()) + ([src.label_column] if src.label_column else []) + src.key_columns
    offsets = np.zeros(len(dataset), dtype=np.int64)
    tmp = out / "rows.jsonl.tmp"
    with open(tmp, "wb") as f:
        row = 0
        for batch in dataset.ds.select_columns(cols).iter(batch_size=1000):
            for i in range(len(batch[cols[0]])):
                meta = {"row": row}
                for c in cols:
                    meta[c] = _printable(batch[c][i])
                offsets[row] = f.tell()
                f.write((json.dumps(meta, ensure_ascii=False) + "\n").encode())
                row += 1
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, out / "rows.jsonl")
    _atomic(out / "rows_offsets.npy", lambda p: _save_npy(p, offsets))


def _printable(value):
    """A metadata value as it can be shown: paths and strings as they are; bytes dropped."""
    if isinstance(value, dict):
        return value.get("path")
    if isinstance(value, (bytes, bytearray)):
        return None
    return value


def _atomic(path: Path, write) -> None:
    """write(tmp) then rename over `path`: a killed build never leaves a half-written file."""
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as f:  # a file object: np.save would add .npy to a .tmp name
        np.save(f, array)
