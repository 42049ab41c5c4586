"""The selective scan of Mamba-2 (state-space duality, SSD): a pure-PyTorch chunked scan, and
mamba-ssm's fused kernel on CUDA when it imports.

The recurrence, per head h, with a scalar decay per step (Mamba-2's restriction of Mamba's A):

    state_t = exp(dt_t * A_h) * state_{t-1} + dt_t * x_t B_t^T        (P, N)
    y_t     = state_t C_t                                               (P,)

`ssd_scan` computes it in chunks of `chunk` steps: inside a chunk as one masked matrix product
(the "quadratic" form, which runs on matmuls), between chunks as a short recurrence over the chunk
states, as `ssd_minimal_discrete` of state-spaces/mamba (Apache-2.0) does, written here with plain
matmuls in the (batch, chunk, step, head, channel) layout so that nothing is transposed. Inside a
chunk the decay exp(acs_l - acs_s) between steps s <= l is taken as exp(acs_l) * exp(-acs_s) when
the chunk's log-decay fits in float32 (one (T, T) product serves every head); a chunk that decays
more steeply takes the per-head differences. `naive_scan` is the loop above, the reference the
tests compare against. A step with dt = 0 leaves the state untouched and adds nothing: that is how
padding is kept out of the state.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)
FACTORED_DECAY_LIMIT = 60.0  # chunks whose log-decay stays above -this take the one-product path
_kernel: object = None  # mamba-ssm's mamba_chunk_scan_combined, False once it failed to import


def ssd_scan(x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
             chunk: int = 32) -> torch.Tensor:
    """x (b, L, H, P), dt (b, L, H) >= 0, A (G, H) < 0, B and C (b, L, N) -> y (b, L, H, P), in float32
    (or float64). The batch is G groups of b / G rows, group g decaying by A[g] (a bidirectional
    layer scans both directions as one batch); A (H,) is one group."""
    A = A.reshape(-1, A.shape[-1])  # (G, H)
    G = A.shape[0]
    if x.is_cuda and (kernel := _cuda_kernel()) is not None:
        return torch.cat([kernel(xg, dtg, Ag, Bg.unsqueeze(2), Cg.unsqueeze(2), chunk_size=chunk)
                          for xg, dtg, Ag, Bg, Cg in zip(x.chunk(G), dt.chunk(G), A, B.chunk(G), C.chunk(G))])
    with torch.autocast(x.device.type, enabled=False):
        dtype = torch.promote_types(x.dtype, torch.float32)  # half precision is not enough for the decays
        x, dt, A, B, C = (t.to(dtype) for t in (x, dt, A, B, C))
        b, L, H, P = x.shape
        N = B.shape[-1]
        T = max(1, min(chunk, L))
        pad = (-L) % T
        if pad:  # dt = 0 on the padding: it neither decays nor feeds the state
            x, dt, B, C = (F.pad(t, (0, 0) * (t.dim() - 2) + (0, pad)) for t in (x, dt, B, C))
        c = (L + pad) // T
        xd = (x * dt[..., None]).view(b, c, T, H, P)
        acs = (dt.view(G, b // G, -1, H) * A[:, None, None]).view(b, c, T, H).cumsum(2)  # log-decay so far in the chunk
        B, C = B.view(b, c, T, N), C.view(b, c, T, N)
        scores = C @ B.transpose(-1, -2)  # (b, c, T, T): C_l . B_s
        causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
        # 1. inside each chunk: y_l = sum_{s<=l} (C_l . B_s) exp(acs_l - acs_s) dt_s x_s
        if float(acs[:, :, -1].min().detach()) > -FACTORED_DECAY_LIMIT:  # exp(acs_l) exp(-acs_s) fits: one product for all heads
            y = scores.masked_fill_(~causal, 0) @ (xd * torch.exp(-acs)[..., None]).view(b, c, T, H * P)
            y = y.view(b, c, T, H, P) * acs.exp()[..., None]
        else:  # steep decays: a (T, T) decay per head, from differences (as mamba-ssm's kernels take them)
            per_head = acs.transpose(2, 3)  # (b, c, H, T)
            decay = (per_head[..., :, None] - per_head[..., None, :]).masked_fill_(~causal, float("-inf")).exp_()
            y = ((scores[:, :, None] * decay) @ xd.transpose(2, 3)).transpose(2, 3)  # (b, c, T, H, P)
        # 2. the state each chunk leaves behind, from its own steps: (b, c, H*P, N)
        states = (xd * torch.exp(acs[:, :, -1:] - acs)[..., None]).view(b, c, T, H * P).transpose(-1, -2) @ B
        # 3. the state entering chunk k: sum over j < k of exp(log-decay of chunks j+1..k-1) states_j
        ends = acs[:, :, -1].cumsum(1)  # (b, c, H): log-decay from the start to each chunk's end
        before = ends - acs[:, :, -1]  # ... to each chunk's start
        strict = torch.ones(c, c, dtype=torch.bool, device=x.device).tril(-1)[..., None]  # (k, j, 1): j < k
        carry = (before[:, :, None] - ends[:, None]).masked_fill_(~strict, float("-inf")).exp_()  # (b, k, j, H)
        entering = torch.einsum("bkjh,bjhq->bkhq", carry, states.view(b, c, H, P * N))  # (b, c, H, P*N)
        # 4. what the entering state adds to each step's output
        y = y + (C @ entering.reshape(b, c, H * P, N).transpose(-1, -2)).view(b, c, T, H, P) * acs.exp()[..., None]
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
