"""Caption rows: an image (or a sound) and a caption. Several captions of one input are several
rows sharing its value (the same image path), as COCO and AudioCaps/Clotho lay them out once
flattened; evaluation groups them into that input's references.

Inputs go through the pretraining run's decoders; captions through the run's tokenizer cut to the
decoder's length. A bad row comes back as an error record naming it, and the loop stops with that
line.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import torch
from torch.utils.data import Dataset

from modalities.errors import EMPTY_ROW, INVALID, DataError
from modalities.text import TextTokenizer

from ..config import SourceConfig
from ..data.dataset import PairedDataset
from ..data.sources import open_source
from ..modality import is_media, media_modalities
from ..processors import Processors


class CaptionDataset(Dataset):
    """Rows -> {"row", "key", m: input, "tokens" (ids, length), "caption"} or {"error": record}
    (at evaluation a row without a caption still gives its input).
    train=True crops long audio at random (seeded by the row); otherwise audio comes as the
    run's `eval_clips` windows (clips, mel, T)."""

    def __init__(self, manifest: str | Path, processors: Processors, modality: str, tokenizer: TextTokenizer,
                 columns: dict[str, str] | None = None, train: bool = True):
        if not is_media(modality):
            raise ValueError(f"captioning describes a file ({', '.join(media_modalities())}), not '{modality}'")
        cols = {modality: modality, "text": "text", **(columns or {})}
        self.text_col = cols["text"]
        src = open_source(SourceConfig(path=str(manifest), name=Path(str(manifest)).stem), {modality: cols[modality]},
                          [modality], streaming=False, extra=(self.text_col,))
        names = src.ds.column_names
        missing = [f"'{c}'" for c in (cols[modality], self.text_col) if c not in names]
        if missing:
            raise DataError(f"{manifest}: no {', '.join(missing)} column (columns: {names}); "
                            f"map yours with columns.{modality}=..., columns.text=...")
        self.manifest, self.modality, self.tokenizer, self.train = manifest, modality, tokenizer, train
        self.paired = PairedDataset(src, processors)
        media = src.ds[src.columns[modality]]
        self.keys = [v if isinstance(v, str) else f"row {i}" for i, v in enumerate(media)]  # what groups references
        self.captions = src.ds[self.text_col]

    def __len__(self) -> int:
        return len(self.paired)

    def __getitem__(self, i: int) -> dict:
        row, item = self.paired.read(i)
        if "error" in item:
            return item
        m = self.modality
        caption = row.get(self.text_col)
        if m not in item:
            return self.paired.decoder.error(i, row, m, None, DataError(f"the row has no {m}", reason=EMPTY_ROW))
        rng = torch.Generator().manual_seed(i) if self.train else None
        item[m] = self.paired.processors.finish(m, item[m], train=self.train, rng=rng)
        item["key"] = self.keys[i]
        if not isinstance(caption, str) or not caption.strip():
            if not self.train:  # evaluation captions the input; its references come from every row
                return item
            return self.paired.decoder.error(i, row, self.text_col, caption,
                                             DataError("the caption is missing or blank", reason=INVALID))
        ids, length = self.tokenizer([caption])
        return {**item, "tokens": (ids[0], length[0]), "caption": caption}

    def references(self) -> dict[str, list[str]]:
        """{input key: [its captions]} over the rows with a caption, in row order."""
        refs: dict[str, list[str]] = defaultdict(list)
        for key, caption in zip(self.keys, self.captions):
            if isinstance(caption, str) and caption.strip():
                refs[key].append(caption)
        return dict(refs)

    def first_rows(self) -> list[int]:
        """One row per input (its first): what evaluation captions."""
        seen: dict[str, int] = {}
        for i, key in enumerate(self.keys):
            seen.setdefault(key, i)
        return list(seen.values())


class CaptionCollator:
    """items -> {"rows", "keys", "x" (B, ...), "tokens" (B, T) when every item has a caption};
    error records go to "errors"."""

    def __init__(self, modality: str):
        self.modality = modality

    def __call__(self, items: list[dict]) -> dict:
        errors = [it["error"] for it in items if "error" in it]
        items = [it for it in items if "error" not in it]
        batch: dict = {"errors": errors, "size": len(items), "rows": [it["row"] for it in items]}
        if not items:
            return batch
        batch["x"] = torch.stack([it[self.modality] for it in items])
        batch["keys"] = [it["key"] for it in items]
        if all("tokens" in it for it in items):
            lengths = torch.stack([it["tokens"][1] for it in items])
            batch["tokens"] = torch.stack([it["tokens"][0] for it in items])[:, : int(lengths.max())]  # (B, T)
        return batch

