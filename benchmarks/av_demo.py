"""The video demo's figures (the README's "Video" section): held-out retrieval between a clip, its
caption and its own sound, and whether the model knows which way things move, against views that
keep the frames but not their order.

    multijepa pretrain --config av_demo --out runs/av      # writes the video demo on first use
    python benchmarks/av_demo.py --run runs/av --json av.json

- retrieval: R@1 of every ordered pair among video, text and audio on the held-out clips, and its
  ratio to chance (1 / clips);
- direction P@1: does the first caption a clip retrieves (among the held-out captions) name the
  clip's direction (class-match P@1 of video->text with label = direction; chance about 0.25).
  The same model is asked three ways: frames in order; frames reversed in time (a model that reads
  the order should now name the opposite direction); and frames averaged (every frame replaced by
  the clip's mean frame: the frame-averaging view, which sees where the object went but not which way);
- probes of the direction (logistic regression, trained on the training clips): on the model's video
  features, and on the mean frame itself (the frame-averaging baseline without any network).
  `left/right` is the share right among the clips that move sideways: chance 0.5, and the mean
  frame's ceiling too, as a path run either way covers the same pixels (multijepa/data/demo_video.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from multijepa.data.demo_paths import resolve_manifest  # noqa: E402
from multijepa.model import MultiJEPA  # noqa: E402
from multijepa.retrieval.metrics import format_table, manifest_retrieval  # noqa: E402
from multijepa.retrieval.probe import input_features, linear_probe  # noqa: E402

from common import machine, write_result  # noqa: E402

VIEWS = ("in order", "reversed", "averaged")
OPPOSITE = {"moving right": "moving left", "moving left": "moving right", "moving up": "moving down",
            "moving down": "moving up"}


def _rows(manifest: Path) -> list[dict]:
    return [json.loads(line) for line in manifest.read_text().splitlines()]


def _view(x: torch.Tensor, view: str) -> torch.Tensor:
    """(..., 3, T, H, W) clips as `view` shows them."""
    if view == "reversed":
        return x.flip(-3)
    if view == "averaged":
        return x.mean(-3, keepdim=True).expand_as(x).contiguous()
    return x


@torch.no_grad()
def video_embeddings(model: MultiJEPA, manifest: Path, batch: int = 64) -> dict[str, torch.Tensor]:
    """view -> (n, E) embeddings of the manifest's clips, and "mean frame" -> (n, 3 * H * W)."""
    paths = [str(manifest.parent / r["video"]) for r in _rows(manifest)]
    out: dict[str, list] = {v: [] for v in (*VIEWS, "mean frame")}
    for i in range(0, len(paths), batch):
        x = model.processors.batch("video", paths[i : i + batch])  # (B, 3, T, S, S) or (B, clips, ...)
        for v in VIEWS:
            out[v].append(model.encode("video", _view(x, v)))
        out["mean frame"].append(input_features(model, "video", x))  # the mean frame, flattened
    return {v: torch.cat(z) for v, z in out.items()}


def direction_p1(video: torch.Tensor, texts: torch.Tensor, labels: list[str]) -> dict[str, float]:
    """Share of clips whose first caption names their direction, and the opposite one."""
    top = (video @ texts.T).argmax(1).tolist()
    said = [labels[j] for j in top]
    return {"P@1": float(np.mean([s == y for s, y in zip(said, labels)])),
            "opposite": float(np.mean([s == OPPOSITE[y] for s, y in zip(said, labels)]))}


def probe(train: np.ndarray, train_y: list[str], test: np.ndarray, test_y: list[str]) -> dict[str, float]:
    """Top-1 over the four directions, and over left/right among the sideways clips."""
    side = [i for i, y in enumerate(test_y) if y in ("moving left", "moving right")]
    side_train = [i for i, y in enumerate(train_y) if y in ("moving left", "moving right")]
    return {"top1": linear_probe(train, train_y, test, test_y)["top1"],
            "left/right": linear_probe(train[side_train], [train_y[i] for i in side_train], test[side],
                                       [test_y[i] for i in side])["top1"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default="runs/av", help="an av_demo pretraining run [runs/av]")
    ap.add_argument("--train", default="demo:video_train", help="clips the probes train on [demo:video_train]")
    ap.add_argument("--test", default="demo:video_test", help="held-out clips [demo:video_test]")
    ap.add_argument("--json", help="also write the figures to this JSON file")
    args = ap.parse_args()
    torch.manual_seed(0)
    model = MultiJEPA.from_pretrained(args.run).eval()
    train, test = resolve_manifest(args.train, "video_train"), resolve_manifest(args.test, "video_test")

    results, grouping = manifest_retrieval(model, test, None, 64)
    print(f"retrieval on {test} (one item per {grouping})")
    print(format_table(results))
    n = results["video->text"]["n_items"]
    retrieval = {k: {"R@1": r["R@1"], "x_chance": r["R@1"] * n} for k, r in results.items()}

    rows = _rows(test)
    labels = [r["label"] for r in rows]
    texts = model.embed("text", [r["text"] for r in rows])
    z_test, z_train = video_embeddings(model, test), video_embeddings(model, train)
    train_labels = [r["label"] for r in _rows(train)]
    views = {v: direction_p1(z_test[v], texts, labels) for v in VIEWS}
    probes = {"video features": probe(z_train["in order"].numpy(), train_labels, z_test["in order"].numpy(), labels),
              "mean frame": probe(z_train["mean frame"].numpy(), train_labels, z_test["mean frame"].numpy(), labels)}

    print(f"\ndirection of motion on {len(rows)} held-out clips (4 directions: chance 0.25)")
    print(f"{'frames':<12} {'P@1':>6} {'names the opposite':>19}")
    for v, r in views.items():
        print(f"{v:<12} {r['P@1']:>6.3f} {r['opposite']:>19.3f}")
    print(f"\nlinear probes of the direction ({len(train_labels)} training clips)")
    print(f"{'features':<15} {'top-1':>6} {'left/right':>11}")
    for k, r in probes.items():
        print(f"{k:<15} {r['top1']:>6.3f} {r['left/right']:>11.3f}")
    worst = min(retrieval.values(), key=lambda r: r["x_chance"])
    print(f"\nlowest R@1 / chance: {worst['x_chance']:.0f}x; direction P@1 {views['in order']['P@1']:.3f} in order, "
          f"{views['averaged']['P@1']:.3f} averaged; left/right probe {probes['video features']['left/right']:.3f} "
          f"(model) vs {probes['mean frame']['left/right']:.3f} (mean frame)")
    write_result(args.json, {"run": str(args.run), "machine": machine(), "retrieval": retrieval,
                             "direction": views, "probes": probes})


if __name__ == "__main__":
    main()
