"""What does a MultiJEPA training step cost next to a CLIP step with the same towers?

In one process and one run, it times training steps of three models on the same device, batch
size and precision:

1. MultiJEPA image+text (`model.modalities=[image,text]`);
2. MultiJEPA with the config's own modalities (image+text+audio in the shipped configs);
3. open_clip's `CLIP` with the same image and text tower sizes: image size, patch, width, depth,
   heads and MLP ratio of the image encoder; context length (`text.max_len`), vocabulary, width,
   depth and heads of the text encoder; `model.embed_dim`. Trained as open_clip's training loop
   does: `ClipLoss`, AdamW (same lr and betas), the same gradient clipping and autocast, and the
   learned temperature clamped at 100 after each step.

A MultiJEPA step is the real `TrainStep` the training loop runs (schedules, forward, objective,
backward, clipping, AdamW, EMA target update), so the benchmark times exactly that. The batches are
synthetic (random images, spectrograms and token ids, the vocabulary of `model.text.vocab_size`),
collated with their JEPA masks by the real collator, and put on the device beforehand: no data
loading is timed. `N_BATCHES` different batches are cycled; open_clip gets the same images and the
same token ids, padded to its context length. The models are seeded, in train mode, and use
`train.threads` torch threads when that is set (as training does). An untimed pass of MultiJEPA
image+text and of CLIP over the image+text batches comes first, so that one-time allocations
(kernel libraries, workspaces, kernels built per input shape) count in no model's memory; on CPU,
the image+text+audio model still pays for its audio shapes' kernels (tens of MiB in bf16).

Per model: samples/s and mean step time over `--steps` steps after `--warmup` untimed ones; peak
memory above the level the batches already held (CUDA: `max_memory_allocated`; Linux CPU: the peak
RSS, reset through /proc/self/clear_refs; elsewhere only the process's peak RSS since it started is
known, and is reported as such); trainable and total parameters (total counts MultiJEPA's EMA
targets); FLOPs per sample, counted by `torch.utils.flop_counter.FlopCounterMode` over one whole
training step (forward, backward and all: for MultiJEPA the EMA target encoders' forward and the
predictors too) taken before the warm-up. On a GPU also the MFU: those FLOPs times steps/s over the
device's dense peak for the precision (bf16 tensor cores, or plain fp32 since torch leaves TF32 off
by default); `--peak-flops` gives the peak of a GPU the table does not know.

How to read it: the last line, `ratio_vs_open_clip`, is MultiJEPA image+text's mean step time over
CLIP's. Lower is better for MultiJEPA; the goal is <= 1.0. The FLOPs per sample tell how much of
the ratio is work: the JEPA masks let MultiJEPA's online encoders see only the context tokens (and
text only up to the longest caption of the batch, where CLIP always runs its whole context; the
tokens lines show both), but MultiJEPA adds the EMA target encoders' forward over every token and
the predictors. The rest is overhead: many small kernels, and on a GPU the host waiting for the
device inside MultiJEPA's step (the encoders' padding checks, the objective's row pairing, the
finite-loss check), where CLIP's step never waits. The towers match in size, not in every detail:
CLIP's image tower adds a class token, learned positions and a pre-LayerNorm, its text tower is
causal and pools at the end-of-text token (the largest id, placed at each caption's end here);
MultiJEPA's encoders use fixed sin-cos positions, no class token, padding masks and a mean-pool +
BatchNorm head. On CPU the timings are only as good as the machine is quiet; on a busy one, torch's
default of one thread per core can make every step many times slower (threads waiting for each
other): pass train.threads=1 there.

    python benchmarks/step_throughput.py                                   # demo config, CPU or GPU
    python benchmarks/step_throughput.py --config vit_b16_gpu --precision bf16    # ViT-B-sized, on a GPU
    python benchmarks/step_throughput.py --config tiny --steps 3 --warmup 1 --json out.json
    python benchmarks/step_throughput.py --batch-size 32 train.threads=1 model.image.encoder.depth=6
    python benchmarks/step_throughput.py --profile 5                       # + where the time goes
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import math
import resource
import sys
import time

import torch
import torch.nn.functional as F
from open_clip.loss import ClipLoss
from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg
from torch.utils import flop_counter

from modalities.seeding import SYNTHETIC, mix_seed
from multijepa.config import Config, load_config
from multijepa.data.collate import MultiModalCollator, build_bind_maskers, build_maskers, move_batch
from multijepa.distributed import pick_device
from multijepa.train.builder import build_training
from multijepa.train.step import TrainStep, autocast_for

from common import machine, write_result

N_BATCHES = 4  # different pre-built batches, cycled
CLIP_BPE_VOCAB = 49408  # vocabulary of model.text.tokenizer=clip (open_clip's BPE)
# Dense peak FLOP/s (no sparsity) per precision; the first name found in the device's name wins.
PEAK_FLOPS = {
    "H100 PCIe": {"bf16": 756e12, "fp32": 51e12},
    "H100": {"bf16": 989e12, "fp32": 67e12},  # SXM
    "H200": {"bf16": 989e12, "fp32": 67e12},
    "A100": {"bf16": 312e12, "fp32": 19.5e12},
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="demo", help="config name or YAML path (default demo; base = ViT-B-sized, for GPUs)")
    p.add_argument("--batch-size", type=int, default=None, help="samples per step (default: the config's data.batch_size)")
    p.add_argument("--steps", type=int, default=20, help="timed steps per model (default 20)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps before them (default 3)")
    p.add_argument("--precision", choices=("fp32", "bf16"), default=None, help="default: the config's train.precision")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None, help="default: the config's train.device")
    p.add_argument("--peak-flops", type=float, default=None,
                   help="the device's peak FLOP/s at this precision, for the MFU (default: from a table of known GPUs)")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the figures to this JSON file")
    p.add_argument("--profile", type=int, default=0, metavar="N",
                   help="then profile N MultiJEPA image+text steps: time per phase and the top operators")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    args = p.parse_args(argv)
    if args.steps < 1 or args.warmup < 0 or (args.batch_size is not None and args.batch_size < 2):
        p.error("--steps must be >= 1, --warmup >= 0 and --batch-size >= 2 (contrastive losses need negatives)")
    return args


# ----------------------------------------------------------------------------- batches


def vocab_size(cfg: Config) -> int:
    """The text vocabulary training would have: the SentencePiece size asked for, or CLIP's BPE."""
    return CLIP_BPE_VOCAB if cfg.model.text.tokenizer == "clip" else cfg.model.text.vocab_size


def make_items(cfg: Config, n: int, batch_no: int) -> list[dict]:
    """n random rows with the config's modalities, as the datasets yield them. Each modality draws
    from its own generator, so the image and text of a row are the same whatever else it has."""
    m, vocab = cfg.model, vocab_size(cfg)
    gens = {k: torch.Generator().manual_seed(mix_seed(SYNTHETIC, cfg.train.seed, batch_no, i))
            for i, k in enumerate(("image", "text", "audio"))}
    items = []
    for row in range(n):
        item: dict = {"row": row, "batch_no": batch_no}
        if "image" in m.modalities:
            item["image"] = torch.randn(3, m.image.size, m.image.size, generator=gens["image"])
        if "text" in m.modalities:
            length = int(torch.randint(4, m.text.max_len + 1, (1,), generator=gens["text"]))
            ids = torch.zeros(m.text.max_len, dtype=torch.long)  # 0 = padding
            ids[: length - 1] = torch.randint(4, vocab - 1, (length - 1,), generator=gens["text"])
            ids[length - 1] = vocab - 1  # end of text: the largest id, where CLIP pools
            item["text"] = (ids, torch.tensor(length))
        if "audio" in m.modalities:
            item["audio"] = torch.randn(m.audio.num_mel_bins, m.audio.target_frames, generator=gens["audio"])
        items.append(item)
    return items


def build_batches(cfg: Config, batch_size: int) -> list[dict]:
    """N_BATCHES training batches collated with their JEPA masks (on the CPU)."""
    maskers = build_maskers(cfg.model) if cfg.loss.masks else None  # loss.objective=clip: whole inputs
    collate = MultiModalCollator(cfg.model.modalities, maskers, seed=cfg.train.seed,
                                 bind_maskers=build_bind_maskers(cfg.model))  # FLIP's keep sets, if any
    return [collate(make_items(cfg, batch_size, b)) for b in range(N_BATCHES)]


def clip_inputs(batch: dict, context_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A MultiJEPA image+text batch as CLIP takes it: images, and token ids padded to its context."""
    ids = batch["text"]["x"]
    return batch["image"]["x"], F.pad(ids, (0, context_length - ids.shape[1]))


def encoder_tokens(cfg: Config, batches: list[dict]) -> dict[str, tuple[float, float]]:
    """Per modality, the mean tokens per row its online encoder computes (the context, padded to the
    batch's longest, while the model predicts; FLIP's keep set or the whole input before
    `loss.pred_start`) and its target encoder computes (the whole input)."""
    m = cfg.model
    whole = {"image": lambda b: (m.image.size // m.image.patch) ** 2,
             "text": lambda b: b["text"]["x"].shape[1],  # up to the batch's longest caption
             "audio": lambda b: (m.audio.num_mel_bins // m.audio.patch[0]) * (m.audio.target_frames // m.audio.patch[1])}
    predicting = cfg.loss.predicts and cfg.loss.pred_start == 0  # the phase a step of a fresh model is in

    def online(k, b):
        key = "context" if predicting else "bind_keep"
        return b[k][key].shape[1] if key in b[k] else whole[k](b)

    return {k: (sum(online(k, b) for b in batches) / len(batches),
                sum(whole[k](b) for b in batches) / len(batches)) for k in m.modalities}


# ----------------------------------------------------------------------------- measurement


def count_cpu_attention() -> None:
    """Teach FlopCounterMode the CPU flash-attention kernels (it knows only the CUDA ones), so CPU
    FLOPs include attention as GPU FLOPs do."""
    ops = {"_scaled_dot_product_flash_attention_for_cpu": flop_counter.sdpa_flop,
           "_scaled_dot_product_flash_attention_for_cpu_backward": flop_counter.sdpa_backward_flop}
    for name, formula in ops.items():
        op = getattr(torch.ops.aten, name)
        if op not in flop_counter.flop_registry:
            flop_counter.register_flop_formula(op, get_raw=True)(formula)  # `formula` is already shape-wrapped


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


class PeakMemory:
    """Peak memory above the level at entry, in bytes (`.peak`), and what it is (`.kind`)."""

    def __init__(self, device: torch.device):
        self.device = device

    def __enter__(self):
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            self.base, self.kind = torch.cuda.memory_allocated(), "CUDA max_memory_allocated above the batches"
            return self
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed heap back, so the last model's memory is not reused unseen
        except (OSError, AttributeError):
            pass
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets the peak RSS (VmHWM) to the current RSS
            self.base, self.kind = _status_kb("VmRSS") * 1024, "peak RSS growth above the batches"
        except OSError:
            self.base, self.kind = 0, "the process's peak RSS since it started"
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() - self.base
        elif self.base:
            self.peak = _status_kb("VmHWM") * 1024 - self.base
        else:
            self.peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
        return False


def run_steps(step, batches: list, warmup: int, steps: int, device: torch.device) -> dict:
    """`step(batch, step_no)` once under FlopCounterMode (untimed), `warmup` more times, then `steps`
    timed times, the batches cycled. CUDA is synchronised before each timer reading."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    with flop_counter.FlopCounterMode(display=False) as counter:
        step(batches[0], 0)
    for i in range(1, 1 + warmup):
        step(batches[i % len(batches)], i)
    sync()
    tic = time.perf_counter()
    for i in range(1 + warmup, 1 + warmup + steps):
        loss = step(batches[i % len(batches)], i)
    sync()
    seconds = time.perf_counter() - tic
    return {"seconds": seconds, "flops_per_step": counter.get_total_flops(), "final_loss": float(loss)}


def param_counts(model: torch.nn.Module) -> dict:
    return {"params_trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "params_total": sum(p.numel() for p in model.parameters())}


def multijepa_step(cfg: Config, args, device: torch.device) -> tuple[torch.nn.Module, TrainStep]:
    """The real TrainStep on the MultiJEPA of `cfg`, from the builder `pretrain` uses (the config's
    speed switches included)."""
    torch.manual_seed(cfg.train.seed)
    cfg.train.precision = args.precision
    training = build_training(cfg, device, vocab_size=vocab_size(cfg))
    return training.model.train(), training.step


def bench_multijepa(cfg: Config, batches: list[dict], args, device: torch.device) -> dict:
    with PeakMemory(device) as mem:
        model, train_step = multijepa_step(cfg, args, device)
        r = run_steps(lambda batch, i: train_step(batch, i).loss, batches, args.warmup, args.steps, device)
    return {**r, **param_counts(model), "peak_memory_bytes": mem.peak, "memory_kind": mem.kind}


def profile_multijepa(cfg: Config, batches: list[dict], args, device: torch.device) -> None:
    """Where a MultiJEPA step's time goes: torch.profiler over `--profile` steps after a warm-up,
    by phase (the record_function ranges of TrainStep and MultiJEPA.forward) and by operator."""
    from torch.profiler import ProfilerActivity, profile

    _, train_step = multijepa_step(cfg, args, device)
    for i in range(2):
        train_step(batches[i % len(batches)], i)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for i in range(args.profile):
            train_step(batches[i % len(batches)], 2 + i)
        if device.type == "cuda":
            torch.cuda.synchronize()
    events = prof.key_averages()
    attr = "device_time_total" if device.type == "cuda" else "cpu_time_total"
    phases = sorted((e for e in events if e.key.startswith(("step/", "forward/"))), key=lambda e: e.key)
    print(f"\nprofile of MultiJEPA {'+'.join(cfg.model.modalities)}: ms per step by phase "
          f"({'device' if device.type == 'cuda' else 'CPU'} time; forward/* lie inside step/forward)")
    for e in phases:
        print(f"  {e.key:<28} {getattr(e, attr) / 1000 / args.profile:9.1f}")
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(events.table(sort_by=sort, row_limit=12))


def build_clip(cfg: Config) -> CLIP:
    """open_clip's CLIP with MultiJEPA's image and text tower sizes."""
    img, txt = cfg.model.image, cfg.model.text
    vision = CLIPVisionCfg(layers=img.encoder.depth, width=img.encoder.width, head_width=img.encoder.width // img.encoder.heads,
                           mlp_ratio=img.encoder.mlp_ratio, patch_size=img.patch, image_size=img.size)
    text = CLIPTextCfg(context_length=txt.max_len, vocab_size=vocab_size(cfg), width=txt.encoder.width,
                       heads=txt.encoder.heads, layers=txt.encoder.depth, mlp_ratio=txt.encoder.mlp_ratio)
    return CLIP(cfg.model.embed_dim, vision, text, output_dict=True)


def bench_open_clip(cfg: Config, batches: list[tuple], args, device: torch.device) -> dict:
    """CLIP trained as open_clip's training loop does (ClipLoss, AdamW with no decay on gains and
    biases, clipping, logit scale clamped), with MultiJEPA's lr, betas, clipping and autocast."""
    torch.manual_seed(cfg.train.seed)
    with PeakMemory(device) as mem:
        model = build_clip(cfg).to(device).train()
        named = list(model.named_parameters())
        gain_or_bias = [p.ndim < 2 or any(k in n for k in ("bn", "ln", "bias", "logit_scale")) for n, p in named]
        optimizer = torch.optim.AdamW(
            [{"params": [p for (_, p), g in zip(named, gain_or_bias) if g], "weight_decay": 0.0},
             {"params": [p for (_, p), g in zip(named, gain_or_bias) if not g], "weight_decay": cfg.optim.weight_decay}],
            lr=cfg.optim.lr, betas=tuple(cfg.optim.betas), eps=cfg.optim.eps)
        loss_fn = ClipLoss()

        def step(batch: tuple, i: int) -> torch.Tensor:
            images, texts = batch
            with autocast_for(device, args.precision):
                loss = loss_fn(**model(images, texts))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
            optimizer.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, math.log(100))
            return loss.detach()

        r = run_steps(step, batches, args.warmup, args.steps, device)
    return {**r, **param_counts(model), "peak_memory_bytes": mem.peak, "memory_kind": mem.kind}


# ----------------------------------------------------------------------------- report


def peak_flops(m: dict, precision: str, override: float | None) -> float | None:
    """The device's dense peak FLOP/s at `precision`: --peak-flops, else the table, else None."""
    if override is not None:
        return override
    name = next((k for k in PEAK_FLOPS if k in m.get("gpu", "")), None)
    return PEAK_FLOPS[name][precision] if name else None


def print_report(rows: list[dict], m: dict, args, cfg: Config, peak: float | None) -> None:
    where = m.get("gpu", f"CPU, {m['cpu_cores']} cores, {m['torch_threads']} torch threads")
    print()
    print(f"machine: {where}; torch {m['torch']}, Python {m['python']}, {m['platform']}")
    print(f"config: {' '.join([args.config, *args.overrides])} | batch {args.batch_size}, {args.precision}, "
          f"{args.steps} timed steps after {args.warmup} warm-up (+1 counting FLOPs), {N_BATCHES} pre-built batches cycled")
    i, t = cfg.model.image, cfg.model.text
    print(f"towers: image {i.size}px/{i.patch} width {i.encoder.width} depth {i.encoder.depth} heads {i.encoder.heads}; "
          f"text {t.max_len} tokens, vocab {vocab_size(cfg)}, width {t.encoder.width} depth {t.encoder.depth} "
          f"heads {t.encoder.heads}; embed_dim {cfg.model.embed_dim}")
    print()
    head = f"{'model':<28} {'samples/s':>10} {'ms/step':>9} {'peak MiB':>9} {'params M':>15} {'GFLOP/sample':>13} {'MFU':>6}"
    print(head)
    print("-" * len(head))
    for r in rows:
        mfu = f"{r['mfu']:.1%}" if r.get("mfu") is not None else "n/a"
        params = f"{r['params_trainable'] / 1e6:.2f}/{r['params_total'] / 1e6:.2f}"
        print(f"{r['name']:<28} {r['samples_per_s']:>10.1f} {r['ms_per_step']:>9.1f} {r['peak_memory_bytes'] / 2**20:>9.1f} "
              f"{params:>15} {r['flops_per_sample'] / 1e9:>13.3f} {mfu:>6}")
    print()
    print(f"params M: trainable/total (total adds MultiJEPA's EMA target encoders); peak MiB: {rows[0]['memory_kind']}")
    for r in rows:
        if "tokens" in r:
            seen = ", ".join(f"{k} {on:.0f}/{tg:.0f}" for k, (on, tg) in r["tokens"].items())
            print(f"{r['name']}: tokens per row, online/target encoder: {seen}")
    print(f"open_clip CLIP: tokens per row: image {(i.size // i.patch) ** 2 + 1} (with the class token), text {t.max_len}")
    if m["device"].startswith("cuda"):
        if peak is None:
            print(f"MFU: n/a: no peak FLOP/s known for '{m.get('gpu')}'; pass --peak-flops")
        else:
            print(f"MFU: FLOPs per step x steps/s / {peak / 1e12:.1f} TFLOP/s ({args.precision} dense peak)")
    else:
        print("MFU: n/a on CPU")


def variant_config(args, modalities: list[str]) -> Config:
    """The run's config with only `modalities`."""
    return load_config(args.config, [*args.overrides, f"model.modalities=[{','.join(modalities)}]"])


def warm_up_runtime(cfg: Config, batches: list[dict], clip_batches: list[tuple], args, device: torch.device) -> None:
    """A pass over the image+text batches with MultiJEPA and with CLIP before anything is measured, so
    that one-time allocations (kernel libraries, workspaces, kernels built per shape) count in no
    model's memory."""
    once = argparse.Namespace(**{**vars(args), "steps": len(batches) - 1, "warmup": 0})
    bench_multijepa(cfg, batches, once, device)
    bench_open_clip(cfg, clip_batches, once, device)


def main(argv=None) -> dict:
    args = parse_args(argv)
    base = load_config(args.config, args.overrides)
    args.batch_size = args.batch_size or base.data.batch_size
    args.precision = args.precision or base.train.precision
    device = pick_device(args.device or base.train.device)
    if base.train.threads:  # as train.py: 0 keeps torch's default
        torch.set_num_threads(base.train.threads)
    count_cpu_attention()
    m = machine(device)
    peak = peak_flops(m, args.precision, args.peak_flops) if device.type == "cuda" else None

    variants = [["image", "text"]]
    if list(base.model.modalities) != variants[0]:
        variants.append(list(base.model.modalities))
    rows = []
    for mods in variants:
        name = "MultiJEPA " + "+".join(mods)
        cfg = variant_config(args, mods)
        batches = build_batches(cfg, args.batch_size)
        tokens = encoder_tokens(cfg, batches)
        batches = [move_batch(b, device) for b in batches]
        if mods == variants[0]:  # CLIP gets the same images and token ids
            clip_cfg, clip_batches = cfg, [clip_inputs(b, cfg.model.text.max_len) for b in batches]
            print("  warming the runtime up ...", flush=True)
            warm_up_runtime(cfg, batches, clip_batches, args, device)
        print(f"  {name} ...", flush=True)
        rows.append({"name": name, "modalities": mods, "tokens": tokens, **bench_multijepa(cfg, batches, args, device)})
        if mods == variants[0] and args.profile:
            profiled = (cfg, batches)
        del batches
    print("  open_clip CLIP ...", flush=True)
    rows.append({"name": "open_clip CLIP image+text", "modalities": variants[0],
                 **bench_open_clip(clip_cfg, clip_batches, args, device)})

    for r in rows:
        r["ms_per_step"] = 1000 * r["seconds"] / args.steps
        r["samples_per_s"] = args.batch_size * args.steps / r["seconds"]
        r["flops_per_sample"] = r["flops_per_step"] / args.batch_size
        r["mfu"] = r["flops_per_step"] * args.steps / r["seconds"] / peak if peak else None
    ratio = rows[0]["ms_per_step"] / rows[-1]["ms_per_step"]
    print_report(rows, m, args, base, peak)
    if args.profile:
        profile_multijepa(*profiled, args, device)
    print(f"ratio_vs_open_clip: {ratio:.3f}")

    result = {"machine": m, "config": args.config, "overrides": args.overrides, "batch_size": args.batch_size,
              "precision": args.precision, "warmup": args.warmup, "steps": args.steps, "peak_flops": peak,
              "results": rows, "ratio_vs_open_clip": ratio}
    write_result(args.json, result)
    return result


if __name__ == "__main__":
    main()
