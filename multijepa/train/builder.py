"""One builder for everything a training step needs (I-JEPA's `init_model` / `init_opt`): the
pretraining loop, both benchmarks and VQA fine-tuning call it, so they build, and time, the same
thing.

    init_model      the model of a config, with its preprocessing (and a checkpoint's weights)
    init_opt        AdamW over the model's own parameter groups, and the per-step schedule
    build_training  model -> parallelize (checkpointing, compile, DDP/FSDP2) -> optimizer,
                    schedule, objective -> TrainStep
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from modalities.text import TextTokenizer

from ..checkpoint import load_weights
from ..config import Config
from ..distributed import World
from ..model import MultiJEPA, create_model, load_pretrained_towers
from ..objective import MultiJEPAObjective
from .parallelize import parallelize
from .schedule import Schedule
from .step import TrainStep


def init_model(cfg: Config, device: torch.device, tokenizer: TextTokenizer | None = None,
               vocab_size: int | None = None, weights: str | Path | None = None) -> MultiJEPA:
    """The config's MultiJEPA on `device`, with its preprocessing; `weights`: a checkpoint folder to
    load (full weights, before any sharding), else the pretrained towers' files (`loaded_towers`
    says what came from where). Without a tokenizer the text vocabulary is `vocab_size`."""
    model = create_model(cfg, tokenizer, vocab_size)
    if weights is not None:
        load_weights(model, weights)
    else:  # a new run starts its pretrained towers from their files (a resumed one has them in `weights`)
        model.loaded_towers = load_pretrained_towers(model)
    return model.to(device)


def init_opt(model: nn.Module, optim, total_steps: int, ema: tuple[float, float] = (1.0, 1.0),
             ema_horizon: float = 0.0, ema_horizon_max_steps: int = 250,
             pred_warmup: int = 0) -> tuple[torch.optim.AdamW, Schedule]:
    """AdamW over `model.param_groups(optim)` (each model states its own no-decay rule and, for
    VQA, its encoders' learning-rate scale; a late-predicting MultiJEPA its predictors' own groups)
    and the schedule that sets lr / decay every step."""
    optimizer = torch.optim.AdamW(model.param_groups(optim), lr=optim.lr, betas=tuple(optim.betas), eps=optim.eps)
    return optimizer, Schedule(optim, total_steps, ema, ema_horizon, ema_horizon_max_steps, pred_warmup)


def encoder_scaled_groups(model: nn.Module, encoders: list[nn.Module], optim) -> list[dict]:
    """AdamW groups of a fine-tuned model (VQA, captioning): the pretrained `encoders` at
    lr * optim.encoder_lr_scale (frozen, no gradient, at 0), the rest at lr; no decay on norms and
    biases (ndim <= 1), nor on what a submodule lists in `no_weight_decay()`."""
    frozen = optim.encoder_lr_scale == 0
    enc_ids = {id(p) for e in encoders for p in e.parameters()}
    skip = {f"{prefix}.{name}" for prefix, mod in model.named_modules()  # timm's no_weight_decay() convention
            if mod is not model and hasattr(mod, "no_weight_decay") for name in mod.no_weight_decay()}
    groups: dict[tuple, list] = {}
    for name, p in model.named_parameters():
        is_enc = id(p) in enc_ids
        if is_enc and frozen:
            p.requires_grad_(False)
            continue
        groups.setdefault((is_enc, p.ndim <= 1 or name in skip), []).append(p)
    return [{"params": ps, "lr_scale": optim.encoder_lr_scale if is_enc else 1.0,
             "weight_decay": 0.0 if no_decay else optim.weight_decay}
            for (is_enc, no_decay), ps in groups.items()]


@dataclass
class Training:
    model: MultiJEPA  # the plain module (EMA update, checkpoints)
    wrapped: nn.Module  # what runs the forward: the model, or its DDP / FSDP2 form
    optimizer: torch.optim.Optimizer
    schedule: Schedule
    objective: MultiJEPAObjective
    step: TrainStep


def build_training(cfg: Config, device: torch.device, tokenizer: TextTokenizer | None = None,
                   vocab_size: int | None = None, weights: str | Path | None = None, world: World = World(),
                   partial_sources: bool = False) -> Training:
    """Everything one pretraining step needs, in the one order that works under FSDP2 too: the
    optimizer is made over the parameters as `parallelize` left them."""
    model = init_model(cfg, device, tokenizer, vocab_size, weights)
    wrapped = parallelize(model, cfg.train, world, device, partial_sources)
    optimizer, schedule = init_opt(model, cfg.optim, cfg.train.max_steps, tuple(cfg.model.ema_momentum),
                                   cfg.model.ema_horizon, cfg.model.ema_horizon_max_steps, cfg.loss.pred_warmup_steps)
    objective = MultiJEPAObjective(cfg.loss, model.modalities, world.rank, world.size)
    step = TrainStep(model, objective, optimizer, schedule, cfg.train.precision, cfg.optim.grad_clip, device,
                     world, wrapped)
    return Training(model, wrapped, optimizer, schedule, objective, step)
