"""The text modality: a caption -> token ids and their count (the run's tokenizer), token
positions on a 1-D grid, contiguous-span masks; binding sees whole captions."""

from __future__ import annotations

from .base import Modality, register_modality

# modalities/ and torch are imported inside the methods: the CLI reads the registry for --help


@register_modality
class Text(Modality):
    name = "text"
    media = False

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

    def grid(self, cfg):
        return (cfg.text.max_len,)

    def masker(self, cfg):
        from modalities.masking import SpanMasker

        k = cfg.text.mask
        return SpanMasker(k.num_targets, tuple(k.target_scale), k.min_keep, pad_context=k.pad_context)

    def mask_arg(self, entry):
        return entry["lengths"]

    def tokens(self, cfg, vocab_size=None):
        if vocab_size is None:
            raise ValueError("a text encoder needs the tokenizer's vocab_size")
        from modalities.tokens import TextTokens

        return TextTokens(vocab_size, cfg.text.max_len, cfg.text.encoder.width)  # (B, L) -> (B, L, D)
