"""Is data loading the bottleneck? Loader throughput against training-step throughput, on the demo data.

What it measures, all in samples per second on this machine:

1. The loader: the real training pipeline (`build_train_data`: read the manifest row, decode the
   PNG, compute the audio fbank, tokenize the caption, crop, collate and build the JEPA masks)
   with `data.cache_decoded=false`, so every sample pays the cold decode cost (the cost of a
   first epoch, or of any corpus too large to cache). Map-style with 0, 1 and 2 workers by
   default, and the streaming path too with `--streaming`. The main process only takes batches
   off the loader, so this is the most the loader can deliver, with the whole machine to itself.
   The first `--warmup` batches (worker start-up included) are not counted.

2. The training step: forward + loss + backward + clipping + optimizer + EMA target update, as in
   `multijepa/train.py`, on batches collated beforehand and kept in memory, so no loading at all.
   Torch threads as training sets them (`train.threads`, 0 = torch's default).

The ratio loader/step says whether the loader keeps up: above 1 it produces batches faster than
the step eats them. Two caveats the output repeats where they apply:
- With 0 workers the loading runs in the training process between steps, so it is never hidden:
  it adds its own time to every step whatever the ratio.
- Workers run on the same cores as the step. When workers + torch threads exceed the CPU cores
  (on 2 cores: any worker), they compete during training, so both rates above are upper bounds.

3. With `--end-to-end`, the question asked directly: the same training steps fed by the real
   loader (cold decode) for each worker count, against the steps on in-memory batches. This one
   includes the competition for the cores, so on a small machine it is the number to trust.

Every rate is only as good as the machine is quiet: on Linux the script counts the CPU time other
processes used during each measurement and prints it (`others' CPU`, in cores), so a run disturbed
by, say, a test suite is visible as such.

Usage:
    python benchmarks/loader.py                       # 1200-row demo set, map-style, 0/1/2 workers
    python benchmarks/loader.py --streaming --end-to-end --json out.json
    python benchmarks/loader.py --data my/train.jsonl --set data.batch_size=32
    python benchmarks/loader.py --data demo           # the commands' own demo data ($MULTIJEPA_DEMO_DIR)
"""

from __future__ import annotations

import argparse
import gc
import itertools
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

import torch

from multijepa.config import Config, load_config
from multijepa.data.collate import move_batch
from multijepa.data.demo import generate_demo
from multijepa.data.demo_paths import resolve_manifest
from multijepa.data.loader import build_train_data, open_sources, training_texts
from multijepa.distributed import pick_device
from multijepa.processors import Processors, build_tokenizer
from multijepa.train.builder import build_training

from common import machine, write_result

BUSY = 0.25  # cores' worth of other processes above which a measurement is flagged as disturbed


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=None,
                   help="training manifest; 'demo' = the commands' demo data (resolve_manifest); "
                        "default: a --demo-rows demo set generated once into ~/.cache/multijepa/")
    p.add_argument("--demo-rows", type=int, default=1200, help="rows of the generated demo set (default 1200)")
    p.add_argument("--config", default="demo", help="config name or YAML path (default demo)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="config override, repeatable (e.g. data.batch_size=32)")
    p.add_argument("--batches", type=int, default=30, help="measured loader batches per row (default 30)")
    p.add_argument("--warmup", type=int, default=3, help="loader batches before measuring (default 3)")
    p.add_argument("--workers", default="0,1,2", help="comma-separated worker counts (default 0,1,2)")
    p.add_argument("--streaming", action="store_true", help="also measure the streaming path")
    p.add_argument("--steps", type=int, default=10, help="measured training steps (default 10)")
    p.add_argument("--step-warmup", type=int, default=2, help="training steps before measuring (default 2)")
    p.add_argument("--end-to-end", action="store_true",
                   help="also time the training steps fed by the real loader, per path and worker count")
    p.add_argument("--json", default=None, metavar="FILE", help="write the results here")
    args = p.parse_args(argv)
    args.workers = [int(w) for w in args.workers.split(",") if w.strip()]
    if args.batches < 1 or args.steps < 1 or args.warmup < 0 or args.step_warmup < 0 or any(w < 0 for w in args.workers):
        p.error("--batches and --steps must be >= 1, --warmup, --step-warmup and --workers >= 0")
    return args


# ----------------------------------------------------------------------------- data and config


def demo_manifest(rows: int) -> Path:
    """A demo set of `rows` training scenes, generated once (deterministic) and reused."""
    root = Path.home() / ".cache" / "multijepa" / f"bench-demo-{rows}"
    manifest = root / "train.jsonl"
    if not manifest.exists():
        print(f"generating a {rows}-row demo set in {root} (once)")
        root.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=root.name + ".", dir=root.parent))
        generate_demo(tmp, n_train=rows, n_test=0, vqa_per_scene=0, progress=False)
        shutil.rmtree(root, ignore_errors=True)
        tmp.rename(root)  # whole or not at all, so an interrupted run leaves no half set
    return manifest


def make_config(args, manifest: Path | None, extra: list[str] = ()) -> Config:
    overrides = list(args.overrides)
    if manifest is not None:
        overrides.append(f"data.train={manifest}")
    return load_config(args.config, overrides + list(extra))


def cold_config(args, manifest, workers: int, streaming: bool, batches: int) -> Config:
    """The run's config, cold (no decode cache), its loader ending after `batches` batches."""
    return make_config(args, manifest, [
        "data.cache_decoded=false",
        f"data.num_workers={workers}",
        f"data.streaming={str(streaming).lower()}",
        f"train.max_steps={batches}",
    ])


def build_loader(cfg: Config, tokenizer):
    sources = open_sources(cfg)
    return build_train_data(cfg, sources, Processors(cfg.model, tokenizer), start=0, position=None,
                            device=pick_device(cfg.train.device)).loader


# ----------------------------------------------------------------------------- measurements


def _own_cpu_s() -> float:
    """CPU seconds of this process and of its children that have ended (loader workers, once joined)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _machine_busy_s() -> float | None:
    """CPU seconds every process on the machine has been busy since boot (Linux), else None."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(x) for x in f.readline().split()[1:9]]  # user nice system idle iowait irq softirq steal
    except OSError:
        return None
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


class OthersCpu:
    """Average number of cores other processes kept busy during a `with` block (None off Linux).
    Our loader workers must have ended by the block's end to count as ours."""

    def __enter__(self):
        self.wall, self.own, self.busy = time.perf_counter(), _own_cpu_s(), _machine_busy_s()
        self.cores = None
        return self

    def __exit__(self, *exc):
        busy = _machine_busy_s()
        if busy is not None and self.busy is not None:
            others = (busy - self.busy) - (_own_cpu_s() - self.own)
            self.cores = max(0.0, others / (time.perf_counter() - self.wall))
        return False


def time_loader(cfg: Config, tokenizer, warmup: int, keep: int = 0) -> dict:
    """Take every batch off the real loader as fast as it comes. Returns samples/s over the batches
    after the first `warmup`, the seconds to the first batch, and the first `keep` batches (for the step)."""
    loader = build_loader(cfg, tokenizer)
    kept, samples, bad = [], 0, 0
    tic = time.perf_counter()
    first = t0 = None
    for b, batch in enumerate(loader):  # ends after train.max_steps batches
        if "fatal" in batch:
            raise RuntimeError(batch["fatal"])
        if b == 0:
            first = time.perf_counter() - tic
        if len(kept) < keep:
            batch.pop("position", None)
            kept.append(batch)
        if b + 1 == warmup:
            t0 = time.perf_counter()
        elif b + 1 > warmup:
            samples += batch["size"]
            bad += len(batch["errors"])
    seconds = time.perf_counter() - (t0 if t0 is not None else tic)
    del loader  # shuts persistent workers down before the next measurement
    gc.collect()
    return {"samples": samples, "bad_rows": bad, "seconds": seconds, "samples_per_s": samples / seconds,
            "first_batch_s": first, "kept": kept}


def time_steps(cfg: Config, tokenizer, batches, warmup: int, steps: int) -> dict:
    """Training steps as `pretrain` runs them, on `batches` (an iterable: batches in memory, or a
    live loader). Only the steps after `warmup` are timed, their batch waits included."""
    t = cfg.train
    torch.manual_seed(t.seed)
    device = pick_device(t.device)
    training = build_training(cfg, device, tokenizer)  # what `pretrain` builds
    model, train_step = training.model, training.step
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    model.train()
    it = iter(batches)
    samples, t0 = 0, time.perf_counter()
    for step in range(warmup + steps):
        if step == warmup:
            sync()
            samples, t0 = 0, time.perf_counter()
        batch = next(it)
        if "fatal" in batch:
            raise RuntimeError(batch["fatal"])
        batch.pop("position", None)
        loss = train_step(move_batch(batch, device), step).loss  # move_batch: a no-op on CPU
        samples += batch["size"]
    sync()
    seconds = time.perf_counter() - t0
    del it, batches  # a live loader's workers end here
    gc.collect()
    return {"device": str(device), "steps": steps, "samples": samples, "seconds": seconds,
            "samples_per_s": samples / seconds, "final_loss": float(loss)}


# ----------------------------------------------------------------------------- report


def core_notes(workers: int, m: dict) -> list[str]:
    if workers >= m["cpu_cores"]:
        return [f"{workers} workers >= {m['cpu_cores']} CPU cores: in training they compete with the step "
                "for the cores, so the loader rate and the step rate are both upper bounds"]
    if workers and workers + m["torch_threads"] > m["cpu_cores"]:
        return [f"{workers} worker(s) + {m['torch_threads']} torch threads > {m['cpu_cores']} CPU cores: in training "
                "they share the cores with the step, so both rates are upper bounds"]
    return []


def loader_verdict(row: dict, m: dict) -> tuple[str, list[str]]:
    """The verdict line for one loader row, and the caveats that apply to it."""
    ratio = row["ratio"]
    text = "loader faster than the step: not the bottleneck" if ratio >= 1 else "loader slower: it is the bottleneck"
    notes = []
    if row["workers"] == 0:
        notes.append(f"0 workers: loading runs in the training process between steps, never hidden: "
                     f"{1 / (1 + ratio):.0%} of each step's time here (~{row['serial_samples_per_s']:.1f} samples/s "
                     "end to end)")
    return text, notes + core_notes(row["workers"], m)


def end_to_end_verdict(ratio: float) -> str:
    if ratio >= 0.95:
        return "trains at the step's speed: loading is hidden"
    return f"trains {1 - ratio:.0%} slower than the step alone: loading (or its share of the cores) costs that"


def _table(header: list[tuple[str, int]], rows: list[list], notes_per_row: list[list[str]], all_notes: list[str]) -> None:
    line = " ".join(f"{h:<{w}}" if i == 0 else f"{h:>{w}}" for i, (h, w) in enumerate(header[:-1])) + "  " + header[-1][0]
    print(line)
    print("-" * len(line))
    for cells, notes in zip(rows, notes_per_row):
        marks = ""
        for n in notes:
            if n not in all_notes:
                all_notes.append(n)
            marks += f"[{all_notes.index(n) + 1}]"
        out = " ".join(f"{c:<{w}}" if i == 0 else f"{c:>{w}}" for i, (c, (_, w)) in enumerate(zip(cells[:-1], header)))
        print(f"{out}  {cells[-1]} {marks}".rstrip())


def _cpu(cores: float | None) -> str:
    return "n/a" if cores is None else f"{cores:.2f}"


def print_report(cfg: Config, data: str, m: dict, step: dict, rows: list[dict], e2e: list[dict], args) -> None:
    d = cfg.data
    print()
    print(f"machine: {m['cpu_cores']} CPU cores (os.cpu_count {m['cpu_count']}), torch {m['torch']} "
          f"with {m['torch_threads']} threads, Python {m['python']}, {m['platform']}")
    print(f"data: {data}")
    print(f"config: {' '.join([args.config, *args.overrides])} | batch_size {d.batch_size}, modalities "
          f"{', '.join(cfg.model.modalities)}, prefetch_factor {d.prefetch_factor}, cache_decoded false "
          "(cold decode of every sample)")
    print(f"training step ({step['device']}, {step['steps']} steps after {args.step_warmup} warmup, batches in memory): "
          f"{step['samples_per_s']:.1f} samples/s ({1000 * step['seconds'] / step['steps']:.0f} ms/step, "
          f"others' CPU {_cpu(step['others_cpu'])})")
    print(f"loader: {args.batches} batches after {args.warmup} warmup per row, the main process only taking batches")
    print()
    notes: list[str] = []
    _table([("path", 10), ("workers", 7), ("loader samples/s", 16), ("ms/batch", 8), ("1st batch s", 11),
            ("others' CPU", 11), ("loader/step", 11), ("verdict", 0)],
           [[r["path"], r["workers"], f"{r['samples_per_s']:.1f}", f"{r['ms_per_batch']:.0f}", f"{r['first_batch_s']:.2f}",
             _cpu(r["others_cpu"]), f"{r['ratio']:.2f}", r["verdict"]] for r in rows],
           [r["notes"] for r in rows], notes)
    if e2e:
        print()
        print(f"end to end: {args.steps} training steps after {args.step_warmup} warmup, fed by the loader (cold decode)")
        _table([("path", 10), ("workers", 7), ("train samples/s", 16), ("ms/step", 8), ("others' CPU", 11),
                ("train/step", 11), ("verdict", 0)],
               [[r["path"], r["workers"], f"{r['samples_per_s']:.1f}", f"{1000 * r['seconds'] / r['steps']:.0f}",
                 _cpu(r["others_cpu"]), f"{r['ratio']:.2f}", r["verdict"]] for r in e2e],
               [[] for _ in e2e], notes)
    for i, n in enumerate(notes, 1):
        print(f"[{i}] {n}")
    if any(r["bad_rows"] for r in rows):
        print("note: some rows failed to decode; they are not counted as samples")
    disturbed = [c for c in [step["others_cpu"], *(r["others_cpu"] for r in rows + e2e)] if c is not None and c >= BUSY]
    if disturbed:
        print(f"WARNING: other processes used up to {max(disturbed):.2f} cores during some measurements: those rates "
              "are lower and noisier than on a quiet machine; run again when it is idle")


def main(argv=None) -> dict:
    args = parse_args(argv)
    if load_config(args.config, args.overrides).data.sources:  # a mixture in the config: measure that
        if args.data is not None:
            raise SystemExit(f"config {args.config} has data.sources: drop --data, or use a config without sources")
        manifest = None
    elif args.data is None:
        manifest = demo_manifest(args.demo_rows)
    elif args.data == "demo":
        manifest = resolve_manifest(None, "train")
    else:
        manifest = Path(args.data)
    base = make_config(args, manifest)
    data = str(manifest) if manifest else ", ".join(s.path for s in base.data.sources)
    paths = [("map-style", False)] + ([("streaming", True)] if args.streaming else [])
    need = args.step_warmup + args.steps

    with tempfile.TemporaryDirectory() as tok_dir:
        # The tokenizer as train.py builds it: the configured one, or SentencePiece trained on the captions.
        sources = open_sources(base)
        has_text = any("text" in s.columns for s in sources)
        tokenizer = build_tokenizer(base.model, tok_dir, texts=(lambda: training_texts(sources)) if has_text else None)
    if base.train.threads:  # as train.py: 0 keeps torch's default
        torch.set_num_threads(base.train.threads)
    m = machine()
    print(f"torch {m['torch']}, {m['torch_threads']} threads, {m['cpu_cores']} CPU cores; "
          f"config {args.config}, batch_size {base.data.batch_size}; data {data}")

    rows, step_batches = [], []
    for path, streaming in paths:
        for w in args.workers:
            print(f"  loader: {path}, {w} workers ...", flush=True)
            cfg = cold_config(args, manifest, w, streaming, args.warmup + args.batches)
            with OthersCpu() as cpu:
                # Every row gives the same batches, whatever the workers: keep the first row's for the step.
                r = time_loader(cfg, tokenizer, args.warmup, keep=0 if step_batches else need)
            step_batches += r.pop("kept")
            rows.append({"path": path, "workers": w, **r, "ms_per_batch": 1000 * r["seconds"] / args.batches,
                         "others_cpu": cpu.cores})
    if not step_batches:  # --workers given empty
        step_batches = time_loader(cold_config(args, manifest, 0, False, need), tokenizer, 0, keep=need)["kept"]

    print(f"  training step: {args.step_warmup} + {args.steps} steps on batches in memory ...", flush=True)
    with OthersCpu() as cpu:
        step = time_steps(base, tokenizer, itertools.cycle(step_batches), args.step_warmup, args.steps)
    step["others_cpu"] = cpu.cores
    del step_batches

    e2e = []
    if args.end_to_end:
        for path, streaming in paths:
            for w in args.workers:
                print(f"  end to end: {path}, {w} workers ...", flush=True)
                cfg = cold_config(args, manifest, w, streaming, need)
                with OthersCpu() as cpu:
                    r = time_steps(cfg, tokenizer, build_loader(cfg, tokenizer), args.step_warmup, args.steps)
                ratio = r["samples_per_s"] / step["samples_per_s"]
                e2e.append({"path": path, "workers": w, **r, "ratio": ratio, "verdict": end_to_end_verdict(ratio),
                            "others_cpu": cpu.cores})

    for r in rows:
        r["ratio"] = r["samples_per_s"] / step["samples_per_s"]
        r["serial_samples_per_s"] = 1 / (1 / r["samples_per_s"] + 1 / step["samples_per_s"])
        r["verdict"], r["notes"] = loader_verdict(r, m)
    print_report(base, data, m, step, rows, e2e, args)

    result = {"machine": m, "data": data, "config": args.config, "overrides": args.overrides,
              "batch_size": base.data.batch_size, "warmup_batches": args.warmup, "measured_batches": args.batches,
              "step_warmup": args.step_warmup, "step": step, "loader": rows, "end_to_end": e2e}
    write_result(args.json, result)
    return result


if __name__ == "__main__":
    main()
