"""Batches rows with any subset of modalities, and builds the JEPA masks (in loader workers).

Masks are seeded from (seed, batch number) for the batch-level draws (block sizes, span
fractions) and from each row's "slot" (its place in the global batch) for the per-row draws
(positions), so a row's masks and audio crop are the same whichever worker or data-parallel rank
builds it, however the global batch is split, and again after a resume.
"""

from __future__ import annotations

import math

import torch

from modalities.errors import DataError
from modalities.masking import RandomKeepMasker
from modalities.seeding import AUDIO_CROP, BATCH, BIND_KEEP, mix_seed

from ..config import ModelConfig
from ..modality import get_modality
from .bad_samples import BadRow


def build_bind_maskers(cfg: ModelConfig) -> dict:
    """FLIP's random keep sets for what binding embeds, for modalities with `bind_mask_ratio` > 0
    (those whose `Modality.bind_masking` allows it; text binds whole captions)."""
    maskers: dict = {}
    for m in cfg.modalities:
        ratio = getattr(getattr(cfg, m), "bind_mask_ratio", 0.0)
        if ratio > 0 and get_modality(m).bind_masking:
            maskers[m] = RandomKeepMasker(math.prod(get_modality(m).grid(cfg)), ratio)
    return maskers


def build_maskers(cfg: ModelConfig) -> dict:
    """Each modality's JEPA masker (`Modality.masker`)."""
    return {m: get_modality(m).masker(cfg) for m in cfg.modalities}


class MultiModalCollator:
    """items -> {"size": B, "rows", "sources", "errors", "drawn",
                 m: {"x", "index", ["lengths"], ["context", "targets", ["target_valid"]], ["bind_keep"]}}.

    `index` holds each sub-batch row's position in the batch (sorted), so rows missing a modality
    simply do not appear in that modality's sub-batch. Error records (bad rows) are dropped from
    the batch and listed in `errors`; `drawn` counts every slot per source, bad ones included.
    With `processors`, decoded audio is cropped here (at random when `train`).

    Randomness: items carry "batch_no" and "slot" (the row's global slot in the global batch; an
    item without one uses its position in `items`). Each modality's masker gets its own generator
    drawn from the batch generator (seeded by (seed, batch_no)), so its batch-level draws do not
    depend on which other modalities this process happens to see, and the rows' slots as
    `row_keys`, so positions come from per-row generators. The audio crop uses a generator seeded
    by (seed, batch_no, slot). Text targets are whole spans padded with -1 (see SpanMasker): such
    a modality also gets "target_valid" (B_m, K*Nt) bool = targets.flatten(1) >= 0.
    `bind_maskers` ({m: RandomKeepMasker}) add "bind_keep" (B_m, keep): the tokens binding embeds
    (FLIP) while the run does not predict; both kinds of mask travel, the model picks by its phase.
    """

    def __init__(self, modalities: list[str], maskers: dict | None = None, seed: int = 0,
                 processors=None, train: bool = True, num_sources: int = 1, bind_maskers: dict | None = None):
        self.modalities = modalities
        self.maskers = maskers
        self.bind_maskers = bind_maskers or {}
        self.seed = seed
        self.processors = processors
        self.train = train
        self.num_sources = num_sources

    def __call__(self, items: list[dict]) -> dict:
        batch_no = items[0].get("batch_no", 0) if items else 0
        gen = torch.Generator().manual_seed(mix_seed(BATCH, self.seed, batch_no))
        # one seed per configured modality, drawn up front: the same on every rank whatever it holds
        mod_seeds = torch.randint(2**62, (len(self.modalities),), generator=gen).tolist()
        slots = [it.get("slot", i) for i, it in enumerate(items)]
        if self.processors is not None:
            items = [self._finish(it, batch_no, slot) for it, slot in zip(items, slots)]
        drawn = [0] * self.num_sources
        for it in items:
            drawn[it.get("source", 0)] += 1
        errors = [it["error"] for it in items if "error" in it]
        slots = [slot for it, slot in zip(items, slots) if "error" not in it]
        items = [it for it in items if "error" not in it]
        batch: dict = {
            "size": len(items),
            "rows": torch.tensor([it["row"] if isinstance(it["row"], int) else -1 for it in items], dtype=torch.long),
            "sources": torch.tensor([it.get("source", 0) for it in items], dtype=torch.long),
            "errors": errors,
            "drawn": drawn,
        }
        if not items:
            return batch
        if "label" in items[0]:
            batch["labels"] = [it.get("label") for it in items]
        for m, mod_seed in zip(self.modalities, mod_seeds):
            pos = [i for i, it in enumerate(items) if m in it]
            if not pos:
                continue
            spec = get_modality(m)
            entry: dict = {"index": torch.tensor(pos, dtype=torch.long),
                           **spec.stack([items[i][m] for i in pos])}  # "x": (B_m, ...), text also "lengths"
            if self.maskers is not None:
                context, targets = self.maskers[m](spec.mask_arg(entry), torch.Generator().manual_seed(mod_seed),
                                                   row_keys=[slots[i] for i in pos])
                entry["context"], entry["targets"] = context, targets  # (B_m, Nc), (B_m, K, Nt)
                if bool((targets < 0).any()):  # text: spans padded with -1 to the longest
                    entry["target_valid"] = targets.flatten(1) >= 0  # (B_m, K * Nt)
            if m in self.bind_maskers:
                gen = torch.Generator().manual_seed(mix_seed(BIND_KEEP, mod_seed))
                entry["bind_keep"] = self.bind_maskers[m](len(pos), gen, row_keys=[slots[i] for i in pos])  # (B_m, keep)
            batch[m] = entry
        return batch

    def _finish(self, item: dict, batch_no: int, slot: int) -> dict:
        """`Modality.finish` of each decoded sample that still needs it (audio: a window, at random from
        a generator of (seed, batch_no, slot)); a long file read window by window can still turn out bad here."""
        if "error" in item:
            return item
        for m in self.modalities:
            if m not in item or not get_modality(m).needs_finish(item[m]):
                continue
            gen = torch.Generator().manual_seed(mix_seed(AUDIO_CROP, self.seed, batch_no, slot))
            try:
                item = {**item, m: self.processors.finish(m, item[m], self.train, gen)}
            except DataError as e:
                source, where = item.get("where", ("?", f"row {item['row']}"))
                record = BadRow(source, item["row"], None, m, None, e.reason, f"{where} column '{m}': {e}")
                return {"row": item["row"], "source": item.get("source", 0), "error": record}
        return item


def move_batch(batch: dict, device: torch.device) -> dict:
    out = {}
    for k, v in batch.items():
        if isinstance(v, torch.Tensor):
            v = v.to(device, non_blocking=True)
        elif isinstance(v, dict):
            v = {kk: vv.to(device, non_blocking=True) if isinstance(vv, torch.Tensor) else vv for kk, vv in v.items()}
        out[k] = v
    return out
