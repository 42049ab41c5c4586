"""A pretrained tower's cost: step time and peak memory of a demo pretraining whose towers come
from a local file, frozen and trained, against our own encoders of the same shape. The file holds
random weights (no download): this measures cost, not quality.

    --tower timm        the image encoder is a timm ViT-Tiny (224 px, patch 16, width 192, 12 blocks)
    --tower open_clip   image and text encoders are open_clip ViT-S-32's (224 px, patch 32, width
                        384, 12 blocks each; CLIP BPE, 77 tokens)

Each arm is a fresh `multijepa pretrain` process of `--steps` steps; its rate is read from
`metrics.jsonl` after the first logging interval, its peak memory is the process's max RSS.
Last lines: `step_time_ratio_frozen_vs_own: X`, `peak_memory_ratio_frozen_vs_own: Y` (and the
same for `trained`).

    python benchmarks/towers.py [--tower open_clip]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from common import logged_step_seconds, machine, small_demo, write_result

ARCH = {"timm": "vit_tiny_patch16_224", "open_clip": "ViT-S-32"}
OWN = {  # our own encoders in the towers' shapes
    "timm": ["model.image.size=224", "model.image.patch=16", "model.image.encoder.width=192",
             "model.image.encoder.depth=12", "model.image.encoder.heads=3"],
    "open_clip": ["model.image.size=224", "model.image.patch=32", "model.image.encoder.width=384",
                  "model.image.encoder.depth=12", "model.image.encoder.heads=6", "model.text.tokenizer=clip",
                  "model.text.max_len=77", "model.text.encoder.width=384", "model.text.encoder.depth=12",
                  "model.text.encoder.heads=6"],
}


def save_random_tower(kind: str, path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    if kind == "timm":
        import timm

        model = timm.create_model(ARCH[kind])
    else:
        from modalities.towers import open_clip_model

        model = open_clip_model(ARCH[kind])
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))


def run_arm(work: Path, data: Path, name: str, overrides: list[str], steps: int) -> dict:
    run = work / name
    args = ["pretrain", "--config", "demo", "--data", str(data), "--out", str(run), "--max-steps", str(steps),
            "--no-progress", "train.log_every=2", "train.ckpt_every=100000", *overrides]
    code = f"import resource, sys\nfrom multijepa.cli import main\ncode = main({args!r})\n" \
           "print('MAXRSS', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\nsys.exit(code)\n"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    rss_kib = int(next(line.split()[1] for line in out.splitlines() if line.startswith("MAXRSS")))
    return {"s_per_step": logged_step_seconds(run), "peak_rss_mib": rss_kib / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=6, help="steps per arm [6]")
    ap.add_argument("--n", type=int, default=256, help="demo scenes generated for it [256]")
    ap.add_argument("--tower", choices=sorted(ARCH), default="timm", help="which towers [timm]")
    ap.add_argument("--json", help="also write the results to this JSON file")
    args = ap.parse_args()

    kind = args.tower
    mods = ["image"] if kind == "timm" else ["image", "text"]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = small_demo(work, args.n)
        weights = work / f"{kind}.safetensors"
        save_random_tower(kind, weights)
        towers = [f"model.{m}.pretrained={kind}:{ARCH[kind]}:{weights}" for m in mods]
        arms = {"own": OWN[kind], "trained": towers, "frozen": [*towers, *(f"model.{m}.freeze=true" for m in mods)]}
        print(f"machine: {json.dumps(machine())}; demo config, {'/'.join(mods)} encoders of {ARCH[kind]} shape, "
              f"{args.steps} steps", flush=True)
        res = {}
        for name, overrides in arms.items():
            res[name] = run_arm(work, data, name, overrides, args.steps)
            print(f"  {name:<8} {res[name]['s_per_step']:.2f} s/step  peak memory {res[name]['peak_rss_mib']:.0f} MiB",
                  flush=True)
    write_result(args.json, {"machine": machine(), "tower": kind, "steps": args.steps, "results": res})
    for name in ("trained", "frozen"):
        print(f"step_time_ratio_{name}_vs_own: {res[name]['s_per_step'] / res['own']['s_per_step']:.2f}")
        print(f"peak_memory_ratio_{name}_vs_own: {res[name]['peak_rss_mib'] / res['own']['peak_rss_mib']:.2f}")


if __name__ == "__main__":
    main()
