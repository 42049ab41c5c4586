"""`cross` fusion: the question reads the image. Each layer: question self-attention, question ->
image cross-attention, feed-forward. The answer is read from the question tokens."""

from __future__ import annotations

import torch
from torch import nn

from .attention import AttentionBlock, load_legacy_layers, masked_mean


class CrossFusion(nn.Module):
    def __init__(self, dim: int, depth: int, heads: int, memory_slots: int = 0):
        super().__init__()
        self.self_attn = nn.ModuleList([AttentionBlock(dim, heads, memory_slots=memory_slots, mlp_ratio=0)
                                        for _ in range(depth)])
        self.cross_attn = nn.ModuleList([AttentionBlock(dim, heads, cross=True, memory_slots=memory_slots)
                                         for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.out_dim = dim
        load_legacy_layers(self, {"ffn": "cross_attn"})

    def forward(self, text: torch.Tensor, text_valid: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """text (B, L, D) with text_valid (B, L), image (B, N, D) -> pooled (B, D)."""
        for sa, ca in zip(self.self_attn, self.cross_attn):
            text = ca(sa(text, None, text_valid), image)
        return masked_mean(self.norm(text), text_valid)
