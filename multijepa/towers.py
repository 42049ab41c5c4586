"""What a pretrained tower (`model.<m>.pretrained`) decides for the rest of a run, settled into the
config before anything is built: its token grid, widths, preprocessing and tokenizer."""

from __future__ import annotations

from functools import partial

from modalities.towers import TowerSpec, tower_facts

from .config import ModelConfig
from .modality import get_modality


def tower_spec(cfg: ModelConfig, modality: str) -> TowerSpec | None:
    text = getattr(getattr(cfg, modality), "pretrained", None)
    return TowerSpec.parse(text, f"model.{modality}.pretrained") if text else None


def resolve_towers(cfg: ModelConfig) -> None:
    """Settle what follows from a pretrained tower (`model.<m>.pretrained`) into the config, so the
    run folder's config.yaml rebuilds the same model and preprocessing without the weights file:
    the width, depth and heads, and what the modality takes from it (`Modality.settle_tower`: the
    token grid, the image tower's mean/std, a text tower's tokenizer and vocabulary)."""
    for m in cfg.modalities:
        spec = tower_spec(cfg, m)
        if spec is None:
            continue
        modality, c = get_modality(m), getattr(cfg, m)
        facts = tower_facts(partial(modality.tower, spec, cfg))
        modality.settle_tower(c, facts, f"model.{m}.pretrained={c.pretrained}")
        c.encoder.width, c.encoder.depth, c.encoder.heads = facts["width"], facts["depth"], facts["heads"]
