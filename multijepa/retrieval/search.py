"""Searching an index with a text, an image, a sound (any modality the model has), or a sum of them.

Several query inputs are combined as ImageBind does (embedding arithmetic): the sum of their
L2-normalised embeddings, normalised again, so "image of a dog + sound of rain" finds items
near both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..model import MultiJEPA
from .index import EmbeddingIndex


def embed_query(model: MultiJEPA, queries: dict[str, Any] | None = None, vectors: list[torch.Tensor] | None = None,
                **named: Any) -> torch.Tensor:
    """The query embedding (E,): the normalised sum of the given inputs' normalised embeddings.
    `queries` (or keywords): {modality: a value, e.g. a caption or a file path}, None values skipped;
    `vectors`: (E,) normalised embeddings already made (an upload's, an indexed item's)."""
    parts = [v.reshape(1, -1).float() for v in vectors or []]
    for m, value in {**(queries or {}), **named}.items():
        if value is not None:
            parts.append(model.embed(m, [str(value) if isinstance(value, Path) else value]))
    if not parts:
        raise ValueError(f"give at least one of {', '.join(model.modalities)}")
    return F.normalize(torch.cat(parts).sum(0), dim=-1)


def target_modalities(index: EmbeddingIndex, query_modalities: list[str], wanted: list[str] | None) -> list[str]:
    """What to search: `wanted`, else the indexed modalities the query does not use (all of them
    if the query uses every one)."""
    if wanted:
        missing = [m for m in wanted if m not in index.modalities]
        if missing:
            raise ValueError(f"the index has no {', '.join(missing)} vectors (it has: {', '.join(index.modalities)})")
        return wanted
    others = [m for m in index.modalities if m not in query_modalities]
    return others or index.modalities


def search(index: EmbeddingIndex, query: torch.Tensor, modalities: list[str], k: int) -> dict[str, list[dict]]:
    """-> {modality: [{"rank", "score", "row", **row metadata}, ...]} best first."""
    results: dict[str, list[dict]] = {}
    for m in modalities:
        scores, rows = index.search(query.unsqueeze(0), m, k)
        results[m] = [
            {"rank": i + 1, "score": float(s), **index.metadata(int(r))}
            for i, (s, r) in enumerate(zip(scores[0], rows[0]))
            if r >= 0
        ]
    return results


def format_results(results: dict[str, list[dict]], index: EmbeddingIndex, width: int = 100) -> str:
    """One block per searched modality: rank, score, row, the item's own path (or caption),
    then the row's other fields."""
    lines = []
    for m, hits in results.items():
        lines.append(f"{m} ({index.info['modalities'][m]} indexed)")
        lines.append(f"{'rank':>4} {'score':>7} {'row':>7}  item")
        for h in hits:
            col = _column(index, m)
            own = h.get(col) or h.get("__key__") or f"row {h['row']}"  # shard members have no path
            rest = "; ".join(f"{k}: {v}" for k, v in h.items() if k not in ("rank", "score", "row", col) and v is not None)
            text = f"{own}" + (f"  [{rest}]" if rest else "")
            if len(text) > width:
                text = text[: width - 3] + "..."
            lines.append(f"{h['rank']:>4} {h['score']:>7.3f} {h['row']:>7}  {text}")
        lines.append("")
    return "\n".join(lines).rstrip()


def _column(index: EmbeddingIndex, modality: str) -> str:
    return index.info.get("columns", {}).get(modality, modality)
