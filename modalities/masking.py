"""JEPA maskers: they run in the data collator and return index tensors the model gathers with.

Recipe after I-JEPA (facebookresearch/ijepa, src/masks/multiblock.py): block sizes are drawn once
per batch, positions once per row. Unlike I-JEPA we draw scale and aspect independently, keep a
block's area when one side hits the grid edge, and never return overlapping or empty masks.

Randomness: only the passed `generator` is used, so a seed fixes the masks. It gives the
batch-level draws (block sizes, span fractions) and then one integer `base`; every per-row draw
(positions, random subsets) comes from that row's own generator, seeded from (base, row key).
A row's masks therefore depend only on the generator's state, its key (and for text its own
length), never on the other rows or the batch size: data-parallel ranks that each build part of
a global batch, with the rows' global slots as keys, get the masks one process would have made.
Exception: with `pad_context=False` the context is cut to the batch's smallest (a random subset
of each row's context; I-JEPA's collator keeps the first k indices instead, i.e. the top of the
image, where a random subset keeps all of it represented), which depends on the batch by design; with `pad_context=True`
a row's context is every kept token, sorted, then -1 up to the batch maximum, so it is
rank-independent once the -1 are dropped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from modalities.errors import DataError
from modalities.seeding import mix_seeds

__all__ = ["MultiBlock3DMasker", "MultiBlockMasker", "RandomKeepMasker", "RandomMasker", "SpanMasker", "TubeMask"]

class _RowRandom:
    """One generator per row, seeded from (base, key): a row's draws never depend on the other rows."""

    def __init__(self, base: int, keys: list[int]):
        self.gens = [torch.Generator().manual_seed(s) for s in mix_seeds(base, keys)]

    def rand(self, rows: torch.Tensor | None, k: int) -> torch.Tensor:
        """(R, k) float64 uniforms in [0, 1): the next k draws of each listed row's generator
        (`rows` (R,) row numbers, repeats allowed and drawn in turn; None: every row)."""
        gens = self.gens if rows is None else [self.gens[i] for i in rows.tolist()]
        out = torch.empty(len(gens), k, dtype=torch.float64)
        for row, g in zip(out.unbind(0), gens):
            row.uniform_(generator=g)
        return out


def _row_keys(row_keys, batch_size: int) -> list[int]:
    if row_keys is None:
        return list(range(batch_size))
    keys = [int(k) for k in (row_keys.tolist() if isinstance(row_keys, torch.Tensor) else row_keys)]
    if len(keys) != batch_size:
        raise ValueError(f"row_keys: got {len(keys)} keys for {batch_size} rows")
    return keys


def _check_range(name: str, rng: tuple[float, float], lo: float, hi: float) -> tuple[float, float]:
    a, b = float(rng[0]), float(rng[1])
    if not (lo <= a <= b <= hi) or a <= 0:
        raise ValueError(f"{name}={rng!r}: need 0 < low <= high <= {hi}")
    return a, b


def _uniform(u, rng: tuple[float, float]):
    """Map u in [0, 1) (a float or a tensor) onto the range."""
    return rng[0] + u * (rng[1] - rng[0])


def _pick(mask: torch.Tensor, n: int, rr: _RowRandom) -> torch.Tensor:
    """Sorted indices of `n` True entries per row of `mask` (B, N); a random subset where a row has
    more, chosen by random keys from the row's own generator."""
    if bool((mask.sum(1) == n).all()):
        return mask.nonzero()[:, 1].view(mask.shape[0], n)  # nonzero is row-major: sorted
    keys = rr.rand(None, mask.shape[1]).masked_fill_(~mask, 2.0)  # (B, N)
    return keys.topk(n, dim=1, largest=False).indices.sort(dim=1).values  # (B, n)


def _context(ctx: torch.Tensor, pad: bool, rr: _RowRandom) -> torch.Tensor:
    """Context indices from a (B, N) keep-mask: cut to the batch minimum (I-JEPA), or with
    `pad`, every kept token, sorted, with -1 after the row's last one up to the batch maximum
    (the model masks those out, so short rows lose nothing)."""
    if not pad:
        return _pick(ctx, int(ctx.sum(1).min()), rr)
    B, n = ctx.shape
    m = int(ctx.sum(1).max())
    slot = torch.where(ctx, ctx.cumsum(1) - 1, m)  # (B, N): a kept token's place in its row, else the spill column
    out = torch.full((B, m + 1), -1, dtype=torch.long)
    return out.scatter_(1, slot, torch.arange(n).expand(B, n))[:, :m]


class MultiBlockMasker:
    """I-JEPA multi-block masking on a (H, W) token grid.

    Targets: `num_targets` blocks (they may overlap each other). Context: one block of
    `context_scale` (aspect 1.0) minus the union of the targets, with at least
    min(min_keep, H*W - 1) tokens. With probability `full_height_prob` per batch the targets span
    all H rows (time spans on an audio (mel, time) grid); with probability `full_width_prob` they
    span all W columns (mel bands across the whole clip: on stationary sounds a band is predictable
    only from what the other bands say the sound is, not by copying its neighbours in time). Block sizes are per batch; block
    positions come from each row's own generator (see the module docstring), so a row's targets
    (and, with `pad_context`, its context) depend only on the generator state and its row key.
    """

    def __init__(self, grid: tuple[int, int], num_targets: int = 4,
                 target_scale: tuple[float, float] = (0.15, 0.2),
                 target_aspect: tuple[float, float] = (0.75, 1.5),
                 context_scale: tuple[float, float] = (0.85, 1.0),
                 min_keep: int = 4, full_height_prob: float = 0.0, max_tries: int = 50,
                 pad_context: bool = False, full_width_prob: float = 0.0):
        self.H, self.W = int(grid[0]), int(grid[1])
        if self.H < 1 or self.W < 1 or self.H * self.W < 2:
            raise ValueError(f"grid={grid!r}: need at least 2 tokens (one target, one context)")
        if num_targets < 1:
            raise ValueError(f"num_targets={num_targets}: need at least 1")
        if min_keep < 1:
            raise ValueError(f"min_keep={min_keep}: need at least 1 context token")
        if not 0.0 <= full_height_prob <= 1.0:
            raise ValueError(f"full_height_prob={full_height_prob}: need a probability in [0, 1]")
        if not 0.0 <= full_width_prob <= 1.0 - full_height_prob:
            raise ValueError(f"full_width_prob={full_width_prob}: need a probability in [0, 1 - full_height_prob]"
                             f" = [0, {1.0 - full_height_prob:g}]")
        if max_tries < 1:
            raise ValueError(f"max_tries={max_tries}: need at least 1")
        self.num_targets = int(num_targets)
        self.target_scale = _check_range("target_scale", target_scale, 0.0, 1.0)
        self.target_aspect = _check_range("target_aspect", target_aspect, 0.0, math.inf)
        self.context_scale = _check_range("context_scale", context_scale, 0.0, 1.0)
        self.min_keep = min(int(min_keep), self.H * self.W - 1)
        self.full_height_prob = float(full_height_prob)
        self.full_width_prob = float(full_width_prob)
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

    def _table(self, h: int, w: int) -> torch.Tensor:
        """Every (h, w) block as a flat boolean mask, row (top * (W - w + 1) + left): (P, H*W)."""
        H, W = self.H, self.W
        top, left = torch.arange(H - h + 1), torch.arange(W - w + 1)
        in_r = (torch.arange(H) >= top[:, None]) & (torch.arange(H) < top[:, None] + h)  # (H-h+1, H)
        in_c = (torch.arange(W) >= left[:, None]) & (torch.arange(W) < left[:, None] + w)  # (W-w+1, W)
        return (in_r[:, None, :, None] & in_c[None, :, None, :]).flatten(2).flatten(0, 1)

    def _place(self, u: torch.Tensor, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(top, left) of (h, w) blocks from uniforms u (..., 2): floor(u * number of places)."""
        return (u[..., 0] * (self.H - h + 1)).long(), (u[..., 1] * (self.W - w + 1)).long()

    def __call__(self, batch_size: int, generator: torch.Generator,
                 row_keys: Sequence[int] | torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (context (B, Nc) int64, targets (B, K, Nt) int64) of flat token indices (row-major,
        index = r * W + c). `row_keys` (B ints, default 0..B-1) seed each row's own generator: give
        the rows' global slots so that any split of a batch over processes gives the same masks."""
        B, K, H, W = int(batch_size), self.num_targets, self.H, self.W
        if B < 1:
            raise ValueError(f"batch_size={batch_size}: need at least 1")
        keys = _row_keys(row_keys, B)
        u = torch.rand(4, generator=generator).tolist()
        full = u[0] < self.full_height_prob
        band = not full and u[0] < self.full_height_prob + self.full_width_prob
        t_scale = _uniform(u[1], self.target_scale)
        if full:  # time span across every mel row: width = scale * H * W / H
            th, tw = H, max(1, min(W, round(t_scale * W)))
        elif band:  # mel band across every time column
            th, tw = max(1, min(H, round(t_scale * H))), W
        else:
            th, tw = self._block_size(t_scale, _uniform(u[2], self.target_aspect))
        cap = H * W - self.min_keep  # so the fallback below (one block) always leaves min_keep
        while th * tw > cap:
            if (full or (band and th == 1) or (not band and tw >= th)) and tw > 1:
                tw -= 1
            else:
                th -= 1
        ch, cw = self._block_size(_uniform(u[3], self.context_scale), 1.0)
        rr = _RowRandom(int(torch.randint(2**62, (1,), generator=generator)), keys)

        t_table, c_table = self._table(th, tw), self._table(ch, cw)  # (P, N) block masks
        top = torch.empty(B, K, dtype=torch.long)  # target block corners
        left = torch.empty(B, K, dtype=torch.long)
        ctx = torch.empty(B, H * W, dtype=torch.bool)  # (B, N)
        rows = torch.arange(B)  # rows still to (re)draw, each from its own generator
        for _ in range(self.max_tries):
            uu = rr.rand(rows, 2 * K + 2)  # (R, 2K+2): (top, left) per target, then the context's
            t_top, t_left = self._place(uu[:, : 2 * K].view(-1, K, 2), th, tw)  # (R, K)
            c_top, c_left = self._place(uu[:, 2 * K :], ch, cw)  # (R,)
            union = t_table[t_top * (W - tw + 1) + t_left].any(1)  # (R, N)
            c = c_table[c_top * (W - cw + 1) + c_left] & ~union  # (R, N)
            top[rows], left[rows], ctx[rows] = t_top, t_left, c
            rows = rows[c.sum(1) < self.min_keep]
            if rows.numel() == 0:
                break
        if rows.numel():  # rare: stack all targets on the first block, context = everything else
            top[rows], left[rows] = top[rows, :1].expand(-1, K), left[rows, :1].expand(-1, K)
            ctx[rows] = ~t_table[top[rows, 0] * (W - tw + 1) + left[rows, 0]]

        block = (torch.arange(th)[:, None] * W + torch.arange(tw)).flatten()  # (th*tw,) offsets, row-major
        targets = (top * W + left)[..., None] + block  # (B, K, Nt), sorted
        context = _context(ctx, self.pad_context, rr)  # (B, Nc)
        return context, targets


class TubeMask(tuple):
    """One kind of V-JEPA mask: (spatial_scale, temporal_scale, aspect, num_blocks). V-JEPA's two:
    short-range (0.15, 1.0) x 8 blocks and long-range (0.7, 1.0) x 2, aspect (0.75, 1.5) both."""

    def __new__(cls, spatial_scale=(0.15, 0.15), temporal_scale=(1.0, 1.0), aspect=(0.75, 1.5), num_blocks=8):
        return super().__new__(cls, (tuple(spatial_scale), tuple(temporal_scale), tuple(aspect), int(num_blocks)))


V_JEPA_MASKS = (TubeMask((0.15, 0.15), (1.0, 1.0), (0.75, 1.5), 8), TubeMask((0.7, 0.7), (1.0, 1.0), (0.75, 1.5), 2))


class MultiBlock3DMasker:
    """V-JEPA's 3-D multi-block masking on a (T, H, W) tubelet grid (facebookresearch/jepa,
    src/masks/multiblock3d.py): the target is the union of `num_blocks` tubes of one size (t, h, w),
    the context every other token (of the first `max_context_frames_ratio` of the time steps).

    The block size is V-JEPA's, from three uniforms drawn from the batch generator in its order
    (time, space, aspect): t = max(1, int(T * time scale)), h, w = round(sqrt(int(H*W*space scale)
    * aspect)), round(sqrt(... / aspect)), cut to the grid. Block positions come from each row's own
    generator (see the module docstring). Deliberate differences, for our collator's one context per
    batch and rank-independent rows: each batch uses one of the mask kinds (a fourth uniform picks it;
    V-JEPA runs every kind on every batch), the union target is kept whole and padded with -1 to the
    batch's largest (V-JEPA cuts every row's to the batch minimum), and a row whose context would be
    under `min_keep` tokens is redrawn (V-JEPA redraws only an empty one).
    """

    def __init__(self, grid: tuple[int, int, int], masks: Sequence[TubeMask] = V_JEPA_MASKS, min_keep: int = 4,
                 max_context_frames_ratio: float = 1.0, pad_context: bool = True, max_tries: int = 50):
        self.T, self.H, self.W = (int(v) for v in grid)
        n = self.T * self.H * self.W
        if min(self.T, self.H, self.W) < 1 or n < 2:
            raise ValueError(f"grid={grid!r}: need at least 2 tokens (one target, one context)")
        if not masks:
            raise ValueError("masks: need at least one kind")
        self.masks = []
        for i, (space, time, aspect, blocks) in enumerate(masks):
            if blocks < 1:
                raise ValueError(f"masks[{i}]: num_blocks={blocks}: need at least 1")
            self.masks.append((_check_range(f"masks[{i}].spatial_scale", space, 0.0, 1.0),
                               _check_range(f"masks[{i}].temporal_scale", time, 0.0, 1.0),
                               _check_range(f"masks[{i}].aspect", aspect, 0.0, math.inf), int(blocks)))
        if min_keep < 1:
            raise ValueError(f"min_keep={min_keep}: need at least 1 context token")
        if not 0.0 < max_context_frames_ratio <= 1.0:
            raise ValueError(f"max_context_frames_ratio={max_context_frames_ratio}: need a share in (0, 1]")
        self.context_frames = max(1, int(self.T * max_context_frames_ratio))
        self.min_keep = min(int(min_keep), self.context_frames * self.H * self.W - 1)
        self.pad_context, self.max_tries = pad_context, int(max_tries)

    def block_size(self, u: Sequence[float], kind: int = 0) -> tuple[int, int, int]:
        """(t, h, w) from uniforms (time, space, aspect), exactly as V-JEPA's `_sample_block_size`."""
        space, time, aspect, _ = self.masks[kind]
        t = max(1, int(self.T * _uniform(u[0], time)))
        keep = int(self.H * self.W * _uniform(u[1], space))
        ar = _uniform(u[2], aspect)
        h, w = int(round(math.sqrt(keep * ar))), int(round(math.sqrt(keep / ar)))
        return t, min(h, self.H), min(w, self.W)

    def __call__(self, batch_size: int, generator: torch.Generator,
                 row_keys: Sequence[int] | torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (context (B, Nc), targets (B, 1, Nt)) of flat token indices (t * H * W + r * W + c);
        targets padded with -1 after each row's last (rows differ where blocks overlap)."""
        B, T, H, W = int(batch_size), self.T, self.H, self.W
        if B < 1:
            raise ValueError(f"batch_size={batch_size}: need at least 1")
        keys = _row_keys(row_keys, B)
        u = [float(torch.rand(1, generator=generator)) for _ in range(4)]  # time, space, aspect (V-JEPA's order), kind
        kind = min(int(u[3] * len(self.masks)), len(self.masks) - 1)
        t, h, w = self.block_size(u, kind)
        t, h, w = max(t, 1), max(h, 1), max(w, 1)
        in_reach = torch.zeros(T, H, W, dtype=torch.bool)
        in_reach[: self.context_frames] = True
        in_reach = in_reach.flatten()
        while t * h * w > int(in_reach.sum()) - self.min_keep:  # one block must leave min_keep of context
            t, h, w = (t, h, w - 1) if w >= h and w > 1 else (t, h - 1, w) if h > 1 else (t - 1, h, w)
        blocks = self.masks[kind][3]
        rr = _RowRandom(int(torch.randint(2**62, (1,), generator=generator)), keys)
        dt, dh, dw = torch.arange(t), torch.arange(h), torch.arange(w)
        offsets = (dt[:, None, None] * H * W + dh[None, :, None] * W + dw[None, None, :]).flatten()  # (t*h*w,)

        def union(uu: torch.Tensor) -> torch.Tensor:  # (R, 3 * blocks) uniforms -> (R, N) masked tokens
            uu = uu.view(-1, blocks, 3)
            start = (uu[..., 0] * (T - t + 1)).long() * H * W + (uu[..., 1] * (H - h + 1)).long() * W \
                + (uu[..., 2] * (W - w + 1)).long()  # (R, blocks)
            out = torch.zeros(uu.shape[0], T * H * W, dtype=torch.bool)
            return out.scatter_(1, (start[..., None] + offsets).flatten(1), True)

        masked = torch.empty(B, T * H * W, dtype=torch.bool)
        rows = torch.arange(B)
        for _ in range(self.max_tries):
            m = union(rr.rand(rows, 3 * blocks))
            masked[rows] = m
            rows = rows[(in_reach & ~m).sum(1) < self.min_keep]
            if rows.numel() == 0:
                break
        if rows.numel():  # rare: the first block alone, which leaves min_keep by its size
            masked[rows] = union(rr.rand(rows, 3)[:, None].expand(-1, blocks, -1).flatten(1))
        context = _context(in_reach & ~masked, self.pad_context, rr)  # (B, Nc)
        n = int(masked.sum(1).max())
        slot = torch.where(masked, masked.cumsum(1) - 1, n)
        targets = torch.full((B, n + 1), -1, dtype=torch.long)
        targets.scatter_(1, slot, torch.arange(T * H * W).expand(B, -1))
        return context, targets[:, None, :n]  # (B, Nc), (B, 1, Nt)


class SpanMasker:
    """Contiguous-span masking for token sequences of different lengths.

    Per batch each of the `num_targets` spans gets a fraction of target_scale; per row its length
    is max(1, round(frac * len)) (capped so the row keeps its context floor) and its start is
    random in 0..len-span, drawn from the row's own generator (see the module docstring). The
    context is every valid token outside the spans (at least min(min_keep, len - 1)).

    Targets (B, K, Smax), Smax the largest span in the batch: row b's span k is its whole
    contiguous run start..start+span-1, then -1 up to Smax (mask them out with targets >= 0).
    Nothing is cut, so a row's targets depend only on the generator state, its key and its length.
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

    def __call__(self, lengths: torch.Tensor, generator: torch.Generator,
                 row_keys: Sequence[int] | torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """lengths (B,) int: valid tokens of each row are positions 0..len-1. Returns (context (B, Nc),
        targets (B, K, Smax), -1 after each span's end). `row_keys` as for MultiBlockMasker."""
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
        keys = _row_keys(row_keys, B)
        keep = (L - 1).clamp(max=self.min_keep)  # (B,) context floor per row
        frac = _uniform(torch.rand(K, generator=generator, dtype=torch.float64), self.target_scale)  # (K,)
        rr = _RowRandom(int(torch.randint(2**62, (1,), generator=generator)), keys)
        span = (frac[None] * L[:, None]).round().long().clamp(min=1)  # (B, K)
        span = torch.minimum(span, (L - keep)[:, None])  # one span must leave `keep` tokens
        pos = torch.arange(int(L.max()))
        valid = pos < L[:, None]  # (B, Lmax)

        start = torch.empty(B, K, dtype=torch.long)
        ctx = torch.empty_like(valid)
        rows = torch.arange(B)  # rows still to (re)draw, each from its own generator
        for _ in range(self.max_tries):
            room = (L[rows, None] - span[rows] + 1).double()  # start in 0..len-span
            s = (rr.rand(rows, K) * room).long()  # (R, K)
            c = valid[rows] & ~self._spans(pos, s, span[rows]).any(1)  # (R, Lmax)
            start[rows], ctx[rows] = s, c
            rows = rows[c.sum(1) < keep[rows]]
            if rows.numel() == 0:
                break
        if rows.numel():  # rare: every span starts where the longest one does, so they nest
            longest = start[rows].gather(1, span[rows].argmax(1, keepdim=True))  # (R, 1)
            start[rows] = longest.expand(-1, K)
            ctx[rows] = valid[rows] & ~self._spans(pos, start[rows], span[rows]).any(1)

        context = _context(ctx, self.pad_context, rr)  # (B, Nc)
        ar = torch.arange(int(span.max()))
        targets = torch.where(ar < span[..., None], start[..., None] + ar, -1)  # (B, K, Smax)
        return context, targets

    @staticmethod
    def _spans(pos: torch.Tensor, start: torch.Tensor, span: torch.Tensor) -> torch.Tensor:
        return (pos >= start[..., None]) & (pos < (start + span)[..., None])  # (R, K, Lmax)


class RandomKeepMasker:
    """FLIP's masking (Li et al. 2023): each row keeps a random `1 - ratio` of its `num_tokens`
    tokens, the same number in every row (so the kept tokens stack without padding), drawn from the
    row's own generator (see the module docstring). What binding embeds in training: the encoder sees
    only the kept tokens, which is most of what makes a masked step cheaper than an unmasked one."""

    def __init__(self, num_tokens: int, ratio: float):
        if num_tokens < 1:
            raise ValueError(f"num_tokens={num_tokens}: need at least 1")
        if not 0.0 <= ratio < 1.0:
            raise ValueError(f"ratio={ratio}: need a share in [0, 1)")
        self.num_tokens, self.ratio = int(num_tokens), float(ratio)
        self.keep = max(1, round(self.num_tokens * (1.0 - self.ratio)))

    def __call__(self, batch_size: int, generator: torch.Generator,
                 row_keys: Sequence[int] | torch.Tensor | None = None) -> torch.Tensor:
        """-> (B, keep) int64 sorted token indices of each row."""
        return self._order(batch_size, generator, row_keys)[:, : self.keep].sort(dim=1).values

    def _order(self, batch_size: int, generator: torch.Generator, row_keys) -> torch.Tensor:
        """(B, N) a random order of each row's tokens, from the row's own generator."""
        B = int(batch_size)
        if B < 1:
            raise ValueError(f"batch_size={batch_size}: need at least 1")
        rr = _RowRandom(int(torch.randint(2**62, (1,), generator=generator)), _row_keys(row_keys, B))
        return rr.rand(None, self.num_tokens).argsort(dim=1)


class RandomMasker(RandomKeepMasker):
    """Random-patch masks for prediction (I-JEPA's "random" ablation, FLIP's keep set): the context is
    a random `1 - ratio` of each row's tokens, as `RandomKeepMasker` keeps them, and the target is
    every token it drops, one group per row. With `loss.bind_input=context` binding embeds that same
    context, so one keep set and one online forward serve both terms, as in FLIP."""

    def __init__(self, num_tokens: int, ratio: float):
        super().__init__(num_tokens, ratio)
        if self.keep >= self.num_tokens:
            raise ValueError(f"ratio={ratio}: masks no token of {num_tokens}; need at least one target")

    def __call__(self, batch_size: int, generator: torch.Generator,
                 row_keys: Sequence[int] | torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (context (B, keep), targets (B, 1, N - keep)) int64 sorted token indices of each row."""
        order = self._order(batch_size, generator, row_keys)  # (B, N)
        context = order[:, : self.keep].sort(dim=1).values
        targets = order[:, self.keep :].sort(dim=1).values
        return context, targets[:, None]
