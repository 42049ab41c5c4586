"""The selective scan of Mamba-2 (state-space duality, SSD): a pure-PyTorch chunked scan, and
mamba-ssm's fused kernel on CUDA when it imports.

The recurrence, per head h, with a scalar decay per step (Mamba-2's restriction of Mamba's A):

    state_t = exp(dt_t * A_h) * state_{t-1} + dt_t * x_t B_t^T        (P, N)
    y_t     = state_t C_t                                               (P,)

`ssd_scan` computes it in chunks of `chunk` steps: inside a chunk as one masked matrix product
(the "quadratic" form, which runs on matmuls), between chunks as a short recurrence over the chunk
states. It ports `ssd_minimal_discrete` of state-spaces/mamba (Apache-2.0), written with plain
torch ops. `naive_scan` is the loop above, the reference the tests compare against. A step with
dt = 0 leaves the state untouched and adds nothing: that is how padding is kept out of the state.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)
_kernel: object = None  # mamba-ssm's mamba_chunk_scan_combined, False once it failed to import


def segsum(a: torch.Tensor) -> torch.Tensor:
    """(..., T) -> (..., T, T): out[..., l, s] = a[s+1] + ... + a[l] for s <= l, -inf above the
    diagonal. Summed from masked copies, not as differences of cumulative sums, so it stays exact
    when those grow large (as state-spaces/mamba's `segsum`)."""
    T = a.shape[-1]
    x = a[..., :, None].expand(*a.shape, T)  # x[..., i, s] = a[i]
    strict = torch.ones(T, T, dtype=torch.bool, device=a.device).tril(-1)  # i > s
    x = x.masked_fill(~strict, 0).cumsum(-2)  # [l, s] = sum of a[i] for s < i <= l
    return x.masked_fill(~torch.ones(T, T, dtype=torch.bool, device=a.device).tril(), float("-inf"))


def ssd_scan(x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
             chunk: int = 64) -> torch.Tensor:
    """x (b, L, H, P), dt (b, L, H) >= 0, A (H,) < 0, B and C (b, L, N) -> y (b, L, H, P), in float32 (or float64)"""
    if x.is_cuda and _cuda_kernel() is not None:
        return _cuda_kernel()(x, dt, A, B.unsqueeze(2), C.unsqueeze(2), chunk_size=chunk)
    with torch.autocast(x.device.type, enabled=False):
        dtype = torch.promote_types(x.dtype, torch.float32)  # half precision is not enough for the decays
        x, dt, A, B, C = (t.to(dtype) for t in (x, dt, A, B, C))
        b, L, H, P = x.shape
        T = max(1, min(chunk, L))
        pad = (-L) % T
        if pad:  # dt = 0 on the padding: it neither decays nor feeds the state
            x, dt, B, C = (F.pad(t, (0, 0) * (t.dim() - 2) + (0, pad)) for t in (x, dt, B, C))
        c = (L + pad) // T
        xd = (x * dt[..., None]).view(b, c, T, H, P)
        a = (dt * A).view(b, c, T, H).permute(0, 3, 1, 2)  # (b, H, c, T) log-decays
        B, C = B.view(b, c, T, -1), C.view(b, c, T, -1)  # (b, c, T, N)
        acs = a.cumsum(-1)  # (b, H, c, T)
        # 1. inside each chunk: y_l = sum_{s<=l} (C_l . B_s) exp(a_{s+1} + ... + a_l) dt_s x_s
        decay = torch.exp(segsum(a))  # (b, H, c, T, T)
        scores = torch.einsum("bcln,bcsn->bcls", C, B)  # (b, c, T, T)
        y = torch.einsum("bcls,bhcls,bcshp->bclhp", scores, decay, xd)
        # 2. the state each chunk leaves behind, from its own steps
        states = torch.einsum("bcsn,bhcs,bcshp->bchpn", B, torch.exp(acs[..., -1:] - acs), xd)
        # 3. the state entering each chunk: a recurrence over the c chunk states
        states = torch.cat([torch.zeros_like(states[:, :1]), states], 1)  # (b, c+1, H, P, N)
        carry = torch.exp(segsum(F.pad(acs[..., -1], (1, 0))))  # (b, H, c+1, c+1)
        entering = torch.einsum("bhzc,bchpn->bzhpn", carry, states)[:, :-1]  # (b, c, H, P, N)
        # 4. what the entering state adds to each step's output
        y = y + torch.einsum("bcln,bchpn,bhcl->bclhp", C, entering, torch.exp(acs))
        return y.reshape(b, c * T, H, P)[:, :L]


def naive_scan(x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
    """The recurrence step by step (the reference for tests): same arguments as `ssd_scan`."""
    b, L, H, P = x.shape
    state = x.new_zeros(b, H, P, B.shape[-1])
    ys = []
    for t in range(L):
        state = torch.exp(dt[:, t] * A)[..., None, None] * state \
            + (dt[:, t, :, None] * x[:, t])[..., None] * B[:, t, None, None, :]
        ys.append(torch.einsum("bhpn,bn->bhp", state, C[:, t]))
    return torch.stack(ys, 1)


def _cuda_kernel():
    """mamba-ssm's fused chunked scan, or None (with a one-line notice, once) when it does not import."""
    global _kernel
    if _kernel is None:
        try:
            from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined

            _kernel = mamba_chunk_scan_combined
        except Exception as e:  # not installed, or built for another torch/CUDA
            log.warning("mamba-ssm's CUDA scan is not available (%s: %s); using the pure-PyTorch scan",
                        type(e).__name__, str(e).splitlines()[0] if str(e) else "")
            _kernel = False
    return _kernel or None
