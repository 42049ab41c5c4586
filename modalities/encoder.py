"""A modality encoder: token embedding + a stack of timm `Block`s (fused SDPA attention)."""

from __future__ import annotations

import torch
from timm.models.vision_transformer import Block
from torch import nn


def gather_tokens(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x (B, N, D), index (B, K) -> (B, K, D)."""
    return torch.gather(x, 1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


class TransformerEncoder(nn.Module):
    """Encodes all tokens, or only those in `keep` (the JEPA context), with padding masked out."""

    def __init__(self, tokens: nn.Module, dim: int, depth: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.tokens = tokens
        self.dim = dim
        self.blocks = nn.ModuleList(
            [Block(dim, heads, mlp_ratio=mlp_ratio, qkv_bias=True, norm_layer=nn.LayerNorm) for _ in range(depth)]
        )
        self.norm = nn.LayerNorm(dim)
        self.apply(init_weights)

    @property
    def grid(self) -> tuple[int, ...]:
        """The token grid the maskers and predictors lay positions on."""
        return self.tokens.grid

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """keep (B, K): token indices to encode, -1 = padding. Returns features (B, N or K, D) and
        the valid mask (B, N or K) (None when all are valid)."""
        h, valid = self.tokens(x)  # (B, N, D), (B, N) | None
        if keep is not None:
            kept = keep >= 0  # (B, K)
            safe = keep.clamp_min(0)
            h = gather_tokens(h, safe)  # (B, K, D)
            valid = None if valid is None else torch.gather(valid, 1, safe)
            if not bool(kept.all()):
                valid = kept if valid is None else valid & kept
        attn_mask = None
        if valid is not None and not bool(valid.all()):
            attn_mask = valid[:, None, None, :]  # (B, 1, 1, N): keys that may be attended
        for blk in self.blocks:
            h = blk(h, attn_mask=attn_mask)
        return self.norm(h), valid


def init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
