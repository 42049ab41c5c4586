"""The one seed-mixing helper: every generator the project seeds from several numbers (the run's
seed, a batch number, a row's slot, a source, an epoch) gets its seed from `mix_seed`, so nearby
inputs never give related streams and no file invents its own `seed * 1_000_003 + ...`."""

from __future__ import annotations

import numpy as np

# The first value of every `mix_seed` call names the stream, so no two uses share one.
BATCH, AUDIO_CROP, SLOT_SOURCES, EPOCH_ORDER, STREAM_SHUFFLE, SYNTHETIC, BIND_KEEP, PREDICTOR_INIT = range(8)

_M64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def mix_seed(*values: int) -> int:
    """A seed in 0..2**63-1 from integers (order matters); nearby inputs give unrelated seeds."""
    h = 0x243F6A8885A308D3
    for v in values:
        h = _splitmix64(h ^ (int(v) & _M64))
    return h >> 1


def mix_seeds(base: int, keys: list[int]) -> list[int]:
    """[mix_seed(base, k) for k in keys], vectorized (uint64 arithmetic wraps like the & _M64 above)."""
    h = np.uint64(_splitmix64(0x243F6A8885A308D3 ^ (int(base) & _M64)))
    x = np.array([k & _M64 for k in keys], dtype=np.uint64) ^ h
    x += np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return ((x ^ (x >> np.uint64(31))) >> np.uint64(1)).tolist()
