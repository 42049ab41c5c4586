"""Media paths in manifests: relative to the manifest's folder, checked before decoding."""

from __future__ import annotations

from pathlib import Path

from .errors import DataError


def resolve_path(value: str | Path, base_dir: str | Path | None, what: str) -> Path:
    """`value` joined to `base_dir` unless absolute; DataError '<what> file not found: PATH' if missing."""
    path = Path(value)
    if base_dir is not None and not path.is_absolute():
        path = Path(base_dir) / path
    if not path.is_file():
        raise DataError(f"{what} file not found: {path}")
    return path
