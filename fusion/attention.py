"""The one attention stack every fusion and predictor is built from (timm's `layers/` habit).

`Attention`: queries from one sequence, keys/values from another (cross) or the same (self),
through PyTorch's fused `scaled_dot_product_attention`, optionally with learnable memory slots
appended to the keys and values. The slots are the M2 Transformer's memory-augmented attention
(Cornia et al., 2020): a few learned key/value pairs every query can attend to, holding
a-priori knowledge that is not in the input (e.g. what "left of" means) and a place to put
attention when nothing fits.

`AttentionBlock`: the pre-norm residual layer around it, self or cross, with or without the
feed-forward that follows:  x + Attn(LN(x), LN(context)) [; x + MLP(LN(x))].
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from timm.layers import Mlp
from torch import nn


class Attention(nn.Module):
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

    def forward(self, x: torch.Tensor, context: torch.Tensor, context_valid: torch.Tensor | None = None,
                causal: bool = False) -> torch.Tensor:
        """x (B, N, D) attends to context (B, M, D) [+ memory slots]; context_valid (B, M) bool,
        True = may be attended. causal (self-attention, no memory slots): query i sees keys <= i."""
        b, n, d = x.shape
        h = self.heads
        if causal and self.memory_slots:
            raise ValueError("causal attention has no memory slots (they would sit after every position)")
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
        if causal and mask is None:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # fused SDPA
        else:
            if causal:
                mask = mask & torch.ones(n, k.shape[2], dtype=torch.bool, device=x.device).tril()
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # fused SDPA
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class AttentionBlock(nn.Module):
    """Pre-norm residual attention, then (when mlp_ratio > 0) a pre-norm residual MLP.

    cross=True: x + Attn(LN(x), LN(context)), context_valid masking the context; otherwise
    self-attention x + Attn(LN(x), LN(x)), context_valid then masking x's own padding."""

    def __init__(self, dim: int, heads: int, cross: bool = False, memory_slots: int = 0, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim) if cross else None
        self.attn = Attention(dim, heads, memory_slots)
        self.norm_mlp = nn.LayerNorm(dim) if mlp_ratio > 0 else None
        self.mlp = Mlp(dim, int(dim * mlp_ratio)) if mlp_ratio > 0 else None

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None,
                context_valid: torch.Tensor | None = None, causal: bool = False) -> torch.Tensor:
        y = self.norm_q(x)
        x = x + self.attn(y, y if self.norm_kv is None else self.norm_kv(context), context_valid, causal)
        if self.mlp is not None:
            x = x + self.mlp(self.norm_mlp(x))
        return x


def masked_mean(x: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """x (B, N, D), valid (B, N) bool -> (B, D) mean over the valid tokens."""
    if valid is None:
        return x.mean(1)
    w = valid.unsqueeze(-1).to(x.dtype)
    return (x * w).sum(1) / w.sum(1).clamp_min(1.0)


def load_legacy_layers(module: nn.Module, ffn_into: dict[str, str]) -> None:
    """Let `module` (a fusion) load weights saved before the attention stack was one: then an
    attention layer's norms were `norm_x` / `norm_context`, and the feed-forward after layer i of
    list `owner` was a separate module `ffn_list.i` (`norm`, `mlp`). `ffn_into` maps each old
    feed-forward list to the list of blocks that now holds it, e.g. {"ffn": "cross_attn"}."""

    def upgrade(_module: nn.Module, state: dict, prefix: str, *args) -> None:
        for key in [k for k in state if k.startswith(prefix)]:
            rest = key[len(prefix):]
            new = re.sub(r"\.norm_x\.", ".norm_q.", re.sub(r"\.norm_context\.", ".norm_kv.", rest))
            for old_list, owner in ffn_into.items():
                new = re.sub(rf"^{old_list}\.(\d+)\.norm\.", rf"{owner}.\1.norm_mlp.", new)
                new = re.sub(rf"^{old_list}\.(\d+)\.mlp\.", rf"{owner}.\1.mlp.", new)
            if new != rest:
                state[prefix + new] = state.pop(key)

    module.register_load_state_dict_pre_hook(upgrade)
