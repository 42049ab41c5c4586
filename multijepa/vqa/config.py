"""VQA fine-tuning settings: dataclasses filled from YAML (configs/vqa_*.yaml) plus key=value overrides."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..config import ConfigError, find_config, settings_from

FUSION_KINDS = ("cross", "coattention", "merged")


@dataclass
class FusionConfig:
    kind: str = "cross"  # cross | coattention | merged
    width: int = 128
    depth: int = 2
    heads: int = 4
    memory_slots: int = 0  # M2 memory-augmented attention: learned key/value slots (0 = off)


@dataclass
class AnswerConfig:
    min_count: int = 1  # keep answers given at least this often in the training data
    top_k: int | None = None  # then keep the most frequent K (None = all)


@dataclass
class VQAOptimConfig:
    lr: float = 1.0e-3
    encoder_lr_scale: float = 0.1  # pretrained encoders learn at lr * scale; 0 freezes them
    weight_decay: float = 0.05
    warmup_steps: int = 50
    min_lr: float = 1.0e-5
    grad_clip: float = 1.0


@dataclass
class VQATrainConfig:
    max_steps: int = 600
    batch_size: int = 64
    seed: int = 0
    log_every: int = 50
    ckpt_every: int = 200  # full-state checkpoints for --resume
    device: str = "auto"
    threads: int = 0  # torch threads (0 = torch's default)
    num_workers: int = 0


@dataclass
class VQAConfig:
    fusion: FusionConfig = field(default_factory=FusionConfig)
    head_hidden: int = 256  # the answer MLP's hidden width
    answers: AnswerConfig = field(default_factory=AnswerConfig)
    optim: VQAOptimConfig = field(default_factory=VQAOptimConfig)
    train: VQATrainConfig = field(default_factory=VQATrainConfig)
    # column names when they differ from image / question / answers / question_type / answer_type
    columns: dict[str, str] = field(default_factory=dict)


def load_vqa_config(name_or_path: str | Path | None = "vqa_demo", overrides: list[str] | None = None) -> VQAConfig:
    tree: dict = {}
    if name_or_path is not None:
        path = find_config(name_or_path)
        tree = yaml.safe_load(path.read_text()) or {}
    cfg = settings_from(VQAConfig, tree, overrides)
    if cfg.fusion.kind not in FUSION_KINDS:
        raise ConfigError(f"config key 'fusion.kind' must be one of {', '.join(FUSION_KINDS)}, got '{cfg.fusion.kind}'")
    if cfg.fusion.width % cfg.fusion.heads:
        raise ConfigError(f"fusion.width {cfg.fusion.width} is not divisible by fusion.heads {cfg.fusion.heads}")
    if cfg.optim.encoder_lr_scale < 0:
        raise ConfigError("optim.encoder_lr_scale must be >= 0 (0 freezes the encoders)")
    return cfg
