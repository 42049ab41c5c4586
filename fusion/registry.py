"""The attention-fusion variants by name, as the VQA config chooses them."""

from __future__ import annotations

from torch import nn

from .coattention import CoAttentionFusion
from .cross_fusion import CrossFusion
from .merged import MergedFusion

FUSIONS = {"cross": CrossFusion, "coattention": CoAttentionFusion, "merged": MergedFusion}
FUSION_KINDS = tuple(FUSIONS)


def build_fusion(kind: str, dim: int, depth: int, heads: int, memory_slots: int = 0) -> nn.Module:
    """-> a module mapping (text (B, L, D), text_valid (B, L), image (B, N, D)) to (B, D)."""
    if kind not in FUSIONS:
        raise ValueError(f"unknown fusion '{kind}' (known: {', '.join(FUSIONS)})")
    return FUSIONS[kind](dim, depth, heads, memory_slots)
