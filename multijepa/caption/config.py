"""Captioning settings: dataclasses filled from YAML (configs/caption_*.yaml) plus key=value
overrides, by the same loader as the run config (`multijepa.config.load_settings`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from fusion.decoder import DECODER_KINDS

from ..config import COUNT, NON_NEGATIVE, ConfigError, FinetuneOptimConfig, FinetuneTrainConfig, Range, load_settings


@dataclass
class DecoderConfig:
    RANGES: ClassVar = {"width": COUNT, "depth": COUNT, "heads": COUNT, "memory_layers": COUNT,
                        "memory_slots": NON_NEGATIVE, "max_len": Range(2)}
    CHOICES: ClassVar = {"kind": DECODER_KINDS}

    kind: str = "transformer"  # transformer | meshed (M2)
    width: int = 128  # the decoder's features per token
    depth: int = 2  # decoder layers
    heads: int = 4  # attention heads (width must be a multiple)
    memory_layers: int = 2  # meshed: M2's memory-augmented encoder layers on the encoder's tokens
    memory_slots: int = 16  # meshed: learned key/value slots per such layer
    max_len: int = 40  # tokens per caption, bos and eos included (longer training captions are cut)


@dataclass
class DecodeConfig:
    RANGES: ClassVar = {"beam": COUNT, "max_len": Range(2), "length_penalty": NON_NEGATIVE,
                        "no_repeat_ngram": NON_NEGATIVE}

    beam: int = 3  # 1 = greedy
    max_len: int = 39  # generated tokens at most, eos included (at most decoder.max_len - 1: bos takes a place)
    length_penalty: float = 1.0  # finished beams rank by log-prob / length ** this (0 = raw sum)
    no_repeat_ngram: int = 0  # > 0: never repeat an n-gram of this size within a caption


@dataclass
class CaptionOptimConfig(FinetuneOptimConfig):
    RANGES: ClassVar = {**FinetuneOptimConfig.RANGES, "label_smoothing": Range(0, 1, hi_open=True)}

    betas: tuple[float, float] = (0.9, 0.98)
    label_smoothing: float = 0.1  # cross-entropy against targets smoothed by this share


@dataclass
class CaptionTrainConfig(FinetuneTrainConfig):
    RANGES: ClassVar = {**FinetuneTrainConfig.RANGES, "scst_steps": NON_NEGATIVE, "scst_lr": NON_NEGATIVE,
                        "scst_samples": COUNT}

    scst_steps: int = 0  # after max_steps of cross-entropy, self-critical steps (--scst sets max_steps // 5 when 0)
    scst_lr: float = 5.0e-5  # the learning rate of the self-critical steps (constant)
    scst_samples: int = 5  # sampled captions per input, rewarded by CIDEr-D minus the greedy caption's


@dataclass
class CaptionConfig:
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    optim: CaptionOptimConfig = field(default_factory=CaptionOptimConfig)
    train: CaptionTrainConfig = field(default_factory=CaptionTrainConfig)
    # column names when they differ from image / audio / text
    columns: dict[str, str] = field(default_factory=dict)

    def validate(self) -> None:
        d = self.decoder
        if d.width % d.heads:
            raise ConfigError(f"decoder.width {d.width} is not divisible by decoder.heads {d.heads}")
        if self.decode.max_len >= d.max_len:
            raise ConfigError(f"decode.max_len {self.decode.max_len} must be below decoder.max_len {d.max_len} "
                              "(bos takes the first place)")


def load_caption_config(name_or_path: str | Path | dict | None = "caption_demo",
                        overrides: list[str] | None = None) -> CaptionConfig:
    """A shipped captioning config by name (caption_demo, caption_tiny), a YAML path or a dict, plus overrides."""
    return load_settings(CaptionConfig, name_or_path, overrides)
