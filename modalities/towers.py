"""Pretrained towers as modality encoders: a timm Vision Transformer (images, or spectrograms as
AST does) behind the same interface as our own `TransformerEncoder`, so masking, prediction and
binding work over it unchanged.

The context-only forward runs the tower's own patch embedding and positions (class and register
tokens included), then keeps the prefix tokens and gathers the context patches before the blocks,
as I-JEPA's context encoder does. Features come back for the patch tokens only, on the tower's
token grid; the head mean-pools them (the prefix tokens steer the blocks but are not pooled).

    timm:NAME         the architecture NAME, weights from the run's checkpoint (or random)
    timm:NAME:PATH    ... initialised from a local safetensors / torch file (no download)
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .encoder import gather_tokens
from .errors import DataError


@dataclass(frozen=True)
class TowerSpec:
    """A parsed `model.<m>.pretrained` string."""

    library: str  # "timm"
    name: str
    path: str | None = None

    @classmethod
    def parse(cls, text: str, key: str) -> TowerSpec:
        library, _, rest = text.partition(":")
        name, _, path = rest.partition(":")
        if library != "timm" or not name:
            raise DataError(f"{key}='{text}': expected timm:NAME or timm:NAME:PATH")
        return cls(library, name, path or None)


class TimmViTTower(nn.Module):
    """A timm VisionTransformer (no classifier) as an encoder: (B, C, H, W) -> (B, N or K, D)."""

    def __init__(self, name: str, in_chans: int = 3):
        super().__init__()
        import timm

        try:
            self.vit = timm.create_model(name, pretrained=False, num_classes=0, in_chans=in_chans)
        except RuntimeError as e:  # timm: "Unknown model (...)"
            raise DataError(f"timm has no model '{name}' ({e})") from None
        if not hasattr(self.vit, "patch_embed") or not hasattr(self.vit, "blocks"):
            raise DataError(f"timm model '{name}' is not a Vision Transformer (no patch_embed / blocks)")
        self.dim = int(self.vit.embed_dim)
        self.grid: tuple[int, ...] = tuple(int(g) for g in self.vit.patch_embed.grid_size)
        self.prefix = int(self.vit.num_prefix_tokens)

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        v = self.vit
        if x.dim() == 3:  # (B, mel, time) spectrogram without a channel axis
            x = x.unsqueeze(1)
        h = v.norm_pre(v.patch_drop(v._pos_embed(v.patch_embed(x))))  # (B, P + N, D)
        valid = None
        if keep is not None:
            kept = keep >= 0  # (B, K)
            h = torch.cat([h[:, : self.prefix], gather_tokens(h[:, self.prefix :], keep.clamp_min(0))], dim=1)
            valid = None if bool(kept.all()) else kept
        attn_mask = None
        if valid is not None:  # prefix tokens are always there
            full = torch.cat([valid.new_ones(valid.shape[0], self.prefix), valid], dim=1)
            attn_mask = full[:, None, None, :]  # (B, 1, 1, P + K)
        for blk in v.blocks:
            h = blk(h, attn_mask=attn_mask)
        return v.norm(h)[:, self.prefix :], valid


def tower_facts(spec: TowerSpec) -> dict:
    """What the rest of the model and the preprocessing must follow: token grid, patch, input size,
    width, depth, heads, mean/std (timm's pretrained_cfg), from the architecture alone (built on the
    meta device: shapes without weights, no time spent initialising them)."""
    with torch.device("meta"):
        tower = TimmViTTower(spec.name)
    v = tower.vit
    cfg = getattr(v, "pretrained_cfg", {}) or {}
    return {"size": int(v.patch_embed.img_size[0]), "patch": int(v.patch_embed.patch_size[0]),
            "square": v.patch_embed.img_size[0] == v.patch_embed.img_size[1],
            "width": tower.dim, "depth": len(v.blocks), "heads": int(v.blocks[0].attn.num_heads),
            "mean": tuple(float(m) for m in cfg.get("mean", (0.5, 0.5, 0.5))),
            "std": tuple(float(s) for s in cfg.get("std", (0.5, 0.5, 0.5)))}


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """A local weights file: safetensors, or a torch file read with weights_only=True (never unpickled)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no such weights file")
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(p))
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:
        raise DataError(f"{p}: unreadable weights file ({str(e).splitlines()[0][:200]})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise DataError(f"{p}: expected a dict of tensors")
    return state


def load_tower(tower: TimmViTTower, path: str | Path) -> dict:
    """Initialise the tower from `path` (a classifier head in the file is ignored) -> a record of what
    was loaded (path, sha256 of the file, tensors). Missing or misshapen weights name the file."""
    state = {k: v for k, v in read_weights(path).items() if not k.startswith(("head.", "fc_norm.head"))}
    own = tower.vit.state_dict()
    missing = sorted(k for k in own if k not in state)
    wrong = sorted(k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape))
    if missing or wrong:
        detail = (f"missing {missing[:3]}" if missing else "") + (" " if missing and wrong else "") + \
                 (f"shape of {wrong[0]} is {tuple(state[wrong[0]].shape)}, expected {tuple(own[wrong[0]].shape)}" if wrong else "")
        raise DataError(f"{path}: not weights of this tower ({detail})")
    tower.vit.load_state_dict({k: state[k] for k in own})
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return {"path": str(Path(path).resolve()), "sha256": digest, "tensors": len(own)}
