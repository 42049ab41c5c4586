"""Media paths in manifests: relative to the manifest's folder, checked before decoding."""

from __future__ import annotations

from pathlib import Path

from .errors import EMPTY_FILE, MISSING_FILE, UNSUPPORTED_VALUE, DataError


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


def unpack_media(value: dict, what: str, keys: str = "neither 'bytes' nor 'path'") -> tuple[bytes | str, str | None]:
    """A `datasets` media dict (Image/Audio feature, undecoded) -> (its bytes or its path, a name
    for messages: the path or '<N bytes>' for bytes, None for a path, which is named once resolved)."""
    if value.get("bytes") is not None:
        return value["bytes"], str(value.get("path") or f"<{len(value['bytes'])} bytes>")
    if value.get("path") is not None:
        return value["path"], None
    raise DataError(f"{what} dict has {keys}: keys {sorted(value)}", UNSUPPORTED_VALUE)
