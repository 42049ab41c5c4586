"""A modality encoder: token embedding + a stack of blocks, each a timm `Block` (fused SDPA
attention) or a bidirectional `MambaBlock`, by `kind`:

- transformer: attention blocks only (cost grows with the square of the token count);
- mamba: Mamba blocks only (linear in the token count);
- hybrid: Mamba blocks first and attention blocks last (MambaVision's layout).

A scan needs an order. Encoders see tokens in their index order (raster order of an image's
patch grid, text order), or in the token module's `scan_rank` order where it has one (time order
for audio, whose grid is laid out by mel band). The JEPA context is a subset of the tokens, so a
Mamba block scans the context tokens in that order with the masked-out ones simply absent: the
state runs from each kept token to the next kept one, whatever the gap (positions, added to the
tokens, say where each one sits). Padding (-1 in `keep`, or a text's pad tokens) goes last in the
scan and never enters the state.
"""

from __future__ import annotations

from functools import partial

import torch
from timm.models.vision_transformer import Block
from torch import nn

from .mamba import MambaBlock

KINDS = ("transformer", "mamba", "hybrid")


def gather_tokens(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x (B, N, D), index (B, K) -> (B, K, D)."""
    return torch.gather(x, 1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def encoder_blocks(kind: str, dim: int, depth: int, heads: int, mlp_ratio: float = 4.0,
                   attention_fraction: float = 0.5, **ssm) -> list[nn.Module]:
    """`depth` blocks of `kind`; a hybrid ends in round(depth * attention_fraction) attention blocks
    (at least one, and at least one Mamba block before them). `ssm`: MambaBlock's keywords."""
    if kind not in KINDS:
        raise ValueError(f"encoder kind '{kind}': known kinds are {', '.join(KINDS)}")
    if kind == "hybrid" and depth < 2:
        raise ValueError(f"a hybrid encoder needs depth >= 2 (a Mamba block and an attention block), got {depth}")
    n_attn = {"transformer": depth, "mamba": 0}.get(kind, min(depth - 1, max(1, round(depth * attention_fraction))))
    attn = partial(Block, dim, heads, mlp_ratio=mlp_ratio, qkv_bias=True, norm_layer=nn.LayerNorm)
    return [MambaBlock(dim, **ssm) for _ in range(depth - n_attn)] + [attn() for _ in range(n_attn)]


class Encoder(nn.Module):
    """Encodes all tokens, or only those in `keep` (the JEPA context), with padding masked out."""

    def __init__(self, tokens: nn.Module, dim: int, blocks: list[nn.Module]):
        super().__init__()
        self.tokens = tokens
        self.dim = dim
        self.blocks = nn.ModuleList(blocks)
        self.norm = nn.LayerNorm(dim)
        self.apply(init_weights)
        self.scans = any(isinstance(b, MambaBlock) for b in blocks)

    @property
    def grid(self) -> tuple[int, ...]:
        """The token grid the maskers and predictors lay positions on."""
        return self.tokens.grid

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None = None,
                layers: int = 0, scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor | None]:
        """keep (B, K): token indices to encode, -1 = padding. Returns features (B, N or K, D) and
        the valid mask (B, N or K) (None when all are valid). layers > 0: instead of the features,
        the last `layers` blocks' outputs (layers, B, N or K, D), before the final norm (data2vec's
        targets average them). scale < 1: the input resized by that much per side first (patch
        tokens only: `PatchTokens`), so fewer tokens."""
        h, valid = self.tokens(x) if scale == 1.0 else self.tokens(x, scale=scale)  # (B, N, D), (B, N) | None
        if keep is not None:
            kept = keep >= 0  # (B, K)
            safe = keep.clamp_min(0)
            h = gather_tokens(h, safe)  # (B, K, D)
            valid = None if valid is None else torch.gather(valid, 1, safe)
            if not bool(kept.all()):
                valid = kept if valid is None else valid & kept
        order = self._scan_order(h, keep, valid) if self.scans else None
        if order is not None:  # into scan order, valid tokens first
            h = gather_tokens(h, order)
            valid = None if valid is None else torch.gather(valid, 1, order)
        attn_mask = None
        if valid is not None and not bool(valid.all()):
            attn_mask = valid[:, None, None, :]  # (B, 1, 1, N): keys that may be attended
        outs = []
        for i, blk in enumerate(self.blocks):
            h = blk(h, attn_mask=attn_mask)
            if i >= len(self.blocks) - layers:
                outs.append(h)
        h = torch.stack(outs) if layers else self.norm(h)
        if order is not None:  # back to the caller's order (tokens are dim -2)
            h = torch.empty_like(h).scatter_(-2, order.unsqueeze(-1).expand_as(h), h)
            valid = None if valid is None else torch.empty_like(valid).scatter_(1, order, valid)
        return h, valid

    def _scan_order(self, h: torch.Tensor, keep: torch.Tensor | None, valid: torch.Tensor | None) -> torch.Tensor | None:
        """(B, N) permutation putting the tokens in scan order with invalid ones last, or None when
        they already are (index order, padding at the end)."""
        rank = getattr(self.tokens, "scan_rank", None)  # (N_all,) place of each token in the scan
        B, N = h.shape[:2]
        if rank is None:
            if valid is None or not bool((valid[:, :-1] < valid[:, 1:]).any()):  # no valid token after an invalid one
                return None
            key = torch.arange(N, device=h.device).expand(B, N)
        else:
            idx = torch.arange(N, device=h.device).expand(B, N) if keep is None else keep.clamp_min(0)
            key = rank[idx]
        if valid is not None:
            key = key + (~valid).long() * (key.max() + 1)  # invalid tokens after every valid one
        return key.argsort(dim=1, stable=True)


def init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
