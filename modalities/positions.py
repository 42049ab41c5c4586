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


def sincos_2d(dim: int, grid: tuple[int, int]) -> torch.Tensor:
    """(H, W) grid -> (H*W, dim), row-major; half the channels encode the row, half the column."""
    assert dim % 4 == 0, "2-D sin-cos embedding needs a dimension divisible by 4"
    h, w = grid
    rows = torch.arange(h).repeat_interleave(w)
    cols = torch.arange(w).repeat(h)
    return torch.cat([sincos_1d(dim // 2, rows), sincos_1d(dim // 2, cols)], dim=1)


def position_table(dim: int, grid: tuple[int, ...]) -> torch.Tensor:
    """Sin-cos table for a 1-D (length,) or 2-D (H, W) token layout: (N, dim)."""
    if len(grid) == 1:
        return sincos_1d(dim, torch.arange(grid[0]))
    return sincos_2d(dim, grid)  # type: ignore[arg-type]
