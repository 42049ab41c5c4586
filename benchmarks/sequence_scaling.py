"""Transformer, Mamba and hybrid encoders as the input grows: step time and activation memory,
then the quality of each kind trained on the demo data for the same number of steps.

1. Scaling. One encoder of each kind (`model.<m>.encoder.kind`), same width and depth (the demo
   config's: width 128, depth 4), a training step each (forward of every token, backward of a
   loss on the features; no optimizer), in this process, one after another:
   - audio, as the clip grows (`--seconds`, default 2 5 10 30 60) at the demo's patching (128 mel
     bins x 16 frames of 10 ms: 25 tokens a second);
   - image, as the resolution grows (`--sizes`, default 64 128 224 320, patch 8).
   Time: the median of `--reps` steps after a warm-up. Memory: the bytes of the tensors the
   forward saves for the backward (each storage once), which is what grows with the input; the
   weights are the same at every length. Each length prints `ratio_mamba_vs_transformer` (step
   time, below 1: Mamba is faster) and the table ends with the crossover: the shortest input from
   which Mamba is faster at every longer one measured.
2. Quality (`--train-steps`, default 150; 0 skips it). `multijepa pretrain --config demo` with all
   three encoders of one kind, the same steps and seed, then the six-direction retrieval on the
   held-out scenes: mean R@1 and class-match P@1, side by side.

    python benchmarks/sequence_scaling.py
    python benchmarks/sequence_scaling.py --seconds 2 30 --sizes 64 --train-steps 0
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from multijepa.config import load_config
from multijepa.data.demo import generate_demo
from multijepa.model import build_encoder, load_run
from multijepa.retrieval.metrics import manifest_retrieval

from common import machine, write_result
from vs_clip import train_arm

KINDS = ("transformer", "mamba", "hybrid")
FRAMES_PER_SECOND = 100  # kaldi fbank at a 10 ms shift


def encoder_for(kind: str, modality: str, size: int):
    """The demo config's encoder of `kind` for an audio clip of `size` frames or an image of `size` px."""
    key = "target_frames" if modality == "audio" else "size"
    cfg = load_config("demo", [f"model.{modality}.encoder.kind={kind}", f"model.{modality}.{key}={size}"])
    return build_encoder(modality, cfg.model, vocab_size=100), cfg


def saved_bytes(fn) -> int:
    """Bytes of the tensors autograd saves for the backward while `fn` runs, each storage once."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor):
        s = t.untyped_storage()
        seen[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


def measure(kind: str, modality: str, size: int, batch: int, reps: int) -> dict:
    torch.manual_seed(0)
    enc, cfg = encoder_for(kind, modality, size)
    if modality == "audio":
        x = torch.randn(batch, cfg.model.audio.num_mel_bins, size)
    else:
        x = torch.randn(batch, 3, size, size)
    memory = saved_bytes(lambda: enc(x)[0])

    def step() -> float:
        start = time.perf_counter()
        h, _ = enc(x)
        h.square().mean().backward()
        enc.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    step()  # warm-up
    times = [step() for _ in range(reps)]
    tokens = enc.tokens.num_tokens
    return {"kind": kind, "tokens": tokens, "ms_per_step": 1000 * statistics.median(times), "saved_mib": memory / 2**20}


def scaling(modality: str, sizes: list[int], label, batch: int, reps: int) -> dict:
    """One table: every kind at every size -> {size: {kind: result}}, printed as it goes."""
    print(f"\n{modality}: batch {batch}, median of {reps} steps (forward + backward), demo width and depth")
    head = f"| {'input':>8} | tokens | " + " | ".join(f"{k} ms" for k in KINDS) + " | " + \
        " | ".join(f"{k} MiB" for k in KINDS) + " | ratio_mamba_vs_transformer |"
    print(head + "\n|" + "---|" * (head.count("|") - 1), flush=True)
    table = {}
    for size in sizes:
        res = {k: measure(k, modality, size, batch, reps) for k in KINDS}
        ratio = res["mamba"]["ms_per_step"] / res["transformer"]["ms_per_step"]
        table[size] = {**res, "ratio_mamba_vs_transformer": ratio}
        print(f"| {label(size):>8} | {res['transformer']['tokens']:>6} | "
              + " | ".join(f"{res[k]['ms_per_step']:.0f}" for k in KINDS) + " | "
              + " | ".join(f"{res[k]['saved_mib']:.0f}" for k in KINDS) + f" | {ratio:.2f} |", flush=True)
    faster = [s for s in sizes if table[s]["ratio_mamba_vs_transformer"] < 1]
    crossover = next((s for i, s in enumerate(sizes) if all(t in faster for t in sizes[i:])), None)
    for s in sizes:
        print(f"ratio_mamba_vs_transformer_{modality}_{label(s).replace(' ', '')}: "
              f"{table[s]['ratio_mamba_vs_transformer']:.3f}")
    print(f"crossover_{modality}: " + (label(crossover) if crossover is not None else "none in the range measured"))
    return {"table": {str(k): v for k, v in table.items()}, "crossover": crossover}


def quality(work: Path, steps: int) -> dict:
    """Each kind trained on the demo data for `steps` steps -> retrieval on the held-out scenes."""
    data = work / "data"
    if not (data / "test.jsonl").exists():
        generate_demo(data, progress=False)
    print(f"\nquality: demo data, {steps} steps per kind (all three encoders of that kind), seed 0")
    print("| kind | steps | ms/step | mean R@1 | mean class-match P@1 |\n|---|---|---|---|---|", flush=True)
    out = {}
    for kind in KINDS:
        run = work / f"run_{kind}"
        kinds = [f"model.{m}.encoder.kind={kind}" for m in ("image", "text", "audio")]
        seconds, done = train_arm([f"data.train={data / 'train.jsonl'}", f"train.max_steps={steps}",
                                   "train.ckpt_every=100000", *kinds], "demo", run)
        ret, _ = manifest_retrieval(load_run(run), data / "test.jsonl", progress=False)
        r1 = sum(v["R@1"] for v in ret.values()) / len(ret)
        p1 = sum(v["P@1"] for v in ret.values()) / len(ret)
        out[kind] = {"steps": done, "ms_per_step": 1000 * seconds / done, "mean_R@1": r1, "mean_P@1": p1,
                     "R@1": {k: v["R@1"] for k, v in ret.items()}}
        print(f"| {kind} | {done} | {1000 * seconds / done:.0f} | {r1:.3f} | {p1:.3f} |", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, nargs="+", default=[2, 5, 10, 30, 60], help="audio clip lengths [2 5 10 30 60]")
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 224, 320], help="image sides in px [64 128 224 320]")
    ap.add_argument("--batch", type=int, default=8, help="inputs per step [8]")
    ap.add_argument("--reps", type=int, default=3, help="timed steps per measurement [3]")
    ap.add_argument("--train-steps", type=int, default=150, help="pretraining steps per kind; 0 skips [150]")
    ap.add_argument("--work", default="benchmarks/results/sequence_scaling_work", help="data and run folders")
    ap.add_argument("--json", help="also write the results to this JSON file")
    args = ap.parse_args()

    print(f"machine: {json.dumps(machine())}", flush=True)
    seconds = {max(16, int(round(s * FRAMES_PER_SECOND / 16)) * 16): s for s in args.seconds}  # frames: whole patches
    result = {"machine": machine(),
              "audio": scaling("audio", list(seconds), lambda f: f"{seconds[f]:g} s", args.batch, args.reps),
              "image": scaling("image", args.sizes, lambda s: f"{s} px", args.batch, args.reps)}
    if args.train_steps > 0:
        result["quality"] = quality(Path(args.work), args.train_steps)
    write_result(args.json, result)


if __name__ == "__main__":
    main()
