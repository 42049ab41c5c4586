"""Where commands find data when `--data` is not given: the built-in demo dataset, generated
on first use (no download) into $MULTIJEPA_DEMO_DIR or ~/.cache/multijepa/demo."""

from __future__ import annotations

import os
from pathlib import Path


def default_demo_dir() -> Path:
    env = os.environ.get("MULTIJEPA_DEMO_DIR")
    return Path(env) if env else Path.home() / ".cache" / "multijepa" / "demo"


def resolve_manifest(path: str | Path | None, split: str) -> Path:
    """`path` if given, else the demo dataset's manifest for `split` (train, test, vqa_train, vqa_test)."""
    if path is not None:
        return Path(path)
    root = default_demo_dir()
    manifest = root / f"{split}.jsonl"
    if not manifest.exists():
        from .demo import generate_demo

        print(f"no --data given: generating the demo dataset in {root} (once)")
        generate_demo(root)
    return manifest
