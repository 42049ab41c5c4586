"""The `multijepa` command line. Every command works with no data argument: it then uses the
built-in demo dataset (generated locally on first use)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

EPILOG_PRETRAIN = """\
config overrides: any `section.key=value` after the options, e.g.
  multijepa pretrain --config demo data.batch_size=32 optim.lr=5e-4 model.modalities=[image,text]
Values are parsed as YAML. Unknown keys are errors that name the key.
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="multijepa",
        description="Joint-embedding predictive architectures over text, image and audio: "
        "pretrain on paired data, retrieve across modalities, fine-tune for VQA.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    data = sub.add_parser("data", help="datasets: generate the demo data")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")
    demo = data_sub.add_parser("demo", help="generate the synthetic demo dataset (scenes, captions, sounds, VQA)")
    demo.add_argument("--out", required=True, help="output folder")
    demo.add_argument("--n", type=int, default=2400, help="training scenes (default 2400)")
    demo.add_argument("--n-test", type=int, default=600, help="held-out scenes (default 600)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--speech", action="store_true", help="audio = the spoken caption (needs espeak-ng)")

    pre = sub.add_parser(
        "pretrain",
        help="pretrain MultiJEPA on paired data",
        epilog=EPILOG_PRETRAIN,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    pre.add_argument("--config", default="demo", help="shipped config name (demo, tiny, base) or a .yaml path [demo]")
    pre.add_argument("--data", help="training manifest (.jsonl/.csv/.parquet or a saved datasets folder) [demo data]")
    pre.add_argument("--out", default="runs/demo", help="run folder [runs/demo]")
    pre.add_argument("--max-steps", type=int, help="total training steps (train.max_steps)")
    pre.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    pre.add_argument("--no-progress", action="store_true", help="no progress bar")
    pre.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")

    emb = sub.add_parser("embed", help="embed every modality of a manifest into DIR/m.npy + DIR/m_rows.npy")
    emb.add_argument("--checkpoint", required=True, help="pretraining run folder")
    emb.add_argument("--data", help="manifest [demo test split]")
    emb.add_argument("--out", required=True, help="output folder")
    emb.add_argument("--batch-size", type=int, default=128)
    emb.add_argument("--device", default="auto")

    ev = sub.add_parser("eval", help="evaluate a run")
    ev_sub = ev.add_subparsers(dest="eval_command", required=True, metavar="SUBCOMMAND")
    ret = ev_sub.add_parser("retrieval", help="cross-modal retrieval R@1/5/10 and median rank, every ordered pair")
    ret.add_argument("--checkpoint", required=True, help="pretraining run folder")
    ret.add_argument("--data", help="manifest with paired rows [demo test split]")
    ret.add_argument("--json", help="also write the results to this JSON file")
    ret.add_argument("--batch-size", type=int, default=128)
    ret.add_argument("--device", default="auto")
    return p


def _cmd_data_demo(args: argparse.Namespace) -> None:
    from .demo_data import generate_demo

    t0 = time.perf_counter()
    summary = generate_demo(args.out, n_train=args.n, n_test=args.n_test, seed=args.seed, speech=args.speech)
    print(f"demo data written to {args.out} in {time.perf_counter() - t0:.1f}s: {summary}")


def _cmd_pretrain(args: argparse.Namespace) -> None:
    from .config import load_config
    from .train import pretrain

    overrides = list(args.overrides)
    if args.data:
        overrides.append(f"data.train={json.dumps(str(args.data))}")
    if args.max_steps is not None:
        overrides.append(f"train.max_steps={args.max_steps}")
    saved = Path(args.out) / "config.yaml"
    if args.resume and saved.exists():
        print(f"resuming with the run's saved config {saved} (+ overrides)")
        cfg = load_config(saved, overrides)
    else:
        cfg = load_config(args.config, overrides)
    t0 = time.perf_counter()
    last = pretrain(cfg, args.out, resume=args.resume, progress=not args.no_progress)
    print(f"pretraining done in {time.perf_counter() - t0:.0f}s; run folder: {args.out}")
    if last:
        keys = ["step", "loss", "loss/pred", "loss/bind"] + [k for k in last if k.startswith("rankme/")]
        print("  " + "  ".join(f"{k}={last[k]:.4g}" for k in keys if k in last))


def _load(args: argparse.Namespace):
    from .model import MultiJEPA
    from .train import pick_device

    return MultiJEPA.from_pretrained(args.checkpoint, device=pick_device(args.device))


def _cmd_embed(args: argparse.Namespace) -> None:
    from .demo_paths import resolve_manifest
    from .retrieval import embed_manifest, save_embeddings

    model = _load(args)
    embs = embed_manifest(model, resolve_manifest(args.data, "test"), batch_size=args.batch_size)
    for path in save_embeddings(embs, args.out):
        print(f"wrote {path}")


def _cmd_eval_retrieval(args: argparse.Namespace) -> None:
    from .demo_paths import resolve_manifest
    from .retrieval import embed_manifest, format_table, retrieval_metrics

    model = _load(args)
    manifest = resolve_manifest(args.data, "test")
    results = retrieval_metrics(embed_manifest(model, manifest, batch_size=args.batch_size))
    if not results:
        raise SystemExit(f"error: {manifest} has no rows with two modalities to retrieve between")
    print(f"retrieval on {manifest}")
    print(format_table(results))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2))
        print(f"wrote {args.json}")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from modalities.errors import DataError

    from .checkpoint import CheckpointError
    from .config import ConfigError
    from .train import CollapseError

    handlers = {
        ("data", "demo"): _cmd_data_demo,
        ("pretrain", None): _cmd_pretrain,
        ("embed", None): _cmd_embed,
        ("eval", "retrieval"): _cmd_eval_retrieval,
    }
    key = (args.command, getattr(args, "data_command", None) or getattr(args, "eval_command", None))
    try:
        handlers[key](args)
    except (DataError, ConfigError, CheckpointError, CollapseError, FileExistsError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
