"""Token embeddings: raw inputs -> positioned tokens (B, N, D) for the encoders.

Images and audio spectrograms are both 2-D grids cut into patches by timm's `PatchEmbed`;
text is a token-id lookup. Positions are fixed sin-cos so the predictor can rebuild them at
its own width for any masked position.
"""

from __future__ import annotations

import torch
from timm.layers import PatchEmbed
from torch import nn

from .positions import position_table


class PatchTokens(nn.Module):
    """(B, C, H, W) image or (B, 1, mel, time) spectrogram -> (B, N, D) patch tokens + positions.

    Tokens are numbered row by row. `scan="columns"` gives a scanning encoder (Mamba) the column-
    by-column order instead (`scan_rank`): on a spectrogram, time order."""

    def __init__(self, input_size: tuple[int, int], patch: int | tuple[int, int], in_chans: int, dim: int,
                 scan: str = "rows"):
        super().__init__()
        self.proj = PatchEmbed(img_size=input_size, patch_size=patch, in_chans=in_chans, embed_dim=dim)
        self.grid: tuple[int, ...] = tuple(self.proj.grid_size)
        self.register_buffer("pos", position_table(dim, self.grid), persistent=False)  # (N, D)
        if scan not in ("rows", "columns"):
            raise ValueError(f"scan='{scan}': give 'rows' or 'columns'")
        H, W = self.grid
        i = torch.arange(H * W)
        self.register_buffer("scan_rank", (i % W) * H + i // W if scan == "columns" else None, persistent=False)  # (N,)

    @property
    def num_tokens(self) -> int:
        return self.pos.shape[0]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if x.dim() == 3:  # (B, mel, time) spectrogram without a channel axis
            x = x.unsqueeze(1)
        return self.proj(x) + self.pos, None  # (B, N, D), no padding


class TextTokens(nn.Module):
    """(B, L) token ids (0 = padding) -> (B, L, D) embeddings + positions, and the (B, L) valid mask."""

    def __init__(self, vocab_size: int, max_len: int, dim: int, pad_id: int = 0):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, dim)
        self.pad_id = pad_id
        self.grid: tuple[int, ...] = (max_len,)
        self.register_buffer("pos", position_table(dim, self.grid), persistent=False)  # (L, D)
        nn.init.normal_(self.embed.weight, std=1.0)  # on the scale of the sin-cos positions

    @property
    def num_tokens(self) -> int:
        return self.pos.shape[0]

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.embed(ids) + self.pos[: ids.shape[1]], ids != self.pad_id
