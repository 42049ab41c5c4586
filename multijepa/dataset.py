"""Paired manifests (JSONL / CSV / Parquet / saved `datasets` folder) read through `datasets`.

Each row may hold any subset of image, text and audio. Paths are relative to the manifest's
folder. Rows that fail to decode come back as an error record naming the manifest, row, column
and reason, so the training loop can stop with one clear line instead of a worker traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import datasets
from torch.utils.data import Dataset

from modalities.errors import DataError

from .processors import Processors

datasets.disable_progress_bars()


def load_manifest(path: str | Path) -> datasets.Dataset:
    p = Path(path)
    if not p.exists():
        raise DataError(f"manifest not found: {p}")
    if p.is_dir():
        return datasets.load_from_disk(str(p))
    kinds = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
    kind = kinds.get(p.suffix.lower())
    if kind is None:
        raise DataError(f"{p}: unknown manifest type '{p.suffix}' (use .jsonl, .json, .csv, .parquet or a saved datasets folder)")
    try:
        return datasets.load_dataset(kind, data_files=str(p), split="train")
    except Exception as e:  # datasets wraps parse errors several levels deep
        raise DataError(f"{p}: cannot read manifest: {e}") from e


def _is_empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value == "")


class PairedDataset(Dataset):
    def __init__(self, manifest: str | Path, columns: dict[str, str], processors: Processors, cache: bool = False):
        self.manifest = Path(manifest)
        self.base_dir = self.manifest.parent if self.manifest.is_file() else self.manifest
        self.processors = processors
        ds = load_manifest(manifest)
        self.columns = {m: columns.get(m, m) for m in processors.modalities if columns.get(m, m) in ds.column_names}
        if not self.columns:
            wanted = ", ".join(f"'{columns.get(m, m)}'" for m in processors.modalities)
            raise DataError(f"{manifest}: none of the columns {wanted} is present (columns: {ds.column_names})")
        label = columns.get("label", "label")
        self.label_column = label if label in ds.column_names else None
        keep = list(self.columns.values()) + ([self.label_column] if self.label_column else [])
        self.ds = ds.select_columns(keep)
        # Decoded rows kept in memory: PNG + fbank decoding is most of the loading cost on small
        # data seen for many epochs. Each loader worker keeps its own copy.
        self._cache: dict[int, dict] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.ds)

    def texts(self) -> list[str]:
        col = self.columns.get("text")
        if col is None:
            return []
        return [t for t in self.ds[col] if isinstance(t, str) and t.strip()]

    def present(self, modality: str) -> list[bool]:
        """Which rows have a value for the modality (without decoding anything)."""
        col = self.columns.get(modality)
        if col is None:
            return [False] * len(self)
        return [not _is_empty(v) for v in self.ds[col]]

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        batch_no, i = key if isinstance(key, tuple) else (0, key)
        if self._cache is not None and i in self._cache:
            return {**self._cache[i], "batch_no": batch_no}
        item = self._decode(int(i))
        if self._cache is not None and "error" not in item:
            self._cache[i] = item
        return {**item, "batch_no": batch_no}

    def _decode(self, i: int) -> dict:
        row = self.ds[i]
        item: dict[str, Any] = {"row": i}
        for m, col in self.columns.items():
            value = row[col]
            if _is_empty(value):
                continue
            try:
                item[m] = self.processors.item(m, value, self.base_dir)
            except DataError as e:
                return {"row": i, "error": f"{self.manifest} row {i} column '{col}': {e}"}
        if not any(m in item for m in self.columns):
            cols = ", ".join(self.columns.values())
            return {"row": i, "error": f"{self.manifest} row {i}: empty in every column ({cols})"}
        if self.label_column:
            item["label"] = row[self.label_column]
        return item
