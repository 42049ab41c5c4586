"""The bad-input policy: `data.on_error: raise | skip`.

raise: the first bad row stops the run with its one-line message (source, row, column, path,
reason). skip: the row is dropped from its batch, counted by reason, written once to
`bad_samples.jsonl` in the run folder; the run stops if the share of bad rows passes
`data.max_bad_fraction`, and prints the counts at the end.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from modalities.errors import DataError

MIN_ROWS_FOR_FRACTION = 100  # judge the bad share once this many rows were drawn (or at the end)


@dataclass(frozen=True)
class BadRow:
    """One row that could not be used: which, where and why. Made in loader workers, carried in
    batches (`batch["errors"]`), gathered over processes, and written as one JSON line."""

    source: str  # the source's name
    row: Any  # its row number (or stream key)
    key: str | None  # the shard key, for WebDataset rows
    column: str | None
    path: str | None  # the media path, when the value was one
    reason: str  # a code of modalities.errors.REASONS
    message: str  # the one-line message: source, row, column, path and what is wrong

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_dict(cls, d: dict) -> BadRow:
        return cls(**d)


def raise_first(errors: list[BadRow], hint: str | None = None) -> None:
    """Stop with the first bad row's one line (and its reason code), if there is one."""
    if errors:
        e = errors[0]
        raise DataError(f"{e.message} [{e.reason}]" + (f"  ({hint})" if hint else ""), reason=e.reason)


class TooManyBadSamples(DataError):
    """More than data.max_bad_fraction of the rows drawn were bad."""


class BadSampleLog:
    def __init__(self, run_dir: str | Path | None, on_error: str, max_fraction: float, state: dict | None = None):
        self.on_error, self.max_fraction = on_error, max_fraction
        self.path = Path(run_dir) / "bad_samples.jsonl" if run_dir is not None else None
        state = state or {}
        self.seen = set(tuple(k) for k in state.get("seen", []))  # (source, row) already written
        self.reasons = Counter(state.get("reasons", {}))  # distinct bad rows per reason
        self.skipped = int(state.get("skipped", 0))  # bad rows dropped, repeats across epochs included
        self.drawn = int(state.get("drawn", 0))  # rows drawn in all

    def update(self, errors: list[BadRow], drawn: int) -> None:
        """Account for one batch: `drawn` rows of which `errors` were bad."""
        if self.on_error == "raise":
            raise_first(errors, "set data.on_error=skip to skip and count bad rows")
        self.drawn += drawn
        self.skipped += len(errors)
        fresh = []
        for e in errors:
            key = (e.source, str(e.row))
            if key not in self.seen:
                self.seen.add(key)
                self.reasons[e.reason] += 1
                fresh.append(e)
        if fresh and self.path is not None:
            with open(self.path, "a") as f:
                f.writelines(e.to_json() + "\n" for e in fresh)
        if self.drawn >= MIN_ROWS_FOR_FRACTION:
            self.check()

    def check(self) -> None:
        if self.drawn and self.skipped / self.drawn > self.max_fraction:
            raise TooManyBadSamples(
                f"{self.skipped} of {self.drawn} rows drawn ({self.skipped / self.drawn:.1%}) were bad, more than "
                f"data.max_bad_fraction={self.max_fraction}; {self.summary()}. "
                f"See {self.path or 'the errors above'}, fix the data or raise the limit"
            )

    def summary(self) -> str:
        if not self.skipped:
            return "no bad rows"
        by_reason = ", ".join(f"{r}: {n}" for r, n in self.reasons.most_common())
        return f"skipped {self.skipped} bad rows ({len(self.seen)} distinct; {by_reason})"

    def state_dict(self) -> dict:
        return {"seen": [list(k) for k in sorted(self.seen)], "reasons": dict(self.reasons),
                "skipped": self.skipped, "drawn": self.drawn}
