"""Opening a data source through `datasets`: manifests, saved folders, WebDataset tar shards, hub names.

Every source comes back as a `datasets` Dataset (map-style) or IterableDataset (streaming) with
only the columns we use, and with `datasets`' own Image/Audio decoding switched off: the raw
path or bytes go to our decoders, which handle odd files and name the row when one is broken
(and need no torchcodec or FFmpeg for audio).
"""

from __future__ import annotations

import glob
import itertools
import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import datasets

from modalities.errors import DataError

from ..config import DataConfig, SourceConfig
from ..modality import is_media
from .benchmarks import parse_spec, read_benchmark
from .demo_paths import resolve_manifest

datasets.disable_progress_bars()

MANIFEST_FORMATS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")
KEY_COLUMNS = ("__key__", "__url__")  # WebDataset sample key and shard, kept to name bad rows


@dataclass
class Source:
    """An opened source: the rows, where relative paths start, and which column holds what."""

    name: str
    ds: datasets.Dataset | datasets.IterableDataset
    base_dir: Path | None
    columns: dict[str, str]  # modality -> column, only those present
    label_column: str | None = None
    key_columns: list[str] = field(default_factory=list)
    weight: float = 1.0
    origin: str = ""  # the path or hub name as configured, for messages
    row_ids: list[int] | None = None  # a part of a source (`pairs.with_pair_floor`): each row's number in the source

    @property
    def streaming(self) -> bool:
        return isinstance(self.ds, datasets.IterableDataset)


def source_configs(data: DataConfig) -> list[SourceConfig]:
    """data.sources with names filled in, or data.train as a single source (the demo data if unset)."""
    if data.sources:
        srcs = [SourceConfig(**vars(s)) for s in data.sources]
    else:
        srcs = [SourceConfig(path=str(resolve_manifest(data.train, "train")))]
    used: set[str] = set()
    for s in srcs:
        if s.name is None:
            base = _default_name(s.path)
            name, k = base, 2
            while name in used:
                name, k = f"{base}_{k}", k + 1
            s.name = name
        used.add(s.name)
    return srcs


def _default_name(path: str) -> str:
    spec = parse_spec(path)
    if spec is not None:
        return f"{spec[0]}_{spec[1].stem}"
    p = Path(path.split("{")[0].rstrip("/*-_") or path)
    for suffix in (*TAR_SUFFIXES, *MANIFEST_FORMATS):
        if p.name.endswith(suffix):
            return p.name[: -len(suffix)] or p.parent.name
    return p.name or path


def expand_braces(pattern: str) -> list[str]:
    """`shard-{000..009}.tar` and `{a,b}` as WebDataset and open_clip write shard lists."""
    m = re.search(r"\{([^{}]*)\}", pattern)
    if m is None:
        return [pattern]
    body = m.group(1)
    rng = re.fullmatch(r"(\d+)\.\.(\d+)", body)
    if rng:
        lo, hi = rng.groups()
        width = len(lo) if lo.startswith("0") else 0
        options = [str(i).zfill(width) for i in range(int(lo), int(hi) + 1)]
    else:
        options = body.split(",")
    head, tail = pattern[: m.start()], pattern[m.end() :]
    return list(itertools.chain.from_iterable(expand_braces(head + o + tail) for o in options))


def _files(path: str) -> list[str]:
    out: list[str] = []
    for p in expand_braces(path):
        out += sorted(glob.glob(p)) if any(c in p for c in "*?[") else [p]
    return out


def detect_format(src: SourceConfig) -> tuple[str, list[str]]:
    """-> (format, data files). Raises DataError when nothing is found."""
    if src.format == "hub":
        return "hub", []
    path = src.path
    if Path(path).is_dir():
        d = Path(path)
        if src.format == "saved" or any((d / f).exists() for f in ("dataset_info.json", "state.json", "dataset_dict.json")):
            return "saved", [str(d)]
        for fmt, pats in (("webdataset", ("*.tar", "*.tar.gz", "*.tgz")), ("parquet", ("*.parquet",)), ("json", ("*.jsonl",))):
            files = sorted(itertools.chain.from_iterable(glob.glob(str(d / p)) for p in pats))
            if files and src.format in ("auto", fmt):
                return fmt, files
        raise DataError(f"source '{src.name}': folder {d} holds no saved dataset, tar shards, parquet or jsonl files")
    files = _files(path)
    missing = [f for f in files if not Path(f).is_file()]
    if not files or missing:
        if src.format == "auto" and re.fullmatch(r"[\w.-]+(/[\w.-]+)?", path) and not Path(path).suffix:
            return "hub", []
        what = missing[0] if missing else path
        raise DataError(f"source '{src.name}': no such file: {what}")
    if src.format != "auto":
        return src.format, files
    first = files[0].lower()
    if first.endswith(TAR_SUFFIXES):
        return "webdataset", files
    fmt = MANIFEST_FORMATS.get(Path(first).suffix)
    if fmt is None:
        raise DataError(
            f"source '{src.name}': unknown file type '{Path(first).suffix}' (use .jsonl, .csv, .parquet, "
            ".tar shards, a saved datasets folder, or set format)"
        )
    return fmt, files


def _tar_fields(tar_path: str, limit: int = 64) -> set[str]:
    """Field names (extensions after the sample key) in the first members of a shard."""
    fields: set[str] = set()
    try:
        with tarfile.open(tar_path) as tf:
            for member in itertools.islice(tf, limit):
                name = Path(member.name).name
                if member.isfile() and "." in name:
                    fields.add(name.split(".", 1)[1])
    except (tarfile.TarError, OSError) as e:
        raise DataError(f"{tar_path}: not a readable tar shard ({e})") from e
    return fields


def _check_text_file(src: SourceConfig, path: Path, whole: bool = True) -> None:
    """A JSON/CSV manifest that is empty or not UTF-8, named with its line, before `datasets`
    meets it deep in pyarrow. One pass over the bytes (manifests are small next to their media);
    whole=False (streaming, a manifest maybe larger than the disk) reads up to its first row only."""
    if not path.is_file():
        return
    empty = True
    with open(path, "rb") as f:
        for n, line in enumerate(f, 1):
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"source '{src.name}': {path} line {n} is not UTF-8 (byte 0x{line[e.start]:02x} at "
                                f"column {e.start + 1}); re-save the manifest as UTF-8") from None
            empty = empty and not text.strip()
            if not (empty or whole):
                return
    if empty:
        raise DataError(f"source '{src.name}': {path} is empty: no rows")


def open_source(src: SourceConfig, columns: dict[str, str], modalities: list[str], streaming: bool,
                extra: tuple[str, ...] = ()) -> Source:
    """Load one source through `datasets` and pick the columns of `modalities` (+ label, keys, and
    those of `extra` that exist, e.g. VQA answers)."""
    bench = parse_spec(src.path)
    fmt, files = (bench[0], []) if bench else detect_format(src)
    wanted = {**columns, **src.columns}
    wanted_cols = {m: wanted.get(m, m) for m in modalities if src.modalities is None or m in src.modalities}
    label = wanted.get("label", "label")
    base_dir: Path | None = None
    try:
        if bench is not None:  # a benchmark's published layout (data/benchmarks.py)
            rows, base_dir = read_benchmark(src.path, src.split)
            ds = datasets.Dataset.from_list(rows)
            if streaming:
                ds = ds.to_iterable_dataset()
        elif fmt == "webdataset":
            fields = _tar_fields(files[0])
            present = {m: c for m, c in wanted_cols.items() if c in fields}
            feats = {c: datasets.Value("binary") if is_media(m) else datasets.Value("string") for m, c in present.items()}
            if label in fields:
                feats[label] = datasets.Value("string")
            feats.update({k: datasets.Value("string") for k in KEY_COLUMNS})
            if not present:
                _no_columns(src, wanted_cols, sorted(fields))
            ds = datasets.load_dataset(
                "webdataset", data_files=files, split="train", streaming=streaming, features=datasets.Features(feats)
            )
        elif fmt == "saved":
            ds = datasets.load_from_disk(files[0])
            if isinstance(ds, datasets.DatasetDict):
                if src.split not in ds:
                    raise DataError(f"source '{src.name}': split '{src.split}' not in {files[0]} (splits: {list(ds)})")
                ds = ds[src.split]
            base_dir = Path(files[0])
            if streaming:
                ds = ds.to_iterable_dataset(num_shards=min(64, max(1, len(ds) // 1000)))
        elif fmt == "hub":
            ds = datasets.load_dataset(src.path, split=src.split, streaming=streaming)
        else:
            for f in files if fmt in ("json", "csv") else []:
                _check_text_file(src, Path(f), whole=not streaming)
            ds = datasets.load_dataset(fmt, data_files=files, split="train", streaming=streaming)
            base_dir = Path(files[0]).parent
    except DataError:
        raise
    except Exception as e:  # datasets wraps parse and network errors several levels deep
        hint = " (hub datasets need a network connection)" if fmt == "hub" else ""
        raise DataError(f"source '{src.name}': cannot read {src.path} as {fmt}{hint}: {type(e).__name__}: {e}") from e

    names = ds.column_names
    if names is None:  # streaming JSON: columns are known once a row is read
        names = list(next(iter(ds.take(1)), {}).keys())
    present = {m: c for m, c in wanted_cols.items() if c in names}
    if not present:
        _no_columns(src, wanted_cols, names)
    label_column = label if label in names else None
    keys = [k for k in KEY_COLUMNS if k in names]
    extras = [c for c in extra if c in names and c not in present.values()]
    ds = ds.select_columns(list(present.values()) + ([label_column] if label_column else []) + keys + extras)
    ds = _raw_media(ds, list(present.values()))
    return Source(src.name, ds, base_dir, present, label_column, keys, src.weight, src.path)


def _no_columns(src: SourceConfig, wanted: dict[str, str], found) -> None:
    want = ", ".join(f"'{c}'" for c in wanted.values())
    raise DataError(
        f"source '{src.name}' ({src.path}): none of the columns {want} is present (columns: {list(found)}); "
        "map them with data.columns or the source's columns, e.g. {image: jpg, text: txt}"
    )


def _raw_media(ds, cols: list[str]):
    """Switch off `datasets`' Image/Audio decoding: our decoders get {'bytes', 'path'} instead."""
    if isinstance(ds, datasets.IterableDataset):
        return ds.decode(False)
    for c in cols:
        feat = ds.features.get(c)
        if isinstance(feat, (datasets.Image, datasets.Audio)) and feat.decode:
            ds = ds.cast_column(c, type(feat)(decode=False))
    return ds
