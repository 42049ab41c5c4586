"""A saved, searchable index of a corpus: one faiss index per modality plus the row metadata.

Layout of an index folder:

    index.json        what was indexed, with which model (fingerprint) and which settings
    image.faiss       one faiss index per modality (inner product on L2-normalised embeddings)
    image_rows.npy    (n,) int64: the manifest row of each indexed vector
    rows.jsonl        one line of metadata per manifest row (paths, caption, label, shard key)
    rows_offsets.npy  byte offset of every line of rows.jsonl, so a result is read without the rest
    bad_rows.jsonl    rows skipped as unreadable (with --on-error skip)

Building is resumable: rows are embedded in parts of `chunk_rows` rows, each written atomically
to `parts/`; a rerun with the same model and manifest embeds only the missing parts.
`index.json` is written last, so its presence means the index is complete.
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

from ..config import COUNT, NON_NEGATIVE, check_ranges, load_settings
from ..data.bad_samples import BadRow
from ..model import MultiJEPA
from ..run_folder import hold_run_folder
from .embed import embed_rows, open_manifest

KINDS = ("flat", "ivf", "hnsw")
FORMAT_VERSION = 1


class IndexFolderError(FileNotFoundError):
    """An index folder that is missing, incomplete, or built with another model."""


@dataclass
class IndexConfig:
    """How to index. `flat` is exact; `ivf` and `hnsw` are approximate, for millions of rows."""

    kind: str = "flat"  # flat | ivf | hnsw
    nlist: int = 0  # IVF: number of lists; 0 = 4 * sqrt(n), at most n / 39
    nprobe: int = 64  # IVF: lists visited per query (recall against speed)
    train_size: int = 0  # IVF: vectors k-means is trained on; 0 = 64 per list
    hnsw_m: int = 32  # HNSW: links per node
    ef_construction: int = 200  # HNSW: candidate list while building
    ef_search: int = 256  # HNSW: candidate list while searching (recall against speed)
    chunk_rows: int = 50_000  # rows embedded per resumable part
    seed: int = 0

    RANGES: ClassVar = {"nlist": NON_NEGATIVE, "nprobe": COUNT, "train_size": NON_NEGATIVE, "hnsw_m": COUNT,
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
    else:
        nlist = ivf_lists(n, cfg.nlist)
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        train_n = min(n, cfg.train_size or 64 * nlist)
        sample = np.random.default_rng(cfg.seed).choice(n, train_n, replace=False) if train_n < n else slice(None)
        index.train(x[sample])
    index.add(x)
    set_search_params(index, cfg)
    return index


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
        for m in modalities:
            self.indexes[m] = _read(self.root / f"{m}.faiss", lambda p: faiss.read_index(str(p)))
            set_search_params(self.indexes[m], self.config)
            self.rows[m] = _read(self.root / f"{m}_rows.npy", np.load)
            if len(self.rows[m]) != self.indexes[m].ntotal:
                raise IndexFolderError(f"{self.root / f'{m}_rows.npy'} lists {len(self.rows[m])} rows, "
                                       f"{m}.faiss holds {self.indexes[m].ntotal}: rebuild the index")
        self._offsets = _read(self.root / "rows_offsets.npy", np.load)
        self._order: dict[str, np.ndarray] = {}
        base = self.info.get("base_dir")
        # the fields holding a file path, shown absolute whatever folder the search runs from
        self._paths = {c for m, c in self.info.get("columns", {}).items() if m in ("image", "audio")} if base else set()
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
) -> EmbeddingIndex:
    """Embed every row of `manifest` (resumably) and save the index folder `out`."""
    out = Path(out)
    with hold_run_folder(out, "multijepa index"):
        return _build_index(model, manifest, out, cfg, checkpoint, batch_size, num_workers, on_error, progress)


def _build_index(model: MultiJEPA, manifest, out: Path, cfg: IndexConfig, checkpoint, batch_size: int,
                 num_workers: int, on_error: str, progress: bool) -> EmbeddingIndex:
    if (out / "index.json").exists():
        raise FileExistsError(f"{out} already holds an index; choose another --out or delete it")
    dataset = open_manifest(model, manifest)
    n = len(dataset)
    if n == 0:
        raise IndexFolderError(f"{manifest} has no rows to index")
    fingerprint = model_fingerprint(model)
    parts = out / "parts"
    spec = {"manifest": str(Path(str(manifest)).resolve()), "rows": n, "chunk_rows": cfg.chunk_rows, "fingerprint": fingerprint}
    _start_parts(parts, spec)

    chunks = [range(s, min(s + cfg.chunk_rows, n)) for s in range(0, n, cfg.chunk_rows)]
    done = [parts / f"part-{i:06d}.npz" for i in range(len(chunks))]
    finished = sum(len(c) for c, p in zip(chunks, done) if p.exists())
    if finished:
        print(f"resuming: {finished} of {n} rows already embedded in {parts}")
    bar = tqdm(total=n, initial=finished, desc="index", unit="row", disable=not progress, dynamic_ncols=True)
    for rows, path in zip(chunks, done):
        if path.exists():
            continue
        embs, errors = embed_rows(model, dataset, rows, batch_size, num_workers, on_error=on_error, bar=bar)
        _save_part(path, embs, errors)
    bar.close()

    embs, errors = _load_parts(done)
    if not embs:
        raise IndexFolderError(f"no row of {manifest} could be embedded ({len(errors)} bad rows)")
    for m, (z, rows) in embs.items():
        if progress:
            print(f"building the {cfg.kind} index of {len(rows)} {m} vectors")
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
        "modalities": {m: len(rows) for m, (_, rows) in embs.items()},
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


def _load_parts(paths: list[Path]) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[BadRow]]:
    zs: dict[str, list] = {}
    rows: dict[str, list] = {}
    errors: list[BadRow] = []
    for p in paths:
        with np.load(p) as part:
            for key in part.files:
                if key.startswith("z_"):
                    m = key[2:]
                    zs.setdefault(m, []).append(part[key])
                    rows.setdefault(m, []).append(part[f"rows_{m}"])
            errors += [BadRow.from_dict(e) for e in json.loads(str(part["errors"]))]
    return {m: (np.concatenate(zs[m]), np.concatenate(rows[m])) for m in zs}, errors


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
