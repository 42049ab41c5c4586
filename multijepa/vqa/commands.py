"""`multijepa vqa train|eval|predict|score`: the VQA wing's commands."""

from __future__ import annotations

import argparse
import json
import time

from ..cli_args import BATCH, DEVICE, PROGRESS, finetune_overrides, need, need_run, overrides_arg, parent, run_config, write_json


def add_vqa(sub: argparse._SubParsersAction) -> None:
    vqa = sub.add_parser("vqa", help="fine-tune for visual question answering, evaluate, predict")
    vqa_sub = vqa.add_subparsers(dest="vqa_command", required=True, metavar="SUBCOMMAND")
    vt = vqa_sub.add_parser(
        "train",
        parents=[PROGRESS, overrides_arg("VQA config overrides")],
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
    vt.add_argument("--checkpoint", required=True, help="pretraining run folder (its encoders and tokenizer), or one of its checkpoints (RUN/checkpoints/step_N)")
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
    vqa_folder = parent((("--checkpoint",), dict(required=True, help="VQA folder from `vqa train`")))
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
        parents=[overrides_arg("column names, e.g. columns.question_id=qid columns.answers=gt")],
        help="score a predictions file (any model's) against a VQA manifest with the official VQA v2 accuracy",
        description="Predictions: JSON lines {\"row\": N | \"question_id\": ID, \"answer\": STR} (what `vqa eval "
        "--predictions` writes), or the official results JSON [{\"question_id\": ID, \"answer\": STR}]. Question ids "
        "are looked up in the manifest's question_id column. The accuracy equals the official vqaEval.py's per "
        "question for rows with ten answers (docs/guides/vqa.md says how rows with fewer are scored).",
    )
    vs.set_defaults(func=_cmd_vqa_score)
    vs.add_argument("--predictions", required=True, help="predictions file (JSON lines or a JSON list)")
    vs.add_argument("--data", required=True, help="VQA manifest with the human answers")
    vs.add_argument("--json", help="also write {accuracy, n, per_type} to this file")


COMMANDS = {"vqa": add_vqa}


def _cmd_vqa_train(args: argparse.Namespace) -> None:
    need_run(args.checkpoint)
    from ..data.demo_paths import resolve_manifest
    from .config import load_vqa_config
    from .metric import format_vqa
    from .train import train_vqa

    cfg = run_config(load_vqa_config, args, "vqa_config.yaml", finetune_overrides(args))
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
    need(args.checkpoint, "the --checkpoint VQA folder", "model.safetensors")
    from ..data.demo_paths import resolve_manifest
    from ..distributed import pick_device
    from .metric import format_vqa
    from .model import load_vqa
    from .train import evaluate_vqa

    predictor = load_vqa(args.checkpoint, pick_device(args.device))
    data = resolve_manifest(args.data, "vqa_test")
    result = evaluate_vqa(predictor, data, args.batch_size, predictions_out=args.predictions)
    print(f"VQA on {data}:")
    print(format_vqa(result))
    write_json(args.json, result)


def _cmd_vqa_score(args: argparse.Namespace) -> None:
    from ..config import ConfigError
    from .metric import format_vqa
    from .score import score_file

    columns = {}
    for o in args.overrides:
        key, _, value = o.partition("=")
        if not key.startswith("columns.") or not value:
            raise ConfigError(f"vqa score takes only columns.NAME=COLUMN settings, got '{o}'")
        columns[key.split(".", 1)[1]] = value
    result = score_file(args.predictions, args.data, columns)
    print(f"VQA accuracy of {args.predictions} on {args.data}:")
    print(format_vqa(result))
    write_json(args.json, result)


def _cmd_vqa_predict(args: argparse.Namespace) -> None:
    need(args.checkpoint, "the --checkpoint VQA folder", "model.safetensors")
    need(args.image, "the --image to ask about")
    from ..distributed import pick_device
    from .model import load_vqa

    predictor = load_vqa(args.checkpoint, pick_device(args.device))
    top = predictor.predict(args.image, args.question, args.top_k)
    if args.json:
        print(json.dumps([{"answer": a, "score": s} for a, s in top], indent=2))
        return
    print(f"Q: {args.question}")
    for a, s in top:
        print(f"  {s:6.3f}  {a}")
