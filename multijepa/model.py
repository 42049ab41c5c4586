"""MultiJEPA: per-modality online encoders, EMA target encoders, cross-modal predictors and
heads into one shared embedding space.

The model only gathers: masks arrive from the collator as index tensors. `forward` returns the
raw pieces (predictions, targets, shared embeddings); `objective.py` turns them into the loss.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fusion.predictor import CrossModalPredictor
from modalities.encoder import TransformerEncoder, gather_tokens, init_weights
from modalities.tokens import PatchTokens, TextTokens

from .config import ModelConfig


def build_encoder(modality: str, cfg: ModelConfig, vocab_size: int | None = None) -> TransformerEncoder:
    if modality == "image":
        c = cfg.image
        tokens: nn.Module = PatchTokens((c.size, c.size), c.patch, 3, c.encoder.width)
    elif modality == "audio":
        c = cfg.audio
        tokens = PatchTokens((c.num_mel_bins, c.target_frames), tuple(c.patch), 1, c.encoder.width)
    elif modality == "text":
        c = cfg.text
        if vocab_size is None:
            raise ValueError("a text encoder needs the tokenizer's vocab_size")
        tokens = TextTokens(vocab_size, c.max_len, c.encoder.width)
    else:
        raise ValueError(f"unknown modality '{modality}'")
    e = c.encoder
    return TransformerEncoder(tokens, e.width, e.depth, e.heads, e.mlp_ratio)


class EmbeddingHead(nn.Module):
    """Pooled context tokens -> BatchNorm -> Linear -> L2-normalised shared embedding (B, E).

    Mean pooling, as I-JEPA's linear probes. BatchNorm rather than LayerNorm (as SimCLR's and
    VICReg's projectors): most tokens of a scene are background shared by every sample, and
    normalising across the batch removes that common part, so the first binding gradients see
    what tells samples apart instead of pulling every embedding to one point."""

    def __init__(self, dim: int, embed_dim: int):
        super().__init__()
        self.norm = nn.BatchNorm1d(dim)
        self.proj = nn.Linear(dim, embed_dim)

    def forward(self, feats: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        if valid is None:
            pooled = feats.mean(1)  # (B, D)
        else:
            w = valid.unsqueeze(-1).to(feats.dtype)
            pooled = (feats * w).sum(1) / w.sum(1).clamp_min(1.0)
        bn = self.norm
        # a sub-batch of one row (a modality only one row of the batch has) uses the running stats
        train_stats = self.training and pooled.shape[0] > 1
        pooled = F.batch_norm(pooled, bn.running_mean, bn.running_var, bn.weight, bn.bias, train_stats, bn.momentum, bn.eps)
        return F.normalize(self.proj(pooled).float(), dim=-1)


class MultiJEPA(nn.Module):
    def __init__(self, cfg: ModelConfig, vocab_size: int | None = None):
        super().__init__()
        self.cfg = cfg
        self.modalities = list(cfg.modalities)
        self.encoders = nn.ModuleDict({m: build_encoder(m, cfg, vocab_size) for m in self.modalities})
        # EMA copies: see the whole input, never get gradients, updated by `update_targets`.
        self.target_encoders = copy.deepcopy(self.encoders).requires_grad_(False)
        widths = {m: enc.dim for m, enc in self.encoders.items()}
        p = cfg.predictor
        self.predictors = nn.ModuleDict(
            {
                m: CrossModalPredictor(
                    widths[m],
                    enc.tokens.grid,
                    p.width,
                    p.depth,
                    p.heads,
                    other_dims={o: w for o, w in widths.items() if o != m},
                    cross_attention=p.cross_attention,
                )
                for m, enc in self.encoders.items()
            }
        )
        self.heads = nn.ModuleDict({m: EmbeddingHead(widths[m], cfg.embed_dim) for m in self.modalities})
        self.heads.apply(init_weights)
        self.logit_scale = nn.Parameter(
            torch.tensor(math.log(1.0 / cfg.init_temperature)), requires_grad=cfg.learn_temperature
        )
        self.processors: Any = None  # set by from_pretrained: turns paths/strings/arrays into inputs
        self.run_config: Any = None  # set by from_pretrained: the run's whole Config (data columns, ...)

    # ------------------------------------------------------------------ training forward

    def forward(self, batch: dict) -> dict[str, dict[str, torch.Tensor]]:
        """batch: from `MultiModalCollator` with masks. For each modality m present:
        {"pred": (B_m, T, D), "target": (B_m, T, D), "z": (B_m, E), "index": (B_m,)}."""
        present = [m for m in self.modalities if m in batch]
        size = batch["size"]
        context: dict[str, torch.Tensor] = {}
        valid: dict[str, torch.Tensor | None] = {}
        for m in present:
            # (B_m, Nc, D); context indices of -1 are padding, masked out everywhere below
            context[m], valid[m] = self.encoders[m](batch[m]["x"], keep=batch[m]["context"])

        # Every modality's context tokens laid out over the whole batch, for cross-attention:
        # (B, Nc_m, D_m) features and (B, Nc_m) validity (False where the row lacks m or on padding).
        full: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for m in present:
            idx = batch[m]["index"]
            feats = context[m].new_zeros(size, *context[m].shape[1:]).index_copy(0, idx, context[m])
            ok_m = valid[m] if valid[m] is not None else torch.ones(context[m].shape[:2], dtype=torch.bool, device=idx.device)
            ok = torch.zeros(size, ok_m.shape[1], dtype=torch.bool, device=idx.device).index_copy(0, idx, ok_m)
            full[m] = (feats, ok)

        out: dict[str, dict[str, torch.Tensor]] = {}
        for m in present:
            entry = batch[m]
            idx = entry["index"]
            targets_idx = entry["targets"].flatten(1)  # (B_m, K * Nt)
            with torch.no_grad():
                t, _ = self.target_encoders[m](entry["x"])  # (B_m, N, D), whole input
                t = F.layer_norm(t.float(), t.shape[-1:])
                target = gather_tokens(t, targets_idx)  # (B_m, T, D)
            predictor = self.predictors[m]
            memory = None
            if predictor.use_cross:
                others = {o: (full[o][0][idx], full[o][1][idx]) for o in present if o != m}
                memory = predictor.build_memory(others, idx.shape[0])
            pred = predictor(context[m], entry["context"], targets_idx, memory, valid[m])
            out[m] = {"pred": pred, "target": target, "z": self.heads[m](context[m], valid[m]), "index": idx}
        return out

    @torch.no_grad()
    def update_targets(self, momentum: float) -> None:
        """target <- momentum * target + (1 - momentum) * online."""
        for m in self.modalities:
            t = list(self.target_encoders[m].parameters())
            o = [p.detach() for p in self.encoders[m].parameters()]
            torch._foreach_mul_(t, momentum)
            torch._foreach_add_(t, o, alpha=1.0 - momentum)

    # ------------------------------------------------------------------ inference

    @torch.no_grad()
    def encode(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        """Unmasked inputs (as the collator batches them) -> normalised shared embeddings (B, E).
        Audio may come as several clips per sample (B, clips, mel, T): their embeddings are
        averaged (ImageBind's multi-clip evaluation) and normalised again."""
        if modality not in self.encoders:
            raise ValueError(f"this model has no '{modality}' encoder (it has: {', '.join(self.modalities)})")
        clips = x.shape[1] if modality == "audio" and x.dim() == 4 else 0
        if clips:
            x = x.flatten(0, 1)  # (B * clips, mel, T)
        feats, valid = self.encoders[modality](x)
        z = self.heads[modality](feats, valid)  # (B [* clips], E)
        if clips:
            z = F.normalize(z.unflatten(0, (-1, clips)).mean(1), dim=-1)
        return z

    @classmethod
    def from_pretrained(cls, run_dir: str | Path, device: str | torch.device = "cpu") -> "MultiJEPA":
        """Load a pretraining run folder (config.yaml, tokenizer, latest weights)."""
        from .checkpoint import load_model_from_run

        return load_model_from_run(run_dir, device)

    def _embed(self, modality: str, values: Any, batch_size: int) -> torch.Tensor:
        if self.processors is None:
            raise RuntimeError("no preprocessing attached: load the model with MultiJEPA.from_pretrained(run_dir)")
        if not isinstance(values, (list, tuple)):
            values = [values]
        device = self.logit_scale.device
        self.eval()
        outs = []
        for i in range(0, len(values), batch_size):
            x = self.processors.batch(modality, values[i : i + batch_size]).to(device)
            outs.append(self.encode(modality, x))
        return torch.cat(outs) if outs else torch.empty(0, self.cfg.embed_dim)

    def embed_images(self, images: Any, batch_size: int = 64) -> torch.Tensor:
        """Paths, PIL images or arrays -> (n, embed_dim) normalised embeddings."""
        return self._embed("image", images, batch_size)

    def embed_texts(self, texts: Any, batch_size: int = 64) -> torch.Tensor:
        """Strings -> (n, embed_dim) normalised embeddings."""
        return self._embed("text", texts, batch_size)

    def embed_audio(self, audio: Any, batch_size: int = 64) -> torch.Tensor:
        """Paths, (array, sample_rate) tuples or {'array', 'sampling_rate'} dicts -> (n, embed_dim)."""
        return self._embed("audio", audio, batch_size)
