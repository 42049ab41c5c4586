"""Fine-tune a pretraining run for visual question answering from Python, evaluate it, ask a question.

Rows: `image`, `question` and `answers` (1-10 strings; VQA v2's [{"answer": ...}] also reads).

    python examples/finetune_vqa.py --checkpoint runs/demo --train data/demo/vqa_train.jsonl \
        --test data/demo/vqa_test.jsonl --out runs/demo_vqa
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from multijepa.vqa.config import load_vqa_config
from multijepa.vqa.metric import format_vqa
from multijepa.vqa.model import load_vqa
from multijepa.vqa.train import evaluate_vqa, train_vqa


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="pretraining run folder (its encoders and tokenizer)")
    p.add_argument("--train", required=True, help="VQA training rows")
    p.add_argument("--test", required=True, help="held-out VQA rows")
    p.add_argument("--out", required=True, help="fine-tuning folder")
    p.add_argument("--config", default="vqa_demo", help="shipped VQA config [vqa_demo]")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="settings, e.g. train.max_steps=300 optim.encoder_lr_scale=0 (frozen encoders)")
    args = p.parse_args(argv)

    cfg = load_vqa_config(args.config, args.overrides)
    train_vqa(args.checkpoint, args.train, args.out, cfg, progress=False)

    predictor = load_vqa(args.out)
    result = evaluate_vqa(predictor, args.test, progress=False)
    print(f"VQA v2 accuracy on {args.test}:")
    print(format_vqa(result))

    first = json.loads(Path(args.test).read_text().splitlines()[0])
    image = Path(args.test).parent / first["image"]
    print(f"Q: {first['question']}")
    for answer, score in predictor.predict(image, first["question"], k=3):
        print(f"  {score:.3f}  {answer}")


if __name__ == "__main__":
    main()
