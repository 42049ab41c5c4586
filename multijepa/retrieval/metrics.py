"""Cross-modal retrieval metrics (exact search in torch), as the retrieval papers report them.

For every ordered pair (query modality a, gallery modality b), over the rows that have both:
the gallery item of the same row is the right answer. R@K is the share of queries whose right
answer ranks in the top K; `median_rank` and `mean_rank` are over the 1-based ranks. With labels,
a gallery item of the query's class counts as relevant: `P@1` is the share of queries whose
top-1 item has the query's class, `mAP` the mean average precision over that class's items.
"""

from __future__ import annotations

import numpy as np
import torch

from .embed import Embeddings

KS = (1, 5, 10)


def ranks_of_matches(sim: torch.Tensor, offset: int = 0) -> torch.Tensor:
    """sim (Q, G): query i's right answer is gallery item offset + i -> 1-based ranks (Q,).
    Ties count against the query (a constant similarity scores badly, not perfectly)."""
    q = torch.arange(sim.shape[0])
    correct = sim[q, q + offset].unsqueeze(1)  # (Q, 1)
    return (sim >= correct).sum(1)


def class_match(sim: torch.Tensor, query_labels: torch.Tensor, gallery_labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """sim (Q, G), integer labels (Q,), (G,) (-1 = none) -> (top-1 has the query's class (Q,) bool,
    average precision (Q,)). Items of the query's class are relevant; ties are broken by gallery order."""
    order = sim.argsort(dim=1, descending=True, stable=True)  # (Q, G)
    relevant = (gallery_labels[order] == query_labels.unsqueeze(1)) & (query_labels.unsqueeze(1) >= 0)  # (Q, G)
    hits = relevant.float().cumsum(1)
    precision = hits / torch.arange(1, sim.shape[1] + 1, device=sim.device)
    n_rel = relevant.sum(1).clamp_min(1)
    ap = (precision * relevant).sum(1) / n_rel
    return relevant[:, 0], ap


def retrieval_metrics(embeddings: Embeddings, labels: list | None = None, max_cells: int = 1 << 24) -> dict[str, dict]:
    """All ordered pairs of modalities present: R@1/5/10, median and mean rank, the number of
    rows, and with `labels` (one per manifest row) P@1 and mAP over the rows that have a label."""
    results: dict[str, dict] = {}
    for a, (za, ra) in embeddings.items():
        for b, (zb, rb) in embeddings.items():
            if a == b:
                continue
            common = np.intersect1d(ra.numpy(), rb.numpy())
            if len(common) < 2:
                continue
            qa = za[_positions(ra, common)]
            gb = zb[_positions(rb, common)]
            code = _label_codes(labels, common) if labels is not None else None
            chunk = max(1, max_cells // len(common))
            ranks, top1, ap = [], [], []
            for s in range(0, len(common), chunk):
                sim = qa[s : s + chunk] @ gb.T  # (chunk, n)
                ranks.append(ranks_of_matches(sim, s))
                if code is not None:
                    t, p = class_match(sim, code[s : s + chunk], code)
                    top1.append(t)
                    ap.append(p)
            r = torch.cat(ranks).float()
            res = {f"R@{k}": float((r <= k).float().mean()) for k in KS}
            res["median_rank"] = float(np.median(r.numpy()))  # the middle pair's mean when n is even
            res["mean_rank"] = float(r.mean())
            res["n"] = int(len(common))
            if code is not None and bool((code >= 0).any()):
                has = code >= 0
                res["P@1"] = float(torch.cat(top1)[has].float().mean())
                res["mAP"] = float(torch.cat(ap)[has].mean())
                res["n_labelled"] = int(has.sum())
            results[f"{a}->{b}"] = res
    return results


def _positions(rows: torch.Tensor, wanted: np.ndarray) -> torch.Tensor:
    pos = {int(r): i for i, r in enumerate(rows.tolist())}
    return torch.tensor([pos[int(r)] for r in wanted], dtype=torch.long)


def _label_codes(labels: list, rows: np.ndarray) -> torch.Tensor:
    """Labels of `rows` as integer codes, -1 where a row has no label."""
    codes: dict[str, int] = {}
    out = [codes.setdefault(labels[r], len(codes)) if labels[r] is not None else -1 for r in rows.tolist()]
    return torch.tensor(out, dtype=torch.long)


def format_table(results: dict[str, dict]) -> str:
    labelled = any("P@1" in r for r in results.values())
    head = (
        f"{'query->gallery':<16}{'n':>7}" + "".join(f"{'R@' + str(k):>8}" for k in KS)
        + f"{'medR':>7}{'meanR':>8}" + (f"{'P@1':>7}{'mAP':>7}" if labelled else "") + f"{'chance R@1':>12}"
    )
    lines = [head, "-" * len(head)]
    for pair, r in results.items():
        line = f"{pair:<16}{r['n']:>7}" + "".join(f"{r[f'R@{k}']:>8.3f}" for k in KS)
        line += f"{r['median_rank']:>7.0f}{r['mean_rank']:>8.1f}"
        if labelled:
            line += f"{r['P@1']:>7.3f}{r['mAP']:>7.3f}" if "P@1" in r else f"{'-':>7}{'-':>7}"
        lines.append(line + f"{1.0 / r['n']:>12.4f}")
    return "\n".join(lines)
