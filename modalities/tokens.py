"""Token embeddings: raw inputs -> positioned tokens (B, N, D) for the encoders.

Images and audio spectrograms are both 2-D grids cut into patches by timm's `PatchEmbed`;
video is a 3-D grid cut into tubelets (V-JEPA); text is a token-id lookup. Positions are fixed sin-cos so the predictor can rebuild them at
its own width for any masked position.
"""

from __future__ import annotations

import torch
from timm.layers import PatchEmbed
from torch import nn

from .positions import position_table, sincos_2d
from .resize import resized_patches


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

    def scaled_grid(self, scale: float) -> tuple[int, int]:
        """The token grid of the input resized by `scale` per side (an error where a side would not
        be a whole number of patches)."""
        (H, W), (ph, pw) = self.grid, self.proj.patch_size
        return resized_patches(H * ph, ph, scale), resized_patches(W * pw, pw, scale)

    def forward(self, x: torch.Tensor, scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor | None]:
        """scale < 1: CLIPA's resized input. The input is resized by `scale` per side (bilinear, with
        antialiasing) into fewer patches, each placed at its centre's position on the full grid."""
        if x.dim() == 3:  # (B, mel, time) spectrogram without a channel axis
            x = x.unsqueeze(1)
        if scale == 1.0:
            return self.proj(x) + self.pos, None  # (B, N, D), no padding
        grid = self.scaled_grid(scale)
        ph, pw = self.proj.patch_size
        x = nn.functional.interpolate(x, size=(grid[0] * ph, grid[1] * pw), mode="bilinear",
                                      align_corners=False, antialias=True)
        h = self.proj.norm(self.proj.proj(x).flatten(2).transpose(1, 2))  # (B, h*w, D)
        pos = sincos_2d(h.shape[-1], grid, extent=self.grid).to(h.device, h.dtype)  # (h*w, D)
        return h + pos, None


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


def inflate_kernel(w: torch.Tensor, tubelet: int) -> torch.Tensor:
    """(D, C, p, p) -> (D, C, t, p, p): an image patch kernel repeated over a tubelet's frames and
    divided by their number (I3D's inflation), so a still clip gives each step the image's features."""
    return w.unsqueeze(2).repeat(1, 1, tubelet, 1, 1) / tubelet


class TubeletTokens(nn.Module):
    """(B, C, T, H, W) video -> (B, N, D) tubelet tokens + 3-D positions (V-JEPA's `PatchEmbed3D`:
    one Conv3d over `tubelet` frames x `patch` x `patch` pixels). Tokens are numbered time-major:
    every tubelet of the first frames, row by row, then the next."""

    def __init__(self, input_size: tuple[int, int, int], tubelet: int, patch: int, in_chans: int, dim: int):
        super().__init__()
        T, H, W = (int(v) for v in input_size)
        if T % tubelet or H % patch or W % patch:
            raise ValueError(f"input_size={input_size}: frames must be a multiple of tubelet={tubelet}, "
                             f"height and width of patch={patch}")
        self.proj = nn.Conv3d(in_chans, dim, kernel_size=(tubelet, patch, patch), stride=(tubelet, patch, patch))
        self.grid: tuple[int, ...] = (T // tubelet, H // patch, W // patch)
        self.register_buffer("pos", position_table(dim, self.grid), persistent=False)  # (N, D)

    @property
    def num_tokens(self) -> int:
        return self.pos.shape[0]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.proj(x).flatten(2).transpose(1, 2) + self.pos, None  # (B, N, D), no padding

    @torch.no_grad()
    def inflate_from(self, patch_weight: torch.Tensor, patch_bias: torch.Tensor | None = None) -> None:
        """Start from an image tower's patch embedding (D, C, p, p), as I3D / V-JEPA 2 inflate one:
        the kernel repeated over the tubelet's frames and divided by their number, so a video of one
        still frame gets, at every time, the tokens the image model gives that frame."""
        w = self.proj.weight  # (D, C, t, p, p)
        if patch_weight.shape != (w.shape[0], w.shape[1], w.shape[3], w.shape[4]):
            raise ValueError(f"patch embedding of shape {tuple(patch_weight.shape)} cannot inflate into "
                             f"{tuple(w.shape)}: widths, colours and patch sizes must match")
        w.copy_(inflate_kernel(patch_weight, w.shape[2]))
        if patch_bias is not None and self.proj.bias is not None:
            self.proj.bias.copy_(patch_bias)
