"""Embedding a manifest and measuring cross-modal retrieval (exact search in torch).

For every ordered pair (query modality a, gallery modality b), over the rows that have both:
the gallery item of the same row is the right answer; R@K is the share of queries whose right
answer ranks in the top K, `median_rank` the median 1-based rank.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from modalities.errors import DataError

from .collate import MultiModalCollator, move_batch
from .config import SourceConfig
from .dataset import PairedDataset
from .model import MultiJEPA
from .sampler import SequentialBatchSampler
from .sources import open_source

KS = (1, 5, 10)


@torch.no_grad()
def embed_manifest(
    model: MultiJEPA, manifest: str | Path, batch_size: int = 128, num_workers: int = 0, progress: bool = True
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """-> {modality: (embeddings (n_m, E) float32 L2-normalised, manifest rows (n_m,) int64)}."""
    cfg = model.run_config
    source = open_source(SourceConfig(path=str(manifest), name=Path(manifest).stem), cfg.data.columns, model.modalities, streaming=False)
    dataset = PairedDataset(source, model.processors)
    loader = DataLoader(
        dataset,
        batch_sampler=SequentialBatchSampler(len(dataset), batch_size),
        collate_fn=MultiModalCollator(list(dataset.columns), processors=model.processors, train=False),
        num_workers=num_workers,
    )
    device = model.logit_scale.device
    model.eval()
    embs: dict[str, list[torch.Tensor]] = {m: [] for m in dataset.columns}
    rows: dict[str, list[torch.Tensor]] = {m: [] for m in dataset.columns}
    for batch in tqdm(loader, desc="embed", unit="batch", disable=not progress, dynamic_ncols=True):
        if batch["errors"]:
            raise DataError(batch["errors"][0]["message"])
        batch_rows = batch["rows"]
        batch = move_batch(batch, device)
        for m in dataset.columns:
            if m in batch:
                embs[m].append(model.encode(m, batch[m]["x"]).float().cpu())
                rows[m].append(batch_rows[batch[m]["index"].cpu()])
    return {m: (torch.cat(embs[m]), torch.cat(rows[m])) for m in dataset.columns if embs[m]}


def save_embeddings(embeddings: dict[str, tuple[torch.Tensor, torch.Tensor]], out_dir: str | Path) -> list[Path]:
    """DIR/m.npy (float32 [n, E]) and DIR/m_rows.npy (int64 [n]) for every modality."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for m, (z, r) in embeddings.items():
        np.save(out / f"{m}.npy", z.numpy().astype(np.float32))
        np.save(out / f"{m}_rows.npy", r.numpy().astype(np.int64))
        written += [out / f"{m}.npy", out / f"{m}_rows.npy"]
    return written


def retrieval_metrics(embeddings: dict[str, tuple[torch.Tensor, torch.Tensor]], chunk: int = 4096) -> dict[str, dict]:
    """All ordered pairs of modalities present: R@1/5/10, median rank, and the number of rows."""
    results: dict[str, dict] = {}
    mods = list(embeddings)
    for a in mods:
        for b in mods:
            if a == b:
                continue
            za, ra = embeddings[a]
            zb, rb = embeddings[b]
            common = np.intersect1d(ra.numpy(), rb.numpy())
            if len(common) < 2:
                continue
            pos_a = {int(r): i for i, r in enumerate(ra.tolist())}
            pos_b = {int(r): i for i, r in enumerate(rb.tolist())}
            qa = za[[pos_a[int(r)] for r in common]]
            gb = zb[[pos_b[int(r)] for r in common]]
            ranks = torch.cat(
                [
                    ranks_of_matches(qa[s : s + chunk] @ gb.T, s)
                    for s in range(0, len(common), chunk)
                ]
            ).float()
            res = {f"R@{k}": float((ranks <= k).float().mean()) for k in KS}
            res["median_rank"] = float(ranks.median())
            res["n"] = int(len(common))
            results[f"{a}->{b}"] = res
    return results


def ranks_of_matches(sim: torch.Tensor, offset: int = 0) -> torch.Tensor:
    """sim (Q, G): query i's right answer is gallery item offset + i -> 1-based ranks (Q,).
    Ties count against the query (a constant similarity scores badly, not perfectly)."""
    q = torch.arange(sim.shape[0])
    correct = sim[q, q + offset].unsqueeze(1)  # (Q, 1)
    return (sim >= correct).sum(1)


def format_table(results: dict[str, dict]) -> str:
    head = f"{'query->gallery':<16}{'n':>7}" + "".join(f"{'R@' + str(k):>8}" for k in KS) + f"{'medR':>8}{'chance R@1':>12}"
    lines = [head, "-" * len(head)]
    for pair, r in results.items():
        lines.append(
            f"{pair:<16}{r['n']:>7}"
            + "".join(f"{r[f'R@{k}']:>8.3f}" for k in KS)
            + f"{r['median_rank']:>8.0f}{1.0 / r['n']:>12.4f}"
        )
    return "\n".join(lines)
