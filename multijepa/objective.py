"""The MultiJEPA objective and the collapse monitors.

    L = w_pred * sum_m smooth-L1(pred_m, target_m) + w_bind * sum_(a,b) InfoNCE(z_a, z_b)

With `loss.objective: clip` (or w_pred = 0) the model predicts nothing and only binding is left.

Binding uses open_clip's symmetric `ClipLoss` on the embeddings the model hands over (of the
unmasked inputs by default, `loss.bind_input`), over the rows that have both modalities of the
pair. Under torchrun it gathers the embeddings of every process with gradients and scores this
process's rows against all of them (`gather_with_grad`, `local_loss`); at world size 1 it is the
plain loss. Optional terms: a VICReg-style variance term and SIGReg (`sigreg`, LeJEPA's
Epps-Pulley statistic on random 1-D projections of the online context tokens).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
import torch.distributed.nn.functional as dist_nn
import torch.nn.functional as F
from open_clip.loss import ClipLoss

from . import distributed
from .config import LossConfig


class CollapseError(RuntimeError):
    """The target features stopped varying: the run has collapsed (see `feature_std`)."""


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


def epps_pulley(x: torch.Tensor, t_max: float = 3.0, knots: int = 17) -> torch.Tensor:
    """The Epps-Pulley statistic of each column of x (N, P) against N(0, 1):

        N * integral over t in [-t_max, t_max] of |ecf(t) - exp(-t^2/2)|^2 exp(-t^2/2) dt,

    ecf(t) = mean_j exp(i t x_j), the empirical characteristic function; the trapezoid rule on
    `knots` points of [0, t_max], doubled (the integrand is even), as LeJEPA computes it. -> (P,)."""
    return epps_pulley_of_sums(*ecf_sums(x, t_max, knots), t_max)


def ecf_sums(x: torch.Tensor, t_max: float = 3.0, knots: int = 17) -> tuple[torch.Tensor, torch.Tensor]:
    """x (N, P) -> ((2, P, K) sums over rows of cos(t x) and sin(t x) at the K knots, (N,)): what the
    empirical characteristic function is made of, summable over processes."""
    t = torch.linspace(0.0, t_max, knots, device=x.device, dtype=torch.float32)  # (K,)
    xt = x.float().unsqueeze(-1) * t  # (N, P, K)
    return torch.stack([xt.cos().sum(0), xt.sin().sum(0)]), x.new_full((), x.shape[0], dtype=torch.float32)


def epps_pulley_of_sums(sums: torch.Tensor, n: torch.Tensor, t_max: float = 3.0) -> torch.Tensor:
    """`epps_pulley` from `ecf_sums` (over one process's rows or summed over all of them) -> (P,)."""
    knots = sums.shape[-1]
    t = torch.linspace(0.0, t_max, knots, device=sums.device, dtype=torch.float32)
    w = torch.full((knots,), 2 * t_max / (knots - 1), device=sums.device)  # trapezoid weights, doubled
    w[[0, -1]] /= 2
    window = torch.exp(-t.square() / 2)  # the N(0, 1) characteristic function, also the weight
    ecf = sums / n.clamp_min(1)
    err = (ecf[0] - window).square() + ecf[1].square()  # (P, K)
    return (err * window) @ w * n


def slice_directions(dim: int, slices: int, generator: torch.Generator | None, device) -> torch.Tensor:
    """(dim, slices) random unit directions, drawn on the CPU (the same for a seeded generator on every device)."""
    a = torch.randn(dim, slices, generator=generator, device="cpu").to(device)
    return a / a.norm(dim=0, keepdim=True)


def sigreg(z: torch.Tensor, generator: torch.Generator | None = None, slices: int = 256) -> torch.Tensor:
    """SIGReg (LeJEPA, Balestriero & LeCun 2025): the mean Epps-Pulley statistic of z (N, D)
    projected on `slices` random unit directions; small when z is an isotropic standard Gaussian
    in every direction (Cramer-Wold), so it rules out collapse without a target network."""
    return epps_pulley(z.float() @ slice_directions(z.shape[-1], slices, generator, z.device)).mean()


def global_sigreg(tokens: list[torch.Tensor | None], seed: int | None, device, slices: int = 256,
                  knots: int = 17) -> torch.Tensor:
    """The sum over modalities of `sigreg` of each modality's tokens (n_m, D_m) of the whole global
    batch: every process's characteristic-function sums are added up (with gradients) in one
    all_reduce, and every process projects modality i on the same directions (drawn from `seed` and
    i; seed None: the global generator, for one process), so any split of the rows over processes
    gives one process's statistic. None: this process has no tokens of that modality (it still
    joins). A modality with fewer than 2 tokens over all processes is left out."""
    parts = []
    for i, x in enumerate(tokens):
        if x is None:
            parts.append(torch.zeros(2 * slices * knots + 1, device=device))
            continue
        generator = torch.Generator().manual_seed(seed * 16 + i) if seed is not None else None
        sums, n = ecf_sums(x.float() @ slice_directions(x.shape[-1], slices, generator, x.device), knots=knots)
        parts.append(torch.cat([sums.flatten(), n.view(1)]))
    flat = torch.stack(parts)  # (M, 2 * slices * knots + 1)
    if distributed.active():
        flat = dist_nn.all_reduce(flat)
    reg = torch.zeros((), device=device)
    for row in flat:
        if float(row[-1].detach()) >= 2:
            reg = reg + epps_pulley_of_sums(row[:-1].view(2, slices, knots), row[-1]).mean()
    return reg


def global_variance_hinge(z: list[torch.Tensor | None], dim: int, device) -> torch.Tensor:
    """VICReg's variance hinge, relu(1 - sqrt(E) * std), summed over modalities, with each dimension's
    std taken over the rows (n_m, E) of the whole global batch: sums and sums of squares are added
    up over processes (with gradients) in one all_reduce, so any split of the rows gives one
    process's term. None: no rows of that modality here; fewer than 2 rows in all: left out."""
    parts = []
    for x in z:
        if x is None:
            parts.append(torch.zeros(2 * dim + 1, device=device))
        else:
            x = x.float()
            parts.append(torch.cat([x.sum(0), x.square().sum(0), x.new_full((1,), x.shape[0])]))
    flat = torch.stack(parts)  # (M, 2E + 1)
    if distributed.active():
        flat = dist_nn.all_reduce(flat)
    total = torch.zeros((), device=device)
    for row in flat:
        n = row[-1]
        if float(n.detach()) < 2:
            continue
        mean = row[:dim] / n
        var = (row[dim:2 * dim] / n - mean.square()).clamp_min(0) * n / (n - 1)  # unbiased, as Tensor.std
        total = total + F.relu(1.0 - (var + 1e-12).sqrt() * dim ** 0.5).mean()
    return total


def token_sample(tokens: torch.Tensor, valid: torch.Tensor | None, most: int = 1024) -> torch.Tensor:
    """(B, N, D) tokens, (B, N) validity -> (n, D): the valid ones, at most `most` of them drawn at
    random (the global generator, so a resumed run draws the same)."""
    flat = tokens.reshape(-1, tokens.shape[-1])
    if valid is not None:
        flat = flat[valid.reshape(-1)]
    if flat.shape[0] > most:
        flat = flat[torch.randperm(flat.shape[0])[:most].to(flat.device)]
    return flat


def rankme(z: torch.Tensor, eps: float = 1e-7) -> float:
    """RankMe (Garrido et al. 2023): exp(entropy of normalised singular values) of (B, E)."""
    z = z.detach().float()
    if z.shape[0] < 2:
        return float("nan")
    s = torch.linalg.svdvals(z)
    p = s / (s.sum() + eps) + eps
    return float(torch.exp(-(p * p.log()).sum()))


@dataclass
class StepCounts:
    """Row counts that turn per-process sums into global means.

    per_rank (world, k): this micro-batch's counts on every process; total (k,): counts over the
    whole optimizer step (all processes and micro-batches). Columns: batch size, rows per
    modality, rows per bound pair (`MultiJEPAObjective.count_names`)."""

    per_rank: torch.Tensor
    total: torch.Tensor
    rank: int = 0

    @property
    def world(self) -> int:
        return self.per_rank.shape[0]


class MultiJEPAObjective:
    """Each term is a sum over this process's rows divided by the rows of the whole step, times
    the world size (DDP averages gradients over processes), so that any split of a global batch
    over processes and micro-batches gives the gradient of one process holding it all."""

    def __init__(self, cfg: LossConfig, modalities: list[str], rank: int = 0, world_size: int = 1):
        self.cfg = cfg
        self.modalities = list(modalities)
        self.pairs = bind_pairs(modalities, cfg.bind_anchor)
        self.clip_loss = ClipLoss(local_loss=True, gather_with_grad=True, rank=rank, world_size=world_size)
        self.count_names = ["size", *self.modalities, *(f"{a}-{b}" for a, b in self.pairs)]

    def local_counts(self, batch: dict, size: int) -> torch.Tensor:
        """(k,) int64 counts (see `count_names`) of a collated batch of `size` rows, or of the
        model's outputs (both hold {m: {"index": (B_m,)}}; in outputs a modality's rows are those it
        predicts, where z may hold only the bound ones). Read from shapes; only a pair whose
        sub-batches are not both the whole batch needs its shared rows counted."""
        rows = {m: int(batch[m].get("pred", batch[m]["index"]).shape[0]) if m in batch else 0 for m in self.modalities}
        pairs = []
        for a, b in self.pairs:
            if rows[a] == size and rows[b] == size:
                pairs.append(size)
            elif rows[a] and rows[b]:
                pairs.append(int(torch.isin(batch[a]["index"], batch[b]["index"]).sum()))
            else:
                pairs.append(0)
        return torch.tensor([size, *rows.values(), *pairs], dtype=torch.long)

    def bound_pairs(self, per_rank: torch.Tensor) -> list[tuple[str, str]]:
        """The pairs a micro-batch with these counts (world, k) binds: those with at least two rows
        over all processes (InfoNCE needs negatives), decided alike on every process. `terms` binds
        these; the training step skips a micro-batch with none while nothing is predicted."""
        return [(a, b) for a, b in self.pairs if int(per_rank[:, self.count_names.index(f"{a}-{b}")].sum()) >= 2]

    def __call__(self, out: dict, logit_scale: torch.Tensor,
                 counts: StepCounts | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """-> (loss, logs); logs are detached 0-d tensors, turned into numbers only on log steps
        so that a GPU step never waits for them. Without `counts`: one process, one micro-batch."""
        terms, logs = self.terms(out, logit_scale, counts)
        return sum(terms.values()), logs

    def terms(self, out: dict, logit_scale: torch.Tensor, counts: StepCounts | None = None,
              pred_scale: float = 1.0, seed: int | None = None) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """-> ({"pred", "bind"[, "variance", "sigreg"]}: the weighted terms whose sum is the loss, logs), so
        that the training step can measure each term's gradient on the encoders. pred_scale: the share
        of pred_weight that applies (the ramp at the start of a late prediction phase); seed: of SIGReg's
        random directions (the training step passes its step number, alike on every process)."""
        cfg = self.cfg
        if counts is None:
            local = self.local_counts(out, 0)
            counts = StepCounts(local.view(1, -1), local)
        col = {name: i for i, name in enumerate(self.count_names)}
        world = counts.world
        logs: dict[str, torch.Tensor] = {}
        device = logit_scale.device
        pred_total = torch.zeros((), device=device)
        for m, o in out.items():
            if "pred" not in o:  # the CLIP objective, or no prediction term: nothing predicted
                continue
            err = F.smooth_l1_loss(o["pred"].float(), o["target"], reduction="none").mean(-1)  # (B_m, T)
            valid = o.get("target_valid")
            if valid is None:
                per_row = err.mean(1)  # (B_m,)
            else:
                per_row = (err * valid).sum(1) / valid.sum(1).clamp_min(1)
            lm = per_row.sum() * world / int(counts.total[col[m]])
            pred_total = pred_total + lm
            logs[f"pred/{m}"] = lm.detach()
            logs[f"std_target/{m}"] = feature_std(o["target"])
            logs[f"std_pred/{m}"] = feature_std(o["pred"])

        bind_total = torch.zeros((), device=device)
        scale = logit_scale.exp()  # the parameter itself is kept in [0, ln 100] (MultiJEPA.clamp_logit_scale)
        for a, b in self.bound_pairs(counts.per_rank):
            name = f"{a}-{b}"
            per_rank = counts.per_rank[:, col[name]]  # (world,) pairs on each process
            if a in out and b in out:
                sa, sb = paired_rows(out[a]["index"], out[b]["index"])
                za, zb = out[a]["z"][sa], out[b]["z"][sb]
            else:  # this process has none of the pair but still joins the gather, and its backward:
                za = zb = next(iter(out.values()))["z"][:0]  # (0, E), in the autograd graph
            n_local = int(per_rank[counts.rank])
            if bool((per_rank == per_rank[0]).all()):  # open_clip's gathered loss: a local mean
                lb = self.clip_loss(za, zb, scale) * n_local
            else:
                lb = uneven_clip_loss(za, zb, scale, per_rank, counts.rank)
            lb = lb * world / int(counts.total[col[name]])
            bind_total = bind_total + lb
            logs[f"bind/{name}"] = lb.detach()

        terms = {"pred": cfg.pred_weight * pred_scale * pred_total, "bind": cfg.bind_weight * bind_total}
        unused = [o["unused"] for o in out.values() if "unused" in o]  # 0: see MultiJEPA._unused_anchor
        if unused:
            terms["unused"] = sum(unused)
        # the two batch statistics: over the whole global batch (every process joins, rows or not), each
        # micro-batch weighted by its share of the step's rows, so neither grows with train.grad_accum
        step_rows = float(counts.total[0])
        share = float(counts.per_rank[:, 0].sum()) / step_rows if step_rows else 1.0
        if cfg.sigreg_weight > 0:  # on the online context tokens
            tokens = [token_sample(out[m]["context"], out[m]["context_valid"]) if "context" in out.get(m, {}) else None
                      for m in self.modalities]
            reg = global_sigreg(tokens, seed, device)
            terms["sigreg"] = cfg.sigreg_weight * share * reg
            logs["sigreg"] = reg.detach()
        if cfg.variance_weight > 0:  # on the shared embeddings
            z = [out[m]["z"] if m in out else None for m in self.modalities]
            var = global_variance_hinge(z, next(v.shape[-1] for v in z if v is not None), device)
            terms["variance"] = cfg.variance_weight * share * var
            logs["variance"] = var.detach()
        logs["loss/pred"] = pred_total.detach()
        logs["loss/bind"] = bind_total.detach()
        logs["loss"] = sum(terms.values()).detach()
        logs["temperature"] = (1.0 / scale).detach()
        return terms, logs


def uneven_clip_loss(za: torch.Tensor, zb: torch.Tensor, scale: torch.Tensor, per_rank: torch.Tensor,
                     rank: int) -> torch.Tensor:
    """Symmetric InfoNCE *summed* over this process's rows against the pairs of every process,
    when processes hold different numbers of pairs (mixed sources): rows are padded to the
    largest count for the gather (with gradients) and the padding dropped again."""
    n_max = int(per_rank.max())
    n = za.shape[0]

    def gather(z):  # (n, E) -> (sum(per_rank), E)
        padded = torch.cat([z, z.new_zeros(n_max - n, z.shape[1])])
        parts = dist_nn.all_gather(padded)
        return torch.cat([p[: int(c)] for p, c in zip(parts, per_rank)])

    all_a, all_b = gather(za), gather(zb)
    labels = torch.arange(n, device=za.device) + int(per_rank[:rank].sum())
    loss_a = F.cross_entropy(scale * za @ all_b.T, labels, reduction="sum")
    loss_b = F.cross_entropy(scale * zb @ all_a.T, labels, reduction="sum")
    return (loss_a + loss_b) / 2
