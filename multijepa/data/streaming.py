"""Streaming batches from `datasets` IterableDatasets: shard-aware, mixed by weight, resumable.

Each loader worker (times each rank) is one *logical stream* that owns a share of every
source's shards (`split_dataset_by_node`). Global batch b always comes from logical stream
b mod K (the DataLoader takes workers in turn), also after a resume, so the batch order is
that of an uninterrupted run. Slots get their source from the same `slot_sources` as the
map-style path: with shuffle off and one stream, both paths give the same batches.

Every batch carries its stream's position (per source: epoch, rows read, and the `datasets`
state_dict). The loop keeps the position of the last batch it trained on from each stream
and saves them in the checkpoint; a resume continues each stream from there. Rows waiting
in a shuffle buffer at that moment are not seen again in that epoch: never twice, that is.
"""

from __future__ import annotations

import copy
import itertools

from datasets.distributed import split_dataset_by_node
from torch.utils.data import IterableDataset, get_worker_info

from modalities.errors import DataError
from modalities.seeding import STREAM_SHUFFLE, mix_seed

from .dataset import RowDecoder
from .sampler import micro_slots, slot_sources
from .sources import Source


class _SourceStream:
    """One source as seen by one logical stream: rows in order, restarting at each epoch end."""

    def __init__(self, source: Source, index: int, stream: int, num_streams: int, seed: int, shuffle: bool,
                 buffer: int, saved: dict | None):
        self.source, self.index = source, index
        self.stream, self.num_streams = stream, num_streams
        self.seed, self.shuffle, self.buffer = seed, shuffle, buffer
        self.epoch = saved["epoch"] if saved else 0
        self.read = saved["read"] if saved else 0  # rows read this epoch
        self._open(saved["state"] if saved else None)

    def _open(self, state: dict | None) -> None:
        ds = self.source.ds
        if self.num_streams > 1:
            ds = split_dataset_by_node(ds, rank=self.stream, world_size=self.num_streams)
        if self.shuffle:  # shard order and a buffer, reshuffled each epoch (the epoch offsets the seed)
            ds = ds.shuffle(seed=mix_seed(STREAM_SHUFFLE, self.seed, self.index) % 2**32, buffer_size=self.buffer)
            ds.set_epoch(self.epoch)
        if state is not None:
            ds.load_state_dict(state)
        # `iter(batch_size=1)`, not `iter(ds)`: inside a loader worker the latter splits shards
        # among workers by itself, and we have already split them among logical streams.
        self.ds = ds
        self.it = ({k: v[0] for k, v in rows.items()} for rows in ds.iter(batch_size=1))

    def next(self) -> tuple[dict, int]:
        for attempt in range(2):
            try:
                row = next(self.it)
            except StopIteration:
                if attempt or self.read == 0:
                    raise DataError(
                        f"source '{self.source.name}' has no rows for stream {self.stream} of {self.num_streams}"
                    ) from None
                self.epoch, self.read = self.epoch + 1, 0
                self._open(None)
                continue
            except Exception as e:  # a malformed manifest line, a corrupt shard, a network error
                raise DataError(
                    f"source '{self.source.name}': cannot read the stream after row {self.read} of epoch {self.epoch} "
                    f"({type(e).__name__}: {e})"
                ) from e
            self.read += 1
            return row, self.read - 1
        raise AssertionError("unreachable")

    def position(self) -> dict:
        return {"epoch": self.epoch, "read": self.read, "state": copy.deepcopy(self.ds.state_dict())}


class StreamingBatches(IterableDataset):
    """Yields collated batches (use with DataLoader(batch_size=None)), or {"micro": [A batches]}
    with gradient accumulation; `start`..`stop` are global batch numbers, `positions` the
    per-stream positions from a checkpoint."""

    def __init__(self, sources: list[Source], decoders: list[RowDecoder], collator, batch_size: int, seed: int,
                 shuffle: bool = True, buffer: int = 1000, start: int = 0, stop: int | None = None,
                 positions: dict | None = None, rank: int = 0, world: int = 1, accum: int = 1):
        self.sources, self.decoders, self.collator = sources, decoders, collator
        self.batch_size, self.seed, self.shuffle, self.buffer = batch_size, seed, shuffle, buffer
        self.start, self.stop, self.rank, self.world, self.accum = start, stop, rank, world, accum
        self.positions = positions or {}
        self.weights = [s.weight for s in sources]

    def __iter__(self):
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info else (1, 0)
        num_streams = workers * self.world
        saved_streams = self.positions.get("num_streams")
        if saved_streams is not None and saved_streams != num_streams:
            yield {"fatal": (
                f"the run streamed with {saved_streams} loader streams (workers x ranks) and now has {num_streams}: "
                "resume with the same data.num_workers and number of processes"
            )}
            return
        first = self.start + worker  # this worker's first global batch; then every `workers`-th
        stream = self.rank * workers + first % workers
        try:
            saved = self.positions.get("streams", {}).get(str(stream))
            streams = [
                _SourceStream(s, i, stream, num_streams, self.seed, self.shuffle, self.buffer,
                              saved["sources"][i] if saved else None)
                for i, s in enumerate(self.sources)
            ]
            for b in itertools.count(first, workers):
                if self.stop is not None and b >= self.stop:
                    return
                slots = slot_sources(self.seed, b, self.weights, self.world * self.accum * self.batch_size).tolist()
                micro = []
                for part in micro_slots(self.batch_size, self.rank, self.world, self.accum):
                    items = []
                    for slot in part:
                        row, row_id = streams[slots[slot]].next()
                        items.append({**self.decoders[slots[slot]](row, row_id), "batch_no": b, "slot": slot})
                    micro.append(self.collator(items))
                position = {"stream": stream, "sources": [st.position() for st in streams]}
                # one loader item per global batch, so workers taking turns keep the micro-batches together
                yield {**micro[0], "position": position} if len(micro) == 1 else {"micro": micro, "position": position}
        except DataError as e:
            yield {"fatal": str(e)}
