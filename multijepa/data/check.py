"""`multijepa data check`: decode every row of a dataset with the training decoders and list
every problem (row, column, path, reason) before a long run meets them."""

from __future__ import annotations

from collections import Counter

from torch.utils.data import DataLoader
from tqdm import tqdm

from ..config import Config
from ..processors import Processors
from .bad_samples import BadRow
from .dataset import PairedDataset
from .sampler import SequentialBatchSampler
from .sources import Source


def _errors_only(items: list[dict]) -> tuple[int, list[BadRow]]:
    """Collate for the scan: nothing is stacked, only the bad rows travel back."""
    return len(items), [it["error"] for it in items if "error" in it]


def check_sources(cfg: Config, sources: list[Source], workers: int = 0, batch_size: int = 64,
                  progress: bool = True) -> tuple[int, list[BadRow]]:
    """-> (rows checked, error records). Text is checked (non-empty string, sane length) but not
    tokenized, so no tokenizer is needed."""
    processors = Processors(cfg.model, None)
    total, errors = 0, []
    for i, source in enumerate(sources):
        dataset = PairedDataset(source, processors, source_index=i, derive=cfg.data.audio_from_video)
        loader = DataLoader(
            dataset,
            batch_sampler=SequentialBatchSampler(len(dataset), batch_size),
            collate_fn=_errors_only,
            num_workers=workers,
        )
        bar = tqdm(total=len(dataset), desc=f"check {source.name}", unit="row", disable=not progress, dynamic_ncols=True)
        for n, errs in loader:
            total += n
            errors += errs
            bar.update(n)
        bar.close()
    return total, errors


def format_report(total: int, errors: list[BadRow]) -> str:
    lines = [f"{e.reason:<18} {e.message}" for e in errors]
    if errors:
        by_reason = ", ".join(f"{r}: {n}" for r, n in Counter(e.reason for e in errors).most_common())
        lines.append(f"{len(errors)} of {total} rows have problems ({by_reason})")
    else:
        lines.append(f"all {total} rows decode")
    return "\n".join(lines)
