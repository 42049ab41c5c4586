"""The `multijepa` command line. Every command works with no data argument: it then uses the
built-in demo dataset (generated locally on first use)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

EPILOG_SOURCES = """\
MANIFEST may be a .jsonl/.csv/.parquet file, a saved datasets folder, WebDataset tar shards
(a glob or shard-{000000..000009}.tar) or a hub dataset name. Columns are mapped with
data.columns.image=jpg data.columns.text=txt ... when they are not named image/text/audio.
"""

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

    data = sub.add_parser("data", help="datasets: generate the demo data, check a dataset, write shards")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")
    demo = data_sub.add_parser("demo", help="generate the synthetic demo dataset (scenes, captions, sounds, VQA)")
    demo.add_argument("--out", required=True, help="output folder")
    demo.add_argument("--n", type=int, default=2400, help="training scenes (default 2400)")
    demo.add_argument("--n-test", type=int, default=600, help="held-out scenes (default 600)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--speech", action="store_true", help="audio = the spoken caption (needs espeak-ng)")

    check = data_sub.add_parser(
        "check",
        help="decode every row with the training decoders and list every problem; exit 1 if any",
        description="Scan a dataset with the same decoders as training and list every problem (missing file, "
        "undecodable or truncated image/audio, empty text, zero-length or non-finite audio, absurd sizes) "
        "with its row and reason, then a summary. Exit status 1 if any row is bad.",
        epilog=EPILOG_SOURCES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.add_argument("items", nargs="*", metavar="MANIFEST | key=value",
                       help="manifest(s), shard patterns or saved folders [the config's sources], and config overrides")
    check.add_argument("--config", default="demo", help="config whose columns, modalities and sources to use [demo]")
    check.add_argument("--workers", type=int, default=0, help="decoding processes [0: in this process]")
    check.add_argument("--json", help="also write the problems to this JSON-lines file")
    check.add_argument("--no-progress", action="store_true")

    shards = data_sub.add_parser("shards", help="write a manifest as WebDataset tar shards")
    shards.add_argument("manifest", help="manifest to convert")
    shards.add_argument("--out", required=True, help="output folder for shard-NNNNNN.tar")
    shards.add_argument("--modalities", default="image,text,audio", help="which to include, comma-separated [image,text,audio]")
    shards.add_argument("--shard-size", type=int, default=1000, help="samples per shard [1000]")

    tok = sub.add_parser("tokenizer", help="text tokenizers")
    tok_sub = tok.add_subparsers(dest="tokenizer_command", required=True, metavar="SUBCOMMAND")
    tok_train = tok_sub.add_parser(
        "train",
        help="train a SentencePiece tokenizer on a dataset's captions",
        description="Train a SentencePiece unigram model on the captions of a dataset. Use it in a run with "
        "model.text.tokenizer_file=FILE (model.text.vocab_size is then taken from the file).",
    )
    tok_train.add_argument("--data", nargs="+", required=True, help="manifest(s), shard patterns or saved folders")
    tok_train.add_argument("--vocab-size", type=int, default=8000, help="vocabulary size [8000]")
    tok_train.add_argument("--out", required=True, help="output .model file")
    tok_train.add_argument("--column", default="text", help="caption column [text]")
    tok_train.add_argument("--max-len", type=int, default=77, help="max tokens per caption stored with it [77]")

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


def _cmd_data_check(args: argparse.Namespace) -> int:
    from .config import SourceConfig, load_config
    from .data_check import check_sources, format_report
    from .loader import open_sources

    overrides = [a for a in args.items if "=" in a]
    manifests = [a for a in args.items if "=" not in a]
    cfg = load_config(args.config, overrides)
    if manifests:
        cfg.data.train, cfg.data.sources = None, [SourceConfig(path=m) for m in manifests]
    cfg.data.streaming = False
    total, errors = check_sources(cfg, open_sources(cfg), workers=args.workers, progress=not args.no_progress)
    print(format_report(total, errors))
    if args.json:
        Path(args.json).write_text("".join(json.dumps(e) + "\n" for e in errors))
        print(f"wrote {args.json}")
    return 1 if errors else 0


def _cmd_data_shards(args: argparse.Namespace) -> None:
    from .config import SourceConfig, load_config
    from .shards import write_shards
    from .sources import open_source

    cfg = load_config("demo")
    mods = [m.strip() for m in args.modalities.split(",") if m.strip()]
    source = open_source(SourceConfig(path=args.manifest, name=Path(args.manifest).stem), cfg.data.columns, mods, streaming=False)
    paths = write_shards(source, args.out, mods, args.shard_size)
    print(f"wrote {len(paths)} shards to {args.out}: {paths[0].name} .. {paths[-1].name}" if paths else "no rows written")


def _cmd_tokenizer_train(args: argparse.Namespace) -> None:
    from modalities.text import TextTokenizer

    from .config import SourceConfig
    from .dataset import source_texts
    from .sources import open_source

    texts: list[str] = []
    for m in args.data:
        source = open_source(SourceConfig(path=m, name=Path(m).stem), {"text": args.column}, ["text"], streaming=False)
        texts += source_texts(source, limit=10_000_000)
    if not texts:
        raise SystemExit(f"error: no captions in column '{args.column}' of {', '.join(args.data)}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    tok = TextTokenizer.train(texts, args.out, vocab_size=args.vocab_size, max_len=args.max_len)
    print(f"trained on {len(texts)} captions: {args.out} (vocabulary {tok.vocab_size}); "
          f"use it with model.text.tokenizer_file={args.out}")


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
        ("data", "check"): _cmd_data_check,
        ("data", "shards"): _cmd_data_shards,
        ("tokenizer", "train"): _cmd_tokenizer_train,
        ("pretrain", None): _cmd_pretrain,
        ("embed", None): _cmd_embed,
        ("eval", "retrieval"): _cmd_eval_retrieval,
    }
    sub = getattr(args, "data_command", None) or getattr(args, "eval_command", None) or getattr(args, "tokenizer_command", None)
    try:
        return handlers[(args.command, sub)](args) or 0
    except (DataError, ConfigError, CheckpointError, CollapseError, FileExistsError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
