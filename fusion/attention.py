"""Attention for fusing streams: queries from one sequence, keys/values from another (or the same),
optionally with learnable memory slots appended to the keys and values.

The memory slots are the M2 Transformer's memory-augmented attention (Cornia et al., 2020): a
few learned key/value pairs every query can attend to, holding a-priori knowledge that is not
in the input (e.g. what "left of" means) and a place to put attention when nothing fits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import Mlp
from torch import nn


class FusionAttention(nn.Module):
    def __init__(self, dim: int, heads: int, memory_slots: int = 0):
        super().__init__()
        assert dim % heads == 0, f"width {dim} is not divisible by {heads} heads"
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.memory_slots = memory_slots
        if memory_slots:
            # (2, slots, D): keys then values, scaled as M2 does (sqrt(d_head) for keys, sqrt(slots) for values)
            self.memory = nn.Parameter(torch.randn(2, memory_slots, dim) * 0.02)

    def forward(self, x: torch.Tensor, context: torch.Tensor, context_valid: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, N, D) attends to context (B, M, D) [+ memory slots]; context_valid (B, M) bool."""
        b, n, d = x.shape
        h = self.heads
        q = self.q(x).view(b, n, h, d // h).transpose(1, 2)  # (B, h, N, d/h)
        k, v = self.kv(context).chunk(2, dim=-1)  # (B, M, D) each
        if self.memory_slots:
            mem_k = self.memory[0].expand(b, -1, -1) * (d // h) ** 0.5
            mem_v = self.memory[1].expand(b, -1, -1) * self.memory_slots**0.5
            k, v = torch.cat([k, mem_k], 1), torch.cat([v, mem_v], 1)  # (B, M + S, D)
            if context_valid is not None:
                context_valid = F.pad(context_valid, (0, self.memory_slots), value=True)
        k = k.view(b, -1, h, d // h).transpose(1, 2)  # (B, h, M[+S], d/h)
        v = v.view(b, -1, h, d // h).transpose(1, 2)
        mask = None if context_valid is None else context_valid[:, None, None, :]  # (B, 1, 1, M[+S])
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # fused SDPA
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class FusionLayer(nn.Module):
    """Pre-norm residual attention sub-layer: x + Attn(LN(x), LN(context)) when `cross`, else
    self-attention x + Attn(LN(x), LN(x)) (context_valid then masks x's own padding)."""

    def __init__(self, dim: int, heads: int, memory_slots: int = 0, cross: bool = False):
        super().__init__()
        self.norm_x = nn.LayerNorm(dim)
        self.norm_context = nn.LayerNorm(dim) if cross else None
        self.attn = FusionAttention(dim, heads, memory_slots)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, context_valid: torch.Tensor | None = None) -> torch.Tensor:
        y = self.norm_x(x)
        c = y if self.norm_context is None else self.norm_context(context)
        return x + self.attn(y, c, context_valid)


class FeedForward(nn.Module):
    """Pre-norm residual MLP: x + MLP(LN(x))."""

    def __init__(self, dim: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mlp(self.norm(x))


def masked_mean(x: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """x (B, N, D), valid (B, N) bool -> (B, D) mean over the valid tokens."""
    if valid is None:
        return x.mean(1)
    w = valid.unsqueeze(-1).to(x.dtype)
    return (x * w).sum(1) / w.sum(1).clamp_min(1.0)
