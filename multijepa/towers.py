"""What a pretrained tower (`model.<m>.pretrained`) decides for the rest of a run, settled into the
config before anything is built: its token grid, widths, preprocessing and tokenizer."""

from __future__ import annotations

from modalities.towers import TowerSpec, tower_facts

from .config import ConfigError, ModelConfig

TOWER_MODALITIES = ("image", "text", "audio")  # the modalities a `model.<m>.pretrained` tower can serve


def audio_size(cfg: ModelConfig) -> tuple[int, int]:
    """(mel bins, frames): the spectrogram an audio encoder sees."""
    return cfg.audio.num_mel_bins, cfg.audio.target_frames


def tower_spec(cfg: ModelConfig, modality: str) -> TowerSpec | None:
    text = getattr(getattr(cfg, modality), "pretrained", None)
    return TowerSpec.parse(text, f"model.{modality}.pretrained") if text else None


def resolve_towers(cfg: ModelConfig) -> None:
    """Settle what follows from a pretrained tower (`model.<m>.pretrained`) into the config, so the
    run folder's config.yaml rebuilds the same model and preprocessing without the weights file:
    the token grid (image size, patch; a text tower's context length; an audio tower's patch over
    our spectrogram), the width, depth and heads, the image tower's mean/std, and a text tower's
    tokenizer (CLIP BPE) and vocabulary."""
    for m in TOWER_MODALITIES:
        spec = tower_spec(cfg, m) if m in cfg.modalities else None
        if spec is None:
            continue
        facts, c = tower_facts(spec, m, audio_size(cfg) if m == "audio" else None), getattr(cfg, m)
        key = f"model.{m}.pretrained={c.pretrained}"
        if m == "audio":  # our spectrogram (size, mean/std), the tower's patches
            c.patch = (facts["patch"], facts["patch"])
            if c.num_mel_bins % facts["patch"] or c.target_frames % facts["patch"]:
                raise ConfigError(f"{key}: model.audio.num_mel_bins={c.num_mel_bins} and target_frames="
                                  f"{c.target_frames} must be multiples of the tower's patch {facts['patch']}")
        elif m == "image":
            if facts["size"][0] != facts["size"][1]:
                raise ConfigError(f"{key}: only square input sizes are supported (the tower takes {facts['size']})")
            c.size, c.patch, c.mean, c.std = facts["size"][0], facts["patch"], facts["mean"], facts["std"]
        else:
            if c.tokenizer_file:
                raise ConfigError(f"{key} brings its own tokenizer (CLIP BPE): unset model.text.tokenizer_file")
            c.tokenizer, c.max_len, c.vocab_size = "clip", facts["max_len"], facts["vocab_size"]
        c.encoder.width, c.encoder.depth, c.encoder.heads = facts["width"], facts["depth"], facts["heads"]
