"""`multijepa embed|index|search` and `multijepa eval retrieval|zeroshot|probe`: the retrieval wing's commands."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ..cli_args import (
    BATCH,
    DEVICE,
    EPILOG_SOURCES,
    INDEX,
    PROGRESS,
    RUN,
    UsageError,
    load_run,
    need,
    overrides_arg,
    processes,
    write_json,
)
from ..modality import is_media, media_modalities, registered_modalities


def add_embed(sub: argparse._SubParsersAction) -> None:
    emb = sub.add_parser("embed", parents=[RUN, BATCH, DEVICE],
                         help="embed every modality of a manifest into DIR/m.npy + DIR/m_rows.npy")
    emb.set_defaults(func=_cmd_embed)
    emb.add_argument("--data", help="manifest [demo test split]")
    emb.add_argument("--out", required=True, help="output folder")


def add_index(sub: argparse._SubParsersAction) -> None:
    idx = sub.add_parser(
        "index",
        parents=[RUN, BATCH, DEVICE, PROGRESS, overrides_arg("index settings")],
        help="embed a corpus and save a searchable faiss index per modality",
        description="Embed every row of MANIFEST with the run's encoders and save one faiss index per "
        "modality in --out, with the rows' metadata (paths, captions, labels) to show results. "
        "Exact (flat inner product) by default; kind=ivf or kind=hnsw for millions of rows; kind=ivfpq "
        "(compressed, lists on disk, exact re-rank) for corpora larger than memory. "
        "Resumable: a killed build continues where it stopped when run again with the same --out.",
        epilog="index settings (key=value after the options): kind=flat|ivf|hnsw|ivfpq, nlist=N (IVF lists, "
        "0 = 4*sqrt(n)), nprobe=N, train_size=N, hnsw_m=N, ef_construction=N, ef_search=N, "
        "pq_m=N (IVF-PQ codes per vector, 0 = dim/8), pq_nbits=N, rerank=N (candidates re-scored exactly, x k; 0 = none), "
        "chunk_rows=N (rows per resumable part); data.columns.image=jpg ... to map the corpus' columns.\n\n" + EPILOG_SOURCES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    idx.set_defaults(func=_cmd_index)
    idx.add_argument("--data", help="manifest, shards or saved folder to index [demo test split]")
    idx.add_argument("--out", required=True, help="index folder")
    idx.add_argument("--workers", type=int, default=0, help="decoding processes [0: in this process]")
    idx.add_argument("--on-error", choices=("raise", "skip"), default="raise",
                     help="a bad row stops the build (raise), or is left out and listed in DIR/bad_rows.jsonl (skip)")


def add_search(sub: argparse._SubParsersAction) -> None:
    srch = sub.add_parser(
        "search",
        parents=[INDEX, DEVICE],
        help="search an index with a text, an image, a sound, or their sum",
        description="Embed the query and print the top-k rows of the index. Several of "
        + ", ".join(f"--{m}" for m in registered_modalities()) + " at once are summed (ImageBind's embedding "
        "arithmetic: the sum of the normalised embeddings). By default every indexed modality the query "
        "does not use is searched.",
    )
    srch.set_defaults(func=_cmd_search)
    for m in registered_modalities():  # one query option per modality
        srch.add_argument(f"--{m}", help=f"query {m} file" if is_media(m) else f"query {m} (the value itself)")
    srch.add_argument("--modality", help=f"what to search, comma-separated ({','.join(registered_modalities())}) "
                      "[the others]")
    srch.add_argument("--top-k", type=int, default=5, help="results per searched modality [5]")
    srch.add_argument("--json", action="store_true", help="print JSON instead of a table")


def add_eval(sub: argparse._SubParsersAction) -> None:
    ev = sub.add_parser("eval", help="evaluate a run")
    ev_sub = ev.add_subparsers(dest="eval_command", required=True, metavar="SUBCOMMAND")
    ret = ev_sub.add_parser(
        "retrieval",
        parents=[RUN, BATCH, DEVICE],
        help="cross-modal retrieval, every ordered pair: R@1/5/10, median and mean rank (+ P@1, mAP with labels)",
        description="Embed the rows of MANIFEST; for every ordered pair of modalities, the query's own item is "
        "the right answer: rows sharing an image path (or audio path, or --group-by value) are one item, so "
        "a caption finds its image in the de-duplicated gallery and an image is right if any of its captions "
        "ranks in the top K (as CLIP_benchmark). With a label column, items of the query's class also count "
        "for the class-match P@1 and mAP. Audio is the average of several evenly spaced clips.",
    )
    ret.set_defaults(func=_cmd_eval_retrieval)
    ret.add_argument("--data", help="manifest with paired rows [demo test split]")
    ret.add_argument("--json", help="also write the results to this JSON file")
    ret.add_argument("--audio-clips", type=int, help="clips averaged per audio [the run's model.audio.eval_clips]")
    ret.add_argument("--group-by", metavar="COLUMN",
                     help="rows with equal values of COLUMN are one item (e.g. an image id) [rows sharing an image "
                     "path, else an audio path: COCO / Flickr30k / AudioCaps / Clotho layouts, 5 captions per item]")
    ret.add_argument("--ties", choices=("topk", "pessimistic"), default="topk",
                     help="tied scores: topk lets torch.topk pick among them, as CLIP_benchmark; pessimistic ranks "
                     "every tied negative above the positive, so a constant similarity scores 0 [topk]")

    zs = ev_sub.add_parser(
        "zeroshot",
        parents=[RUN, BATCH, DEVICE],
        help="zero-shot classification of images, audio or video against text prompts of class names",
        description="Each class is the average embedding of its prompts (templates filled with the class "
        "name, as CLIP); a sample gets the nearest class. Scored against the manifest's label column.",
    )
    zs.set_defaults(func=_cmd_eval_zeroshot)
    zs.add_argument("--data", help="manifest with a label column [demo test split]")
    zs.add_argument("--classes", help="class names, one per line (or a JSON list) [the demo's classes.txt; esc50: its categories]")
    zs.add_argument("--templates", nargs="+", metavar="TEMPLATE",
                    help="prompt templates with {} for the class name, or files of them "
                    "[a {}. | an image of a {}. | a picture of a {}. | the sound of a {}.]")
    zs.add_argument("--modality", help=f"{', '.join(media_modalities())}: one or more, comma-separated [those the manifest has]")
    zs.add_argument("--json", help="also write the results to this JSON file")

    pr = ev_sub.add_parser(
        "probe",
        parents=[RUN, BATCH, DEVICE],
        help="linear and k-NN probes of frozen encoder features against the label column (I-JEPA's evaluation)",
        description="Mean-pooled features of each encoder (no head), unmasked; logistic regression (C picked on a "
        "held-out fifth of the training rows) and DINO's weighted 20-NN, trained on --data and scored on --test "
        "(or a seeded 80/20 split of --data alone). Without --data: the demo's train and test splits.",
    )
    pr.set_defaults(func=_cmd_eval_probe)
    pr.add_argument("--data", help="labelled rows the probes train on [demo train split]")
    pr.add_argument("--test", help="labelled rows they are scored on [demo test split without --data; else 20%% of --data]")
    pr.add_argument("--modality", help=f"{', '.join(registered_modalities())}: one or more, comma-separated [every one the model has]")
    pr.add_argument("--encoder", choices=("online", "target", "input"), default="online",
                    help="the online encoders, the EMA targets (I-JEPA probes those), or no encoder: the inputs "
                    "themselves (pixels, mean log-mel spectrum, bag of tokens), the floor training should clear [online]")
    pr.add_argument("--k", type=int, default=20, help="neighbours of the k-NN probe [20]")
    pr.add_argument("--random-init", action="store_true",
                    help="probe the run's architecture with fresh random weights instead (the reference any "
                    "training must beat)")
    pr.add_argument("--seed", type=int, default=0, help="seed of the split, the C search and --random-init [0]")
    pr.add_argument("--json", help="also write the results to this JSON file")


COMMANDS = {"embed": add_embed, "index": add_index, "search": add_search, "eval": add_eval}


def _cmd_embed(args: argparse.Namespace) -> None:
    from ..data.demo_paths import resolve_manifest
    from .embed import embed_manifest, embed_manifest_spread, save_embeddings

    with processes(args) as (world, device):
        model = load_run(args, device)
        manifest = resolve_manifest(args.data, "test")
        if world.active:  # each process embeds its block of rows, process 0 joins them
            written = embed_manifest_spread(model, manifest, args.out, world, batch_size=args.batch_size)
        else:
            written = save_embeddings(embed_manifest(model, manifest, batch_size=args.batch_size), args.out)
    for path in written:
        print(f"wrote {path}")


def _cmd_index(args: argparse.Namespace) -> None:
    from ..data.demo_paths import resolve_manifest
    from .index import build_index, index_config

    columns = [o for o in args.overrides if o.startswith("data.columns.")]
    cfg = index_config([o for o in args.overrides if o not in columns])
    model = load_run(args)
    for o in columns:  # the corpus may name its columns unlike the training data
        key, value = o.split("=", 1)
        model.run_config.data.columns[key.split(".", 2)[2]] = value
    manifest = resolve_manifest(args.data, "test")
    t0 = time.perf_counter()
    with processes(args) as (world, device):
        index = build_index(model.to(device), manifest, args.out, cfg, checkpoint=Path(args.checkpoint).resolve(),
                            batch_size=args.batch_size, num_workers=args.workers, on_error=args.on_error,
                            progress=not args.no_progress, world=world)
    if not world.main:
        return
    counts = ", ".join(f"{n} {m}" for m, n in index.info["modalities"].items())
    print(f"indexed {manifest} in {time.perf_counter() - t0:.0f}s ({cfg.kind}): {counts}; index folder: {args.out}")
    if index.info["bad_rows"]:
        print(f"  {index.info['bad_rows']} bad rows left out, listed in {Path(args.out) / 'bad_rows.jsonl'}")


def load_index(args: argparse.Namespace, say=lambda line: None):
    """--index and the model it was built with (--checkpoint, else the one it names) -> (index, model)."""
    from .index import EmbeddingIndex  # torch and faiss: only once the arguments hold

    say(f"loading the index {args.index} ...")
    index = EmbeddingIndex(args.index)
    args.checkpoint = args.checkpoint or index.info["checkpoint"]
    say(f"loading the model {args.checkpoint} ...")
    model = load_run(args)
    index.check_model(model)
    return index, model


def _cmd_search(args: argparse.Namespace) -> None:
    need(args.index, "the --index folder", "index.json")
    queries = {m: getattr(args, m, None) for m in registered_modalities()}
    queries = {m: v for m, v in queries.items() if v is not None}
    if not queries:
        raise UsageError("give a query: " + ", ".join(f"--{m}" for m in registered_modalities()) + " (one or several)")
    if args.top_k < 1:
        raise UsageError("--top-k must be at least 1")
    for m, v in queries.items():
        if is_media(m):
            need(v, f"the --{m} query")
    from .search import embed_query, format_results, search, target_modalities

    index, model = load_index(args)
    wanted = args.modality.split(",") if args.modality else None
    try:
        targets = target_modalities(index, list(queries), wanted)
    except ValueError as e:
        raise UsageError(str(e)) from None
    for m in queries:
        if m not in model.modalities:
            raise UsageError(f"this model has no {m} encoder (it has: {', '.join(model.modalities)})")
    results = search(index, embed_query(model, queries), targets, args.top_k)
    if args.json:
        print(json.dumps({"query": queries, "results": results}, indent=2, ensure_ascii=False))
        return
    print("query: " + " + ".join(f"{m} {v!r}" for m, v in queries.items()))
    print(format_results(results, index))


def _cmd_eval_retrieval(args: argparse.Namespace) -> None:
    from ..data.demo_paths import resolve_manifest
    from .metrics import format_table, manifest_retrieval

    model = load_run(args)
    if args.audio_clips is not None and "audio" in model.modalities:
        model.processors.of("audio").eval_clips = args.audio_clips
    manifest = resolve_manifest(args.data, "test")
    results, grouping = manifest_retrieval(model, manifest, args.group_by, args.batch_size, ties=args.ties)
    if not results:
        raise UsageError(f"{manifest} has no rows with two modalities to retrieve between")
    print(f"retrieval on {manifest} (one item per {grouping}; ties: {args.ties})")
    print(format_table(results))
    write_json(args.json, results)


def _cmd_eval_zeroshot(args: argparse.Namespace) -> None:
    from ..data.benchmarks import parse_spec, read_benchmark
    from ..data.demo_paths import resolve_manifest
    from .zeroshot import format_zero_shot, read_classes, read_templates, zero_shot_eval

    manifest = resolve_manifest(args.data, "test")
    classes_file = args.classes
    spec = parse_spec(args.data) if args.data is not None else None
    if classes_file is None and spec is not None and spec[0] == "esc50":
        rows, _ = read_benchmark(args.data)  # ESC-50's own classes: its 50 categories
        classes, classes_file = sorted({r["label"] for r in rows}), "the esc50 categories"
    else:
        if classes_file is None:
            if args.data is not None:
                raise UsageError("--classes is needed with --data (a file with one class name per line)")
            classes_file = manifest.parent / "classes.txt"
        classes = read_classes(classes_file)
    templates = read_templates(args.templates)
    model = load_run(args)
    wanted = args.modality.split(",") if args.modality else None
    results = zero_shot_eval(model, manifest, classes, templates, wanted, batch_size=args.batch_size)
    print(f"zero-shot on {manifest}: {len(classes)} classes from {classes_file}, {len(templates)} templates")
    print(format_zero_shot(results))
    write_json(args.json, results)


def _cmd_eval_probe(args: argparse.Namespace) -> None:
    if args.k < 1:
        raise UsageError("--k must be >= 1")
    if args.random_init and args.encoder == "input":
        raise UsageError("--random-init probes an encoder; --encoder input probes no encoder: give one of them")
    import torch

    from ..data.demo_paths import resolve_manifest
    from ..model import create_model
    from .probe import format_probe, probe_eval

    model = load_run(args)
    if args.random_init:
        torch.manual_seed(args.seed)
        fresh = create_model(model.run_config, model.processors.tokenizer, vocab_size=None)
        model = fresh.to(model.logit_scale.device).eval()
    train = resolve_manifest(args.data, "train")
    test = resolve_manifest(args.test, "test") if args.test or args.data is None else None
    wanted = args.modality.split(",") if args.modality else model.modalities
    unknown = [m for m in wanted if m not in model.modalities]
    if unknown:
        raise UsageError(f"--modality {','.join(unknown)}: the model has {', '.join(model.modalities)}")
    try:
        results = probe_eval(model, train, test, wanted, args.encoder, args.k, args.batch_size, args.seed)
    except ValueError as e:
        raise UsageError(str(e)) from None
    where = f"trained on {train}, scored on {test}" if test else f"80/20 split of {train}"
    what = "the inputs themselves (no encoder)" if args.encoder == "input" else f"the {args.encoder} encoders"
    print(f"probes of {what}{' (random init)' if args.random_init else ''}, {where}")
    print(format_probe(results))
    write_json(args.json, results)
