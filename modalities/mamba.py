"""A bidirectional Mamba block: a selective state-space layer scanned forward and backward.

Mamba-2's mixer (Dao & Gu 2024: input projection, short causal depthwise convolution, the SSD
scan of `ssm.py`, a gated RMS norm, output projection), made bidirectional as Vision Mamba (Vim)
does for non-causal inputs: the input and output projections are shared, and each direction has
its own convolution, step sizes, decays and skip, the backward one running over the reversed
sequence; the two outputs are averaged. Like Mamba's blocks it has no MLP: a block is
`x + mixer(norm(x))`, and its forward takes timm `Block`'s `attn_mask` so that the encoder calls
every kind of block alike.

Padding (invalid tokens) is kept out of the state: their inputs are zeroed before the convolution
and their step size is 0, so a state passes over them unchanged. With padding at the end of a
sequence (as the encoders lay it out) the valid tokens' outputs are exactly those without it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .ssm import ssd_scan


class CausalDepthwiseConv(torch.autograd.Function):
    """(B, L, C) -> (B, L, C): out_t = bias + sum_i weight[:, i] x_{t-(k-1-i)} (weight[:, -1] weighs
    the current step). Forward and both gradients are each one grouped `conv1d`: autograd's own
    backward of a depthwise conv1d is several times slower on CPU."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        C, k = weight.shape
        L = x.shape[1]
        ctx.save_for_backward(x, weight)
        return F.conv1d(x.transpose(1, 2), weight[:, None], bias, padding=k - 1, groups=C)[..., :L].transpose(1, 2)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x_in, w_in = ctx.saved_tensors
        (B, L, C), k = x_in.shape, w_in.shape[1]
        dtype = torch.promote_types(grad.dtype, x_in.dtype)  # under autocast the gradient may be bf16
        x, weight, g = x_in.to(dtype), w_in.to(dtype), grad.to(dtype).transpose(1, 2)  # g: (B, C, L)
        # d x_s = sum_j weight[k-1-j] g_{s+j}: the same convolution, anti-causal, weights reversed
        grad_x = F.conv1d(F.pad(g, (0, k - 1)), weight.flip(1)[:, None], groups=C).transpose(1, 2)
        # d weight[i] = sum_{b,t} g_t x_{t-(k-1-i)}: each (row, channel) correlated with its own gradient
        xp = F.pad(x.transpose(1, 2), (k - 1, 0)).reshape(1, B * C, L + k - 1)
        grad_w = F.conv1d(xp, g.reshape(B * C, 1, L), groups=B * C).view(B, C, k).sum(0)
        return grad_x.to(x_in.dtype), grad_w.to(w_in.dtype), g.sum((0, 2)).to(w_in.dtype)


class BiMambaMixer(nn.Module):
    def __init__(self, dim: int, state: int = 16, expand: int = 2, head_dim: int = 32, conv: int = 4,
                 chunk: int = 32):
        super().__init__()
        inner = expand * dim
        if inner % head_dim:
            raise ValueError(f"expand * width = {inner} must be a multiple of head_dim={head_dim}")
        self.inner, self.state, self.heads, self.head_dim, self.chunk = inner, state, inner // head_dim, head_dim, chunk
        self.conv_dim = inner + 2 * state  # x, B, C go through the convolution
        self.in_proj = nn.Linear(dim, inner + 2 * (self.conv_dim + self.heads), bias=False)  # z, then per direction x B C dt
        # a causal depthwise convolution over both directions' channels (forward first, then backward),
        # initialised as nn.Conv1d; conv_weight[:, -1] weighs the current step
        bound = 1 / math.sqrt(conv)
        self.conv_weight = nn.Parameter(torch.empty(2 * self.conv_dim, conv).uniform_(-bound, bound))
        self.conv_bias = nn.Parameter(torch.empty(2 * self.conv_dim).uniform_(-bound, bound))
        # Mamba-2's initialisation: decays A in [1, 16], step sizes dt in [1e-3, 1e-1] (log-uniform)
        self.A_log = nn.Parameter(torch.log(torch.empty(2, self.heads).uniform_(1, 16)))
        dt = torch.exp(torch.empty(2, self.heads).uniform_(math.log(1e-3), math.log(1e-1)))
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))  # softplus^-1(dt)
        self.D = nn.Parameter(torch.ones(2, self.heads))
        self.norm = nn.RMSNorm(inner)
        self.out_proj = nn.Linear(inner, dim, bias=False)

    def no_weight_decay(self) -> set[str]:
        """Decays, step sizes and skips are not shrunk toward 0 (Mamba's `_no_weight_decay`)."""
        return {"A_log", "dt_bias", "D"}

    def _conv(self, x: torch.Tensor) -> torch.Tensor:
        """Causal depthwise convolution of (B, L, C)."""
        return CausalDepthwiseConv.apply(x, self.conv_weight.to(x.dtype), self.conv_bias.to(x.dtype))

    def forward(self, u: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """u (B, L, D), valid (B, L) bool or None -> (B, L, D). Both directions run as one batch:
        the backward one over the reversed sequence, with its own convolution channels and A, dt, D."""
        b, L, _ = u.shape
        z, fwd, bwd = self.in_proj(u).split([self.inner, self.conv_dim + self.heads, self.conv_dim + self.heads], -1)
        both = torch.cat([fwd, bwd.flip(1)], -1)  # (B, L, 2 (conv_dim + H))
        xbc_f, dt_f, xbc_b, dt_b = both.split([self.conv_dim, self.heads] * 2, -1)
        if valid is not None:  # padding feeds nothing into the convolution
            vf, vb = valid[..., None].to(u.dtype), valid.flip(1)[..., None].to(u.dtype)  # (B, L, 1)
            xbc_f, xbc_b = xbc_f * vf, xbc_b * vb
        xbc, dt = torch.cat([xbc_f, xbc_b], -1), torch.cat([dt_f, dt_b], 0)  # (B, L, 2 conv_dim), (2B, L, H)
        xbc = F.silu(self._conv(xbc))  # (B, L, 2 conv_dim)
        xbc = torch.cat(xbc.chunk(2, -1), 0)  # (2B, L, conv_dim): the two directions as one batch
        x, B, C = xbc.split([self.inner, self.state, self.state], -1)
        dt = F.softplus(dt + self.dt_bias.repeat_interleave(b, 0)[:, None])  # (2B, L, H)
        if valid is not None:  # ... nor into the state: a step of size 0
            dt = dt * torch.cat([vf, vb], 0)
        x = x.reshape(2 * b, L, self.heads, self.head_dim)  # (2B, L, H, P)
        y = ssd_scan(x, dt, -torch.exp(self.A_log.float()), B, C, self.chunk).to(x.dtype)
        y = y + self.D.repeat_interleave(b, 0)[:, None, :, None].to(x.dtype) * x
        y_f, y_b = y.reshape(2 * b, L, self.inner).chunk(2)
        y = (y_f + y_b.flip(1)) / 2 * F.silu(z)
        y = self.norm(y.to(self.norm.weight.dtype)).to(z.dtype)  # gated RMS norm as Mamba-2 (after the gate), not in bf16
        return self.out_proj(y)


class MambaBlock(nn.Module):
    """x + BiMambaMixer(LayerNorm(x)), called as timm's `Block`: forward(x, attn_mask=None), where
    attn_mask (B, 1, 1, L) bool marks the valid tokens."""

    def __init__(self, dim: int, state: int = 16, expand: int = 2, head_dim: int = 32, conv: int = 4,
                 chunk: int = 32):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.mixer = BiMambaMixer(dim, state, expand, head_dim, conv, chunk)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        valid = None if attn_mask is None else attn_mask.reshape(attn_mask.shape[0], -1)  # (B, L)
        return x + self.mixer(self.norm(x), valid)
