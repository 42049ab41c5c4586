"""Caption decoders: tokens so far + an encoder's tokens -> next-token features, two kinds.

- `transformer`: the standard decoder layer (Vaswani et al. 2017) in pre-norm form: masked
  (causal) self-attention, cross-attention to the encoder's last tokens, feed-forward.
- `meshed`: the Meshed-Memory Transformer (M2, Cornia et al. 2020). A memory-augmented encoder
  (`MemoryEncoder`: self-attention layers whose keys and values carry learned memory slots) runs
  on top of the pretrained encoder's tokens, and each decoder layer cross-attends to the output of
  *every* one of its layers, mixing the results with learned sigmoid gates:
      c_l = CrossAttn(x, enc_l),  a_l = sigmoid(W_l [x, c_l] + b_l),  x <- x + sum_l a_l * c_l / sqrt(n)
  (M2's `MeshedDecoderLayer`, here with pre-norm residuals like the rest of the project).

`CaptionDecoder` holds the token embedding (tied to the output projection), positions and the
layers; it is called on the whole prefix at every step (no cache: captions are short).
"""

from __future__ import annotations

import math

import torch
from timm.layers import Mlp
from torch import nn

from modalities.positions import position_table

from .attention import Attention, AttentionBlock

DECODER_KINDS = ("transformer", "meshed")


class MemoryEncoder(nn.Module):
    """M2's memory-augmented encoder: `depth` self-attention layers with `memory_slots` learned
    key/value slots each -> the output of every layer (each (B, N, D))."""

    def __init__(self, dim: int, depth: int, heads: int, memory_slots: int):
        super().__init__()
        self.layers = nn.ModuleList([AttentionBlock(dim, heads, memory_slots=memory_slots) for _ in range(depth)])

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> list[torch.Tensor]:
        outs = []
        for layer in self.layers:
            x = layer(x, context_valid=valid)
            outs.append(x)
        return outs


class DecoderLayer(nn.Module):
    """Causal self-attention, cross-attention to the last encoder output, feed-forward."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.self_attn = AttentionBlock(dim, heads, mlp_ratio=0)
        self.cross = AttentionBlock(dim, heads, cross=True, mlp_ratio=mlp_ratio)

    def forward(self, x: torch.Tensor, memories: list[torch.Tensor], valid: torch.Tensor | None) -> torch.Tensor:
        return self.cross(self.self_attn(x, causal=True), memories[-1], valid)


class MeshedDecoderLayer(nn.Module):
    """Causal self-attention, one cross-attention per encoder layer mixed by sigmoid gates, feed-forward."""

    def __init__(self, dim: int, heads: int, n_memories: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.self_attn = AttentionBlock(dim, heads, mlp_ratio=0)
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim)
        self.cross = nn.ModuleList([Attention(dim, heads) for _ in range(n_memories)])
        self.gates = nn.ModuleList([nn.Linear(2 * dim, dim) for _ in range(n_memories)])
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, memories: list[torch.Tensor], valid: torch.Tensor | None) -> torch.Tensor:
        x = self.self_attn(x, causal=True)
        q = self.norm_q(x)
        mixed = 0
        for attn, gate, memory in zip(self.cross, self.gates, memories):
            c = attn(q, self.norm_kv(memory), valid)  # (B, T, D)
            mixed = mixed + torch.sigmoid(gate(torch.cat([q, c], -1))) * c
        x = x + mixed / math.sqrt(len(memories))
        return x + self.mlp(self.norm_mlp(x))


class CaptionDecoder(nn.Module):
    """ids (B, T) + encoder memories -> logits (B, T, V) for the next token at every position."""

    def __init__(self, kind: str, vocab_size: int, dim: int, depth: int, heads: int, max_len: int,
                 n_memories: int = 1, mlp_ratio: float = 4.0):
        super().__init__()
        if kind not in DECODER_KINDS:
            raise ValueError(f"decoder kind '{kind}': known kinds are {', '.join(DECODER_KINDS)}")
        self.embed = nn.Embedding(vocab_size, dim)
        nn.init.normal_(self.embed.weight, std=dim**-0.5)
        self.register_buffer("pos", position_table(dim, (max_len,)), persistent=False)  # (max_len, D)
        self.layers = nn.ModuleList(
            [DecoderLayer(dim, heads, mlp_ratio) if kind == "transformer" else MeshedDecoderLayer(dim, heads, n_memories, mlp_ratio)
             for _ in range(depth)]
        )
        self.norm = nn.LayerNorm(dim)
        self.max_len = max_len

    def forward(self, ids: torch.Tensor, memories: list[torch.Tensor], valid: torch.Tensor | None = None) -> torch.Tensor:
        T = ids.shape[1]
        if T > self.max_len:
            raise ValueError(f"{T} tokens is over the decoder's max_len {self.max_len}")
        x = self.embed(ids) * math.sqrt(self.embed.embedding_dim) + self.pos[:T]  # (B, T, D)
        for layer in self.layers:
            x = layer(x, memories, valid)
        return self.norm(x) @ self.embed.weight.T  # tied output projection: (B, T, V)
