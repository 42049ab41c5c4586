"""The text modality: a caption -> token ids and their count (the run's tokenizer), token
positions on a 1-D grid, contiguous-span masks; binding sees whole captions."""

from __future__ import annotations

from .base import Modality, register_modality

# modalities/ and torch are imported inside the methods: the CLI reads the registry for --help


@register_modality
class Text(Modality):
    name = "text"
    media = False
    shard_member = "txt"

    def processor(self, cfg, tokenizer=None):
        return tokenizer

    def decode(self, processor, value, base_dir=None):
        """-> (ids (L,), length); without a tokenizer the caption is only checked (`data check`)."""
        from modalities.text import _check_text

        if processor is None:
            return _check_text(value)
        _check_text(value)
        ids, lengths = processor([value])
        return ids[0], lengths[0]

    def stack(self, inputs):
        import torch

        lengths = torch.stack([length for _, length in inputs])
        return {"x": torch.stack([ids for ids, _ in inputs])[:, : int(lengths.max())], "lengths": lengths}  # (B, L)

    def batch(self, processor, values):
        from modalities.text import _check_text

        ids, lengths = processor([_check_text(v) for v in values])
        return ids[:, : int(lengths.max())]

    def raw_features(self, processor, x):
        """Token counts over the vocabulary divided by the caption's length (bos, eos, padding left out)."""
        import torch

        tok = processor
        keep = (x != tok.pad_id) & (x != tok.bos_id) & (x != tok.eos_id)  # (B, L)
        counts = torch.zeros(x.shape[0], tok.vocab_size, device=x.device).scatter_add_(1, x, keep.float())
        return counts / keep.sum(1, keepdim=True).clamp_min(1)

    def grid(self, cfg):
        return (cfg.text.max_len,)

    def masker(self, cfg):
        from modalities.masking import SpanMasker

        k = cfg.text.mask
        return SpanMasker(k.num_targets, tuple(k.target_scale), k.min_keep, pad_context=k.pad_context)

    def mask_arg(self, entry):
        return entry["lengths"]

    def tower(self, spec, cfg):
        from modalities.towers import OpenClipTextTower

        if spec.library != "open_clip":
            raise self.no_tower(spec)
        return OpenClipTextTower(spec.name)

    def settle_tower(self, section, facts, key):
        """The tower's tokenizer (CLIP BPE), context length and vocabulary."""
        from ..errors import ConfigError

        if section.tokenizer_file:
            raise ConfigError(f"{key} brings its own tokenizer (CLIP BPE): unset model.text.tokenizer_file")
        section.tokenizer, section.max_len, section.vocab_size = "clip", facts["max_len"], facts["vocab_size"]

    def tokens(self, cfg, vocab_size=None):
        if vocab_size is None:
            raise ValueError("a text encoder needs the tokenizer's vocab_size")
        from modalities.tokens import TextTokens

        return TextTokens(vocab_size, cfg.text.max_len, cfg.text.encoder.width)  # (B, L) -> (B, L, D)
