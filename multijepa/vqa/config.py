"""VQA fine-tuning settings: dataclasses filled from YAML (configs/vqa_*.yaml) plus key=value overrides,
by the same loader as the run config (`multijepa.config.load_settings`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from fusion.registry import FUSION_KINDS

from ..config import COUNT, NON_NEGATIVE, ConfigError, FinetuneOptimConfig, FinetuneTrainConfig, load_settings


@dataclass
class FusionConfig:
    RANGES: ClassVar = {"width": COUNT, "depth": COUNT, "heads": COUNT, "memory_slots": NON_NEGATIVE}
    CHOICES: ClassVar = {"kind": FUSION_KINDS}

    kind: str = "cross"  # cross | coattention | merged
    width: int = 128  # the fusion layers' features per token
    depth: int = 2  # fusion layers
    heads: int = 4  # attention heads (width must be a multiple)
    memory_slots: int = 0  # M2 memory-augmented attention: learned key/value slots (0 = off)


@dataclass
class AnswerConfig:
    RANGES: ClassVar = {"min_count": COUNT, "top_k": COUNT}

    min_count: int = 1  # keep answers given at least this often in the training data
    top_k: int | None = None  # then keep the most frequent K (None = all)


@dataclass
class VQAConfig:
    RANGES: ClassVar = {"head_hidden": COUNT}

    fusion: FusionConfig = field(default_factory=FusionConfig)
    head_hidden: int = 256  # the answer MLP's hidden width
    answers: AnswerConfig = field(default_factory=AnswerConfig)
    optim: FinetuneOptimConfig = field(default_factory=FinetuneOptimConfig)
    train: FinetuneTrainConfig = field(default_factory=FinetuneTrainConfig)
    # column names when they differ from image / question / answers / question_type / answer_type
    columns: dict[str, str] = field(default_factory=dict)

    def validate(self) -> None:
        f = self.fusion
        if f.width % f.heads:
            raise ConfigError(f"fusion.width {f.width} is not divisible by fusion.heads {f.heads}")


def load_vqa_config(name_or_path: str | Path | dict | None = "vqa_demo", overrides: list[str] | None = None) -> VQAConfig:
    """A shipped VQA config by name (vqa_demo, vqa_tiny), a YAML path or a dict, plus overrides."""
    return load_settings(VQAConfig, name_or_path, overrides)
