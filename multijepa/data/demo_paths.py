"""Where commands find data when `--data` is not given: the built-in demo dataset, from
$MULTIJEPA_DEMO_DIR when set, else `data/demo` under the current folder when the quick start
wrote it there, else generated on first use (no download) into ~/.cache/multijepa/demo."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def default_demo_dir() -> Path:
    env = os.environ.get("MULTIJEPA_DEMO_DIR")
    return Path(env) if env else Path.home() / ".cache" / "multijepa" / "demo"


def resolve_manifest(path: str | Path | None, split: str) -> Path:
    """`path` if given, else the demo dataset's manifest for `split` (train, test, vqa_train, vqa_test)."""
    if path is not None:
        return Path(path)
    local = Path("data/demo") / f"{split}.jsonl"
    if "MULTIJEPA_DEMO_DIR" not in os.environ and local.exists():
        print(f"no --data given: using the demo data in {local.parent}", file=sys.stderr)
        return local
    root = default_demo_dir()
    manifest = root / f"{split}.jsonl"
    if not manifest.exists():
        from .demo import generate_demo

        print(f"no --data given: generating the demo dataset in {root} (once; "
              "`multijepa data demo --out DIR` writes it elsewhere)", file=sys.stderr)
        generate_demo(root)
    else:
        print(f"no --data given: using the demo data in {root}", file=sys.stderr)
    return manifest
