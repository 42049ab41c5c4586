"""Cross-modal retrieval metrics (exact search in torch), as the retrieval papers report them.

Items: rows are grouped (`groups`, one key per manifest row: by default the image path, as COCO,
Flickr30k, AudioCaps and Clotho evaluate with five captions per image or clip; rows without a
key are their own group). Within a group, rows with the same embedding are one entry (five caption
rows of one image hold one image entry and five text entries). For every ordered pair (query
modality a, gallery modality b), over the groups that have both, every entry of a is a query,
every entry of b is in the gallery, and the gallery entries of the query's group are its
positives. With one row per group (the 1:1 layout) this is "row i's partner is the answer".

- R@K: the share of queries with a positive in the top K (CLIP_benchmark's `recall_at_k(...) > 0`,
  clip_benchmark/metrics/zeroshot_retrieval.py). `median_rank` / `mean_rank`: of the best-ranked
  positive, 1-based.
- Ties (`ties=`): "topk", the default, is CLIP_benchmark's convention: the top K is what
  `torch.topk` returns, which puts some of the tied items first (equal to the reference, ties
  included, tests/test_conformance.py); ranks are then the expected rank under a random order of
  the tied items. "pessimistic" ranks every negative that ties with the best positive above it, so
  a constant similarity scores badly, not by chance; with duplicate captions across items (templated
  captions, COCO's repeats) it gives R@1 0 where the reference gives 1 / (number of copies).
- With labels, a gallery entry of the query's class is relevant: `mAP` is sklearn's
  `average_precision_score` per query (tied scores form one step), averaged; `P@1` is the share of
  relevant entries among those tied at the top score (the expected precision of a random tie-break).
"""

from __future__ import annotations

import numpy as np
import torch

from .embed import Embeddings, embed_rows, manifest_groups, manifest_labels, open_manifest

KS = (1, 5, 10)


def ranks_of_matches(sim: torch.Tensor, offset: int = 0) -> torch.Tensor:
    """sim (Q, G): query i's one right answer is gallery item offset + i -> 1-based ranks (Q,).
    Ties count against the query (a constant similarity scores badly, not perfectly)."""
    positive = torch.zeros_like(sim, dtype=torch.bool)
    q = torch.arange(sim.shape[0])
    positive[q, q + offset] = True
    return best_positive_ranks(sim, positive)


TIES = ("topk", "pessimistic")


def best_positive_ranks(sim: torch.Tensor, positive: torch.Tensor, ties: str = "pessimistic") -> torch.Tensor:
    """sim (Q, G), positive (Q, G) bool, every query with at least one positive -> 1-based rank of
    each query's best positive (Q,). "pessimistic": 1 + the negatives scoring at least as high;
    "topk": 1 + the negatives scoring higher + the expected number of tied negatives ahead of the
    first tied positive in a random order (m tied negatives, p tied positives: m / (p + 1))."""
    best = sim.masked_fill(~positive, float("-inf")).amax(1, keepdim=True)  # (Q, 1)
    if ties == "pessimistic":
        return 1 + ((sim >= best) & ~positive).sum(1)
    tied_neg = ((sim == best) & ~positive).sum(1).float()
    tied_pos = ((sim == best) & positive).sum(1).float()
    return 1 + ((sim > best) & ~positive).sum(1).float() + tied_neg / (tied_pos + 1)


def hits_at_k(sim: torch.Tensor, positive: torch.Tensor, k: int) -> torch.Tensor:
    """Whether a positive is among the `torch.topk(sim, k)` items of each query (Q,), as
    CLIP_benchmark's `recall_at_k(...) > 0`: topk decides which of the tied items come first."""
    top = torch.topk(sim, min(k, sim.shape[1]), dim=1).indices  # (Q, k)
    return positive.gather(1, top).any(1)


def class_match(sim: torch.Tensor, query_labels: torch.Tensor, gallery_labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """sim (Q, G), integer labels (Q,), (G,) (-1 = none) -> (P@1 (Q,) float, average precision (Q,)).
    Gallery items of the query's class are relevant. AP as sklearn's average_precision_score: the
    precision at the end of each group of tied scores, weighted by the relevant items in it. P@1:
    the share of relevant items among those tied at the top score."""
    scores, order = sim.sort(dim=1, descending=True, stable=True)  # (Q, G)
    relevant = (gallery_labels[order] == query_labels.unsqueeze(1)) & (query_labels.unsqueeze(1) >= 0)  # (Q, G)
    g = sim.shape[1]
    index = torch.arange(g, device=sim.device).expand_as(scores)
    last = torch.ones_like(relevant)
    last[:, :-1] = scores[:, :-1] != scores[:, 1:]  # the last item of each tie group
    # the end of j's tie group: the smallest tie-group end at or after j (reverse running minimum)
    end = torch.where(last, index, g).flip(1).cummin(1).values.flip(1)  # (Q, G)
    hits = relevant.float().cumsum(1)
    precision_at_end = hits.gather(1, end) / (end + 1).float()
    n_rel = relevant.sum(1).clamp_min(1)
    ap = (precision_at_end * relevant).sum(1) / n_rel
    top = scores == scores[:, :1]  # tied with the best
    p1 = (relevant & top).sum(1).float() / top.sum(1).float()
    return p1, ap


def retrieval_metrics(embeddings: Embeddings, labels: list | None = None, max_cells: int = 1 << 24,
                      groups: list | None = None, grouping: str = "row", ties: str = "topk") -> dict[str, dict]:
    """All ordered pairs of modalities present: R@1/5/10, median and mean rank, the number of
    queries `n` and gallery items `n_items`, the `grouping` and `ties` used, and with `labels` (one
    per manifest row) P@1 and mAP over the queries that have a label. `groups`: one key per manifest
    row (None: a row is its own group). `ties`: see the module's docstring."""
    if ties not in TIES:
        raise ValueError(f"ties={ties!r}: use one of {', '.join(TIES)}")
    codes = _group_codes(groups, embeddings)
    entries = {m: _entries(z, r, codes) for m, (z, r) in embeddings.items()}
    results: dict[str, dict] = {}
    for a, (za, ga, ra) in entries.items():
        for b, (zb, gb, rb) in entries.items():
            if a == b:
                continue
            shared = np.intersect1d(ga.numpy(), gb.numpy())
            if len(shared) < 2:
                continue
            keep_a, keep_b = torch.from_numpy(np.isin(ga.numpy(), shared)), torch.from_numpy(np.isin(gb.numpy(), shared))
            qa, qg, qr = za[keep_a], ga[keep_a], ra[keep_a]
            gz, gg, gr = zb[keep_b], gb[keep_b], rb[keep_b]
            code_q, code_g = _label_codes(labels, qr.numpy(), gr.numpy()) if labels is not None else (None, None)
            chunk = max(1, max_cells // len(gg))
            ranks, top1, ap = [], [], []
            hits: dict[int, list] = {k: [] for k in KS}
            for s in range(0, len(qg), chunk):
                sim = qa[s : s + chunk] @ gz.T  # (chunk, G)
                positive = qg[s : s + chunk, None] == gg[None, :]  # (chunk, G)
                ranks.append(best_positive_ranks(sim, positive, ties))
                for k in KS:
                    hits[k].append(hits_at_k(sim, positive, k) if ties == "topk" else ranks[-1] <= k)
                if code_q is not None:
                    t, p = class_match(sim, code_q[s : s + chunk], code_g)
                    top1.append(t)
                    ap.append(p)
            r = torch.cat(ranks).float()
            res = {f"R@{k}": float(torch.cat(hits[k]).float().mean()) for k in KS}
            res["median_rank"] = float(np.median(r.numpy()))  # the middle pair's mean when n is even
            res["mean_rank"] = float(r.mean())
            res["n"] = int(len(qg))
            res["n_items"] = int(len(gg))
            res["grouping"] = grouping
            res["ties"] = ties
            if code_q is not None and bool((code_q >= 0).any()):
                has = code_q >= 0
                res["P@1"] = float(torch.cat(top1)[has].mean())
                res["mAP"] = float(torch.cat(ap)[has].mean())
                res["n_labelled"] = int(has.sum())
            results[f"{a}->{b}"] = res
    return results


def manifest_retrieval(model, manifest, group_by: str | None = None, batch_size: int = 128,
                       progress: bool = True, ties: str = "topk") -> tuple[dict[str, dict], str]:
    """Embed every row of a manifest and score retrieval between its modalities (items grouped
    as `manifest_groups` says, labels from its label column) -> (results, what an item is)."""
    dataset = open_manifest(model, manifest, extra=(group_by,) if group_by else ())
    return dataset_retrieval(model, dataset, group_by, batch_size, progress, ties)


def dataset_retrieval(model, dataset, group_by: str | None = None, batch_size: int = 128,
                      progress: bool = True, ties: str = "topk") -> tuple[dict[str, dict], str]:
    """`manifest_retrieval` of a manifest already opened (`open_manifest`), for a caller that scores
    the same rows again and again (pretraining's held-out evaluation)."""
    embs, _ = embed_rows(model, dataset, batch_size=batch_size, progress=progress)
    groups, grouping = manifest_groups(dataset, group_by)
    return retrieval_metrics(embs, manifest_labels(dataset), groups=groups, grouping=grouping, ties=ties), grouping


def _group_codes(groups: list | None, embeddings: Embeddings) -> torch.Tensor | None:
    """One integer per manifest row, equal for rows of one group (shared by every modality);
    a row without a key is a group of its own."""
    if groups is None:
        return None
    n = max(len(groups), 1 + max(int(r.max()) for _, r in embeddings.values() if len(r)))
    table: dict = {}
    return torch.tensor([table.setdefault(("key", groups[i]) if i < len(groups) and groups[i] is not None else ("row", i),
                                          len(table)) for i in range(n)], dtype=torch.long)


def _entries(z: torch.Tensor, rows: torch.Tensor, codes: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One modality's embeddings (n, E) of manifest `rows` -> (entry embeddings, entry group ids,
    the first row of each entry): rows of one group with the same embedding are one entry."""
    if codes is None:
        return z, rows.clone(), rows
    group = codes[rows]
    seen: dict = {}
    keep = [i for i, (g, v) in enumerate(zip(group.tolist(), z)) if seen.setdefault((g, v.numpy().tobytes()), i) == i]
    keep_t = torch.tensor(keep, dtype=torch.long)
    return z[keep_t], group[keep_t], rows[keep_t]


def _label_codes(labels: list, query_rows: np.ndarray, gallery_rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels of the query and gallery rows as integer codes (one code table), -1 where a row has none."""
    codes: dict[str, int] = {}

    def code(rows: np.ndarray) -> torch.Tensor:
        return torch.tensor([codes.setdefault(labels[r], len(codes)) if labels[r] is not None else -1
                             for r in rows.tolist()], dtype=torch.long)

    return code(query_rows), code(gallery_rows)


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
        lines.append(line + f"{1.0 / r['n_items']:>12.4f}")
    return "\n".join(lines)
