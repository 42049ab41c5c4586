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


DEMO_PREFIX = "demo:"  # "demo:video_train": a manifest of the demo data, wherever it is (configs/av_demo.yaml)


DEMO_MANIFESTS = ("train", "test", "vqa_train", "vqa_test", "video_train", "video_test")


def resolve_manifest(path: str | Path | None, split: str) -> Path:
    """`path` if given, else the demo dataset's manifest for `split` (train, test, vqa_train, vqa_test);
    a path "demo:NAME" is the demo's manifest NAME (video_train, video_test: with the video clips)."""
    why = "no --data given"
    if isinstance(path, str) and path.startswith(DEMO_PREFIX):
        why, path, split = path, None, path[len(DEMO_PREFIX):].removesuffix(".jsonl")
        if split not in DEMO_MANIFESTS:
            raise FileNotFoundError(f"{why}: the demo has no manifest {split!r} (it has {', '.join(DEMO_MANIFESTS)})")
    if path is not None:
        return Path(path)
    local = Path("data/demo") / f"{split}.jsonl"
    if "MULTIJEPA_DEMO_DIR" not in os.environ and local.exists():
        print(f"{why}: using the demo data in {local.parent}", file=sys.stderr)
        return local
    root = default_demo_dir()
    manifest = root / f"{split}.jsonl"
    if not manifest.exists():
        video = split.startswith("video_")
        print(f"{why}: generating the demo {'video clips' if video else 'dataset'} in {root} "
              f"(once; `multijepa data demo --out DIR{' --video' if video else ''}` writes it elsewhere)", file=sys.stderr)
        if video:  # the clips alone: they need none of the scenes' images or sounds
            from .demo_video import generate_demo_video

            generate_demo_video(root)
        else:
            from .demo import generate_demo

            generate_demo(root)
    else:
        print(f"{why}: using the demo data in {root}", file=sys.stderr)
    return manifest
