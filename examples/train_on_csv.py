"""Train on a CSV of your own pairs, then score retrieval on held-out rows, from Python.

The CSV has a column per modality (`image` and `text` here; `audio` too if you have sounds), with
paths relative to the CSV's folder; rows may lack a modality (an empty cell). Columns named
otherwise are mapped with `data.columns.image=filename` and the like.

    python examples/train_on_csv.py --train my_pairs/train.csv --test my_pairs/test.csv --out runs/mine
"""

from __future__ import annotations

import argparse
import json

from multijepa import MultiJEPA, load_config, pretrain
from multijepa.retrieval.metrics import format_table, manifest_retrieval


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--train", required=True, help="training CSV")
    p.add_argument("--test", required=True, help="held-out CSV to score retrieval on")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--config", default="demo", help="shipped config to start from (demo: minutes on a CPU) [demo]")
    p.add_argument("--modalities", default="image,text", help="the CSV's modalities [image,text]")
    p.add_argument("--steps", type=int, default=300, help="training steps [300]")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="more config settings, e.g. data.batch_size=32")
    args = p.parse_args(argv)

    cfg = load_config(args.config, [
        f"data.train={json.dumps(args.train)}",  # JSON quoting: any path reads back as one string
        f"model.modalities=[{args.modalities}]",
        f"train.max_steps={args.steps}",
        *args.overrides,
    ])
    last = pretrain(cfg, args.out, progress=False)  # writes config.yaml, tokenizer, checkpoints, metrics.jsonl, MODEL_CARD.md
    print(f"trained {last['step']} steps, loss {last['loss']:.3f}; run folder {args.out}")

    model = MultiJEPA.from_pretrained(args.out)
    results, grouping = manifest_retrieval(model, args.test, progress=False)
    print(f"held-out retrieval (one item per {grouping}):")
    print(format_table(results))


if __name__ == "__main__":
    main()
