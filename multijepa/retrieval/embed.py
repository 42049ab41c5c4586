"""Embedding the rows of a manifest with a trained model, every modality a row has.

Shared by `embed`, `eval retrieval`, `eval zeroshot` and `index`: rows are decoded and batched by
the training collator (no masks, `train=False`, so audio gets the several-clip evaluation), and
each modality's sub-batch goes through its encoder and head.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from modalities.errors import DataError

from ..config import SourceConfig
from ..data.bad_samples import BadRow, raise_first
from ..data.collate import MultiModalCollator, move_batch
from ..data.dataset import PairedDataset
from ..data.sources import open_source
from ..modality import is_media, registered_modalities
from ..model import MultiJEPA

Embeddings = dict[str, tuple[torch.Tensor, torch.Tensor]]  # modality -> (z (n_m, E), manifest rows (n_m,))


def open_manifest(model: MultiJEPA, manifest: str | Path, modalities: list[str] | None = None,
                  extra: tuple[str, ...] = (), cache: bool = False) -> PairedDataset:
    """A manifest (or shards, or a saved folder) read with the run's column mapping; only the
    columns of `modalities` (default: all the model has) are decoded; `extra` columns are kept.
    `cache`: keep decoded rows in memory, for a caller that reads them many times."""
    cfg = model.run_config
    src = SourceConfig(path=str(manifest), name=Path(str(manifest)).stem)
    source = open_source(src, cfg.data.columns, modalities or model.modalities, streaming=False, extra=extra)
    return PairedDataset(source, model.processors, cache=cache, derive=cfg.data.audio_from_video)


@torch.no_grad()
def embed_rows(
    model: MultiJEPA,
    dataset: PairedDataset,
    rows: range | None = None,
    batch_size: int = 128,
    num_workers: int = 0,
    progress: bool = True,
    on_error: str = "raise",
    bar: tqdm | None = None,
    encode: Callable[[str, torch.Tensor], torch.Tensor] | None = None,
) -> tuple[Embeddings, list[BadRow]]:
    """Embed `rows` (default: all) of `dataset` -> ({modality: (z float32 L2-normalised, rows int64)},
    error records of the bad rows). With on_error="raise" the first bad row raises its DataError.
    `bar`: an outer progress bar (counting rows) to advance instead of showing one per call.
    `encode`: (modality, inputs) -> (n, F) in place of the shared embedding (`model.encode`), e.g.
    `model.features` for probes."""
    encode = encode or model.encode
    rows = range(len(dataset)) if rows is None else rows
    batches = [list(rows[i : i + batch_size]) for i in range(0, len(rows), batch_size)]
    mods = dataset.modalities
    loader = DataLoader(
        dataset,
        batch_sampler=batches,
        collate_fn=MultiModalCollator(mods, processors=model.processors, train=False),
        num_workers=num_workers,
    )
    device = model.logit_scale.device
    model.eval()
    embs: dict[str, list[torch.Tensor]] = {m: [] for m in mods}
    ids: dict[str, list[torch.Tensor]] = {m: [] for m in mods}
    errors: list[BadRow] = []
    batches_bar = tqdm(loader, desc="embed", unit="batch", disable=not progress or bar is not None, dynamic_ncols=True)
    for batch in batches_bar:
        if bar is not None:
            bar.update(batch["size"] + len(batch["errors"]))
        if on_error == "raise":
            raise_first(batch["errors"])
        errors += batch["errors"]
        if batch["size"] == 0:
            continue
        batch_rows = batch["rows"]
        batch = move_batch(batch, device)
        for m in mods:
            if m in batch:
                embs[m].append(encode(m, batch[m]["x"]).float().cpu())
                ids[m].append(batch_rows[batch[m]["index"].cpu()])
    out = {m: (torch.cat(embs[m]), torch.cat(ids[m])) for m in mods if embs[m]}
    return out, errors


def embed_manifest(
    model: MultiJEPA, manifest: str | Path, batch_size: int = 128, num_workers: int = 0, progress: bool = True
) -> Embeddings:
    """Every row of a manifest; a bad row stops with its name."""
    return embed_rows(model, open_manifest(model, manifest), None, batch_size, num_workers, progress)[0]


def manifest_labels(dataset: PairedDataset) -> list | None:
    """The label column (data.columns.label, default `label`) by row, or None if there is none."""
    col = dataset.source.label_column
    if col is None:
        return None
    return [None if v is None else str(v) for v in dataset.ds[col]]


def manifest_groups(dataset: PairedDataset, group_by: str | None = None) -> tuple[list | None, str]:
    """-> (one item key per row, what the grouping is). `group_by`: a column whose equal values
    make one item (e.g. an image id); by default rows sharing an image path (else an audio path)
    are one item, as COCO-style manifests hold one row per caption. Rows without a key (or media
    given as bytes) are their own item."""
    ds, src = dataset.ds, dataset.source
    if group_by is not None:
        if group_by not in ds.column_names:
            raise DataError(f"--group-by: no column '{group_by}' in {src.origin} (columns: {ds.column_names})")
        return [None if v is None else str(v) for v in ds[group_by]], f"column {group_by}"
    for m in (m for m in registered_modalities() if is_media(m)):
        col = src.columns.get(m)
        if col is not None:
            values = ds[col]
            if any(isinstance(v, str) and v for v in values):
                return [v if isinstance(v, str) and v else None for v in values], f"{m} path"
    return None, "row"


def save_embeddings(embeddings: Embeddings, out_dir: str | Path) -> list[Path]:
    """DIR/m.npy (float32 [n, E]) and DIR/m_rows.npy (int64 [n]) for every modality."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for m, (z, r) in embeddings.items():
        np.save(out / f"{m}.npy", z.numpy().astype(np.float32))
        np.save(out / f"{m}_rows.npy", r.numpy().astype(np.int64))
        written += [out / f"{m}.npy", out / f"{m}_rows.npy"]
    return written


def embed_manifest_spread(model: MultiJEPA, manifest: str | Path, out_dir: str | Path, world, batch_size: int = 128,
                          progress: bool = True) -> list[Path]:
    """`embed_manifest` + `save_embeddings` under torchrun: process r embeds the r-th contiguous block
    of rows and writes it as its own shard (DIR/shards/rank-r.npz: vectors and row ids); process 0
    then joins the shards in rank order (so rows stay in manifest order) into the files one process
    writes, and removes them. -> the files written (process 0; [] elsewhere)."""
    from ..distributed import barrier

    out = Path(out_dir)
    dataset = open_manifest(model, manifest)
    n = len(dataset)
    lo, hi = n * world.rank // world.size, n * (world.rank + 1) // world.size
    embs, _ = embed_rows(model, dataset, range(lo, hi), batch_size, progress=progress and world.main)
    shards = out / "shards"
    shards.mkdir(parents=True, exist_ok=True)
    arrays = {f"{k}_{m}": t.numpy() for m, (z, r) in embs.items() for k, t in (("z", z), ("rows", r))}
    with open(shards / f"rank-{world.rank}.npz.tmp", "wb") as f:
        np.savez(f, **arrays)
    os.replace(shards / f"rank-{world.rank}.npz.tmp", shards / f"rank-{world.rank}.npz")
    barrier(world)
    written: list[Path] = []
    if world.main:
        parts: dict[str, list] = {}
        for r in range(world.size):
            with np.load(shards / f"rank-{r}.npz") as part:
                for key in part.files:
                    if key.startswith("z_"):
                        m = key[2:]
                        parts.setdefault(m, []).append((part[key], part[f"rows_{m}"]))
        joined = {m: (torch.from_numpy(np.concatenate([z for z, _ in ps])), torch.from_numpy(np.concatenate([r for _, r in ps])))
                  for m, ps in parts.items()}
        written = save_embeddings(joined, out)
        shutil.rmtree(shards)
    barrier(world)
    return written
