"""Fixed sin-cos position embeddings (as MAE / I-JEPA): no parameters, any grid size."""

from __future__ import annotations

import torch


def sincos_1d(dim: int, positions: torch.Tensor) -> torch.Tensor:
    """positions (N,) -> (N, dim)."""
    assert dim % 2 == 0, "sin-cos embedding needs an even dimension"
    omega = torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0)
    omega = 1.0 / 10000**omega  # (dim/2,)
    out = positions.double()[:, None] * omega[None]  # (N, dim/2)
    return torch.cat([out.sin(), out.cos()], dim=1).float()


def sincos_2d(dim: int, grid: tuple[int, int], extent: tuple[int, int] | None = None) -> torch.Tensor:
    """(H, W) grid -> (H*W, dim), row-major; half the channels encode the row, half the column.
    extent: the (H0, W0) grid the positions are measured in, for a grid of the same input resized
    (CLIPA's smaller binding input): each patch sits at its centre's place on that grid, a fraction
    where the sizes differ, so a resized input's tokens keep the positions of what they show."""
    assert dim % 4 == 0, "2-D sin-cos embedding needs a dimension divisible by 4"
    h, w = grid
    H, W = extent or grid
    rows = ((torch.arange(h, dtype=torch.float64) + 0.5) * H / h - 0.5).repeat_interleave(w)
    cols = ((torch.arange(w, dtype=torch.float64) + 0.5) * W / w - 0.5).repeat(h)
    return torch.cat([sincos_1d(dim // 2, rows), sincos_1d(dim // 2, cols)], dim=1)


def sincos_3d(dim: int, grid: tuple[int, int, int]) -> torch.Tensor:
    """(T, H, W) grid -> (T*H*W, dim), time-major (then row, then column); half the channels encode
    the time, a quarter the row, a quarter the column, as V-JEPA's `get_3d_sincos_pos_embed`."""
    assert dim % 8 == 0, "3-D sin-cos embedding needs a dimension divisible by 8"
    t, h, w = grid
    times = torch.arange(t).repeat_interleave(h * w)
    rows = torch.arange(h).repeat_interleave(w).repeat(t)
    cols = torch.arange(w).repeat(t * h)
    return torch.cat([sincos_1d(dim // 2, times), sincos_1d(dim // 4, rows), sincos_1d(dim // 4, cols)], dim=1)


def position_table(dim: int, grid: tuple[int, ...]) -> torch.Tensor:
    """Sin-cos table for a 1-D (length,), 2-D (H, W) or 3-D (T, H, W) token layout: (N, dim)."""
    if len(grid) == 1:
        return sincos_1d(dim, torch.arange(grid[0]))
    if len(grid) == 3:
        return sincos_3d(dim, grid)  # type: ignore[arg-type]
    return sincos_2d(dim, grid)  # type: ignore[arg-type]
