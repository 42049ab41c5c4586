"""The training data pipeline in one place: sources -> decoders -> batches -> DataLoader.

Map-style (default): every source is a `datasets` Dataset, a `MixedBatchSampler` picks rows,
workers decode them. Streaming (`data.streaming: true`): every source is an IterableDataset
and workers build whole batches from their share of the shards. Either way batches come in
the same order whatever the number of workers, carry their bad rows as error records, and
the loop can save the data position with each checkpoint.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..config import Config, ConfigError
from ..modality import get_modality, registered_modalities
from ..processors import Processors
from .collate import MultiModalCollator, build_bind_maskers, build_maskers
from .dataset import PairedDataset, RowDecoder, SourceMixture, source_texts
from .sampler import MixedBatchSampler
from .sources import Source, open_source, source_configs
from .streaming import StreamingBatches


def seed_worker(worker_id: int) -> None:
    """Distinct, reproducible Python/NumPy seeds per worker (torch's is set by the DataLoader).
    Our own randomness (order, masks, crops) is seeded per batch and does not depend on it."""
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def open_sources(cfg: Config) -> list[Source]:
    return [
        open_source(s, cfg.data.columns, cfg.model.modalities, cfg.data.streaming)
        for s in source_configs(cfg.data)
    ]


def check_training_sources(cfg: Config, sources: list[Source]) -> None:
    """Refuse what would train silently wrong: a configured modality no source provides (its encoder
    would never be touched, and VQA would later use it untrained), and fewer rows than one batch
    (every batch the same rows, repeated)."""
    derivable = {m for m in cfg.model.modalities if cfg.data.audio_from_video
                 and any(o in s.columns for s in sources for o in get_modality(m).derived_from)}
    missing = [m for m in cfg.model.modalities if m not in derivable and not any(m in s.columns for s in sources)]
    if missing:
        cols = ", ".join(f"data.columns.{m}=NAME" for m in missing)
        raise ConfigError(f"model.modalities has {', '.join(missing)} but no data source has a column for it "
                          f"({', '.join(s.origin or s.name for s in sources)}): leave it out, e.g. model.modalities="
                          f"[{','.join(m for m in cfg.model.modalities if m not in missing)}], or name its column ({cols})")
    if all(not s.streaming for s in sources):
        rows = sum(len(s.ds) for s in sources)
        if rows < cfg.data.batch_size:
            raise ConfigError(f"the training data has {rows} rows, fewer than one batch (data.batch_size="
                              f"{cfg.data.batch_size}): lower data.batch_size, or add rows")


def training_texts(sources: list[Source]) -> list[str]:
    return [t for s in sources for t in source_texts(s)]


@dataclass
class TrainData:
    loader: DataLoader
    sources: list[Source]
    sampler: MixedBatchSampler | None  # map-style only: knows the position after each batch

    @property
    def modalities(self) -> list[str]:
        return [m for m in registered_modalities() if any(m in s.columns for s in self.sources)]


def build_train_data(cfg: Config, sources: list[Source], processors: Processors, start: int = 0,
                     position: dict | None = None, device: torch.device | None = None,
                     rank: int = 0, world: int = 1) -> TrainData:
    """The loader yields this process's micro-batches: train.grad_accum per global batch of
    data.batch_size rows, each data.batch_size / (world * grad_accum) rows."""
    d, t = cfg.data, cfg.train
    parts = world * t.grad_accum
    if d.batch_size % parts:
        raise ValueError(f"data.batch_size={d.batch_size} (the global batch) must be divisible by the number of "
                         f"processes x train.grad_accum = {world} x {t.grad_accum}")
    micro = d.batch_size // parts
    modalities = [m for m in cfg.model.modalities if d.audio_from_video or any(m in s.columns for s in sources)]
    maskers = build_maskers(cfg.model) if cfg.loss.masks else None  # the CLIP objective sees whole inputs
    bind_maskers = build_bind_maskers(cfg.model)  # FLIP's keep sets (bind_mask_ratio > 0), used before prediction starts
    collator = MultiModalCollator(modalities, maskers, t.seed, processors, train=True,
                                  num_sources=len(sources), bind_maskers=bind_maskers)
    workers = d.num_workers
    common = dict(
        num_workers=workers,
        persistent_workers=d.persistent_workers and workers > 0,
        pin_memory=d.pin_memory and device is not None and device.type == "cuda",
        prefetch_factor=d.prefetch_factor if workers > 0 else None,
        worker_init_fn=seed_worker,
        # its own generator: starting an iterator draws the workers' base seed, which from the global one
        # would shift the training's draws on resume (the loader starts there, not at step 0)
        generator=torch.Generator().manual_seed(t.seed * 1000 + rank),
    )
    if d.streaming:
        decoders = [RowDecoder(s, processors, i, d.audio_from_video) for i, s in enumerate(sources)]
        batches = StreamingBatches(sources, decoders, collator, micro, t.seed, d.shuffle, d.shuffle_buffer,
                                   start, t.max_steps, position, rank, world, t.grad_accum)
        return TrainData(DataLoader(batches, batch_size=None, **common), sources, None)

    datasets = [PairedDataset(s, processors, cache=d.cache_decoded, source_index=i, derive=d.audio_from_video)
                for i, s in enumerate(sources)]
    sampler = MixedBatchSampler([len(p) for p in datasets], [s.weight for s in sources], micro, t.seed,
                                d.shuffle, start, t.max_steps, rank, world, position, t.grad_accum)
    loader = DataLoader(SourceMixture(datasets), batch_sampler=sampler, collate_fn=collator, **common)
    return TrainData(loader, sources, sampler)
