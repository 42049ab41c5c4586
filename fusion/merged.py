"""`merged` fusion: one stream, as VisualBERT and UNITER. Image and question tokens are
concatenated, each with its modality-type embedding, behind a [CLS] token; self-attention runs
over all of them, and the answer is read from [CLS]."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .attention import AttentionBlock, load_legacy_layers


class MergedFusion(nn.Module):
    def __init__(self, dim: int, depth: int, heads: int, memory_slots: int = 0):
        super().__init__()
        self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.type_embed = nn.Parameter(torch.randn(2, dim) * 0.02)  # 0: text, 1: image
        self.attn = nn.ModuleList([AttentionBlock(dim, heads, memory_slots=memory_slots) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.out_dim = dim
        load_legacy_layers(self, {"ffn": "attn"})

    def forward(self, text: torch.Tensor, text_valid: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """text (B, L, D) with text_valid (B, L), image (B, N, D) -> pooled (B, D)."""
        b = text.shape[0]
        x = torch.cat([self.cls.expand(b, -1, -1), text + self.type_embed[0], image + self.type_embed[1]], 1)
        valid = F.pad(text_valid, (1, image.shape[1]), value=True)  # (B, 1 + L + N)
        for block in self.attn:
            x = block(x, None, valid)
        return self.norm(x[:, 0])
