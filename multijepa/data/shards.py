"""Writing a manifest as WebDataset tar shards (the format open_clip and LAION train from).

Each sample is `KEY.EXT` members sharing a key: the image and audio files' own bytes under
their extension (`png`, `jpg`, `wav`, `flac`, ...), the caption as `txt`. Read them back with
a source such as `{path: "DIR/shard-{000000..000003}.tar", columns: {image: png, text: txt}}`.
"""

from __future__ import annotations

import io
import tarfile
import time
from pathlib import Path

from tqdm import tqdm

from modalities.errors import DataError
from modalities.paths import resolve_path

from ..modality import get_modality
from .sources import Source


def _add(tf: tarfile.TarFile, name: str, data: bytes, mtime: float) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), mtime, 0o644
    tf.addfile(info, io.BytesIO(data))


def write_shards(source: Source, out_dir: str | Path, modalities: list[str], shard_size: int = 1000,
                 progress: bool = True) -> list[Path]:
    """Write the rows of a map-style `source` into OUT/shard-NNNNNN.tar; rows lacking every
    requested modality are left out. Returns the shard paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    mtime = time.time()
    shards: list[Path] = []
    tf, in_shard = None, 0
    cols = {m: c for m, c in source.columns.items() if m in modalities}
    try:
        for i, row in enumerate(tqdm(source.ds, desc="shards", unit="row", disable=not progress)):
            members: dict[str, bytes] = {}
            for m, col in cols.items():
                value = row.get(col)
                if value is None or value == "":
                    continue
                spec = get_modality(m)
                if not spec.media:  # a caption: the value itself
                    members[spec.shard_member] = str(value).encode("utf-8")
                    continue
                if isinstance(value, dict):
                    value = value.get("bytes") or value.get("path")
                if isinstance(value, (bytes, bytearray)):
                    members[spec.shard_member] = bytes(value)
                    continue
                path = resolve_path(value, source.base_dir, m)
                members[path.suffix.lstrip(".").lower() or m] = path.read_bytes()
            if not members:
                continue
            if tf is None or in_shard == shard_size:
                if tf is not None:
                    tf.close()
                shards.append(out / f"shard-{len(shards):06d}.tar")
                tf, in_shard = tarfile.open(shards[-1], "w"), 0
            for ext, data in members.items():
                _add(tf, f"{i:08d}.{ext}", data, mtime)
            in_shard += 1
    except DataError as e:
        raise DataError(f"source '{source.name}' row {i}: {e}") from e
    finally:
        if tf is not None:
            tf.close()
    return shards
