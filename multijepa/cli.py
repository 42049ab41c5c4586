"""The `multijepa` command line. Every command works with no data argument: it then uses the
built-in demo dataset (generated locally on first use)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path

EPILOG_SOURCES = """\
MANIFEST may be a .jsonl/.csv/.parquet file, a saved datasets folder, WebDataset tar shards
(a glob or shard-{000000..000009}.tar) or a hub dataset name. Columns are mapped with
data.columns.image=jpg data.columns.text=txt ... when they are not named image/text/audio.
A benchmark in its published layout reads as KIND:PATH?key=value&..., e.g.
karpathy:dataset_coco.json?split=test&root=images, coco:captions_val2017.json?root=val2017,
audiocaps:test.csv?root=audio, clotho:clotho_captions_evaluation.csv?root=evaluation,
esc50:meta/esc50.csv?root=audio&fold=1, vqa2:QUESTIONS.json?annotations=ANNOTATIONS.json&root=val2014.
"""

EPILOG_PRETRAIN = """\
config overrides: any `section.key=value` after the options, e.g.
  multijepa pretrain --config demo data.batch_size=32 optim.lr=5e-4 model.modalities=[image,text]
Values are parsed as YAML. Unknown keys are errors that name the key.

several processes or GPUs: launch the same command with torchrun, e.g.
  torchrun --nproc_per_node 8 -m multijepa pretrain --config base --out runs/base
data.batch_size is the global batch (split over processes and train.grad_accum micro-steps), so
the same config trains the same way on any number of processes; rank 0 logs and writes, and a
run resumes from its checkpoints at any world size. Speed switches: train.precision=bf16,
train.compile=true, train.activation_checkpointing=true, train.grad_accum=N, train.parallel=fsdp.
"""


class UsageError(Exception):
    """A command given arguments it cannot work with: printed as one line, exit code 2."""


def _parent(*arguments: tuple[tuple, dict]) -> argparse.ArgumentParser:
    """Options several commands share, declared once (argparse `parents=`)."""
    p = argparse.ArgumentParser(add_help=False)
    for flags, kwargs in arguments:
        p.add_argument(*flags, **kwargs)
    return p


RUN = _parent((("--checkpoint",), dict(required=True, help="pretraining run folder")))
DEVICE = _parent((("--device",), dict(default="auto", help="auto | cpu | cuda [auto: CUDA when there is one]")))
BATCH = _parent((("--batch-size",), dict(type=int, default=128, help="rows per forward pass [128]")))
PROGRESS = _parent((("--no-progress",), dict(action="store_true", help="no progress bar")))
INDEX = _parent((("--index",), dict(required=True, help="index folder (from `multijepa index`)")),
                (("--checkpoint",), dict(help="pretraining run folder [the one the index was built with]")))


def _overrides(what: str) -> argparse.ArgumentParser:
    return _parent((("overrides",), dict(nargs="*", metavar="key=value", help=what)))


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
    demo.set_defaults(func=_cmd_data_demo)
    demo.add_argument("--out", required=True, help="output folder")
    demo.add_argument("--n", type=int, default=2400, help="training scenes (default 2400)")
    demo.add_argument("--n-test", type=int, default=600, help="held-out scenes (default 600)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--speech", action="store_true", help="audio = the spoken caption (needs espeak-ng)")
    demo.add_argument("--paired-fraction", type=float, default=1.0, metavar="F",
                      help="keep this share of training scenes as one row with all three modalities; split the "
                      "rest into one-modality rows (scarce pairs; also writes train_paired/train_single.jsonl) [1.0]")

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

    pre = sub.add_parser(
        "pretrain",
        parents=[PROGRESS, _overrides("config overrides")],
        help="pretrain MultiJEPA on paired data",
        epilog=EPILOG_PRETRAIN,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    pre.set_defaults(func=_cmd_pretrain)
    pre.add_argument("--config", default="demo", help="shipped config name (demo, tiny, base) or a .yaml path [demo]")
    pre.add_argument("--data", help="training manifest (.jsonl/.csv/.parquet or a saved datasets folder) [demo data]")
    pre.add_argument("--out", default="runs/demo", help="run folder [runs/demo]")
    pre.add_argument("--max-steps", type=int, help="total training steps (train.max_steps)")
    pre.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")

    emb = sub.add_parser("embed", parents=[RUN, BATCH, DEVICE],
                         help="embed every modality of a manifest into DIR/m.npy + DIR/m_rows.npy")
    emb.set_defaults(func=_cmd_embed)
    emb.add_argument("--data", help="manifest [demo test split]")
    emb.add_argument("--out", required=True, help="output folder")

    idx = sub.add_parser(
        "index",
        parents=[RUN, BATCH, DEVICE, PROGRESS, _overrides("index settings")],
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

    srch = sub.add_parser(
        "search",
        parents=[INDEX, DEVICE],
        help="search an index with a text, an image, a sound, or their sum",
        description="Embed the query and print the top-k rows of the index. Several of --text, --image, "
        "--audio at once are summed (ImageBind's embedding arithmetic: the sum of the normalised "
        "embeddings). By default every indexed modality the query does not use is searched.",
    )
    srch.set_defaults(func=_cmd_search)
    srch.add_argument("--text", help="query caption")
    srch.add_argument("--image", help="query image file")
    srch.add_argument("--audio", help="query audio file")
    srch.add_argument("--modality", help="what to search, comma-separated (image,text,audio) [the others]")
    srch.add_argument("--top-k", type=int, default=5, help="results per searched modality [5]")
    srch.add_argument("--json", action="store_true", help="print JSON instead of a table")

    srv = sub.add_parser(
        "serve",
        parents=[INDEX, DEVICE],
        help="a search page and JSON API over an index, in your browser",
        description="Load an index and its model once, then serve a search page at http://HOST:PORT/ (type a "
        "caption, drop in an image or a sound, see the images and hear the sounds; 'more like this' on any "
        "result) and a JSON API: GET /api/search?text=...&modality=image&k=10, POST /api/search (multipart: "
        "text, image, audio, modality, k, like), GET /api/item/ROW, GET /api/health. Answers are those of "
        "`search --json`. Only the files of the index's own rows are served, by row id.",
    )
    srv.set_defaults(func=_cmd_serve)
    srv.add_argument("--host", default="127.0.0.1", help="address to listen on [127.0.0.1: this machine only]")
    srv.add_argument("--port", type=int, default=8000, help="[8000]")
    srv.add_argument("--max-upload-mb", type=float, default=20.0, help="largest request body (uploads) accepted [20]")

    vqa = sub.add_parser("vqa", help="fine-tune for visual question answering, evaluate, predict")
    vqa_sub = vqa.add_subparsers(dest="vqa_command", required=True, metavar="SUBCOMMAND")
    vt = vqa_sub.add_parser(
        "train",
        parents=[PROGRESS, _overrides("VQA config overrides")],
        help="fine-tune a pretraining run's image and text encoders with an attention-fusion answer model",
        description="Rows: image, question, answers (1-10 strings, or VQA v2's [{answer: ..}]), optional "
        "question_type / answer_type. The answer vocabulary comes from the training answers; targets are "
        "soft scores (0/0.3/0.6/0.9/1 for 0/1/2/3/4+ matching humans) under BCE. Without --data the "
        "demo's vqa_train.jsonl is used and vqa_test.jsonl evaluated at the end.",
        epilog="settings (key=value after the options): fusion.kind=cross|coattention|merged, "
        "fusion.memory_slots=N (M2 memory), fusion.width/depth/heads, head_hidden, answers.min_count, "
        "answers.top_k, optim.lr, optim.encoder_lr_scale (0 = frozen), train.max_steps, train.batch_size, "
        "columns.question=..., columns.answers=...",
    )
    vt.set_defaults(func=_cmd_vqa_train)
    vt.add_argument("--checkpoint", required=True, help="pretraining run folder (its encoders and tokenizer)")
    vt.add_argument("--data", help="training rows [demo vqa_train.jsonl]")
    vt.add_argument("--eval-data", help="held-out rows evaluated after training [demo vqa_test.jsonl without --data]")
    vt.add_argument("--out", required=True, help="output folder")
    vt.add_argument("--config", default="vqa_demo", help="shipped VQA config name or .yaml path [vqa_demo]")
    vt.add_argument("--from-scratch", action="store_true",
                    help="same model, tokenizer and steps, but random encoders trained at the full LR: the comparison")
    vt.add_argument("--freeze-encoders", action="store_true", help="train only the fusion and head (optim.encoder_lr_scale=0)")
    vt.add_argument("--encoder-lr-scale", type=float, help="encoders learn at lr * this [config: 0.1]")
    vt.add_argument("--max-steps", type=int)
    vt.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    vqa_folder = _parent((("--checkpoint",), dict(required=True, help="VQA folder from `vqa train`")))
    ve = vqa_sub.add_parser("eval", parents=[vqa_folder, BATCH, DEVICE],
                            help="VQA v2 accuracy (overall and per question/answer type) of a fine-tuned folder")
    ve.set_defaults(func=_cmd_vqa_eval)
    ve.add_argument("--data", help="rows with answers [demo vqa_test.jsonl]")
    ve.add_argument("--json", help="also write {accuracy, n, per_type} to this file")
    ve.add_argument("--predictions", help="also write each row's predicted answer (JSON lines)")
    vp = vqa_sub.add_parser("predict", parents=[vqa_folder, DEVICE],
                            help="answer a question about an image: the top answers with scores")
    vp.set_defaults(func=_cmd_vqa_predict)
    vp.add_argument("--image", required=True, help="image file")
    vp.add_argument("--question", required=True)
    vp.add_argument("--top-k", type=int, default=5)
    vp.add_argument("--json", action="store_true", help="print JSON instead of a table")

    vs = vqa_sub.add_parser(
        "score",
        parents=[_overrides("column names, e.g. columns.question_id=qid columns.answers=gt")],
        help="score a predictions file (any model's) against a VQA manifest with the official VQA v2 accuracy",
        description="Predictions: JSON lines {\"row\": N | \"question_id\": ID, \"answer\": STR} (what `vqa eval "
        "--predictions` writes), or the official results JSON [{\"question_id\": ID, \"answer\": STR}]. Question ids "
        "are looked up in the manifest's question_id column. The accuracy equals the official vqaEval.py's per "
        "question for rows with ten answers (see the README for rows with fewer).",
    )
    vs.set_defaults(func=_cmd_vqa_score)
    vs.add_argument("--predictions", required=True, help="predictions file (JSON lines or a JSON list)")
    vs.add_argument("--data", required=True, help="VQA manifest with the human answers")
    vs.add_argument("--json", help="also write {accuracy, n, per_type} to this file")

    pl = sub.add_parser(
        "plot", help="draw a run's curves (losses, std, RankMe, LR, gradients, throughput) as one PNG",
        description="Reads RUN/metrics.jsonl and writes a 1600x900 figure of twelve panels; with --compare, "
        "several runs overlaid (a colour per run). `pretrain` writes the same figure to RUN/metrics.png.")
    pl.set_defaults(func=_cmd_plot)
    pl.add_argument("run", help="run folder (or a metrics.jsonl)")
    pl.add_argument("--compare", nargs="+", default=[], metavar="RUN", help="more runs drawn over it")
    pl.add_argument("--out", help="PNG to write [RUN/metrics.png]")

    cap = sub.add_parser("caption", help="caption images or sounds: train a decoder, evaluate, predict")
    cap_sub = cap.add_subparsers(dest="caption_command", required=True, metavar="SUBCOMMAND")
    ct = cap_sub.add_parser(
        "train",
        parents=[PROGRESS, _overrides("captioning config overrides")],
        help="train a caption decoder on a pretraining run's image or audio encoder",
        description="Rows: an image (or audio) and a caption in `text`; several captions of one input are rows "
        "sharing its path. Cross-entropy with teacher forcing and label smoothing, then with --scst "
        "self-critical training on CIDEr-D. Without --data the demo's train.jsonl is used and test.jsonl "
        "evaluated at the end (BLEU-1..4, ROUGE-L, CIDEr-D as pycocoevalcap computes them).",
        epilog="settings (key=value after the options): decoder.kind=transformer|meshed, decoder.width/depth/heads, "
        "decoder.memory_layers, decoder.memory_slots (meshed), decode.beam, decode.max_len, "
        "decode.no_repeat_ngram, optim.lr, optim.encoder_lr_scale (0 = frozen), optim.label_smoothing, "
        "train.max_steps, train.scst_steps, train.batch_size, columns.text=..., columns.image=...",
    )
    ct.set_defaults(func=_cmd_caption_train)
    ct.add_argument("--checkpoint", required=True, help="pretraining run folder (its encoder and tokenizer)")
    ct.add_argument("--data", help="training rows [demo train.jsonl]")
    ct.add_argument("--eval-data", help="held-out rows evaluated after training [demo test.jsonl without --data]")
    ct.add_argument("--out", required=True, help="output folder")
    ct.add_argument("--modality", default="image", choices=["image", "audio"], help="what to describe [image]")
    ct.add_argument("--config", default="caption_demo", help="shipped captioning config name or .yaml path [caption_demo]")
    ct.add_argument("--from-scratch", action="store_true",
                    help="same model, tokenizer and steps, but a random encoder trained at the full LR: the comparison")
    ct.add_argument("--freeze-encoders", action="store_true", help="train only the decoder (optim.encoder_lr_scale=0)")
    ct.add_argument("--scst", action="store_true",
                    help="after cross-entropy, self-critical training (train.scst_steps, a fifth of max_steps when 0)")
    ct.add_argument("--max-steps", type=int, help="cross-entropy steps")
    ct.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    cap_folder = _parent((("--checkpoint",), dict(required=True, help="captioning folder from `caption train`")))
    ce = cap_sub.add_parser("eval", parents=[cap_folder, BATCH, DEVICE, PROGRESS],
                            help="BLEU-1..4, ROUGE-L and CIDEr-D of a captioning folder on held-out rows")
    ce.set_defaults(func=_cmd_caption_eval)
    ce.add_argument("--data", help="rows with captions [demo test.jsonl]")
    ce.add_argument("--beam", type=int, help="beam size [the folder's decode.beam]")
    ce.add_argument("--json", help="also write the scores to this file")
    ce.add_argument("--predictions", help="also write each input's caption and references (JSON lines)")
    cp = cap_sub.add_parser("predict", parents=[cap_folder, DEVICE], help="caption one image or sound")
    cp.set_defaults(func=_cmd_caption_predict)
    what = cp.add_mutually_exclusive_group(required=True)
    what.add_argument("--image", help="image file")
    what.add_argument("--audio", help="audio file")
    cp.add_argument("--beam", type=int, help="beam size [the folder's decode.beam]")
    cp.add_argument("--json", action="store_true", help="print JSON")

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
        help="zero-shot classification of images or audio against text prompts of class names",
        description="Each class is the average embedding of its prompts (templates filled with the class "
        "name, as CLIP); a sample gets the nearest class. Scored against the manifest's label column.",
    )
    zs.set_defaults(func=_cmd_eval_zeroshot)
    zs.add_argument("--data", help="manifest with a label column [demo test split]")
    zs.add_argument("--classes", help="class names, one per line (or a JSON list) [the demo's classes.txt; esc50: its categories]")
    zs.add_argument("--templates", nargs="+", metavar="TEMPLATE",
                    help="prompt templates with {} for the class name, or files of them "
                    "[a {}. | an image of a {}. | a picture of a {}. | the sound of a {}.]")
    zs.add_argument("--modality", help="image, audio or both, comma-separated [those the manifest has]")
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
    pr.add_argument("--modality", help="image, text, audio, comma-separated [every one the model has]")
    pr.add_argument("--encoder", choices=("online", "target", "input"), default="online",
                    help="the online encoders, the EMA targets (I-JEPA probes those), or no encoder: the inputs "
                    "themselves (pixels, mean log-mel spectrum, bag of tokens), the floor training should clear [online]")
    pr.add_argument("--k", type=int, default=20, help="neighbours of the k-NN probe [20]")
    pr.add_argument("--random-init", action="store_true",
                    help="probe the run's architecture with fresh random weights instead (the reference any "
                    "training must beat)")
    pr.add_argument("--seed", type=int, default=0, help="seed of the split, the C search and --random-init [0]")
    pr.add_argument("--json", help="also write the results to this JSON file")
    return p


def _run_config(load, args: argparse.Namespace, saved_name: str, overrides: list[str], say=print, load_saved=None):
    """A resumed run keeps the config it saved (plus this command's overrides; `load_saved` reads it,
    when that differs from `load`); a new one reads --config."""
    saved = Path(args.out) / saved_name
    if args.resume and saved.exists():
        say(f"resuming with the run's saved config {saved} (+ overrides)")
        return (load_saved or load)(saved, overrides)
    return load(args.config, overrides)


def _cmd_data_demo(args: argparse.Namespace) -> None:
    from .data.demo import generate_demo

    t0 = time.perf_counter()
    summary = generate_demo(args.out, n_train=args.n, n_test=args.n_test, seed=args.seed, speech=args.speech,
                            paired_fraction=args.paired_fraction)
    print(f"demo data written to {args.out} in {time.perf_counter() - t0:.1f}s: {summary}")


def _cmd_pretrain(args: argparse.Namespace) -> None:
    from .config import load_config, load_run_config

    say = print if os.environ.get("RANK", "0") == "0" else (lambda *a, **k: None)  # torchrun: rank 0 speaks
    overrides = list(args.overrides)
    if args.data:
        overrides.append(f"data.train={json.dumps(str(args.data))}")
    if args.max_steps is not None:
        overrides.append(f"train.max_steps={args.max_steps}")
    cfg = _run_config(load_config, args, "config.yaml", overrides, say, load_run_config)  # before torch is imported
    from .train.loop import pretrain

    t0 = time.perf_counter()
    last = pretrain(cfg, args.out, resume=args.resume, progress=not args.no_progress)
    say(f"pretraining done in {time.perf_counter() - t0:.0f}s; run folder: {args.out}")
    if last:
        keys = ["step", "loss", "loss/pred", "loss/bind"] + [k for k in last if k.startswith("rankme/")]
        say("  " + "  ".join(f"{k}={last[k]:.4g}" for k in keys if k in last))


def _cmd_data_check(args: argparse.Namespace) -> int:
    from .config import SourceConfig, load_config
    from .data.check import check_sources, format_report
    from .data.loader import open_sources

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
    from .config import SourceConfig, load_config
    from .data.shards import write_shards
    from .data.sources import open_source

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

    from .config import SourceConfig
    from .data.dataset import source_texts
    from .data.sources import open_source

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


def _need(path: str | Path, what: str, inside: str | None = None) -> None:
    """A path the command needs, checked before the heavy imports (torch, faiss) so a typo costs no wait."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file or folder ({what})")
    if inside is not None and not (p / inside).exists():
        raise FileNotFoundError(f"{p}: not {what}: it has no {inside}")


def _load(args: argparse.Namespace, device=None):
    _need(args.checkpoint, "the --checkpoint run folder", "config.yaml")
    from .distributed import pick_device
    from .model import MultiJEPA

    return MultiJEPA.from_pretrained(args.checkpoint, device=device or pick_device(args.device))


@contextlib.contextmanager
def _processes(args: argparse.Namespace):
    """-> (world, device): torchrun's process group when launched by it (one process per GPU),
    else a world of one; left again when the command ends."""
    from .distributed import close_distributed, init_distributed

    world, device = init_distributed(args.device)
    try:
        yield world, device
    finally:
        close_distributed(world)


def _cmd_embed(args: argparse.Namespace) -> None:
    from .data.demo_paths import resolve_manifest
    from .retrieval.embed import embed_manifest, embed_manifest_spread, save_embeddings

    with _processes(args) as (world, device):
        model = _load(args, device)
        manifest = resolve_manifest(args.data, "test")
        if world.active:  # each process embeds its block of rows, process 0 joins them
            written = embed_manifest_spread(model, manifest, args.out, world, batch_size=args.batch_size)
        else:
            written = save_embeddings(embed_manifest(model, manifest, batch_size=args.batch_size), args.out)
    for path in written:
        print(f"wrote {path}")


def _cmd_eval_retrieval(args: argparse.Namespace) -> None:
    from .data.demo_paths import resolve_manifest
    from .retrieval.metrics import format_table, manifest_retrieval

    model = _load(args)
    if args.audio_clips is not None:
        model.processors.eval_clips = args.audio_clips
    manifest = resolve_manifest(args.data, "test")
    results, grouping = manifest_retrieval(model, manifest, args.group_by, args.batch_size, ties=args.ties)
    if not results:
        raise UsageError(f"{manifest} has no rows with two modalities to retrieve between")
    print(f"retrieval on {manifest} (one item per {grouping}; ties: {args.ties})")
    print(format_table(results))
    _write_json(args.json, results)


def _cmd_eval_zeroshot(args: argparse.Namespace) -> None:
    from .data.benchmarks import parse_spec, read_benchmark
    from .data.demo_paths import resolve_manifest
    from .retrieval.zeroshot import format_zero_shot, read_classes, read_templates, zero_shot_eval

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
    model = _load(args)
    wanted = args.modality.split(",") if args.modality else None
    results = zero_shot_eval(model, manifest, classes, templates, wanted, batch_size=args.batch_size)
    print(f"zero-shot on {manifest}: {len(classes)} classes from {classes_file}, {len(templates)} templates")
    print(format_zero_shot(results))
    _write_json(args.json, results)


def _cmd_eval_probe(args: argparse.Namespace) -> None:
    if args.k < 1:
        raise UsageError("--k must be >= 1")
    if args.random_init and args.encoder == "input":
        raise UsageError("--random-init probes an encoder; --encoder input probes no encoder: give one of them")
    import torch

    from .data.demo_paths import resolve_manifest
    from .model import create_model
    from .retrieval.probe import format_probe, probe_eval

    model = _load(args)
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
    _write_json(args.json, results)


def _cmd_index(args: argparse.Namespace) -> None:
    from .data.demo_paths import resolve_manifest
    from .retrieval.index import build_index, index_config

    columns = [o for o in args.overrides if o.startswith("data.columns.")]
    cfg = index_config([o for o in args.overrides if o not in columns])
    model = _load(args)
    for o in columns:  # the corpus may name its columns unlike the training data
        key, value = o.split("=", 1)
        model.run_config.data.columns[key.split(".", 2)[2]] = value
    manifest = resolve_manifest(args.data, "test")
    t0 = time.perf_counter()
    with _processes(args) as (world, device):
        index = build_index(model.to(device), manifest, args.out, cfg, checkpoint=Path(args.checkpoint).resolve(),
                            batch_size=args.batch_size, num_workers=args.workers, on_error=args.on_error,
                            progress=not args.no_progress, world=world)
    if not world.main:
        return
    counts = ", ".join(f"{n} {m}" for m, n in index.info["modalities"].items())
    print(f"indexed {manifest} in {time.perf_counter() - t0:.0f}s ({cfg.kind}): {counts}; index folder: {args.out}")
    if index.info["bad_rows"]:
        print(f"  {index.info['bad_rows']} bad rows left out, listed in {Path(args.out) / 'bad_rows.jsonl'}")


def _load_index(args: argparse.Namespace, say=lambda line: None):
    """--index and the model it was built with (--checkpoint, else the one it names) -> (index, model)."""
    from .retrieval.index import EmbeddingIndex  # torch and faiss: only once the arguments hold

    say(f"loading the index {args.index} ...")
    index = EmbeddingIndex(args.index)
    args.checkpoint = args.checkpoint or index.info["checkpoint"]
    say(f"loading the model {args.checkpoint} ...")
    model = _load(args)
    index.check_model(model)
    return index, model


def _cmd_search(args: argparse.Namespace) -> None:
    _need(args.index, "the --index folder", "index.json")
    queries = {m: v for m, v in (("text", args.text), ("image", args.image), ("audio", args.audio)) if v is not None}
    if not queries:
        raise UsageError("give a query: --text STR, --image FILE and/or --audio FILE")
    if args.top_k < 1:
        raise UsageError("--top-k must be at least 1")
    for m, v in queries.items():
        if m != "text":
            _need(v, f"the --{m} query")
    from .retrieval.search import embed_query, format_results, search, target_modalities

    index, model = _load_index(args)
    wanted = args.modality.split(",") if args.modality else None
    try:
        targets = target_modalities(index, list(queries), wanted)
    except ValueError as e:
        raise UsageError(str(e)) from None
    for m in queries:
        if m not in model.modalities:
            raise UsageError(f"this model has no {m} encoder (it has: {', '.join(model.modalities)})")
    results = search(index, embed_query(model, **queries), targets, args.top_k)
    if args.json:
        print(json.dumps({"query": queries, "results": results}, indent=2, ensure_ascii=False))
        return
    print("query: " + " + ".join(f"{m} {v!r}" for m, v in queries.items()))
    print(format_results(results, index))


def _cmd_serve(args: argparse.Namespace) -> None:
    _need(args.index, "the --index folder", "index.json")
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be 0-65535, got {args.port}")
    if args.max_upload_mb <= 0:
        raise UsageError("--max-upload-mb must be positive")
    import uvicorn

    from .serve.app import create_app

    index, model = _load_index(args, say=lambda line: print(line, flush=True))
    app = create_app(index, model, args.max_upload_mb)
    counts = ", ".join(f"{n} {m}" for m, n in index.info["modalities"].items())
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"note: listening on {args.host}: other machines can reach this server", flush=True)
    print(f"serving {len(index)} rows ({counts}) at http://{args.host}:{args.port}/  (Ctrl-C stops)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


def _finetune_overrides(args: argparse.Namespace) -> list[str]:
    """The overrides a fine-tuning command's options stand for (vqa train, caption train)."""
    overrides = list(args.overrides)
    if args.freeze_encoders:
        overrides.append("optim.encoder_lr_scale=0")
    elif getattr(args, "encoder_lr_scale", None) is not None:
        overrides.append(f"optim.encoder_lr_scale={args.encoder_lr_scale}")
    elif args.from_scratch and not any(o.startswith("optim.encoder_lr_scale") for o in overrides):
        # random encoders at a tenth of the LR would be a handicapped baseline: full LR for them
        overrides.append("optim.encoder_lr_scale=1")
    if args.max_steps is not None:
        overrides.append(f"train.max_steps={args.max_steps}")
    return overrides


def _cmd_vqa_train(args: argparse.Namespace) -> None:
    _need(args.checkpoint, "the --checkpoint pretraining run folder", "config.yaml")
    from .data.demo_paths import resolve_manifest
    from .vqa.config import load_vqa_config
    from .vqa.metric import format_vqa
    from .vqa.train import train_vqa

    cfg = _run_config(load_vqa_config, args, "vqa_config.yaml", _finetune_overrides(args))
    train = resolve_manifest(args.data, "vqa_train")
    held_out = args.eval_data or (resolve_manifest(None, "vqa_test") if args.data is None else None)
    t0 = time.perf_counter()
    last = train_vqa(args.checkpoint, train, args.out, cfg, eval_data=held_out, from_scratch=args.from_scratch,
                     resume=args.resume, progress=not args.no_progress)
    init = "from scratch" if args.from_scratch else f"from {args.checkpoint}"
    print(f"VQA ({cfg.fusion.kind} fusion, {init}) trained in {time.perf_counter() - t0:.0f}s; folder: {args.out}")
    if "eval" in last:
        print(f"held-out {held_out}:")
        print(format_vqa(last["eval"]))


def _cmd_vqa_eval(args: argparse.Namespace) -> None:
    _need(args.checkpoint, "the --checkpoint VQA folder", "model.safetensors")
    from .data.demo_paths import resolve_manifest
    from .distributed import pick_device
    from .vqa.metric import format_vqa
    from .vqa.model import load_vqa
    from .vqa.train import evaluate_vqa

    predictor = load_vqa(args.checkpoint, pick_device(args.device))
    data = resolve_manifest(args.data, "vqa_test")
    result = evaluate_vqa(predictor, data, args.batch_size, predictions_out=args.predictions)
    print(f"VQA on {data}:")
    print(format_vqa(result))
    _write_json(args.json, result)


def _cmd_vqa_score(args: argparse.Namespace) -> None:
    from .config import ConfigError
    from .vqa.metric import format_vqa
    from .vqa.score import score_file

    columns = {}
    for o in args.overrides:
        key, _, value = o.partition("=")
        if not key.startswith("columns.") or not value:
            raise ConfigError(f"vqa score takes only columns.NAME=COLUMN settings, got '{o}'")
        columns[key.split(".", 1)[1]] = value
    result = score_file(args.predictions, args.data, columns)
    print(f"VQA accuracy of {args.predictions} on {args.data}:")
    print(format_vqa(result))
    _write_json(args.json, result)


def _cmd_vqa_predict(args: argparse.Namespace) -> None:
    _need(args.checkpoint, "the --checkpoint VQA folder", "model.safetensors")
    _need(args.image, "the --image to ask about")
    from .distributed import pick_device
    from .vqa.model import load_vqa

    predictor = load_vqa(args.checkpoint, pick_device(args.device))
    top = predictor.predict(args.image, args.question, args.top_k)
    if args.json:
        print(json.dumps([{"answer": a, "score": s} for a, s in top], indent=2))
        return
    print(f"Q: {args.question}")
    for a, s in top:
        print(f"  {s:6.3f}  {a}")


def _cmd_plot(args: argparse.Namespace) -> None:
    for run in [args.run, *args.compare]:
        _need(run, "a run folder or metrics file")
    from .plot import plot_runs

    run = Path(args.run)
    out = Path(args.out) if args.out else (run if run.is_dir() else run.parent) / "metrics.png"
    print(f"wrote {plot_runs([args.run, *args.compare], out)}")


def _cmd_caption_train(args: argparse.Namespace) -> None:
    _need(args.checkpoint, "the --checkpoint pretraining run folder", "config.yaml")
    from .caption.config import load_caption_config
    from .caption.metrics import format_scores
    from .caption.train import train_caption
    from .data.demo_paths import resolve_manifest

    cfg = _run_config(load_caption_config, args, "caption_config.yaml", _finetune_overrides(args))
    if args.scst and cfg.train.scst_steps == 0:
        cfg.train.scst_steps = max(1, cfg.train.max_steps // 5)
    train = resolve_manifest(args.data, "train")
    held_out = args.eval_data or (resolve_manifest(None, "test") if args.data is None else None)
    t0 = time.perf_counter()
    last = train_caption(args.checkpoint, train, args.out, cfg, args.modality, eval_data=held_out,
                         from_scratch=args.from_scratch, resume=args.resume, progress=not args.no_progress)
    init = "from scratch" if args.from_scratch else f"from {args.checkpoint}"
    print(f"{args.modality} captioning ({cfg.decoder.kind} decoder, {init}) trained in "
          f"{time.perf_counter() - t0:.0f}s; folder: {args.out}")
    if "eval" in last:
        print(f"held-out {held_out}:")
        print(format_scores(last["eval"]))


def _cmd_caption_eval(args: argparse.Namespace) -> None:
    _need(args.checkpoint, "the --checkpoint captioning folder", "model.safetensors")
    from .caption.metrics import format_scores
    from .caption.model import load_captioner
    from .caption.train import evaluate_captions
    from .data.demo_paths import resolve_manifest
    from .distributed import pick_device

    captioner = load_captioner(args.checkpoint, pick_device(args.device))
    if args.beam is not None:
        captioner.cfg.decode.beam = args.beam
    data = resolve_manifest(args.data, "test")
    result = evaluate_captions(captioner, data, args.batch_size, progress=not args.no_progress,
                               predictions_out=args.predictions)
    print(f"{captioner.modality} captions of {data}:")
    print(format_scores(result))
    _write_json(args.json, result)


def _cmd_caption_predict(args: argparse.Namespace) -> None:
    _need(args.checkpoint, "the --checkpoint captioning folder", "model.safetensors")
    from .caption.model import load_captioner
    from .distributed import pick_device

    captioner = load_captioner(args.checkpoint, pick_device(args.device))
    given = "image" if args.image else "audio"
    if given != captioner.modality:
        raise UsageError(f"{args.checkpoint} captions {captioner.modality}: give --{captioner.modality}")
    path = args.image or args.audio
    _need(path, f"the --{given} to caption")
    caption = captioner.caption([path], beam=args.beam)[0]
    if args.json:
        print(json.dumps({given: path, "caption": caption}))
        return
    print(caption)


def _write_json(path: str | None, results: dict) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(results, indent=2))
        print(f"wrote {path}")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    """Options and `key=value` overrides in any order: argparse takes the overrides before the first
    option as the positional list; the ones after it come back unrecognised and are added here."""
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    target = "overrides" if hasattr(args, "overrides") else "items" if hasattr(args, "items") else None
    stray = [e for e in extra if target is None or e.startswith("-") or (target == "overrides" and "=" not in e)]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if extra:
        getattr(args, target).extend(extra)
    return args


# errors that are the user's to fix, printed as one line: (module, class). Looked up only in modules
# already imported (an exception cannot come from one that is not), so a failing command never
# waits for torch to import just to print its error.
ONE_LINE_ERRORS = (("modalities.errors", "DataError"), ("multijepa.config", "ConfigError"),
                   ("multijepa.checkpoint", "CheckpointError"), ("multijepa.objective", "CollapseError"),
                   ("multijepa.run_folder", "RunFolderError"), ("builtins", "FileExistsError"),
                   ("builtins", "FileNotFoundError"))


def _ours(e: BaseException) -> bool:
    return any(isinstance(e, getattr(sys.modules[m], name)) for m, name in ONE_LINE_ERRORS if m in sys.modules)


def main(argv: list[str] | None = None) -> int:
    """Exit status: 0 done, 1 an error (one line on stderr; MULTIJEPA_DEBUG=1 adds the traceback),
    2 a usage error, 128+N stopped by signal N after writing a checkpoint."""
    from .interrupts import TrainingInterrupted

    args = _parse(argv)
    try:
        return args.func(args) or 0
    except TrainingInterrupted as e:
        print(str(e), file=sys.stderr)
        return e.exit_code
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if os.environ.get("MULTIJEPA_DEBUG"):
            raise
        if _ours(e):
            print(f"error: {e}", file=sys.stderr)
        else:  # not one of ours: still one line
            first = (str(e).strip().splitlines() or [""])[0][:300]
            print(f"error: {type(e).__name__}: {first} (MULTIJEPA_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
