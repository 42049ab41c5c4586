"""`multijepa data demo|check|shards` and `multijepa tokenizer train`: the data wing's commands."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..cli_args import EPILOG_SOURCES, PROGRESS, UsageError


def add_data(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="datasets: generate the demo data, check a dataset, write shards")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")
    demo = data_sub.add_parser("demo", help="generate the synthetic demo dataset (scenes, captions, sounds, VQA)")
    demo.set_defaults(func=_cmd_data_demo)
    demo.add_argument("--out", required=True, help="output folder")
    demo.add_argument("--n", type=int, default=2400, help="training scenes (default 2400)")
    demo.add_argument("--n-test", type=int, default=600, help="held-out scenes (default 600)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--speech", action="store_true", help="audio = the spoken caption (needs espeak-ng)")
    demo.add_argument("--paired-fraction", type=float, default=1.0, metavar="F",
                      help="keep this share of training scenes as one row with all three modalities; split the "
                      "rest into one-modality rows (scarce pairs; also writes train_paired/train_single.jsonl) [1.0]")
    demo.add_argument("--video", action="store_true",
                      help="also write --n + --n-test clips of a shape moving across the frame, with its sound and "
                      "a caption saying where it goes (videos/, video_train.jsonl, video_test.jsonl, directions.txt; "
                      "the data of configs/av_demo.yaml)")

    check = data_sub.add_parser(
        "check",
        parents=[PROGRESS],
        help="decode every row with the training decoders and list every problem; exit 1 if any",
        description="Scan a dataset with the same decoders as training and list every problem (missing file, "
        "undecodable or truncated image/audio, empty text, zero-length or non-finite audio, absurd sizes) "
        "with its row and reason, then a summary. Exit status 1 if any row is bad.",
        epilog=EPILOG_SOURCES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.set_defaults(func=_cmd_data_check)
    check.add_argument("items", nargs="*", metavar="MANIFEST | key=value",
                       help="manifest(s), shard patterns or saved folders [the config's sources], and config overrides")
    check.add_argument("--config", default="demo", help="config whose columns, modalities and sources to use [demo]")
    check.add_argument("--workers", type=int, default=0, help="decoding processes [0: in this process]")
    check.add_argument("--json", help="also write the problems to this JSON-lines file")

    shards = data_sub.add_parser("shards", help="write a manifest as WebDataset tar shards")
    shards.set_defaults(func=_cmd_data_shards)
    shards.add_argument("manifest", help="manifest to convert")
    shards.add_argument("--out", required=True, help="output folder for shard-NNNNNN.tar")
    shards.add_argument("--modalities", default="image,text,audio", help="which to include, comma-separated [image,text,audio]")
    shards.add_argument("--shard-size", type=int, default=1000, help="samples per shard [1000]")
    shards.add_argument("--overwrite", action="store_true",
                        help="replace the shard-*.tar files already in --out (without it a non-empty --out is refused)")


def add_tokenizer(sub: argparse._SubParsersAction) -> None:
    tok = sub.add_parser("tokenizer", help="text tokenizers")
    tok_sub = tok.add_subparsers(dest="tokenizer_command", required=True, metavar="SUBCOMMAND")
    tok_train = tok_sub.add_parser(
        "train",
        help="train a SentencePiece tokenizer on a dataset's captions",
        description="Train a SentencePiece unigram model on the captions of a dataset. Use it in a run with "
        "model.text.tokenizer_file=FILE (model.text.vocab_size is then taken from the file).",
    )
    tok_train.set_defaults(func=_cmd_tokenizer_train)
    tok_train.add_argument("--data", nargs="+", required=True, help="manifest(s), shard patterns or saved folders")
    tok_train.add_argument("--vocab-size", type=int, default=8000, help="vocabulary size [8000]")
    tok_train.add_argument("--out", required=True, help="output .model file")
    tok_train.add_argument("--column", default="text", help="caption column [text]")
    tok_train.add_argument("--max-len", type=int, default=77, help="max tokens per caption stored with it [77]")
    tok_train.add_argument("--allow-smaller", action="store_true",
                           help="keep a vocabulary under half of --vocab-size (the captions allow no more) instead of refusing")


COMMANDS = {"data": add_data, "tokenizer": add_tokenizer}


def _cmd_data_demo(args: argparse.Namespace) -> None:
    from .demo import generate_demo

    t0 = time.perf_counter()
    summary = generate_demo(args.out, n_train=args.n, n_test=args.n_test, seed=args.seed, speech=args.speech,
                            paired_fraction=args.paired_fraction)
    if args.video:
        from .demo_video import generate_demo_video

        summary.update(generate_demo_video(args.out, n_train=args.n, n_test=args.n_test, seed=args.seed))
    print(f"demo data written to {args.out} in {time.perf_counter() - t0:.1f}s: {summary}")


def _cmd_data_check(args: argparse.Namespace) -> int:
    from ..config import SourceConfig, load_config
    from .check import check_sources, format_report
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
        Path(args.json).write_text("".join(e.to_json() + "\n" for e in errors))
        print(f"wrote {args.json}")
    return 1 if errors else 0


def _cmd_data_shards(args: argparse.Namespace) -> None:
    from ..config import SourceConfig, load_config
    from .shards import write_shards
    from .sources import open_source

    out = Path(args.out)
    if out.is_dir() and any(out.iterdir()):
        if not args.overwrite:
            raise UsageError(f"{out} is not empty: old shards would mix with the new ones; choose an empty --out, "
                             "or pass --overwrite to replace its shard-*.tar")
        for old in out.glob("shard-*.tar"):
            old.unlink()
    cfg = load_config("demo")
    mods = [m.strip() for m in args.modalities.split(",") if m.strip()]
    source = open_source(SourceConfig(path=args.manifest, name=Path(args.manifest).stem), cfg.data.columns, mods, streaming=False)
    paths = write_shards(source, args.out, mods, args.shard_size)
    print(f"wrote {len(paths)} shards to {args.out}: {paths[0].name} .. {paths[-1].name}" if paths else "no rows written")


def _cmd_tokenizer_train(args: argparse.Namespace) -> None:
    from modalities.text import TextTokenizer

    from ..config import SourceConfig
    from .dataset import source_texts
    from .sources import open_source

    texts: list[str] = []
    for m in args.data:
        source = open_source(SourceConfig(path=m, name=Path(m).stem), {"text": args.column}, ["text"], streaming=False)
        texts += source_texts(source, limit=10_000_000)
    if not texts:
        raise UsageError(f"no captions in column '{args.column}' of {', '.join(args.data)}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    tok = TextTokenizer.train(texts, args.out, vocab_size=args.vocab_size, max_len=args.max_len)
    if tok.vocab_size < args.vocab_size // 2 and not args.allow_smaller:
        Path(args.out).unlink()
        raise UsageError(f"the {len(texts)} captions make only {tok.vocab_size} pieces, far below --vocab-size "
                         f"{args.vocab_size}: ask for {tok.vocab_size} or fewer, add captions, or pass --allow-smaller")
    print(f"trained on {len(texts)} captions: {args.out} (vocabulary {tok.vocab_size}); "
          f"use it with model.text.tokenizer_file={args.out}")
