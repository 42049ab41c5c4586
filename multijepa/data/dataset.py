"""Rows of a paired source -> decoded samples, or an error record that names the row.

Decoding never raises for bad input: a row that cannot be read comes back as
`{"error": BadRow}` with the source, row, column, path, reason code and a one-line message, so
the training loop decides (stop with that line, or skip and count) and no worker ever dies
with a traceback. Samples are *decoded* but not yet cropped: the collator crops audio, so the
crop is seeded per batch and a decoded sample can be cached.
"""

from __future__ import annotations

from typing import Any

import datasets
from torch.utils.data import Dataset

from modalities.errors import EMPTY_ROW, UNDECODABLE, DataError

from ..modality import get_modality, is_media
from ..processors import Processors
from .bad_samples import BadRow
from .sources import Source


def _is_missing(value: Any) -> bool:
    """None (or an empty media path, as CSV cells come) means the row lacks the modality; empty
    bytes do not (a 0-byte file in a shard is reported as empty_file)."""
    return value is None or (isinstance(value, str) and value == "")


class RowDecoder:
    """One source's rows -> {"row", "source", modality: decoded, ["label"]} or {"error": record}."""

    def __init__(self, source: Source, processors: Processors, source_index: int = 0, derive: bool = False):
        self.source, self.processors, self.source_index = source, processors, source_index
        self.derive = derive  # data.audio_from_video: fill a modality a row lacks from its others (`Modality.derive`)

    def where(self, row_id: Any, row: dict) -> str:
        s = self.source
        where = f"source '{s.name}' ({s.origin}) row {row_id}"
        if row.get("__key__") is not None:
            where += f" (key {row['__key__']} in {row.get('__url__')})"
        return where

    def error(self, row_id: Any, row: dict, column: str | None, value: Any, e: DataError) -> dict:
        path = value if isinstance(value, str) else (value.get("path") if isinstance(value, dict) else None)
        col = f" column '{column}'" if column else ""
        record = BadRow(self.source.name, row_id, row.get("__key__"), column, path, e.reason,
                        f"{self.where(row_id, row)}{col}: {e}")
        return {"row": row_id, "source": self.source_index, "error": record}

    def __call__(self, row: dict, row_id: Any) -> dict:
        item: dict[str, Any] = {"row": row_id, "source": self.source_index, "where": (self.source.name, self.where(row_id, row))}
        for m, col in self.source.columns.items():
            value = row.get(col)
            if _is_missing(value) and not (value == "" and not is_media(m)):
                continue  # "" as a caption (a value, not a file) is an empty one, not a missing one
            try:
                item[m] = self.processors.decode(m, value, self.source.base_dir)
            except DataError as e:
                return self.error(row_id, row, col, value, e)
        if self.derive:
            item = self._derived(row, row_id, item)
        if "error" in item:
            return item
        if not any(m in item for m in self.source.columns):
            cols = ", ".join(f"'{c}'" for c in self.source.columns.values())
            return self.error(row_id, row, None, None, DataError(f"empty in every column ({cols})", reason=EMPTY_ROW))
        if self.source.label_column:
            item["label"] = row.get(self.source.label_column)
        return item


    def _derived(self, row: dict, row_id: Any, item: dict) -> dict:
        """Each configured modality the row lacks, taken from its other values where its Modality can."""
        values = {m: row.get(c) for m, c in self.source.columns.items() if m in item}
        for m in self.processors.modalities:
            if m in item:
                continue
            try:
                value = get_modality(m).derive(self.processors.of(m), values, self.source.base_dir)
                if value is not None:
                    item[m] = self.processors.decode(m, value, self.source.base_dir)
            except DataError as e:
                col = next(iter(values), None)
                return self.error(row_id, row, self.source.columns.get(col), values.get(col), e)
        return item


class PairedDataset(Dataset):
    """Map-style access to one source's decoded rows. Keys: a row number, or a tuple whose last
    element is the row (samplers pass (batch_no, slot, source, row))."""

    def __init__(self, source: Source, processors: Processors, cache: bool = False, source_index: int = 0,
                 derive: bool = False):
        if source.streaming:
            raise TypeError("PairedDataset needs a map-style source (open it with streaming=False)")
        self.source = source
        self.ds: datasets.Dataset = source.ds
        self.columns = source.columns
        self.decoder = RowDecoder(source, processors, source_index, derive)
        # Decoded rows kept in memory (each loader worker keeps its own copy): PNG + fbank decoding
        # is most of the loading cost on small data seen for many epochs. Bad rows are kept too.
        self._cache: dict[int, dict] | None = {} if cache else None

    @property
    def processors(self) -> Processors:
        return self.decoder.processors

    @property
    def modalities(self) -> list[str]:
        """What its rows may hold: the source's columns, and with `derive` every modality of the run."""
        extra = [m for m in self.processors.modalities if m not in self.columns] if self.decoder.derive else []
        return [*self.columns, *extra]

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, key: int | tuple) -> dict:
        i = int(key[-1] if isinstance(key, tuple) else key)
        if self._cache is not None and i in self._cache:
            return dict(self._cache[i])
        _, item = self.read(i)
        if self._cache is not None:
            self._cache[i] = item
        return dict(item)

    def read(self, i: int) -> tuple[dict, dict]:
        """Row i as stored ({} if unreadable) and its decoded item or error record; not cached.
        For callers that need the row's other columns too (VQA answers) without reading it twice."""
        row_id = self.source.row_ids[i] if self.source.row_ids is not None else i  # as the user's file numbers it
        try:
            row = self.ds[i]
        except Exception as e:  # an unreadable row in the manifest itself
            return {}, self.decoder.error(row_id, {}, None, None, DataError(f"cannot read the row ({e})", reason=UNDECODABLE))
        return row, self.decoder(row, row_id)


class SourceMixture(Dataset):
    """Several PairedDatasets behind one index: keys are (batch_no, slot, source, row)."""

    def __init__(self, parts: list[PairedDataset]):
        self.parts = parts

    def __len__(self) -> int:
        return sum(len(p) for p in self.parts)

    def __getitem__(self, key: tuple) -> dict:
        batch_no, slot, src, row = key
        return {**self.parts[src][row], "batch_no": batch_no, "slot": slot}


def source_texts(source: Source, limit: int = 200_000) -> list[str]:
    """Captions to train a tokenizer on: the whole column (map-style) or the first `limit` (streaming)."""
    col = source.columns.get("text")
    if col is None:
        return []
    if source.streaming:
        values = (row[col] for row in source.ds.select_columns([col]).take(limit))
    else:
        values = source.ds[col] if len(source.ds) <= limit else source.ds.select(range(limit))[col]
    return [t for t in values if isinstance(t, str) and t.strip()]
