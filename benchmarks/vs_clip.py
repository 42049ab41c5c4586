"""MultiJEPA's objective against the CLIP objective with the same towers, at equal wall-clock.

For each paired fraction F (1.0: every demo scene one row with image, caption and sound; 0.1: only
a tenth of the scenes, the rest split into one-modality rows, see `multijepa data demo
--paired-fraction`) and each seed, pretraining runs one at a time, each stopped after `--seconds`
of training (`train.max_seconds`). The arms:

  jepa      the default recipe of the config (prediction late, whole inputs bound), plus `--jepa`
            overrides. With F < 1 it trains on the one manifest of every row (`train.jsonl`), as a
            user with one file would: pair-aware batching (`data.min_pair_fraction`) draws half of
            each batch from its pairs, half from its single-modality rows.
  clip      `loss.objective=clip` on whole inputs (no masks, target encoders or predictors). With
            F < 1 on the paired rows alone (64 pairs per batch), as a CLIP user would.
  flip      the same, binding a random half of the image and audio patches (FLIP): the CLIP arm
            with the same speed trick as the default.
  clipa     the same, binding images resized to half a side (CLIPA, `model.image.bind_scale=0.5`: the
            demo's 48 px become 24, 9 patches instead of 36, one per cell of a scene's grid) for the
            first `loss.bind_scale_until` of the run, whole-size ones after; sounds whole. (Measured
            on 2026-12-06 at 0.75 of the then 64-px demo images: `--clip model.image.size=64
            model.image.bind_scale=0.75`.)
  clip_mix  (F < 1) unmasked CLIP on jepa's own manifest and batches: only the objective differs.
  --ablations adds one arm per change of the default: jepa_early (`loss.pred_start=0`), jepa_start60
            and jepa_start90 (`loss.pred_start=0.6` and `0.9`: prediction for the last 40 % or 10 %),
            jepa_nopred (`loss.pred_weight=0`: the same recipe with no prediction, hence no target encoder:
            what prediction itself adds), jepa_flip
            (`bind_mask_ratio=0.5` for image and audio: FLIP's masked binding, whose context then also
            serves prediction), jepa_clipa (`model.image.bind_scale=0.5`: CLIPA's resized
            binding until `loss.bind_scale_until`), jepa_ctx (`loss.bind_input=context`: the prediction phase binds the
            prediction context of images and sounds, one online forward instead of two), jepa_sigreg
            (`model.target=sigreg loss.sigreg_weight=0.02`: LeVLJEPA's target, the online whole-input
            forward that binding runs anyway, under stop-gradient, with SIGReg; no EMA tower) and, with F < 1,
            jepa_nofloor (`data.min_pair_fraction=0`). Any of them can also be named in --arms.
  The context masks (named in --arms only; each arm sets the masks of image and audio, whatever the
            config's): jepa_blocks (the default with I-JEPA's blocks) against jepa_random (random
            patches, `model.<m>.mask.kind=random`: a random half as context, the other half as
            targets); with prediction from the first step, where the masks matter, jepa_early_blocks
            against jepa_early_random; and with one keep set serving both terms
            (`loss.pred_start=0 loss.bind_input=context`), jepa_ctx_blocks against jepa_ctx_random
            (FLIP's keep set, whose dropped patches prediction predicts: FLIP plus prediction).
  Cross-only prediction (named in --arms only; `model.predictor.own_context=false`: each modality's
            masked tokens predicted from the other modalities' whole inputs, read from binding's own
            forward, so no masked online forward runs): jepa_cross (from the config's loss.pred_start, as the
            default), jepa_cross_start50 (from 0.5), jepa_cross_early (from the first step).

Then, on the held-out (fully paired) test split, per arm: R@1 and class-match P@1 of the six
retrieval directions, zero-shot top-1 (image, audio), linear-probe and 20-NN top-1 of each encoder
(trained on the demo's train split, `multijepa eval probe`), VQA accuracy after the same short
fine-tune with the encoders frozen (`--freeze-encoders`; `--vqa-tune` tunes them instead), the
COCO caption metrics of a captioner trained on the frozen encoder (`caption train --freeze-encoders`,
`--caption-steps` of `caption_demo`, image by default), and the
order test (`order.py`: own caption and sound against those of the scene with two objects' places
swapped). With `--pred-only` an arm `loss.bind_weight=0 loss.pred_start=0` checks that prediction
alone learns: its probes are printed beside those of the same towers at their random
initialisation, of the inputs themselves, and of the same towers trained on the label for as many
steps (cross-entropy, a reference for how far the probes can move in that time).

The last lines, per seed then averaged: `quality_ratio_vs_clip_paired` (jepa's mean class-match
P@1 over clip's, F = 1), `quality_ratio_vs_clip_scarce` (over clip_mix's, the same mixture),
`quality_ratio_vs_clip_pairs_only_scarce` (over clip's on the pairs alone), `retrieval_delta_vs_flip_paired`,
`frozen_vqa_delta_vs_clip`, `frozen_vqa_delta_vs_clip_scarce` (over clip_mix's, the same mixture),
`frozen_caption_delta_vs_clip` (CIDEr-D), `order_accuracy` per arm, and `step_time_ratio_vs_clip` (jepa's mean
step time over the whole run, prediction phase included, over clip's, F = 1). `--headline ARM` puts
another arm in jepa's place in these figures, to judge it as a default.

    python benchmarks/vs_clip.py                        # 240 s per arm, fractions 1.0 and 0.1, seed 0
    python benchmarks/vs_clip.py --seconds 120 --seeds 0 1 --ablations

`--steps arm=N` trains an arm for N steps instead of `--seconds`: to replay, on a busy machine,
the step counts that equal wall-clock bought on a quiet one (the quality figures then do not depend
on the load; its speed figures are then not measurements). `--reuse-runs` evaluates the run folders
that an earlier call with the same arguments left in `--work` instead of training them again: to add
captioning (about 5 minutes an arm on 2 CPU cores) to arms trained without it. `--side-by-side`
trains the arms of a seed at once, one process and one torch thread each (`train.threads=1`), then
evaluates them one by one: on a machine whose speed drifts from minute to minute (a shared CPU) the
arms then meet the same machine, where one after another each meets its own (on 2 cores, CLIP's
mean step moved by 10 % between the two seeds of one call). Each arm then has a share of the
cores, and one thread does less than two: raise `--seconds` with the number of arms (on 2 cores,
three arms side by side made 49 CLIP steps in 120 s where one at a time made about 150; two arms,
one core each, need about 200 s for as many). Each arm's output goes to
`run_<arm>_<F>_s<seed>.log` beside its run folder.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch

from multijepa.caption.config import load_caption_config
from multijepa.caption.train import train_caption
from multijepa.checkpoint import latest_checkpoint, load_train_state
from multijepa.config import changed_keys, load_config
from multijepa.data.collate import MultiModalCollator
from multijepa.data.demo import generate_demo
from multijepa.model import EmbeddingHead, create_model, load_run, read_run_config
from multijepa.retrieval.embed import manifest_labels, open_manifest
from multijepa.retrieval.metrics import manifest_retrieval
from multijepa.retrieval.probe import probe_eval
from multijepa.retrieval.zeroshot import DEFAULT_TEMPLATES, read_classes, zero_shot_eval
from multijepa.train import pretrain
from multijepa.vqa.config import load_vqa_config
from multijepa.vqa.train import train_vqa

from common import machine, write_result
from order import order_accuracy

FULL_SIZE = ["model.image.bind_scale=1", "model.audio.bind_scale=1"]
WHOLE = ["model.image.bind_mask_ratio=0", "model.audio.bind_mask_ratio=0", *FULL_SIZE]
FLIP = ["model.image.bind_mask_ratio=0.5", "model.audio.bind_mask_ratio=0.5", *FULL_SIZE]
# CLIPA: images resized to half a side for binding (48 px -> 24: the side must stay a whole number of
# patches), sounds whole (resizing the spectrograms too lost retrieval on the demo:
# docs/results/objective.md; `--clip model.audio.bind_scale=0.75` brings it back)
CLIPA = ["model.image.bind_mask_ratio=0", "model.audio.bind_mask_ratio=0",
         "model.image.bind_scale=0.5", "model.audio.bind_scale=1"]
ABLATIONS = {"jepa_early": ["loss.pred_start=0"], "jepa_start60": ["loss.pred_start=0.6"],
             "jepa_start90": ["loss.pred_start=0.9"], "jepa_nopred": ["loss.pred_weight=0"], "jepa_flip": FLIP,
             "jepa_clipa": CLIPA,
             "jepa_ctx": ["loss.bind_input=context"],
             "jepa_sigreg": ["model.target=sigreg", "loss.sigreg_weight=0.02"],
             "jepa_nofloor": ["data.min_pair_fraction=0"]}
# The prediction context's masks (issue 29): I-JEPA's blocks against random patches, in the default,
# with prediction from the first step (where they matter), and with one keep set serving both terms in
# one online forward (`loss.bind_input=context`). Each arm names its masks, whatever the config's.
BLOCKS = ["model.image.mask.kind=blocks", "model.audio.mask.kind=blocks"]
RANDOM = ["model.image.mask.kind=random", "model.audio.mask.kind=random"]
EARLY, SHARED = ["loss.pred_start=0"], ["loss.pred_start=0", "loss.bind_input=context"]
MASK_ARMS = {"jepa_blocks": BLOCKS, "jepa_random": RANDOM,
             "jepa_early_blocks": EARLY + BLOCKS, "jepa_early_random": EARLY + RANDOM,
             "jepa_ctx_blocks": SHARED + BLOCKS, "jepa_ctx_random": SHARED + RANDOM}
# Prediction from the other modalities alone (`model.predictor.own_context=false`): no masked online
# forward, binding's forward is the memory, so a prediction step costs ~1.5 CLIP steps, not ~2.8
CROSS = ["model.predictor.own_context=false"]
CROSS_ARMS = {"jepa_cross": CROSS, "jepa_cross_early": CROSS + EARLY,
              "jepa_cross_start50": CROSS + ["loss.pred_start=0.5"]}
ARMS = ("clip", "flip", "clipa", "clip_mix", "jepa", "pred_only", *ABLATIONS, *MASK_ARMS, *CROSS_ARMS)


def arm_overrides(arm: str, data: Path, fraction: float, seconds: float, extra: list[str], seed: int = 0,
                  steps: int | None = None) -> list[str]:
    """The config overrides of one arm on the demo data of one paired fraction: `seconds` of
    training, or `steps` steps when given."""
    budget = [f"train.max_seconds={seconds}", "train.max_steps=100000"] if steps is None else [
        "train.max_seconds=0", f"train.max_steps={steps}"]
    common = [*budget, "train.ckpt_every=100000", f"train.seed={seed}"]
    mixture = [f"data.train={data / 'train.jsonl'}"]  # with F < 1 one manifest of pairs and single rows
    if arm in ("clip", "flip", "clipa"):
        train = data / ("train_paired.jsonl" if fraction < 1 else "train.jsonl")
        binding = {"clip": WHOLE, "flip": FLIP, "clipa": CLIPA}[arm]
        return [*common, f"data.train={train}", "loss.objective=clip", *binding, *extra]
    if arm == "clip_mix":
        return [*common, *mixture, "loss.objective=clip", *WHOLE, *extra]
    pred_only = ["loss.bind_weight=0", "loss.pred_start=0"] if arm == "pred_only" else []
    return [*common, *mixture, "loss.objective=jepa", *{**ABLATIONS, **MASK_ARMS, **CROSS_ARMS}.get(arm, []), *pred_only, *extra]


def evaluate(model, data: Path, vqa_dir: Path, run: Path, vqa_steps: int, probe_data: Path,
             vqa_tune: bool = False, caption_steps: int = 0, caption_modality: str = "image",
             caption_config: str = "caption_demo") -> dict:
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
    out["order"] = order_accuracy(model, test)
    if vqa_steps > 0:
        frozen = [] if vqa_tune else ["optim.encoder_lr_scale=0"]  # as `vqa train --freeze-encoders`
        cfg = load_vqa_config("vqa_demo", [f"train.max_steps={vqa_steps}", "train.log_every=1000000", *frozen])
        with contextlib.redirect_stdout(io.StringIO()):
            last = train_vqa(run, data / "vqa_train.jsonl", vqa_dir, cfg, eval_data=data / "vqa_test.jsonl",
                             progress=False)
        out["vqa_accuracy"] = last["eval"]["accuracy"]
    if caption_steps > 0:  # as `caption train --freeze-encoders`, on every training scene whole (as the probes)
        cfg = load_caption_config(caption_config, [f"train.max_steps={caption_steps}", "train.log_every=1000000",
                                                   "optim.encoder_lr_scale=0"])
        with contextlib.redirect_stdout(io.StringIO()):
            last = train_caption(run, probe_data, vqa_dir.with_name(vqa_dir.name.replace("vqa", "caption")),
                                 cfg, caption_modality, eval_data=test, progress=False)
        out["caption"] = {k: last["eval"][k] for k in ("CIDEr-D", "BLEU-4", "ROUGE-L")}
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


def train_side_by_side(jobs: dict[str, tuple[list[str], Path]], config: str) -> None:
    """Train every arm of `jobs` ({arm: (overrides, run folder)}) at once, one process and one torch
    thread each (`--side-by-side`): whatever slows the machine down slows every arm alike, where
    arms trained one after another each meet the machine of their own minutes."""
    procs = {}
    for arm, (overrides, run) in jobs.items():
        if run.exists():
            shutil.rmtree(run)
        log = run.with_name(run.name + ".log")
        cmd = [sys.executable, "-m", "multijepa", "pretrain", "--config", config, "--out", str(run), "--no-progress",
               *overrides]
        with open(log, "w") as out:  # the child keeps its own handle
            procs[arm] = (subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                           env={**os.environ, "OMP_NUM_THREADS": "1"}), log)
    codes = [(arm, p.wait(), log) for arm, (p, log) in procs.items()]
    for arm, code, log in codes:
        if code != 0:
            tail = "\n".join(log.read_text().splitlines()[-5:])
            raise SystemExit(f"arm {arm} stopped with exit code {code}; the end of {log}:\n{tail}")


def reuse_arm(overrides: list[str], config: str, run: Path) -> tuple[float, int]:
    """-> as `train_arm`, for a run folder that an earlier call trained with the same settings
    (`--reuse-runs`): to add figures to arms already trained, without training them again."""
    ckpt = latest_checkpoint(run) if run.is_dir() else None
    if ckpt is None:
        raise SystemExit(f"--reuse-runs: {run} holds no trained run (train it first: leave out --reuse-runs)")
    differ = changed_keys(load_config(config, overrides), read_run_config(run))
    if differ:
        raise SystemExit(f"--reuse-runs: {run} was trained with other settings ({', '.join(differ)}): "
                         "give the arguments of the call that trained it")
    state = load_train_state(ckpt)
    return float(state["train_seconds"]), int(state["step"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="demo", help="pretraining config of every arm [demo]")
    ap.add_argument("--seconds", type=float, default=240.0, help="training seconds per arm [240]")
    ap.add_argument("--fractions", type=float, nargs="+", default=[1.0, 0.1], help="paired fractions [1.0 0.1]")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="train.seed of each repeat of every arm [0]")
    ap.add_argument("--arms", nargs="+", default=["clip", "flip", "jepa"], choices=ARMS, metavar="ARM",
                    help="arms to train [clip flip jepa]; clipa (CLIP binding resized inputs); clip_mix joins them with F < 1; "
                         "any ablation, a mask arm: "
                         f"{' '.join(MASK_ARMS)}, or a cross-only prediction arm: {' '.join(CROSS_ARMS)}")
    ap.add_argument("--ablations", action="store_true", help="also the arms jepa_early, jepa_start60, jepa_start90, jepa_nopred, jepa_flip, jepa_clipa, jepa_ctx, jepa_sigreg (and "
                    "jepa_nofloor with F < 1): one change of the default each")
    ap.add_argument("--headline", default="jepa", choices=ARMS, metavar="ARM",
                    help="the arm the headline figures (quality_ratio_vs_clip_paired, ...) measure against the CLIP "
                         "arms [jepa, the default]: name another to judge it as a default")
    ap.add_argument("--n", type=int, default=2400, help="training scenes of the demo data [2400]")
    ap.add_argument("--n-test", type=int, default=600, help="held-out scenes [600]")
    ap.add_argument("--vqa-steps", type=int, default=150, help="VQA fine-tuning steps per arm; 0 skips VQA [150]")
    ap.add_argument("--vqa-tune", action="store_true", help="VQA tunes the encoders (default: frozen)")
    ap.add_argument("--caption-steps", type=int, default=1000,
                    help="steps of a captioner on each arm's frozen encoder; 0 skips captioning [1000]")
    ap.add_argument("--caption-config", default="caption_demo", help="captioning config [caption_demo]")
    ap.add_argument("--caption-modality", default="image", choices=["image", "audio"], help="what it describes [image]")
    ap.add_argument("--steps", nargs="*", default=[], metavar="arm=N",
                    help="train these arms N steps each instead of --seconds (replays a quiet machine's budgets)")
    ap.add_argument("--jepa", nargs="*", default=[], metavar="key=value", help="overrides of the jepa arms, applied after each arm's own")
    ap.add_argument("--clip", nargs="*", default=[], metavar="key=value", help="overrides of the clip arms (clip, flip, clipa, clip_mix), applied after each arm's own")
    ap.add_argument("--pred-only", action="store_true",
                    help="also train loss.bind_weight=0 (fraction 1.0) and probe it against the random towers, "
                         "the inputs and the towers trained on the label")
    ap.add_argument("--work", default="benchmarks/results/vs_clip_work", help="data and run folders")
    ap.add_argument("--reuse-runs", action="store_true",
                    help="evaluate the run folders an earlier call left in --work (same arms, seeds and overrides) "
                         "instead of training them again: e.g. --caption-steps 1000 for arms trained with 0")
    ap.add_argument("--side-by-side", action="store_true",
                    help="train the arms of each seed at once, one process and one thread each, so that the machine's "
                         "drift reaches every arm alike (then evaluate them one by one); each has a share of the "
                         "cores: raise --seconds with the number of arms")
    ap.add_argument("--json", help="also write the results to this JSON file")
    args = ap.parse_args()
    if args.headline not in ("jepa", *args.arms):
        ap.error(f"--headline {args.headline} is not among --arms")
    if args.side_by_side and args.reuse_runs:
        ap.error("--side-by-side trains the arms; --reuse-runs evaluates trained ones: give one")

    work = Path(args.work)
    try:
        step_budgets = {arm: int(n) for arm, n in (kv.split("=", 1) for kv in args.steps)}
    except ValueError:
        ap.error(f"--steps takes arm=N pairs, got {args.steps}")
    torch.manual_seed(0)
    print(f"machine: {json.dumps(machine())}; {args.seconds:g} s of training per arm, config {args.config}, "
          f"seeds {args.seeds}", flush=True)
    rows = []
    for fraction in args.fractions:
        data = work / f"data_{fraction:g}"
        generate_demo(data, n_train=args.n, n_test=args.n_test, progress=False, paired_fraction=fraction)
        if fraction < 1 and not (work / "data_1" / "train.jsonl").exists():
            generate_demo(work / "data_1", n_train=args.n, n_test=args.n_test, progress=False)
        full = work / "data_1" / "train.jsonl"  # the probes train on every scene whole, whatever F
        arms = list(args.arms) + (["clip_mix"] if fraction < 1 and "clip" in args.arms else [])
        arms += [a for a in ABLATIONS if args.ablations and (a != "jepa_nofloor" or fraction < 1)]
        arms += ["pred_only"] if args.pred_only and fraction == 1.0 else []
        for seed in args.seeds:
            jobs = {}
            threads = ["train.threads=1"] if args.side_by_side else []
            for arm in arms:
                extra = args.clip if arm in ("clip", "flip", "clipa", "clip_mix") else args.jepa
                jobs[arm] = (arm_overrides(arm, data, fraction, args.seconds, [*extra, *threads], seed,
                                           step_budgets.get(arm)), work / f"run_{arm}_{fraction:g}_s{seed}")
            if args.side_by_side:
                print(f"paired fraction {fraction:g}, seed {seed}: training {' '.join(arms)} side by side ...", flush=True)
                train_side_by_side(jobs, args.config)
            trained = args.reuse_runs or args.side_by_side
            for arm, (overrides, run) in jobs.items():
                print(f"paired fraction {fraction:g}, seed {seed}: {'evaluating' if trained else 'training'} {arm} ...",
                      flush=True)
                seconds, steps = (reuse_arm if trained else train_arm)(overrides, args.config, run)
                model = load_run(run)
                tuned = arm != "pred_only"
                res = evaluate(model, data, work / f"vqa_{arm}_{fraction:g}_s{seed}", run,
                               args.vqa_steps if tuned else 0, full, args.vqa_tune,
                               args.caption_steps if tuned else 0, args.caption_modality, args.caption_config)
                logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
                shares = [r["grad_share/pred"] for r in logged if "grad_share/pred" in r]
                ranks = {m: [r[f"rankme/{m}"] for r in logged if f"rankme/{m}" in r] for m in model.modalities}
                res.update(arm=arm, paired_fraction=fraction, seed=seed, steps=steps, seconds=seconds,
                           ms_per_step=1000 * seconds / max(steps, 1),
                           grad_share_pred=sum(shares) / len(shares) if shares else None,
                           rankme_min={m: min(v) for m, v in ranks.items() if v},
                           rankme_last={m: v[-1] for m, v in ranks.items() if v},
                           pred_from_step=next((r["step"] for r in logged if r.get("predicting")), None))
                if arm == "pred_only":
                    res["probe_random_init"] = probes(random_towers(model).eval(), full, data / "test.jsonl")
                    res["probe_input"] = probes(model, full, data / "test.jsonl", encoder="input")
                    res["probe_supervised"] = supervised_probes(model, full, data / "test.jsonl", steps)
                rows.append(res)
                print(format_row(res), flush=True)

    summary = summarise(rows, args.seeds, args.headline)
    write_result(args.json, {"machine": machine(), "seconds": args.seconds, "config": args.config, "seeds": args.seeds,
                             "jepa_overrides": args.jepa, "clip_overrides": args.clip, "results": rows, **summary})
    for k, v in summary.items():
        print(f"{k}: {json.dumps(v) if isinstance(v, dict) else f'{v:.3f}'}")


def summarise(rows: list[dict], seeds: list[int], candidate: str = "jepa") -> dict:
    """The headline figures of `rows`, per seed ("..._s0") and their mean over the seeds; candidate: the
    arm they measure against the CLIP arms (the default, "jepa", or an arm that would replace it)."""
    def get(arm, fraction, seed):
        return next((r for r in rows if r["arm"] == arm and r["paired_fraction"] == fraction and r["seed"] == seed), None)

    out: dict = {}
    per: dict[str, list[float]] = {}
    for seed in seeds:
        figures = {}
        jp, cp, fp = get(candidate, 1.0, seed), get("clip", 1.0, seed), get("flip", 1.0, seed)
        if jp and cp:
            figures["quality_ratio_vs_clip_paired"] = jp["mean_P@1"] / max(cp["mean_P@1"], 1e-9)
            figures["step_time_ratio_vs_clip"] = jp["ms_per_step"] / cp["ms_per_step"]
            if "vqa_accuracy" in jp and "vqa_accuracy" in cp:
                figures["frozen_vqa_delta_vs_clip"] = jp["vqa_accuracy"] - cp["vqa_accuracy"]
            if "caption" in jp and "caption" in cp:
                figures["frozen_caption_delta_vs_clip"] = jp["caption"]["CIDEr-D"] - cp["caption"]["CIDEr-D"]
        if jp and fp:
            figures["retrieval_delta_vs_flip_paired"] = jp["mean_R@1"] - fp["mean_R@1"]
            if "caption" in jp and "caption" in fp:
                figures["frozen_caption_delta_vs_flip"] = jp["caption"]["CIDEr-D"] - fp["caption"]["CIDEr-D"]
        scarce = sorted({r["paired_fraction"] for r in rows if r["paired_fraction"] < 1})
        for fraction in scarce[:1]:
            js, cm, cs = get(candidate, fraction, seed), get("clip_mix", fraction, seed), get("clip", fraction, seed)
            if js and cm:
                figures["quality_ratio_vs_clip_scarce"] = js["mean_P@1"] / max(cm["mean_P@1"], 1e-9)
                if "vqa_accuracy" in js and "vqa_accuracy" in cm:
                    figures["frozen_vqa_delta_vs_clip_scarce"] = js["vqa_accuracy"] - cm["vqa_accuracy"]
            if js and cs:
                figures["quality_ratio_vs_clip_pairs_only_scarce"] = js["mean_P@1"] / max(cs["mean_P@1"], 1e-9)
        for k, v in figures.items():
            out[f"{k}_s{seed}"] = v
            per.setdefault(k, []).append(v)
    out["order_accuracy"] = {f"{r['arm']}_F{r['paired_fraction']:g}_s{r['seed']}": r["order"] for r in rows if "order" in r}
    for k, v in per.items():
        out[k] = sum(v) / len(v)
    return out


def format_probes(probes: dict) -> str:
    return "  ".join(f"{m} lin {p['linear']:.3f} knn {p['knn']:.3f}" for m, p in probes.items())


def format_row(r: dict) -> str:
    text = (f"  {r['arm']:<9} F={r['paired_fraction']:g}  steps {r['steps']}  {r['ms_per_step']:.0f} ms/step  "
            f"mean R@1 {r['mean_R@1']:.3f}  mean class-match P@1 {r['mean_P@1']:.3f}  zero-shot "
            + " ".join(f"{m} {v:.3f}" for m, v in r["zeroshot_top1"].items())
            + (f"  VQA {r['vqa_accuracy']:.3f}" if "vqa_accuracy" in r else "")
            + ("  caption " + " ".join(f"{k} {v:.3f}" for k, v in r["caption"].items()) if "caption" in r else "")
            + (f"  pred grad share {r['grad_share_pred']:.3f}" if r.get("grad_share_pred") is not None else "")
            + f"\n    probes: {format_probes(r['probe'])}"
            + "\n    order (own vs swapped places): " + " ".join(f"{k} {v:.3f}" for k, v in r.get("order", {}).items() if k != "n")
            + "  RankMe min/last: " + " ".join(f"{m} {r['rankme_min'][m]:.1f}/{r['rankme_last'][m]:.1f}"
                                                for m in r.get("rankme_min", {})))
    if "probe_random_init" in r:
        text += f"\n    random init: {format_probes(r['probe_random_init'])}"
    if "probe_input" in r:
        text += f"\n    the inputs, no encoder: {format_probes(r['probe_input'])}"
    if "probe_supervised" in r:
        text += f"\n    the towers trained on the label, same steps: {format_probes(r['probe_supervised'])}"
    return text


if __name__ == "__main__":
    sys.exit(main())
