"""The JEPA predictor, made cross-modal.

A narrow transformer over [context tokens ; one mask token per target position]. Between its
self-attention layers, cross-attention layers let every token read the *other* modalities'
context tokens of the same row, so masked image patches are predicted from the image context
and from the caption and the sound. Rows with no other modality attend only to a learned
null token.
"""

from __future__ import annotations

import torch
from timm.models.vision_transformer import Block
from torch import nn

from modalities.encoder import gather_tokens, init_weights
from modalities.positions import position_table

from .attention import AttentionBlock


class CrossModalPredictor(nn.Module):
    def __init__(
        self,
        enc_dim: int,
        grid: tuple[int, ...],
        width: int,
        depth: int,
        heads: int,
        other_dims: dict[str, int] | None = None,
        cross_attention: bool = True,
    ):
        """grid: the token layout of this modality (for mask-token positions); other_dims: width of
        each other modality's encoder, whose context tokens this predictor may read."""
        super().__init__()
        self.in_proj = nn.Linear(enc_dim, width)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, width))
        self.register_buffer("pos", position_table(width, grid), persistent=False)  # (N, W)
        self.self_blocks = nn.ModuleList(
            [Block(width, heads, qkv_bias=True, norm_layer=nn.LayerNorm) for _ in range(depth)]
        )
        other_dims = other_dims or {}
        self.use_cross = cross_attention and bool(other_dims)
        if self.use_cross:
            self.memory_proj = nn.ModuleDict({m: nn.Linear(d, width) for m, d in other_dims.items()})
            self.memory_type = nn.ParameterDict({m: nn.Parameter(torch.zeros(1, 1, width)) for m in other_dims})
            self.null_memory = nn.Parameter(torch.zeros(1, 1, width))
            self.cross_blocks = nn.ModuleList([AttentionBlock(width, heads, cross=True) for _ in range(depth)])
        self.norm = nn.LayerNorm(width)
        self.out_proj = nn.Linear(width, enc_dim)
        self.apply(init_weights)
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        if self.use_cross:
            for p in [*self.memory_type.values(), self.null_memory]:
                nn.init.trunc_normal_(p, std=0.02)

    def no_weight_decay(self) -> set[str]:
        """The learned tokens (embeddings, not weights), kept out of weight decay (timm's convention)."""
        names = {"mask_token"}
        if self.use_cross:
            names |= {"null_memory", *(f"memory_type.{m}" for m in self.memory_type)}
        return names

    def build_memory(
        self, others: dict[str, tuple[torch.Tensor, torch.Tensor]], b: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """others: modality -> (context features (B, M_o, D_o), valid (B, M_o) bool: the row has
        that modality and the token is not padding).
        Returns memory (B, 1 + sum M_o, W) and its valid mask; slot 0 is the always-valid null token."""
        parts = [self.null_memory.expand(b, -1, -1)]
        valid = [torch.ones(b, 1, dtype=torch.bool, device=self.null_memory.device)]
        for m, (feats, ok) in others.items():
            parts.append(self.memory_proj[m](feats) + self.memory_type[m])
            valid.append(ok)
        return torch.cat(parts, 1), torch.cat(valid, 1)

    def forward(
        self,
        context: torch.Tensor,
        context_idx: torch.Tensor,
        target_idx: torch.Tensor,
        memory: tuple[torch.Tensor, torch.Tensor] | None = None,
        context_valid: torch.Tensor | None = None,
        target_valid: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """context (B, Nc, De) at positions context_idx (B, Nc), context_valid (B, Nc) False on
        padding; target_idx (B, T) positions to predict, target_valid (B, T) False where they are
        padding (-1: no other token attends to those queries); memory from `build_memory`.
        Returns predictions (B, T, De)."""
        b, nc = context_idx.shape
        pos = self.pos.unsqueeze(0).expand(b, -1, -1)  # (B, N, W)
        ctx = self.in_proj(context) + gather_tokens(pos, context_idx.clamp_min(0))  # (B, Nc, W)
        queries = self.mask_token + gather_tokens(pos, target_idx.clamp_min(0))  # (B, T, W)
        x = torch.cat([ctx, queries], 1)  # (B, Nc + T, W)
        attn_mask = None
        if context_valid is not None or target_valid is not None:
            ones = torch.ones(b, 1, dtype=torch.bool, device=x.device)
            c_ok = context_valid if context_valid is not None else ones.expand(b, nc)
            t_ok = target_valid if target_valid is not None else ones.expand(b, target_idx.shape[1])
            attn_mask = torch.cat([c_ok, t_ok], 1)[:, None, None, :]  # (B, 1, 1, Nc + T)
        for i, blk in enumerate(self.self_blocks):
            x = blk(x, attn_mask=attn_mask)
            if self.use_cross and memory is not None:
                x = self.cross_blocks[i](x, *memory)
        return self.out_proj(self.norm(x[:, nc:]))  # (B, T, De)
