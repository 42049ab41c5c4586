"""The MultiJEPA objective and the collapse monitors.

    L = w_pred * sum_m smooth-L1(pred_m, target_m) + w_bind * sum_(a,b) InfoNCE(z_a, z_b)

Binding uses open_clip's symmetric `ClipLoss` on the embeddings of the masked inputs (as FLIP
does), over the rows that have both modalities of the pair. `ClipLoss` is distributed-aware and a
no-op wrapper at world size 1.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from open_clip.loss import ClipLoss

from .config import LossConfig


def bind_pairs(modalities: list[str], anchor: str | None) -> list[tuple[str, str]]:
    """All pairs, or only the pairs with the anchor (ImageBind's recipe)."""
    pairs = list(itertools.combinations(modalities, 2))
    if anchor is not None:
        pairs = [p for p in pairs if anchor in p]
    return pairs


def paired_rows(index_a: torch.Tensor, index_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions in a's and b's sub-batches of the rows that have both (same row order)."""
    in_b = torch.isin(index_a, index_b)
    sel_a = in_b.nonzero().squeeze(1)
    # index tensors are sorted batch positions, so searchsorted finds each shared row in b
    sel_b = torch.searchsorted(index_b, index_a[sel_a])
    return sel_a, sel_b


def feature_std(x: torch.Tensor) -> torch.Tensor:
    """Mean over dimensions of the per-dimension std over all tokens: ~1 for healthy layer-normed
    targets, -> 0 when the representation collapses."""
    x = x.detach().float().reshape(-1, x.shape[-1])
    return x.std(0).mean() if x.shape[0] > 1 else x.new_zeros(())


def rankme(z: torch.Tensor, eps: float = 1e-7) -> float:
    """RankMe (Garrido et al. 2023): exp(entropy of normalised singular values) of (B, E)."""
    z = z.detach().float()
    if z.shape[0] < 2:
        return float("nan")
    s = torch.linalg.svdvals(z)
    p = s / (s.sum() + eps) + eps
    return float(torch.exp(-(p * p.log()).sum()))


class MultiJEPAObjective:
    def __init__(self, cfg: LossConfig, modalities: list[str], rank: int = 0, world_size: int = 1):
        self.cfg = cfg
        self.pairs = bind_pairs(modalities, cfg.bind_anchor)
        self.clip_loss = ClipLoss(rank=rank, world_size=world_size)

    def __call__(self, out: dict, logit_scale: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """-> (loss, logs); logs are detached 0-d tensors, turned into numbers only on log steps
        so that a GPU step never waits for them."""
        cfg = self.cfg
        logs: dict[str, torch.Tensor] = {}
        pred_total = torch.zeros((), device=logit_scale.device)
        for m, o in out.items():
            lm = F.smooth_l1_loss(o["pred"].float(), o["target"])
            pred_total = pred_total + lm
            logs[f"pred/{m}"] = lm.detach()
            logs[f"std_target/{m}"] = feature_std(o["target"])
            logs[f"std_pred/{m}"] = feature_std(o["pred"])

        bind_total = torch.zeros((), device=logit_scale.device)
        scale = logit_scale.exp().clamp(max=100.0)
        for a, b in self.pairs:
            if a not in out or b not in out:
                continue
            sa, sb = paired_rows(out[a]["index"], out[b]["index"])
            if sa.numel() < 2:  # InfoNCE needs negatives
                continue
            lb = self.clip_loss(out[a]["z"][sa], out[b]["z"][sb], scale)
            bind_total = bind_total + lb
            logs[f"bind/{a}-{b}"] = lb.detach()

        loss = cfg.pred_weight * pred_total + cfg.bind_weight * bind_total
        if cfg.variance_weight > 0:
            var = sum(F.relu(1.0 - o["z"].std(0) * o["z"].shape[1] ** 0.5).mean() for o in out.values())
            loss = loss + cfg.variance_weight * var
            logs["variance"] = var.detach()
        logs["loss/pred"] = pred_total.detach()
        logs["loss/bind"] = bind_total.detach()
        logs["loss"] = loss.detach()
        logs["temperature"] = (1.0 / scale).detach()
        return loss, logs
