"""`coattention` fusion: ViLBERT's two streams. In each layer both streams query the other's keys
and values at once (co-attention), then attend to themselves, then run their own feed-forward.
The answer is read from the product of the two pooled streams, as ViLBERT does."""

from __future__ import annotations

import torch
from torch import nn

from .attention import AttentionBlock, load_legacy_layers, masked_mean


class CoAttentionFusion(nn.Module):
    def __init__(self, dim: int, depth: int, heads: int, memory_slots: int = 0):
        super().__init__()

        def layers(cross: bool):  # co-attention alone; self-attention with the stream's feed-forward
            return nn.ModuleList([AttentionBlock(dim, heads, cross, memory_slots, mlp_ratio=0 if cross else 4.0)
                                  for _ in range(depth)])

        self.text_co, self.image_co = layers(True), layers(True)
        self.text_self, self.image_self = layers(False), layers(False)
        self.text_norm, self.image_norm = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.out_dim = dim
        load_legacy_layers(self, {"text_ffn": "text_self", "image_ffn": "image_self"})

    def forward(self, text: torch.Tensor, text_valid: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """text (B, L, D) with text_valid (B, L), image (B, N, D) -> pooled (B, D)."""
        for i in range(len(self.text_co)):
            # both streams read the other's state from before this layer
            text, image = self.text_co[i](text, image), self.image_co[i](image, text, text_valid)
            text, image = self.text_self[i](text, None, text_valid), self.image_self[i](image)
        t = masked_mean(self.text_norm(text), text_valid)
        v = self.image_norm(image).mean(1)
        return t * v  # (B, D)
