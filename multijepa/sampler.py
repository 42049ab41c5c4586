"""Batch order as a pure function of (seed, global batch number), so a resumed run sees exactly
the batches it would have seen, and masks can be seeded per batch in any worker."""

from __future__ import annotations

import torch
from torch.utils.data import Sampler


class ResumableBatchSampler(Sampler):
    """Yields lists of (batch_no, row) pairs: a fresh permutation per epoch from (seed, epoch),
    full batches only, starting at global batch `start` and stopping before `stop`."""

    def __init__(self, n: int, batch_size: int, seed: int, start: int = 0, stop: int | None = None):
        if n < batch_size:
            raise ValueError(f"the dataset has {n} rows, fewer than one batch of {batch_size}; lower data.batch_size")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.per_epoch = n // batch_size
        self.start, self.stop = start, stop

    def order(self, epoch: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        return torch.randperm(self.n, generator=g)

    def __iter__(self):
        b = self.start
        perm, perm_epoch = None, -1
        while self.stop is None or b < self.stop:
            epoch, k = divmod(b, self.per_epoch)
            if epoch != perm_epoch:
                perm, perm_epoch = self.order(epoch), epoch
            rows = perm[k * self.batch_size : (k + 1) * self.batch_size].tolist()
            yield [(b, r) for r in rows]
            b += 1

    def __len__(self) -> int:
        if self.stop is None:
            raise TypeError("an endless sampler has no length")
        return max(0, self.stop - self.start)


class SequentialBatchSampler(Sampler):
    """Evaluation order: every row once, in order, the last batch possibly short."""

    def __init__(self, n: int, batch_size: int):
        self.n, self.batch_size = n, batch_size

    def __iter__(self):
        for b, s in enumerate(range(0, self.n, self.batch_size)):
            yield [(b, r) for r in range(s, min(s + self.batch_size, self.n))]

    def __len__(self) -> int:
        return (self.n + self.batch_size - 1) // self.batch_size
