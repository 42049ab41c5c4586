"""The image modality: a picture (path, bytes, PIL image or array) -> (3, size, size), patches on a
2-D grid, I-JEPA's multi-block masks, FLIP's random keep sets for binding."""

from __future__ import annotations

from typing import Any

from .base import Modality, register_modality

# modalities/ (torch, timm, PIL) is imported inside the methods: the CLI reads the registry for --help


def block_masker(grid: tuple[int, int], k: Any) -> Any:
    """The prediction masker of a 2-D grid from a `BlockMaskConfig` (image and audio): I-JEPA's
    multi-block masks, or random patches (`kind: random`)."""
    from modalities.masking import MultiBlockMasker, RandomMasker

    if k.kind == "random":
        return RandomMasker(grid[0] * grid[1], k.random_ratio)
    return MultiBlockMasker(grid, num_targets=k.num_targets, target_scale=tuple(k.target_scale),
                            target_aspect=tuple(k.target_aspect), context_scale=tuple(k.context_scale),
                            min_keep=k.min_keep, full_height_prob=k.full_height_prob,
                            full_width_prob=k.full_width_prob, pad_context=k.pad_context)


@register_modality
class Image(Modality):
    name = "image"
    shard_member = "png"
    suffixes = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff")
    bind_masking = True

    def processor(self, cfg, tokenizer=None):
        from modalities.image import ImagePreprocessor

        return ImagePreprocessor(cfg.image.size, cfg.image.mean, cfg.image.std)

    def decode(self, processor, value, base_dir=None):
        return processor(value, base_dir)  # (3, H, W)

    def grid(self, cfg):
        return cfg.image.size // cfg.image.patch, cfg.image.size // cfg.image.patch

    def patch_shape(self, cfg):
        return cfg.image.patch, cfg.image.patch

    def masker(self, cfg):
        return block_masker(self.grid(cfg), cfg.image.mask)

    def tower(self, spec, cfg):
        from modalities.towers import OpenClipImageTower, TimmViTTower

        return TimmViTTower(spec.name) if spec.library == "timm" else OpenClipImageTower(spec.name)

    def settle_tower(self, section, facts, key):
        """The tower's input size, patch and normalisation."""
        from ..errors import ConfigError

        if facts["size"][0] != facts["size"][1]:
            raise ConfigError(f"{key}: only square input sizes are supported (the tower takes {facts['size']})")
        section.size, section.patch, section.mean, section.std = facts["size"][0], facts["patch"], facts["mean"], facts["std"]

    def tokens(self, cfg, vocab_size=None):
        from modalities.tokens import PatchTokens

        c = cfg.image
        return PatchTokens((c.size, c.size), c.patch, 3, c.encoder.width)  # (B, 3, H, W) -> (B, N, D)
