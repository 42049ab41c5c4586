"""MultiJEPA's objective against the CLIP objective with the same towers, at equal wall-clock.

For each paired fraction F (1.0: every demo scene one row with image, caption and sound; 0.1: only
a tenth of the scenes, the rest split into one-modality rows, see `multijepa data demo
--paired-fraction`), two pretraining runs, one at a time, each stopped after `--seconds` of
training (`train.max_seconds`):

  jepa  `loss.objective=jepa` (the default recipe, plus `--jepa` overrides). With F < 1 it trains
        on every row: a mixture of the paired rows and the one-modality rows, half the batch each
        (prediction learns from single rows, binding from pairs).
  clip  `loss.objective=clip`: binding alone on unmasked inputs, no masks, target encoders or
        predictors. It can use pairs only, so with F < 1 it trains on the paired rows (64 pairs
        per batch), as a CLIP user would.
  clip_mix  (F < 1 only) the CLIP objective on jepa's own mixture: the same batches (32 pairs
        and 32 single rows, which give binding nothing), so only the objective differs.

Then, on the held-out (fully paired) test split, per arm: R@1 and class-match P@1 of the six
retrieval directions, zero-shot top-1 (image, audio), linear-probe and 20-NN top-1 of each encoder
(trained on the demo's train split, `multijepa eval probe`), and VQA accuracy after the same short
fine-tune. With `--pred-only` a third arm (`loss.bind_weight=0`) checks that prediction alone
learns: its probes are printed beside those of the same towers at their random initialisation, of
the inputs themselves (`eval probe --encoder input`: pixels, mean log-mel spectrum, bag of tokens),
and of the same towers trained on the label for as many steps (cross-entropy, a reference for how
far the probes can move in that time).

The last lines are `quality_ratio_vs_clip_paired: X` and `quality_ratio_vs_clip_scarce: Y`: the
mean class-match P@1 of jepa over that of the better CLIP arm (for the fractions run: 1.0 is
"paired", any other "scarce"; against clip on pairs alone it is also printed, as
`quality_ratio_vs_clip_pairs_only_scarce`).

    python benchmarks/vs_clip.py                        # 240 s per arm, fractions 1.0 and 0.1
    python benchmarks/vs_clip.py --seconds 60 --fractions 0.1 --jepa model.ema_horizon=0.05
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shutil
import sys
from pathlib import Path

import torch

from multijepa.checkpoint import latest_checkpoint, load_train_state
from multijepa.config import load_config
from multijepa.data.collate import MultiModalCollator
from multijepa.data.demo import generate_demo
from multijepa.model import EmbeddingHead, create_model, load_run
from multijepa.retrieval.embed import manifest_labels, open_manifest
from multijepa.retrieval.metrics import manifest_retrieval
from multijepa.retrieval.probe import probe_eval
from multijepa.retrieval.zeroshot import DEFAULT_TEMPLATES, read_classes, zero_shot_eval
from multijepa.train import pretrain
from multijepa.vqa.config import load_vqa_config
from multijepa.vqa.train import train_vqa

from common import machine, write_result


def arm_overrides(arm: str, data: Path, fraction: float, seconds: float, extra: list[str]) -> list[str]:
    """The config overrides of one arm on the demo data of one paired fraction."""
    common = [f"train.max_seconds={seconds}", "train.max_steps=100000", "train.ckpt_every=100000"]
    if arm == "clip":
        train = data / ("train_paired.jsonl" if fraction < 1 else "train.jsonl")
        return [*common, f"data.train={train}", "loss.objective=clip", *extra]
    if fraction < 1:  # jepa, pred_only and clip_mix: every row, half the batch pairs
        sources = (f"data.sources=[{{path: {data / 'train_paired.jsonl'}, weight: 1}}, "
                   f"{{path: {data / 'train_single.jsonl'}, weight: 1}}]")
        data_args = [sources]
    else:
        data_args = [f"data.train={data / 'train.jsonl'}"]
    if arm == "clip_mix":
        return [*common, *data_args, "loss.objective=clip", *extra]
    pred_only = ["loss.bind_weight=0"] if arm == "pred_only" else []
    return [*common, *data_args, "loss.objective=jepa", *extra, *pred_only]


def evaluate(model, data: Path, vqa_dir: Path, run: Path, vqa_steps: int, probe_data: Path) -> dict:
    """Every figure of one trained arm, on the held-out split."""
    test = data / "test.jsonl"
    ret, _ = manifest_retrieval(model, test, progress=False)
    out = {
        "R@1": {k: v["R@1"] for k, v in ret.items()},
        "P@1": {k: v["P@1"] for k, v in ret.items()},
        "mean_R@1": sum(v["R@1"] for v in ret.values()) / len(ret),
        "mean_P@1": sum(v["P@1"] for v in ret.values()) / len(ret),
    }
    zs = zero_shot_eval(model, test, read_classes(data / "classes.txt"), list(DEFAULT_TEMPLATES), progress=False)
    out["zeroshot_top1"] = {m: r["top1"] for m, r in zs.items()}
    out["probe"] = probes(model, probe_data, test)
    if vqa_steps > 0:
        cfg = load_vqa_config("vqa_demo", [f"train.max_steps={vqa_steps}", "train.log_every=1000000"])
        with contextlib.redirect_stdout(io.StringIO()):
            last = train_vqa(run, data / "vqa_train.jsonl", vqa_dir, cfg, eval_data=data / "vqa_test.jsonl",
                             progress=False)
        out["vqa_accuracy"] = last["eval"]["accuracy"]
    return out


def probes(model, train: Path, test: Path, encoder: str = "online") -> dict:
    res = probe_eval(model, train, test, model.modalities, encoder, progress=False)
    return {m: {"linear": r["linear"]["top1"], "knn": r["knn"]["top1"]} for m, r in res.items()}


def random_towers(run):
    """A run's architecture at a fixed random initialisation (seed 0): the towers both references start from."""
    torch.manual_seed(0)
    return create_model(run.run_config, run.processors.tokenizer)


def supervised_probes(run, train: Path, test: Path, steps: int) -> dict:
    """The probes of the run's `random_towers` after `steps` steps of training on the label itself:
    cross-entropy through a linear classifier of each encoder's mean-pooled features, the run's
    batch size and learning rate, AdamW, no schedule. A reference, not an arm: how far the probes
    can move from the random towers' in the steps prediction alone had."""
    model = random_towers(run)
    batch, lr = run.run_config.data.batch_size, run.run_config.optim.lr
    for m in (m for m in model.modalities if m not in model.frozen):  # a frozen tower stays as it is
        dataset = open_manifest(model, train, [m], cache=True)
        labels = manifest_labels(dataset) or [None] * len(dataset)
        labelled = [i for i, y in enumerate(labels) if y is not None]
        classes = sorted({labels[i] for i in labelled})
        encoder = model.encoders[m].train()
        classifier = torch.nn.Linear(encoder.dim, len(classes))
        opt = torch.optim.AdamW([*encoder.parameters(), *classifier.parameters()], lr=lr, weight_decay=0.05)
        collate = MultiModalCollator([m], processors=model.processors, train=True)  # random audio crops
        draw = torch.Generator().manual_seed(0)
        for step in range(steps):
            rows = [labelled[i] for i in torch.randint(len(labelled), (batch,), generator=draw).tolist()]
            sub = collate([{**dataset[r], "batch_no": step, "slot": j} for j, r in enumerate(rows)])[m]
            y = torch.tensor([classes.index(labels[rows[j]]) for j in sub["index"].tolist()])  # (B,)
            loss = torch.nn.functional.cross_entropy(classifier(EmbeddingHead.pool(*encoder(sub["x"]))), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return probes(model.eval(), train, test)


def train_arm(overrides: list[str], config: str, run: Path) -> tuple[float, int]:
    """-> (training seconds as the run counted them, steps), the run trained in this process."""
    cfg = load_config(config, overrides)
    if run.exists():
        shutil.rmtree(run)
    with contextlib.redirect_stdout(io.StringIO()):
        pretrain(cfg, run, progress=False)
    state = load_train_state(latest_checkpoint(run))
    return float(state["train_seconds"]), int(state["step"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="demo", help="pretraining config of both arms [demo]")
    ap.add_argument("--seconds", type=float, default=240.0, help="training seconds per arm [240]")
    ap.add_argument("--fractions", type=float, nargs="+", default=[1.0, 0.1], help="paired fractions [1.0 0.1]")
    ap.add_argument("--n", type=int, default=2400, help="training scenes of the demo data [2400]")
    ap.add_argument("--n-test", type=int, default=600, help="held-out scenes [600]")
    ap.add_argument("--vqa-steps", type=int, default=150, help="VQA fine-tuning steps per arm; 0 skips VQA [150]")
    ap.add_argument("--jepa", nargs="*", default=[], metavar="key=value", help="overrides of the jepa arm")
    ap.add_argument("--clip", nargs="*", default=[], metavar="key=value", help="overrides of the clip arm")
    ap.add_argument("--pred-only", action="store_true",
                    help="also train loss.bind_weight=0 (fraction 1.0) and probe it against the random towers, "
                         "the inputs and the towers trained on the label")
    ap.add_argument("--work", default="benchmarks/results/vs_clip_work", help="data and run folders")
    ap.add_argument("--json", help="also write the results to this JSON file")
    args = ap.parse_args()

    work = Path(args.work)
    torch.manual_seed(0)
    print(f"machine: {json.dumps(machine())}; {args.seconds:g} s of training per arm, config {args.config}",
          flush=True)
    rows, ratios = [], {}
    for fraction in args.fractions:
        data = work / f"data_{fraction:g}"
        generate_demo(data, n_train=args.n, n_test=args.n_test, progress=False, paired_fraction=fraction)
        if fraction < 1 and not (work / "data_1" / "train.jsonl").exists():
            generate_demo(work / "data_1", n_train=args.n, n_test=args.n_test, progress=False)
        full = work / "data_1" / "train.jsonl"  # the probes train on every scene whole, whatever F
        arms = ["jepa", "clip"] + (["clip_mix"] if fraction < 1 else [])
        arms += ["pred_only"] if args.pred_only and fraction == 1.0 else []
        scores = {}
        for arm in arms:
            extra = args.clip if arm.startswith("clip") else args.jepa
            run = work / f"run_{arm}_{fraction:g}"
            print(f"paired fraction {fraction:g}: training {arm} ...", flush=True)
            seconds, steps = train_arm(arm_overrides(arm, data, fraction, args.seconds, extra), args.config, run)
            model = load_run(run)
            res = evaluate(model, data, work / f"vqa_{arm}_{fraction:g}", run,
                           0 if arm == "pred_only" else args.vqa_steps, full)
            logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
            shares = [r["grad_share/pred"] for r in logged if "grad_share/pred" in r]
            res.update(arm=arm, paired_fraction=fraction, steps=steps, seconds=seconds,
                       ms_per_step=1000 * seconds / max(steps, 1),
                       grad_share_pred=sum(shares) / len(shares) if shares else None)
            if arm == "pred_only":
                res["probe_random_init"] = probes(random_towers(model).eval(), full, data / "test.jsonl")
                res["probe_input"] = probes(model, full, data / "test.jsonl", encoder="input")
                res["probe_supervised"] = supervised_probes(model, full, data / "test.jsonl", steps)
            rows.append(res)
            scores[arm] = res["mean_P@1"]
            print(format_row(res), flush=True)
        best_clip = max(v for k, v in scores.items() if k.startswith("clip"))
        if fraction < 1:
            ratios["pairs_only_scarce"] = scores["jepa"] / max(scores["clip"], 1e-9)
        ratios["paired" if fraction == 1.0 else "scarce"] = scores["jepa"] / max(best_clip, 1e-9)

    write_result(args.json, {"machine": machine(), "seconds": args.seconds, "config": args.config, "jepa_overrides": args.jepa,
                             "clip_overrides": args.clip, "results": rows,
                             **{f"quality_ratio_vs_clip_{k}": v for k, v in ratios.items()}})
    for k in sorted(ratios, key=lambda k: ("pairs_only" not in k, k)):  # the two main ratios last
        print(f"quality_ratio_vs_clip_{k}: {ratios[k]:.3f}")


def format_probes(probes: dict) -> str:
    return "  ".join(f"{m} lin {p['linear']:.3f} knn {p['knn']:.3f}" for m, p in probes.items())


def format_row(r: dict) -> str:
    text = (f"  {r['arm']:<9} F={r['paired_fraction']:g}  steps {r['steps']}  {r['ms_per_step']:.0f} ms/step  "
            f"mean R@1 {r['mean_R@1']:.3f}  mean class-match P@1 {r['mean_P@1']:.3f}  zero-shot "
            + " ".join(f"{m} {v:.3f}" for m, v in r["zeroshot_top1"].items())
            + (f"  VQA {r['vqa_accuracy']:.3f}" if "vqa_accuracy" in r else "")
            + (f"  pred grad share {r['grad_share_pred']:.3f}" if r.get("grad_share_pred") is not None else "")
            + f"\n    probes: {format_probes(r['probe'])}")
    if "probe_random_init" in r:
        text += f"\n    random init: {format_probes(r['probe_random_init'])}"
    if "probe_input" in r:
        text += f"\n    the inputs, no encoder: {format_probes(r['probe_input'])}"
    if "probe_supervised" in r:
        text += f"\n    the towers trained on the label, same steps: {format_probes(r['probe_supervised'])}"
    return text


if __name__ == "__main__":
    sys.exit(main())
