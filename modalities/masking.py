"""JEPA maskers: they run in the data collator and return index tensors the model gathers with.

Recipe after I-JEPA (facebookresearch/ijepa, src/masks/multiblock.py): block sizes are drawn once
per batch, positions once per row; rows are then cut to the batch's smallest context / target so
they stack. Unlike I-JEPA we cut the context by dropping a random subset (not the tail), draw
scale and aspect independently, keep a block's area when one side hits the grid edge, and never
return overlapping or empty masks. Only the passed generator is used, so a seed fixes the masks.
"""

from __future__ import annotations

import math

import torch

from modalities.errors import DataError

__all__ = ["MultiBlockMasker", "SpanMasker"]


def _check_range(name: str, rng: tuple[float, float], lo: float, hi: float) -> tuple[float, float]:
    a, b = float(rng[0]), float(rng[1])
    if not (lo <= a <= b <= hi) or a <= 0:
        raise ValueError(f"{name}={rng!r}: need 0 < low <= high <= {hi}")
    return a, b


def _uniform(u, rng: tuple[float, float]):
    """Map u in [0, 1) (a float or a tensor) onto the range."""
    return rng[0] + u * (rng[1] - rng[0])


def _pick(mask: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """Sorted indices of `n` True entries per row of `mask` (R, N); a random subset where a row has more."""
    if bool((mask.sum(1) == n).all()):
        return mask.nonzero()[:, 1].view(mask.shape[0], n)  # nonzero is row-major: sorted
    keys = torch.rand(mask.shape, generator=generator).masked_fill_(~mask, 2.0)  # (R, N)
    return keys.topk(n, dim=1, largest=False).indices.sort(dim=1).values  # (R, n)


def _context(ctx: torch.Tensor, pad: bool, generator: torch.Generator) -> torch.Tensor:
    """Context indices from a (B, N) keep-mask: cut to the batch minimum (I-JEPA), or with
    `pad`, every kept token, sorted, with -1 after the row's last one up to the batch maximum
    (the model masks those out, so short rows lose nothing)."""
    if not pad:
        return _pick(ctx, int(ctx.sum(1).min()), generator)
    n = ctx.shape[1]
    idx = torch.where(ctx, torch.arange(n), n).sort(1).values[:, : int(ctx.sum(1).max())]
    return idx.masked_fill(idx == n, -1)


class MultiBlockMasker:
    """I-JEPA multi-block masking on a (H, W) token grid.

    Targets: `num_targets` blocks (they may overlap each other). Context: one block of
    `context_scale` (aspect 1.0) minus the union of the targets, with at least
    min(min_keep, H*W - 1) tokens. With probability `full_height_prob` per batch the targets span
    all H rows (time spans on an audio (mel, time) grid).
    """

    def __init__(self, grid: tuple[int, int], num_targets: int = 4,
                 target_scale: tuple[float, float] = (0.15, 0.2),
                 target_aspect: tuple[float, float] = (0.75, 1.5),
                 context_scale: tuple[float, float] = (0.85, 1.0),
                 min_keep: int = 4, full_height_prob: float = 0.0, max_tries: int = 50,
                 pad_context: bool = False):
        self.H, self.W = int(grid[0]), int(grid[1])
        if self.H < 1 or self.W < 1 or self.H * self.W < 2:
            raise ValueError(f"grid={grid!r}: need at least 2 tokens (one target, one context)")
        if num_targets < 1:
            raise ValueError(f"num_targets={num_targets}: need at least 1")
        if min_keep < 1:
            raise ValueError(f"min_keep={min_keep}: need at least 1 context token")
        if not 0.0 <= full_height_prob <= 1.0:
            raise ValueError(f"full_height_prob={full_height_prob}: need a probability in [0, 1]")
        if max_tries < 1:
            raise ValueError(f"max_tries={max_tries}: need at least 1")
        self.num_targets = int(num_targets)
        self.target_scale = _check_range("target_scale", target_scale, 0.0, 1.0)
        self.target_aspect = _check_range("target_aspect", target_aspect, 0.0, math.inf)
        self.context_scale = _check_range("context_scale", context_scale, 0.0, 1.0)
        self.min_keep = min(int(min_keep), self.H * self.W - 1)
        self.full_height_prob = float(full_height_prob)
        self.max_tries = int(max_tries)
        self.pad_context = pad_context

    def _block_size(self, scale: float, aspect: float) -> tuple[int, int]:
        """(h, w) with h*w ~ scale*H*W and h/w ~ aspect; a side cut by the grid widens the other."""
        H, W = self.H, self.W
        n = scale * H * W
        h, w = round(math.sqrt(n * aspect)), round(math.sqrt(n / aspect))
        if h > H:
            h, w = H, round(n / H)
        if w > W:
            h, w = min(H, round(n / W)), W
        return max(1, min(h, H)), max(1, min(w, W))

    def _blocks(self, shape: tuple[int, int], h: int, w: int, generator: torch.Generator) -> torch.Tensor:
        """Random (h, w) blocks at `shape` = (R, K) positions, as flat boolean masks."""
        H, W = self.H, self.W
        top = torch.randint(0, H - h + 1, shape, generator=generator)  # (R, K)
        left = torch.randint(0, W - w + 1, shape, generator=generator)
        r, c = torch.arange(H), torch.arange(W)
        in_r = (r >= top[..., None]) & (r < top[..., None] + h)  # (R, K, H)
        in_c = (c >= left[..., None]) & (c < left[..., None] + w)  # (R, K, W)
        return (in_r[..., :, None] & in_c[..., None, :]).flatten(-2)  # (R, K, H*W)

    def __call__(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (context (B, Nc) int64, targets (B, K, Nt) int64) of flat token indices (row-major, index = r * W + c)."""
        B, K, H, W = int(batch_size), self.num_targets, self.H, self.W
        if B < 1:
            raise ValueError(f"batch_size={batch_size}: need at least 1")
        u = torch.rand(4, generator=generator).tolist()
        full = u[0] < self.full_height_prob
        t_scale = _uniform(u[1], self.target_scale)
        if full:  # time span across every mel row: width = scale * H * W / H
            th, tw = H, max(1, min(W, round(t_scale * W)))
        else:
            th, tw = self._block_size(t_scale, _uniform(u[2], self.target_aspect))
        cap = H * W - self.min_keep  # so the fallback below (one block) always leaves min_keep
        while th * tw > cap:
            if (full or tw >= th) and tw > 1:
                tw -= 1
            else:
                th -= 1
        ch, cw = self._block_size(_uniform(u[3], self.context_scale), 1.0)

        tgt = torch.empty(B, K, H * W, dtype=torch.bool)  # (B, K, N)
        ctx = torch.empty(B, H * W, dtype=torch.bool)  # (B, N)
        todo = torch.ones(B, dtype=torch.bool)
        for _ in range(self.max_tries):
            n = int(todo.sum())
            t = self._blocks((n, K), th, tw, generator)
            tgt[todo] = t
            ctx[todo] = self._blocks((n, 1), ch, cw, generator)[:, 0] & ~t.any(1)
            todo = ctx.sum(1) < self.min_keep
            if not bool(todo.any()):
                break
        if bool(todo.any()):  # rare: stack all targets on the first block, context = everything else
            tgt[todo] = tgt[todo][:, :1].expand(-1, K, -1)
            ctx[todo] = ~tgt[todo][:, 0]

        context = _context(ctx, self.pad_context, generator)  # (B, Nc)
        targets = _pick(tgt.flatten(0, 1), th * tw, generator).view(B, K, th * tw)  # (B, K, Nt)
        return context, targets


class SpanMasker:
    """Contiguous-span masking for token sequences of different lengths.

    Per batch each of the `num_targets` spans gets a fraction of target_scale; per row its length
    is max(1, round(frac * len)) and its start is random in 0..len-1. The context is every valid
    token outside the spans (at least min(min_keep, len - 1)). Targets are cut to the batch's
    shortest span by a random contiguous window, so every returned target stays a contiguous run.
    """

    max_tries = 50

    def __init__(self, num_targets: int = 2, target_scale: tuple[float, float] = (0.15, 0.25),
                 min_keep: int = 1, pad_context: bool = False):
        if num_targets < 1:
            raise ValueError(f"num_targets={num_targets}: need at least 1")
        if min_keep < 1:
            raise ValueError(f"min_keep={min_keep}: need at least 1 context token")
        self.num_targets = int(num_targets)
        self.target_scale = _check_range("target_scale", target_scale, 0.0, 1.0)
        self.min_keep = int(min_keep)
        self.pad_context = pad_context

    def __call__(self, lengths: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """lengths (B,) int: valid tokens of each row are positions 0..len-1. Returns (context (B, Nc), targets (B, K, Nt))."""
        lengths = torch.as_tensor(lengths)
        if lengths.ndim != 1 or lengths.numel() == 0 or lengths.is_floating_point():
            raise DataError(f"SpanMasker: lengths must be a non-empty 1-D integer tensor, got shape "
                            f"{tuple(lengths.shape)} dtype {lengths.dtype}")
        L = lengths.long().cpu()  # (B,)
        if bool((L < 2).any()):
            row = int((L < 2).nonzero()[0])
            raise DataError(f"SpanMasker: row {row} has {int(L[row])} tokens; masking needs at least 2 "
                            "(one target, one context)")
        B, K = L.numel(), self.num_targets
        keep = (L - 1).clamp(max=self.min_keep)  # (B,) context floor per row
        frac = _uniform(torch.rand(K, generator=generator, dtype=torch.float64), self.target_scale)  # (K,)
        span = (frac[None] * L[:, None]).round().long().clamp(min=1)  # (B, K)
        span = torch.minimum(span, (L - keep)[:, None])  # one span must leave `keep` tokens
        pos = torch.arange(int(L.max()))
        valid = pos < L[:, None]  # (B, Lmax)

        start = torch.empty(B, K, dtype=torch.long)
        ctx = torch.empty_like(valid)
        todo = torch.ones(B, dtype=torch.bool)
        for _ in range(self.max_tries):
            room = (L[todo, None] - span[todo] + 1).double()  # start in 0..len-span
            start[todo] = (torch.rand(room.shape, generator=generator, dtype=torch.float64) * room).long()
            ctx = valid & ~self._spans(pos, start, span).any(1)
            todo = ctx.sum(1) < keep
            if not bool(todo.any()):
                break
        if bool(todo.any()):  # rare: every span starts where the longest one does, so they nest
            longest = start.gather(1, span.argmax(1, keepdim=True))  # (B, 1)
            start = torch.where(todo[:, None], longest.expand(-1, K), start)
            ctx = valid & ~self._spans(pos, start, span).any(1)

        nt = int(span.min())
        context = _context(ctx, self.pad_context, generator)  # (B, Nc)
        shift = (torch.rand(B, K, generator=generator, dtype=torch.float64) * (span - nt + 1)).long()
        targets = (start + shift)[..., None] + torch.arange(nt)  # (B, K, Nt), contiguous window
        return context, targets

    @staticmethod
    def _spans(pos: torch.Tensor, start: torch.Tensor, span: torch.Tensor) -> torch.Tensor:
        return (pos >= start[..., None]) & (pos < (start + span)[..., None])  # (B, K, Lmax)
