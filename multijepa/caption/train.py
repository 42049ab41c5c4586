"""Captioning, top to bottom: load the pretraining run, build the encoder + decoder, train with
cross-entropy under teacher forcing (label smoothing; the encoder at a scaled learning rate, or
frozen), then optionally self-critical sequence training (SCST: the reward of a sampled caption
is its CIDEr-D minus that of the greedy caption, as M2 trains), checkpoint, save the folder,
evaluate on the held-out split with the COCO caption metrics."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from ..checkpoint import CKPT_DIR, finetune_checkpoint, load_train_state, load_weights, save_checkpoint
from ..data.bad_samples import raise_first
from ..data.sampler import shuffled_batches
from ..distributed import pick_device
from ..interrupts import StopRequests, TrainingInterrupted
from ..model import load_run
from ..run_folder import hold_run_folder
from ..train.builder import init_opt
from .config import CaptionConfig
from .data import CaptionCollator, CaptionDataset
from .decode import beam_search, sample, sequence_logprob
from .metrics import CiderD, score_captions
from .model import Captioner, CaptionModel, save_caption_config, save_captioner
from .ptb import tokenize_captions


def train_caption(checkpoint: str | Path, train_data: str | Path, out: str | Path, cfg: CaptionConfig,
                  modality: str = "image", eval_data: str | Path | None = None, from_scratch: bool = False,
                  resume: bool = False, progress: bool = True) -> dict:
    """Train a captioner on the pretraining run `checkpoint`'s `modality` encoder (or the same
    model from scratch: same tokenizer and shapes, a random encoder) and write the folder `out`.
    -> the last log record, with the evaluation under "eval" when `eval_data` is given. Full-state
    checkpoints every `train.ckpt_every` steps; `resume` continues from the last one.
    Ctrl-C / SIGTERM: the step ends, a checkpoint is written, and TrainingInterrupted says how to resume."""
    with hold_run_folder(out, "multijepa caption train"), StopRequests() as stop:
        return _train(checkpoint, train_data, Path(out), cfg, modality, eval_data, from_scratch, resume, progress, stop)


def _train(checkpoint, train_data, out: Path, cfg: CaptionConfig, modality: str, eval_data, from_scratch: bool,
           resume: bool, progress: bool, stop: StopRequests) -> dict:
    ckpt = finetune_checkpoint(out, resume, "captioning")
    t = cfg.train
    torch.manual_seed(t.seed)
    if t.threads:
        torch.set_num_threads(t.threads)
    device = pick_device(t.device)
    pretrained = load_run(checkpoint)
    if modality not in pretrained.modalities or "text" not in pretrained.modalities:
        raise ValueError(f"{checkpoint}: captioning {modality} needs a run with {modality} and text encoders "
                         f"(it has {pretrained.modalities})")
    processors, model_cfg = pretrained.processors, pretrained.cfg
    tokenizer = processors.tokenizer.with_max_len(cfg.decoder.max_len)
    dataset = CaptionDataset(train_data, processors, modality, tokenizer, cfg.columns, train=True)
    print(f"{len(dataset)} training captions of {len(dataset.first_rows())} {modality} inputs")

    model = CaptionModel(model_cfg, cfg, modality, tokenizer)
    if not from_scratch:
        model.encoder.load_state_dict(pretrained.feature_encoder(modality).state_dict())
    del pretrained
    model.to(device)
    total = t.max_steps + t.scst_steps
    opt, schedule = init_opt(model, cfg.optim, t.max_steps)
    step = 0
    save_caption_config(out, cfg, modality)
    if resume and ckpt is not None:
        load_weights(model, ckpt)
        state = load_train_state(ckpt)
        step = int(state["step"])
        if step > t.max_steps:  # resumed inside SCST: its optimizer
            opt = _scst_optimizer(model, cfg)
        opt.load_state_dict(state["optimizer"])
        print(f"resuming from {ckpt} (step {step})")
    else:
        (out / "metrics.jsonl").write_text("")
    loader = DataLoader(dataset, batch_sampler=shuffled_batches(len(dataset), t.batch_size, t.seed, step),
                        collate_fn=CaptionCollator(modality), num_workers=t.num_workers)
    cider = CiderD(tokenize_captions(dataset.references())) if t.scst_steps else None

    bar = tqdm(total=total, initial=step, desc="caption train", unit="step", disable=not progress, dynamic_ncols=True)
    last, seen, t0 = {}, 0, time.perf_counter()
    model.train()
    model.encoder.train(cfg.optim.encoder_lr_scale > 0)
    for batch in loader:
        if step >= total:
            break
        raise_first(batch["errors"])
        x, tokens = batch["x"].to(device), batch["tokens"].to(device)
        if step < t.max_steps:
            lr, _ = schedule.apply(opt, step)
            logits = model(x, tokens[:, :-1])  # (B, T-1, V): each position predicts the next token
            loss = F.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten(), ignore_index=model.pad_id,
                                   label_smoothing=cfg.optim.label_smoothing)
            logs = {"loss": loss.item()}
        else:
            if step == t.max_steps:  # cross-entropy done: SCST at its own, lower learning rate
                opt = _scst_optimizer(model, cfg)
            lr = t.scst_lr
            loss, logs = _scst_loss(model, x, batch["keys"], cider, tokenizer, cfg, step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
        opt.step()
        step += 1
        seen += batch["size"]
        bar.update(1)
        if step % t.log_every == 0 or step == total:
            last = {"step": step, **logs, "lr": lr, "samples_per_s": seen / (time.perf_counter() - t0)}
            with open(out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(last) + "\n")
            bar.set_postfix({k: f"{v:.3f}" for k, v in logs.items()})
        if (step % t.ckpt_every == 0 or stop.requested) and step < total:
            save_checkpoint(out, step, model, {"optimizer": opt.state_dict(), "step": step}, keep=1)
        if stop.requested and step < total:
            bar.close()
            again = (f"multijepa caption train --checkpoint {checkpoint} --data {train_data} --out {out} "
                     f"--modality {modality} --resume" + (f" --eval-data {eval_data}" if eval_data is not None else "")
                     + (" --from-scratch" if from_scratch else ""))
            raise TrainingInterrupted(f"stopped at step {step} of {total}; checkpoint written. Continue with: {again}",
                                      stop.signum)
    bar.close()
    save_captioner(out, model, cfg, model_cfg, tokenizer)
    shutil.rmtree(out / CKPT_DIR, ignore_errors=True)  # the finished model.safetensors replaces them
    if eval_data is not None:
        captioner = Captioner(model.eval(), processors, cfg, model_cfg)
        result = evaluate_captions(captioner, eval_data, progress=progress)
        (out / "eval.json").write_text(json.dumps(result, indent=2))
        last = {**last, "eval": result}
    return last


def _scst_optimizer(model: CaptionModel, cfg: CaptionConfig) -> torch.optim.AdamW:
    groups = model.param_groups(cfg.optim)
    for g in groups:
        g["lr"] = cfg.train.scst_lr * g["lr_scale"]
    return torch.optim.AdamW(groups, lr=cfg.train.scst_lr, betas=tuple(cfg.optim.betas), eps=cfg.optim.eps)


def _scst_loss(model: CaptionModel, x: torch.Tensor, keys: list[str], cider: CiderD, tokenizer,
               cfg: CaptionConfig, step: int) -> tuple[torch.Tensor, dict]:
    """Self-critical: -(CIDEr-D(sample) - CIDEr-D(greedy)) * log p(sample), `scst_samples` per input."""
    n, d = cfg.train.scst_samples, cfg.decode
    model.eval()
    greedy = beam_search(model, x, 1, d.max_len)
    model.train()
    model.encoder.train(cfg.optim.encoder_lr_scale > 0)
    draws = torch.Generator(x.device).manual_seed(cfg.train.seed * 1_000_003 + step)  # a resume draws the same
    ids = sample(model, x, n, d.max_len, draws)
    logp = sequence_logprob(model, x, ids, n)  # (B*n,) with the graph

    def rewards(rows: list[list[int]], row_keys: list[str]) -> torch.Tensor:
        texts = tokenize_captions({i: [tokenizer.decode(r)] for i, r in enumerate(rows)})
        return torch.tensor([cider.score(k, texts[i][0]) for i, k in enumerate(row_keys)])

    base = rewards(greedy.tolist(), keys)  # (B,)
    got = rewards(ids.tolist(), [k for k in keys for _ in range(n)]).view(-1, n)  # (B, n)
    advantage = (got - base[:, None]).view(-1).to(logp.device)
    return -(advantage * logp).mean(), {"reward": float(got.mean()), "reward_greedy": float(base.mean())}


@torch.no_grad()
def evaluate_captions(captioner: Captioner, data: str | Path, batch_size: int = 64, progress: bool = True,
                      predictions_out: str | Path | None = None) -> dict:
    """Caption each input of `data` once (its first row) -> the COCO metrics against all its captions:
    {"BLEU-1".."BLEU-4", "ROUGE-L", "CIDEr-D", "n", "beam"}."""
    model = captioner.model.eval()
    device = next(model.parameters()).device
    dataset = CaptionDataset(data, captioner.processors, model.modality, captioner.tokenizer,
                             captioner.cfg.columns, train=False)
    refs = dataset.references()
    loader = DataLoader(Subset(dataset, dataset.first_rows()), batch_size=batch_size,
                        collate_fn=CaptionCollator(model.modality))
    preds: dict[str, str] = {}
    for batch in tqdm(loader, desc="caption eval", unit="batch", disable=not progress, dynamic_ncols=True):
        raise_first(batch["errors"])
        for key, text in zip(batch["keys"], captioner.caption_batch(batch["x"].to(device))):
            preds[key] = text
    if predictions_out is not None:
        with open(predictions_out, "w") as f:
            for key, text in preds.items():
                f.write(json.dumps({"input": key, "caption": text, "references": refs[key]}) + "\n")
    scored = {k: p for k, p in preds.items() if k in refs}  # an input none of whose rows has a caption has no references
    if not scored:
        raise ValueError(f"{data}: no input with a caption to score against")
    scores = score_captions({k: refs[k] for k in scored}, scored)
    return {**scores, "n": len(scored), "beam": captioner.cfg.decode.beam}
