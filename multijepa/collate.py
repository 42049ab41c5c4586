"""Batches rows with any subset of modalities, and builds the JEPA masks (in loader workers).

Masks are seeded from (seed, batch number), so they are the same whichever worker builds
the batch and again after a resume.
"""

from __future__ import annotations

import torch

from modalities.masking import MultiBlockMasker, SpanMasker

from .config import ModelConfig


def build_maskers(cfg: ModelConfig) -> dict:
    maskers: dict = {}
    for m in cfg.modalities:
        if m == "text":
            k = cfg.text.mask
            maskers[m] = SpanMasker(k.num_targets, tuple(k.target_scale), k.min_keep, pad_context=k.pad_context)
            continue
        if m == "image":
            c = cfg.image
            grid = (c.size // c.patch, c.size // c.patch)
        else:
            c = cfg.audio
            grid = (c.num_mel_bins // c.patch[0], c.target_frames // c.patch[1])
        k = c.mask
        maskers[m] = MultiBlockMasker(
            grid,
            num_targets=k.num_targets,
            target_scale=tuple(k.target_scale),
            target_aspect=tuple(k.target_aspect),
            context_scale=tuple(k.context_scale),
            min_keep=k.min_keep,
            full_height_prob=k.full_height_prob,
            pad_context=k.pad_context,
        )
    return maskers


class MultiModalCollator:
    """items -> {"size": B, "rows": (B,), "errors": [...], m: {"x", "index", ["lengths"], ["context", "targets"]}}.

    `index` holds each sub-batch row's position in the batch (sorted), so rows missing a modality
    simply do not appear in that modality's sub-batch."""

    def __init__(self, modalities: list[str], maskers: dict | None = None, seed: int = 0):
        self.modalities = modalities
        self.maskers = maskers
        self.seed = seed

    def __call__(self, items: list[dict]) -> dict:
        errors = [it["error"] for it in items if "error" in it]
        items = [it for it in items if "error" not in it]
        batch: dict = {"size": len(items), "rows": torch.tensor([it["row"] for it in items], dtype=torch.long), "errors": errors}
        if not items:
            return batch
        if "label" in items[0]:
            batch["labels"] = [it.get("label") for it in items]
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + items[0]["batch_no"])
        for m in self.modalities:
            pos = [i for i, it in enumerate(items) if m in it]
            if not pos:
                continue
            entry: dict = {"index": torch.tensor(pos, dtype=torch.long)}
            if m == "text":
                lengths = torch.stack([items[i][m][1] for i in pos])
                entry["x"] = torch.stack([items[i][m][0] for i in pos])[:, : int(lengths.max())]  # (B_t, L)
                entry["lengths"] = lengths
            else:
                entry["x"] = torch.stack([items[i][m] for i in pos])  # (B_m, C, H, W) or (B_m, mel, T)
            if self.maskers is not None:
                masker = self.maskers[m]
                arg = entry["lengths"] if m == "text" else len(pos)
                entry["context"], entry["targets"] = masker(arg, gen)  # (B_m, Nc), (B_m, K, Nt)
            batch[m] = entry
        return batch


def move_batch(batch: dict, device: torch.device) -> dict:
    out = {}
    for k, v in batch.items():
        if isinstance(v, torch.Tensor):
            v = v.to(device, non_blocking=True)
        elif isinstance(v, dict):
            v = {kk: vv.to(device, non_blocking=True) for kk, vv in v.items()}
        out[k] = v
    return out
