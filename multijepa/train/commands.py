"""`multijepa pretrain` and `multijepa plot`: the training wing's commands."""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from ..cli_args import PROGRESS, need, overrides_arg, run_config

EPILOG_PRETRAIN = """\
config overrides: any `section.key=value` after the options, e.g.
  multijepa pretrain --config demo data.batch_size=32 optim.lr=5e-4 model.modalities=[image,text]
Values are parsed as YAML. Unknown keys are errors that name the key.

several processes or GPUs: launch the same command with torchrun, e.g.
  torchrun --nproc_per_node 8 -m multijepa pretrain --config vit_b16_gpu --out runs/vit_b16
data.batch_size is the global batch (split over processes and train.grad_accum micro-steps), so
the same config trains the same way on any number of processes; rank 0 logs and writes, and a
run resumes from its checkpoints at any world size. Speed switches: train.precision=bf16,
train.compile=true, train.activation_checkpointing=true, train.grad_accum=N, train.parallel=fsdp.
"""


def add_pretrain(sub: argparse._SubParsersAction) -> None:
    pre = sub.add_parser(
        "pretrain",
        parents=[PROGRESS, overrides_arg("config overrides")],
        help="pretrain MultiJEPA on paired data",
        epilog=EPILOG_PRETRAIN,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    pre.set_defaults(func=_cmd_pretrain)
    pre.add_argument("--config", default="demo",
                     help=f"shipped config name ({', '.join(run_config_names())}) or a .yaml path [demo]")
    pre.add_argument("--data", help="training manifest (.jsonl/.csv/.parquet or a saved datasets folder) [demo data]")
    pre.add_argument("--out", default="runs/demo", help="run folder [runs/demo]")
    pre.add_argument("--max-steps", type=int, help="total training steps (train.max_steps)")
    pre.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")


def add_plot(sub: argparse._SubParsersAction) -> None:
    pl = sub.add_parser(
        "plot", help="draw a run's curves (losses, std, RankMe, LR, gradients, throughput) as one PNG",
        description="Reads RUN/metrics.jsonl and writes a 1600x900 figure of twelve panels; with --compare, "
        "several runs overlaid (a colour per run). `pretrain` writes the same figure to RUN/metrics.png.")
    pl.set_defaults(func=_cmd_plot)
    pl.add_argument("run", help="run folder (or a metrics.jsonl)")
    pl.add_argument("--compare", nargs="+", default=[], metavar="RUN", help="more runs drawn over it")
    pl.add_argument("--out", help="PNG to write [RUN/metrics.png]")


COMMANDS = {"pretrain": add_pretrain, "plot": add_plot}


def run_config_names() -> list[str]:
    """The shipped pretraining configs (not the VQA and captioning ones), demo first."""
    from ..config import shipped_config_names

    names = [n for n in shipped_config_names() if not n.startswith(("vqa_", "caption_"))]
    return sorted(names, key=lambda n: n != "demo")


def _cmd_pretrain(args: argparse.Namespace) -> None:
    from ..config import load_config, load_run_config

    say = print if os.environ.get("RANK", "0") == "0" else (lambda *a, **k: None)  # torchrun: rank 0 speaks
    overrides = list(args.overrides)
    if args.data:
        overrides.append(f"data.train={json.dumps(str(args.data))}")
    if args.max_steps is not None:
        overrides.append(f"train.max_steps={args.max_steps}")
    cfg = run_config(load_config, args, "config.yaml", overrides, say, load_run_config)  # before torch is imported
    from .loop import pretrain

    t0 = time.perf_counter()
    last = pretrain(cfg, args.out, resume=args.resume, progress=not args.no_progress)
    say(f"pretraining done in {time.perf_counter() - t0:.0f}s; run folder: {args.out}")
    if last:
        keys = ["step", "loss", "loss/pred", "loss/bind"] + [k for k in last if k.startswith("rankme/")]
        say("  " + "  ".join(f"{k}={last[k]:.4g}" for k in keys if k in last))


def _cmd_plot(args: argparse.Namespace) -> None:
    for run in [args.run, *args.compare]:
        need(run, "a run folder or metrics file")
    from ..plot import plot_runs

    run = Path(args.run)
    out = Path(args.out) if args.out else (run if run.is_dir() else run.parent) / "metrics.png"
    print(f"wrote {plot_runs([args.run, *args.compare], out)}")
