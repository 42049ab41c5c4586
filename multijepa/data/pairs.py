"""Pair-aware batching: a source of mostly single-modality rows drawn as two parts, so that every
batch holds enough pairs for binding to mean something.

InfoNCE over the two or three pairs that a batch of a natural mixture (say 10 % of rows paired)
holds is satisfied by a one-dimensional space; the shared embeddings collapse and the run gets
worse as it trains. Drawn as two parts (its pairs at `data.min_pair_fraction` of its batch slots,
its single-modality rows at the rest), the same manifest gives batches half pairs, the setting
in which prediction learns from the single rows what binding cannot.
"""

from __future__ import annotations

import dataclasses

import pyarrow as pa
import pyarrow.compute as pc

from ..modality import is_media
from .sources import Source


def pair_mask(source: Source) -> list[bool] | None:
    """Per row, whether it holds two or more of the source's modalities (read from the columns
    alone, nothing decoded; a missing value is null, or an empty media path as CSV cells come).
    None for a streaming source or one with a single modality column."""
    cols = list(source.columns.items())
    if source.streaming or len(cols) < 2:
        return None
    table = source.ds.select_columns([c for _, c in cols]).with_format("arrow")[:]
    count = None
    for m, c in cols:
        col = table.column(c)
        present = pc.is_valid(col)
        if is_media(m) and (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
            present = pc.and_(present, pc.not_equal(col, ""))  # "" as a caption is an (empty) caption
        n = pc.cast(pc.fill_null(present, False), pa.int32())
        count = n if count is None else pc.add(count, n)
    return [c >= 2 for c in count.to_pylist()]


def with_pair_floor(sources: list[Source], floor: float) -> list[Source]:
    """Each map-style source that has both pairs and single-modality rows, with a share of pairs
    below `floor`, replaced by two parts: "NAME:pairs" at floor of its weight and "NAME:single" at
    the rest, each knowing its rows' numbers in the source (for the messages that name a row)."""
    if floor <= 0:
        return sources
    out: list[Source] = []
    for s in sources:
        mask = pair_mask(s)
        pairs = [i for i, p in enumerate(mask or []) if p]
        if mask is None or not pairs or len(pairs) == len(mask) or len(pairs) / len(mask) >= floor:
            out.append(s)
            continue
        single = [i for i, p in enumerate(mask) if not p]
        base = s.row_ids or list(range(len(mask)))
        for suffix, rows, share in (("pairs", pairs, floor), ("single", single, 1.0 - floor)):
            out.append(dataclasses.replace(s, name=f"{s.name}:{suffix}", ds=s.ds.select(rows),
                                           weight=s.weight * share, row_ids=[base[i] for i in rows]))
    return out
