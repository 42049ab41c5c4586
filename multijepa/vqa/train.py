"""Fine-tuning for VQA, top to bottom: load the pretraining run, build the answer vocabulary,
train the fusion and answer head (and the encoders at a scaled learning rate, or frozen) with
BCE on soft answer scores, checkpoint, save the folder, evaluate on the held-out split."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm import tqdm

from modalities.errors import DataError

from ..checkpoint import (
    CKPT_DIR,
    finetune_checkpoint,
    load_train_state,
    load_weights,
    save_checkpoint,
)
from ..data.bad_samples import raise_first
from ..data.sampler import shuffled_batches
from ..distributed import pick_device
from ..interrupts import StopRequests, TrainingInterrupted
from ..model import load_run
from ..run_folder import hold_run_folder
from ..train.builder import init_opt
from .answers import AnswerVocab, coverage
from .config import VQAConfig
from .data import VQACollator, VQADataset
from .metric import score_predictions
from .model import VQAModel, VQAPredictor, save_vqa, save_vqa_config


def train_vqa(checkpoint: str | Path, train_data: str | Path, out: str | Path, cfg: VQAConfig,
              eval_data: str | Path | None = None, from_scratch: bool = False, resume: bool = False,
              progress: bool = True) -> dict:
    """Fine-tune from the pretraining run `checkpoint` (or train the same model from scratch:
    same tokenizer and shapes, random encoders) and write the folder `out`. -> the last log record,
    with the evaluation under "eval" when `eval_data` is given. Full-state checkpoints every
    `train.ckpt_every` steps; `resume` continues from the last and ends as an uninterrupted run.
    Ctrl-C / SIGTERM: the step ends, a checkpoint is written, and TrainingInterrupted says how to resume."""
    with hold_run_folder(out, "multijepa vqa train"), StopRequests() as stop:
        return _train_vqa(checkpoint, train_data, Path(out), cfg, eval_data, from_scratch, resume, progress, stop)


def _train_vqa(checkpoint, train_data, out: Path, cfg: VQAConfig, eval_data, from_scratch: bool, resume: bool,
               progress: bool, stop: StopRequests) -> dict:
    ckpt = finetune_checkpoint(out, resume, "VQA")
    t = cfg.train
    torch.manual_seed(t.seed)
    if t.threads:
        torch.set_num_threads(t.threads)
    device = pick_device(t.device)
    pretrained = load_run(checkpoint)
    if "image" not in pretrained.modalities or "text" not in pretrained.modalities:
        raise DataError(f"{checkpoint}: VQA needs a run with image and text encoders (it has {pretrained.modalities})")
    processors, model_cfg = pretrained.processors, pretrained.cfg

    dataset = VQADataset(train_data, processors, cfg.columns)
    answer_lists = dataset.answer_lists()
    vocab = AnswerVocab.build(answer_lists, cfg.answers.min_count, cfg.answers.top_k)
    print(f"{len(dataset)} training questions; {len(vocab)} answers cover {coverage(answer_lists, vocab):.1%} of them")

    model = VQAModel(model_cfg, cfg, processors.tokenizer.vocab_size, len(vocab))
    if not from_scratch:
        model.load_pretrained_encoders(pretrained)
    del pretrained
    model.to(device)
    opt, schedule = init_opt(model, cfg.optim, t.max_steps)
    step = 0
    save_vqa_config(out, cfg)
    if resume and ckpt is not None:
        load_weights(model, ckpt)
        state = load_train_state(ckpt)
        opt.load_state_dict(state["optimizer"])
        step = int(state["step"])
        print(f"resuming from {ckpt} (step {step})")
    else:
        (out / "metrics.jsonl").write_text("")
    loader = DataLoader(dataset, batch_sampler=shuffled_batches(len(dataset), t.batch_size, t.seed, step),
                        collate_fn=VQACollator(vocab), num_workers=t.num_workers)

    bar = tqdm(total=t.max_steps, initial=step, desc="vqa train", unit="step", disable=not progress, dynamic_ncols=True)
    last, seen, t0 = {}, 0, time.perf_counter()
    model.train()
    for enc in model.encoders():
        enc.train(cfg.optim.encoder_lr_scale > 0)
    for batch in loader:
        if step >= t.max_steps:
            break
        raise_first(batch["errors"])
        lr, _ = schedule.apply(opt, step)
        logits = model(batch["image"].to(device), batch["tokens"].to(device))  # (B, A)
        targets = batch["targets"].to(device)
        # BCE per answer, summed over answers (mean * A), as in bottom-up-attention VQA
        loss = F.binary_cross_entropy_with_logits(logits, targets) * targets.shape[1]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
        opt.step()
        step += 1
        seen += batch["size"]
        bar.update(1)
        if step % t.log_every == 0 or step == t.max_steps:
            last = {"step": step, "loss": loss.item(), "lr": lr, "samples_per_s": seen / (time.perf_counter() - t0)}
            with open(out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(last) + "\n")
            bar.set_postfix(loss=f"{last['loss']:.3f}")
        if (step % t.ckpt_every == 0 or stop.requested) and step < t.max_steps:
            save_checkpoint(out, step, model, {"optimizer": opt.state_dict(), "step": step}, keep=1)
        if stop.requested and step < t.max_steps:
            bar.close()
            again = (f"multijepa vqa train --checkpoint {checkpoint} --data {train_data} --out {out} --resume"
                     + (f" --eval-data {eval_data}" if eval_data is not None else "")
                     + (" --from-scratch" if from_scratch else ""))
            raise TrainingInterrupted(f"stopped at step {step} of {t.max_steps}; checkpoint written. "
                                      f"Continue with: {again}", stop.signum)
    bar.close()
    save_vqa(out, model, cfg, model_cfg, processors.tokenizer, vocab)
    shutil.rmtree(out / CKPT_DIR, ignore_errors=True)  # the finished model.safetensors replaces them
    if eval_data is not None:
        result = evaluate_vqa(VQAPredictor(model.eval(), processors, vocab, cfg, model_cfg), eval_data, progress=progress)
        (out / "eval.json").write_text(json.dumps(result, indent=2))
        last = {**last, "eval": result}
    return last


@torch.no_grad()
def evaluate_vqa(predictor: VQAPredictor, data: str | Path, batch_size: int = 128, progress: bool = True,
                 predictions_out: str | Path | None = None) -> dict:
    """VQA v2 accuracy of the top answer on `data`: {"accuracy", "n", "per_type": {...}}."""
    model = predictor.model.eval()
    device = next(model.parameters()).device
    dataset = VQADataset(data, predictor.processors, predictor.cfg.columns)
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=VQACollator())
    preds: list[str] = []
    rows: list[dict] = []
    for batch in tqdm(loader, desc="vqa eval", unit="batch", disable=not progress, dynamic_ncols=True):
        raise_first(batch["errors"])
        best = model(batch["image"].to(device), batch["tokens"].to(device)).argmax(1).tolist()
        preds += [predictor.vocab.answers[i] for i in best]
        for j in range(batch["size"]):
            rows.append({"row": batch["rows"][j], "answers": batch["answers"][j],
                         **{k: batch[k][j] for k in ("question_type", "answer_type") if batch[k][j] is not None}})
    if predictions_out is not None:
        with open(predictions_out, "w") as f:
            for p, r in zip(preds, rows):
                f.write(json.dumps({"row": r["row"], "prediction": p}) + "\n")
    return score_predictions(preds, rows)
