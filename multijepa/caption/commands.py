"""`multijepa caption train|eval|predict`: the captioning wing's commands."""

from __future__ import annotations

import argparse
import json
import time

from ..cli_args import (
    BATCH,
    DEVICE,
    PROGRESS,
    UsageError,
    finetune_overrides,
    need,
    need_run,
    overrides_arg,
    parent,
    run_config,
    write_json,
)
from ..modality import media_modalities


def add_caption(sub: argparse._SubParsersAction) -> None:
    cap = sub.add_parser("caption", help="caption images or sounds: train a decoder, evaluate, predict")
    cap_sub = cap.add_subparsers(dest="caption_command", required=True, metavar="SUBCOMMAND")
    ct = cap_sub.add_parser(
        "train",
        parents=[PROGRESS, overrides_arg("captioning config overrides")],
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
    ct.add_argument("--checkpoint", required=True, help="pretraining run folder (its encoder and tokenizer), or one of its checkpoints (RUN/checkpoints/step_N)")
    ct.add_argument("--data", help="training rows [demo train.jsonl]")
    ct.add_argument("--eval-data", help="held-out rows evaluated after training [demo test.jsonl without --data]")
    ct.add_argument("--out", required=True, help="output folder")
    ct.add_argument("--modality", default="image", choices=media_modalities(), help="what to describe [image]")
    ct.add_argument("--config", default="caption_demo", help="shipped captioning config name or .yaml path [caption_demo]")
    ct.add_argument("--from-scratch", action="store_true",
                    help="same model, tokenizer and steps, but a random encoder trained at the full LR: the comparison")
    ct.add_argument("--freeze-encoders", action="store_true", help="train only the decoder (optim.encoder_lr_scale=0)")
    ct.add_argument("--scst", action="store_true",
                    help="after cross-entropy, self-critical training (train.scst_steps, a fifth of max_steps when 0)")
    ct.add_argument("--max-steps", type=int, help="cross-entropy steps")
    ct.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    cap_folder = parent((("--checkpoint",), dict(required=True, help="captioning folder from `caption train`")))
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
    for m in media_modalities():
        what.add_argument(f"--{m}", help=f"{m} file")
    cp.add_argument("--beam", type=int, help="beam size [the folder's decode.beam]")
    cp.add_argument("--json", action="store_true", help="print JSON")


COMMANDS = {"caption": add_caption}


def _cmd_caption_train(args: argparse.Namespace) -> None:
    need_run(args.checkpoint)
    from ..data.demo_paths import resolve_manifest
    from .config import load_caption_config
    from .metrics import format_scores
    from .train import train_caption

    cfg = run_config(load_caption_config, args, "caption_config.yaml", finetune_overrides(args))
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
    need(args.checkpoint, "the --checkpoint captioning folder", "model.safetensors")
    from ..data.demo_paths import resolve_manifest
    from ..distributed import pick_device
    from .metrics import format_scores
    from .model import load_captioner
    from .train import evaluate_captions

    captioner = load_captioner(args.checkpoint, pick_device(args.device))
    if args.beam is not None:
        captioner.cfg.decode.beam = args.beam
    data = resolve_manifest(args.data, "test")
    result = evaluate_captions(captioner, data, args.batch_size, progress=not args.no_progress,
                               predictions_out=args.predictions)
    print(f"{captioner.modality} captions of {data}:")
    print(format_scores(result))
    write_json(args.json, result)


def _cmd_caption_predict(args: argparse.Namespace) -> None:
    need(args.checkpoint, "the --checkpoint captioning folder", "model.safetensors")
    from ..distributed import pick_device
    from .model import load_captioner

    captioner = load_captioner(args.checkpoint, pick_device(args.device))
    given = next(m for m in media_modalities() if getattr(args, m, None))
    if given != captioner.modality:
        raise UsageError(f"{args.checkpoint} captions {captioner.modality}: give --{captioner.modality}")
    path = getattr(args, given)
    need(path, f"the --{given} to caption")
    caption = captioner.caption([path], beam=args.beam)[0]
    if args.json:
        print(json.dumps({given: path, "caption": caption}))
        return
    print(caption)
