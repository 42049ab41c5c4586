"""Media paths in manifests: relative to the manifest's folder, checked before decoding."""

from __future__ import annotations

from pathlib import Path

from .errors import EMPTY_FILE, MISSING_FILE, DataError


def resolve_path(value: str | Path, base_dir: str | Path | None, what: str) -> Path:
    """`value` joined to `base_dir` unless absolute.

    DataError '<what> file not found: PATH' (missing_file) if missing, '<what> file is empty
    (0 bytes): PATH' (empty_file) for a 0-byte file, which decoders report less clearly.
    """
    path = Path(value)
    if base_dir is not None and not path.is_absolute():
        path = Path(base_dir) / path
    if not path.is_file():
        raise DataError(f"{what} file not found: {path}", MISSING_FILE)
    if path.stat().st_size == 0:
        raise DataError(f"{what} file is empty (0 bytes): {path}", EMPTY_FILE)
    return path
