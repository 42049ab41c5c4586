"""Batch order as a function of (seed, global batch number), for one source or a weighted mixture.

Every batch slot is assigned a source by `slot_sources` (the same function in the map-style
and the streaming path), then takes the next row of that source: map-style sources walk a
fresh permutation per epoch (or the file order with shuffle off), each at its own pace, so a
small source simply cycles more often. The position (epoch and cursor per source) after each
batch is kept, so a checkpoint can save exactly where the data stood.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator

import torch
from torch.utils.data import BatchSampler, RandomSampler, Sampler

from modalities.seeding import EPOCH_ORDER, SLOT_SOURCES, mix_seed


def slot_sources(seed: int, batch_no: int, weights: list[float], n: int) -> torch.Tensor:
    """(n,) source index per slot of global batch `batch_no`. Systematic sampling over the
    cumulative weights, so each batch holds n * w_s slots of source s, give or take one, and
    the counts match the weights over any stretch of training; slots are then shuffled."""
    if len(weights) == 1:
        return torch.zeros(n, dtype=torch.long)
    g = torch.Generator().manual_seed(mix_seed(SLOT_SOURCES, seed, batch_no))
    w = torch.tensor(weights, dtype=torch.float64)
    cum = torch.cumsum(w / w.sum(), 0)
    u = (torch.rand(1, generator=g, dtype=torch.float64) + torch.arange(n, dtype=torch.float64)) / n  # (n,) in [0, 1)
    src = torch.searchsorted(cum, u, right=True).clamp_(max=len(weights) - 1)
    return src[torch.randperm(n, generator=g)]


def micro_slots(batch_size: int, rank: int, world: int, accum: int) -> list[range]:
    """The global-batch slots of each of this rank's `accum` micro-batches: the global batch is
    cut into world * accum parts of batch_size slots; micro-batch j of rank r is part j * world + r."""
    return [range((j * world + rank) * batch_size, (j * world + rank + 1) * batch_size) for j in range(accum)]


class MixedBatchSampler(Sampler):
    """Yields lists of (batch_no, slot, source, row) keys, this rank's micro-batches of each global batch.

    A global batch has world * accum * batch_size slots (see `micro_slots`); rank r yields its
    `accum` micro-batches of `batch_size` in turn. Batches run from `start` to `stop` (None: endless).
    """

    def __init__(self, sizes: list[int], weights: list[float], batch_size: int, seed: int, shuffle: bool = True,
                 start: int = 0, stop: int | None = None, rank: int = 0, world: int = 1, position: dict | None = None,
                 accum: int = 1):
        if any(n == 0 for n in sizes):
            raise ValueError(f"a source has no rows (sizes {sizes})")
        self.sizes, self.weights, self.batch_size, self.seed, self.shuffle = sizes, weights, batch_size, seed, shuffle
        self.start, self.stop, self.rank, self.world, self.accum = start, stop, rank, world, accum
        self.global_size = world * accum * batch_size
        if position is not None and position.get("batch") != start:
            raise ValueError(f"data position is for batch {position.get('batch')}, not {start}")
        self._start_pos = [list(p) for p in position["sources"]] if position else self._replay(start)
        self.positions: OrderedDict[int, dict] = OrderedDict()  # batch_no -> position after it

    def _replay(self, start: int) -> list[list[int]]:
        """(epoch, cursor) per source after `start` batches, from the slot counts alone."""
        pos = [[0, 0] for _ in self.sizes]
        for b in range(start):
            counts = torch.bincount(slot_sources(self.seed, b, self.weights, self.global_size), minlength=len(self.sizes))
            for s, c in enumerate(counts.tolist()):
                e, cur = divmod(pos[s][1] + c, self.sizes[s])
                pos[s] = [pos[s][0] + e, cur]
        return pos

    def order(self, source: int, epoch: int) -> torch.Tensor:
        n = self.sizes[source]
        if not self.shuffle:
            return torch.arange(n)
        g = torch.Generator().manual_seed(mix_seed(EPOCH_ORDER, self.seed, source, epoch))
        return torch.randperm(n, generator=g)

    def position_after(self, batch_no: int) -> dict:
        """The data position to save in a checkpoint taken after `batch_no` was trained on."""
        return self.positions[batch_no]

    def __iter__(self):
        pos = [list(p) for p in self._start_pos]
        perms: dict[int, tuple[int, torch.Tensor]] = {}
        b = self.start
        while self.stop is None or b < self.stop:
            slots = slot_sources(self.seed, b, self.weights, self.global_size)
            keys = {}
            for slot, s in enumerate(slots.tolist()):
                epoch, cur = pos[s]
                if perms.get(s, (None,))[0] != epoch:
                    perms[s] = (epoch, self.order(s, epoch))
                keys[slot] = (b, slot, s, int(perms[s][1][cur]))
                pos[s] = [epoch + 1, 0] if cur + 1 == self.sizes[s] else [epoch, cur + 1]
            self.positions[b] = {"batch": b + 1, "sources": [list(p) for p in pos]}
            while len(self.positions) > 1024:  # the loader runs at most a few batches ahead
                self.positions.popitem(last=False)
            for part in micro_slots(self.batch_size, self.rank, self.world, self.accum):
                yield [keys[slot] for slot in part]
            b += 1

    def __len__(self) -> int:
        if self.stop is None:
            raise TypeError("an endless sampler has no length")
        return max(0, self.stop - self.start) * self.accum


class SequentialBatchSampler(Sampler):
    """Evaluation order: every row once, in order, the last batch possibly short."""

    def __init__(self, n: int, batch_size: int):
        self.n, self.batch_size = n, batch_size

    def __iter__(self):
        for b, s in enumerate(range(0, self.n, self.batch_size)):
            yield [(b, r) for r in range(s, min(s + self.batch_size, self.n))]

    def __len__(self) -> int:
        return (self.n + self.batch_size - 1) // self.batch_size


def shuffled_batches(n: int, batch_size: int, seed: int, start_step: int = 0) -> Iterator[list[int]]:
    """Row indices batch after batch, epoch after epoch, in exactly the order of
    DataLoader(shuffle=True, generator=Generator().manual_seed(seed)); the first `start_step`
    batches are skipped without loading anything, which is how a resumed run continues."""
    gen = torch.Generator().manual_seed(seed)
    sampler = BatchSampler(RandomSampler(range(n), generator=gen), batch_size, drop_last=n >= batch_size)
    step = 0
    while True:
        torch.empty((), dtype=torch.int64).random_(generator=gen)  # the DataLoader's per-epoch base seed
        for batch in sampler:
            if step >= start_step:
                yield batch
            step += 1
