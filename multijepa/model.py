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
import torch.distributed.nn.functional as dist_nn
import torch.nn.functional as F
from torch import nn
from torch.profiler import record_function

from fusion.predictor import CrossModalPredictor
from modalities.encoder import Encoder, encoder_blocks, gather_tokens, init_weights
from modalities.seeding import PREDICTOR_INIT, mix_seed
from modalities.text import TextTokenizer
from modalities.towers import file_sha256, load_tower, read_weights, weights_file

from . import distributed
from .checkpoint import CKPT_DIR, CheckpointError, latest_checkpoint, load_weights
from .config import Config, ConfigError, ModelConfig, load_run_config
from .modality import get_modality
from .processors import Processors, build_tokenizer
from .run_folder import run_of
from .towers import resolve_towers, tower_spec


def build_encoder(modality: str, cfg: ModelConfig, vocab_size: int | None = None) -> nn.Module:
    """A pretrained tower where `model.<m>.pretrained` names one, else the modality's tokens
    (`Modality.tokens`) followed by our blocks of `model.<m>.encoder`."""
    spec = tower_spec(cfg, modality)
    if spec is not None:
        return get_modality(modality).tower(spec, cfg)
    tokens = get_modality(modality).tokens(cfg, vocab_size)
    e = getattr(cfg, modality).encoder
    m = e.mamba
    blocks = encoder_blocks(e.kind, e.width, e.depth, e.heads, e.mlp_ratio, e.attention_fraction,
                            state=m.state, expand=m.expand, head_dim=m.head_dim, conv=m.conv, chunk=m.chunk)
    return Encoder(tokens, e.width, blocks)


def load_pretrained_towers(model: MultiJEPA) -> dict:
    """Initialise the towers of `model.<m>.pretrained` strings that name weights (a file, or an
    open_clip tag), online encoder and its EMA target alike -> {modality: what was loaded}, for the
    run folder's towers.json. A file serving two towers (a CLIP model's image and text) is read and
    hashed once."""
    loaded: dict = {}
    files: dict[Path, tuple[dict, str]] = {}  # path -> (tensors, sha256)
    for m in model.modalities:
        spec = tower_spec(model.cfg, m)
        if spec is None or spec.path is None:
            continue
        path = weights_file(spec)
        if path not in files:
            files[path] = read_weights(path), file_sha256(path)
        loaded[m] = {"spec": getattr(model.cfg, m).pretrained, **load_tower(model.encoders[m], path, *files[path])}
        if model.target_encoders is not None and m in model.target_encoders:  # not when frozen
            model.target_encoders[m].load_state_dict(model.encoders[m].state_dict())
    return loaded


def instance_norm(t: torch.Tensor, valid: torch.Tensor | None = None, eps: float = 1e-5) -> torch.Tensor:
    """(B, N, D) -> each feature standardised over the valid tokens of its own sample (data2vec's
    target normalisation): what is the same all over an input (a global code every token
    carries) is taken out of the targets, so only what varies from token to token is predicted."""
    w = torch.ones_like(t[..., :1]) if valid is None else valid.unsqueeze(-1).to(t.dtype)  # (B, N, 1)
    n = w.sum(1, keepdim=True).clamp_min(1.0)
    mean = (t * w).sum(1, keepdim=True) / n
    var = ((t - mean) ** 2 * w).sum(1, keepdim=True) / n
    return (t - mean) / (var + eps).sqrt()


def position_means(t: torch.Tensor, valid: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, N, D) -> ((N, D) sums over the batch of the valid tokens at each position, (N, 1) their counts)."""
    w = torch.ones_like(t[..., :1]) if valid is None else valid.unsqueeze(-1).to(t.dtype)  # (B, N, 1)
    return (t * w).sum(0), w.sum(0)


def position_centre(t: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """(B, N, D) -> each token minus the mean over the batch of the tokens at its position: what
    every input carries at a place (a mel band's typical level, a border's background) is taken out
    of the targets, so what is predicted is what tells this input apart at that place. (The model
    takes the means over the whole global batch: `MultiJEPA._position_means`.)"""
    s, n = position_means(t, valid)
    return t - s / n.clamp_min(1.0)


class EmbeddingHead(nn.Module):
    """Pooled context tokens -> BatchNorm -> Linear -> L2-normalised shared embedding (B, E).

    Mean pooling, as I-JEPA's linear probes. BatchNorm rather than LayerNorm (as SimCLR's and
    VICReg's projectors): most tokens of a scene are background shared by every sample, and
    normalising across the batch removes that common part, so the first binding gradients see
    what tells samples apart instead of pulling every embedding to one point. In training the
    statistics are those of the global batch (all processes, see `global_batch_stats`)."""

    def __init__(self, dim: int, embed_dim: int):
        super().__init__()
        self.norm = nn.BatchNorm1d(dim)
        self.proj = nn.Linear(dim, embed_dim)

    @staticmethod
    def pool(feats: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """(B, N, D) tokens, (B, N) validity -> (B, D) mean over valid tokens."""
        if valid is None:
            return feats.mean(1)
        w = valid.unsqueeze(-1).to(feats.dtype)
        return (feats * w).sum(1) / w.sum(1).clamp_min(1.0)

    def forward(self, feats: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """Evaluation: normalised with the running statistics."""
        return self.project(self.pool(feats, valid))

    def project(self, pooled: torch.Tensor, stats: tuple | None = None) -> torch.Tensor:
        """stats: (mean, biased var, rows) of the global batch from `global_batch_stats`, in
        training; without them the running statistics are used."""
        bn = self.norm
        mean, var = bn.running_mean, bn.running_var
        if stats is not None:
            # a modality only one row of the global batch has keeps the running stats
            b_mean, b_var, n = stats
            mean, var = torch.where(n > 1, b_mean, mean), torch.where(n > 1, b_var, var)
        x = (pooled.float() - mean) * torch.rsqrt(var + bn.eps) * bn.weight + bn.bias
        return F.normalize(self.proj(x).float(), dim=-1)


def _moment_sums(feats: dict[str, torch.Tensor], heads: nn.ModuleDict) -> list[torch.Tensor]:
    """Per head, [sum (D,), sum of squares (D,), rows (1,)] of `feats[m]` taken around the running
    mean (for float precision), zeros for a modality `feats` lacks: the same layout on every process."""
    parts = []
    for m, head in heads.items():
        shift = head.norm.running_mean
        if m in feats:
            x = feats[m].float() - shift  # (B_m, D)
            parts += [x.sum(0), (x * x).sum(0), x.new_full((1,), float(x.shape[0]))]
        else:
            parts += [torch.zeros(2 * shift.numel() + 1, device=shift.device)]
    return parts


def _moments(flat: torch.Tensor, heads: nn.ModuleDict) -> dict[str, tuple]:
    """`_moment_sums`, concatenated and summed over processes -> {m: (mean (D,), biased var (D,), rows ())}."""
    out, i = {}, 0
    for m, head in heads.items():
        bn = head.norm
        d = bn.running_mean.numel()
        s, ss, n = flat[i : i + d], flat[i + d : i + 2 * d], flat[i + 2 * d]
        i += 2 * d + 1
        mu = s / n.clamp_min(1)
        out[m] = (mu + bn.running_mean, (ss / n.clamp_min(1) - mu * mu).clamp_min(0), n)
    return out


def global_batch_stats(pooled: dict[str, torch.Tensor], heads: nn.ModuleDict,
                       whole: dict[str, torch.Tensor | None] | None = None) -> dict[str, tuple]:
    """Per modality: (mean (D,), biased var (D,), rows ()) of the pooled features over the whole
    global batch, and the heads' running statistics moved toward them. Every process contributes
    sums for every modality (zeros where it has none), in one all_reduce that carries gradients
    back, so the result, and the running statistics on every process, are those of one process
    holding the whole batch.

    whole: for the modalities whose `pooled` come from a masked view (the prediction context, with
    `loss.bind_input=context`), pooled features of their whole inputs (None on a process without
    rows of m; the same keys on every process): the running statistics, which evaluation normalises
    whole inputs with, follow these instead. Moved by masked views, they put evaluation's embeddings
    several standard deviations off the ones binding trained (docs/results/objective.md)."""
    whole = whole or {}
    parts = _moment_sums(pooled, heads)
    if whole:
        parts += _moment_sums({m: f.detach() for m, f in whole.items() if f is not None}, heads)
    flat = torch.cat(parts)
    if distributed.active():
        flat = dist_nn.all_reduce(flat)
    half = flat.shape[0] // 2 if whole else flat.shape[0]
    batch = _moments(flat[:half], heads)
    running = _moments(flat[half:].detach(), heads) if whole else {}
    stats = {}
    for m, head in heads.items():
        bn = head.norm
        mean, var, n = running[m] if m in whole else batch[m]
        with torch.no_grad():  # on every process, also one without rows of m
            use = n > 1
            unbiased = var * n / (n - 1).clamp_min(1)
            bn.running_mean.copy_(torch.where(use, torch.lerp(bn.running_mean, mean, bn.momentum), bn.running_mean))
            bn.running_var.copy_(torch.where(use, torch.lerp(bn.running_var, unbiased, bn.momentum), bn.running_var))
        if m in pooled:
            stats[m] = batch[m]
    return stats


class MultiJEPA(nn.Module):
    """processors: the preprocessing that turns paths, strings and arrays into this model's inputs
    (`embed_*` need it); run_config: the whole config of the run it came from (data columns, ...).
    Both are handed out with the model by `create_model` and `from_pretrained` (end of this file)."""

    def __init__(self, cfg: ModelConfig, vocab_size: int | None = None, processors: Processors | None = None,
                 run_config: Config | None = None, predict: bool = True, bind_input: str = "context",
                 pred_start: float = 0.0):
        super().__init__()
        self.cfg = cfg
        self.modalities = list(cfg.modalities)
        self.bind_input = bind_input
        self.loaded_towers: dict = {}  # modality -> the weights file a pretrained tower started from
        self.encoders = nn.ModuleDict({m: build_encoder(m, cfg, vocab_size) for m in self.modalities})
        # frozen encoders (`model.<m>.freeze`): fixed weights, whole inputs, nothing predicted for them
        self.frozen = [m for m in self.modalities if getattr(getattr(cfg, m), "freeze", False)]
        # CLIPA's resized binding input (`model.<m>.bind_scale`, where not 1), for `loss.bind_scale_until` of a run
        self.bind_scales = {m: s for m in self.modalities if (s := getattr(getattr(cfg, m), "bind_scale", 1.0)) != 1.0}
        self.bind_resized = True  # until `loss.bind_scale_until` of the run (the training loop sets it each step)
        for m in self.frozen:
            self.encoders[m].requires_grad_(False)
        learned = [m for m in self.modalities if m not in self.frozen]
        widths = {m: enc.dim for m, enc in self.encoders.items()}
        # Built only for a prediction term (`LossConfig.predicts`): a CLIP-objective run holds neither.
        self.target_encoders: nn.ModuleDict | None = None
        self.predictors: nn.ModuleDict | None = None
        if predict and cfg.target == "ema":
            # EMA copies: see the whole input, never get gradients, updated by `update_targets`.
            # (model.target "sigreg": the online encoders make the targets, under stop-gradient.)
            self.target_encoders = nn.ModuleDict(
                {m: copy.deepcopy(self.encoders[m]).requires_grad_(False) for m in learned})
        if predict:
            p = cfg.predictor
            self.predictors = self._init_apart(lambda: nn.ModuleDict(
                {
                    m: CrossModalPredictor(
                        widths[m],
                        enc.grid,
                        p.width,
                        p.depth,
                        p.heads,
                        other_dims={o: w for o, w in widths.items() if o != m},
                        cross_attention=p.cross_attention,
                    )
                    for m, enc in self.encoders.items() if m in learned
                }
            ))
        self.heads = nn.ModuleDict({m: EmbeddingHead(widths[m], cfg.embed_dim) for m in self.modalities})
        self.heads.apply(init_weights)
        self.logit_scale = nn.Parameter(
            torch.tensor(math.log(1.0 / cfg.init_temperature)), requires_grad=cfg.learn_temperature
        )
        self.clamp_logit_scale()
        # the prediction phase (`loss.pred_start`), saved with the weights: before it the target
        # encoders are unused copies, and what evaluations read is the online encoder
        self.pred_start = pred_start
        self.register_buffer("prediction_on", torch.tensor(predict and pred_start == 0))
        self._predicting = bool(self.prediction_on)
        self.processors = processors
        self.run_config = run_config
        self.touch_unused = False  # set by `parallelize` under DDP (see `_unused_anchor`)

    @staticmethod
    def _init_apart(build):
        """`build()` with its random initial weights drawn from a generator of its own, seeded from the
        current seed: the predictors, so that the encoders and heads built around them start from the
        same weights whatever the objective (CLIP, `loss.pred_weight=0` or prediction), and a
        comparison of objectives compares the objectives alone. Drawn from the shared stream, they
        gave a predicting run's heads other initial weights than CLIP's (docs/results/objective.md)."""
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(mix_seed(PREDICTOR_INIT, torch.initial_seed()))  # the CPU's alone
            return build()

    def param_groups(self, optim: Any = None) -> list[dict]:
        """AdamW groups, beside the parameters they name (nanoGPT's `configure_optimizers`): decay
        on weight matrices; none on norms, biases and the temperature (ndim <= 1), nor on the
        learned tokens that a submodule lists in its `no_weight_decay()` (timm's convention).
        "apply_wd" marks the groups whose decay follows the schedule. With `optim.lr_scale` set for
        a modality (any scale not 1), every learned encoder gets its own pair of groups at
        lr * its scale ("lr_scale", which the schedule applies); with a late prediction phase
        (`loss.pred_start` > 0) the predictors get theirs ("phase": "pred", warmed up from the phase's
        first step); otherwise there are two groups."""
        skip = {f"{prefix}.{name}" for prefix, mod in self.named_modules()
                if mod is not self and hasattr(mod, "no_weight_decay") for name in mod.no_weight_decay()}
        scales = getattr(optim, "lr_scale", None)
        split = scales is not None and any(getattr(scales, m, 1.0) != 1.0 for m in self.modalities if m not in self.frozen)
        late = self.predictors is not None and self.pred_start > 0  # predictors on their own schedule
        buckets: dict[str, tuple[list, list]] = {"": ([], [])}
        for name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            key = name.split(".")[1] if split and name.startswith("encoders.") else ""
            key = "predictors" if late and name.startswith("predictors.") else key
            decay, no_decay = buckets.setdefault(key, ([], []))
            (no_decay if p.ndim <= 1 or name in skip else decay).append(p)
        groups = []
        for key, (decay, no_decay) in buckets.items():
            extra = {"phase": "pred"} if key == "predictors" else {"lr_scale": float(getattr(scales, key, 1.0))} if key else {}
            groups += [{"params": decay, "apply_wd": True, **extra},
                       {"params": no_decay, "apply_wd": False, "weight_decay": 0.0, **extra}]
        return [g for g in groups if g["params"]]

    # ------------------------------------------------------------------ training forward

    def forward(self, batch: dict) -> dict[str, dict[str, torch.Tensor]]:
        """batch: from `MultiModalCollator`. For each modality m present: {"z": (B_m, E), "index":
        (B_m,) the batch positions of z's rows (only the rows that have another modality where binding
        needed a second, unmasked forward) and, while the model predicts, "pred": (B_m, T, D),
        "target": (B_m, T, D), "target_valid": (B_m, T) or None, "context": (B_m, Nc, D) the online
        features, "context_valid": (B_m, Nc) or None.

        One online forward per modality sees: while predicting, the prediction context (I-JEPA's
        blocks), unless `model.predictor.own_context` is false (then what binding sees); before that
        (`loss.pred_start`) or in a CLIP-objective run, FLIP's random keep set ("bind_keep") where
        the modality has one, else the whole input (resized, CLIPA, where
        `model.<m>.bind_scale` < 1, until `loss.bind_scale_until`). Binding embeds that same
        forward, except where it must see the whole input (`_bind_features`). Under DDP the first
        modality's entry also holds "unused", a 0 that reaches every trainable weight (`_unused_anchor`)."""
        present = [m for m in self.modalities if m in batch]
        predicting = self.predicting and all("context" in batch[m] for m in present)
        masked = predicting and self.cfg.predictor.own_context  # else prediction reads binding's forward
        context, valid, seen = self._online(batch, present, masked)
        pooled, z_index, unmasked = self._bind_features(batch, present, context, valid, seen)
        if predicting and not masked and self.target_encoders is None:  # model.target sigreg: binding's forward
            unmasked = {m: (context[m], valid[m]) for m in present if seen[m] == "whole"}
        stats = global_batch_stats(pooled, self.heads, self._whole_pooled(batch, masked)) if self.training else {}
        out: dict[str, dict[str, torch.Tensor]] = {
            m: {"z": self.heads[m].project(pooled[m], stats.get(m)), "index": z_index[m]} for m in present
        }
        if predicting:
            self._predict(batch, present, context, valid, unmasked, out)
        if self.touch_unused and out:
            out[present[0]]["unused"] = self._unused_anchor()
        return out

    def _unused_anchor(self) -> torch.Tensor:
        """0 times the sum of one element of every trainable weight, which the objective adds to the
        loss. Which weights the loss reaches depends on the rows a process drew (a modality it has no
        rows of, a modality whose rows have no pair to bind, predictors before the prediction phase, the
        temperature with nothing bound). Under DDP every process then gives every weight a gradient every
        step (zero where it had none), so DDP needs no unused-parameter search and never waits for a
        gradient one process lacks. Costs one add per weight in backward."""
        weights = [p for p in self.parameters() if p.requires_grad]
        return 0.0 * torch.stack([w.reshape(-1)[0].float() for w in weights]).sum()

    def _online(self, batch: dict, present: list[str], predicting: bool) -> tuple[dict, dict, dict]:
        """The online forward of each modality -> (features (B_m, N', D), validity (B_m, N') or None,
        what it saw: "whole" (resized in training where `model.<m>.bind_scale` < 1), "context" (the
        prediction context) or "bind_keep" (FLIP's keep set))."""
        context: dict[str, torch.Tensor] = {}
        valid: dict[str, torch.Tensor | None] = {}
        seen: dict[str, str] = {}
        for m in present:
            entry = batch[m]
            with record_function(f"forward/online/{m}"):
                if m in self.frozen:  # nothing to learn or predict: its whole input, once, no graph
                    with torch.no_grad():
                        context[m], valid[m] = self.encoders[m](entry["x"])
                    seen[m] = "whole"
                    continue
                seen[m] = "context" if predicting else "bind_keep" if "bind_keep" in entry else "whole"
                keep = entry.get(seen[m])  # context indices of -1 are padding, masked out everywhere below
                # CLIPA: binding's whole input, resized (`model.<m>.bind_scale`), in training only
                resized = seen[m] == "whole" and self.training and self.bind_resized and m in self.bind_scales
                smaller = {"scale": self.bind_scales[m]} if resized else {}
                context[m], valid[m] = self.encoders[m](entry["x"], keep=keep, **smaller)
        return context, valid, seen

    def _binds_whole(self, m: str) -> bool:
        """Whether binding must embed m's whole input rather than the prediction context, while
        predicting: with `bind_input` "full", and for text (masking words loses what retrieval needs)."""
        return self.bind_input == "full" or not get_modality(m).bind_masking

    def _whole_pooled(self, batch: dict, predicting: bool) -> dict[str, torch.Tensor | None]:
        """While predicting, for every learned modality that binds the prediction context rather than
        its whole input (`loss.bind_input=context`), its whole inputs through the online encoder,
        without gradient, mean-pooled (None where this process has no rows of it): what the heads'
        running statistics follow (`global_batch_stats`), as evaluation embeds whole inputs. A forward
        without backward, where binding whole inputs costs both. The keys depend on the model alone,
        so every process reduces the same sums."""
        if not predicting:
            return {}
        pooled: dict[str, torch.Tensor | None] = {}
        for m in self.predictors:
            if self._binds_whole(m):
                continue
            pooled[m] = None
            if m in batch:
                with torch.no_grad(), record_function(f"forward/online_stats/{m}"):
                    pooled[m] = EmbeddingHead.pool(*self.encoders[m](batch[m]["x"]))
        return pooled

    def _bind_features(self, batch: dict, present: list[str], context: dict, valid: dict,
                       seen: dict) -> tuple[dict, dict, dict]:
        """-> (pooled features (B'_m, D) that binding embeds, their batch positions (B'_m,), whole-input
        online features (B_m, N, D) that were computed anyway). Where the online forward saw the
        prediction context but binding needs the whole input, a second forward runs over the rows that
        have another modality (a row with one modality is never bound); with model.target "sigreg" over
        every row, as that forward, detached, is also the targets."""
        pooled, z_index = {}, {}
        unmasked: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = {}
        reuse = self.predictors is not None and self.target_encoders is None
        for m in present:
            entry = batch[m]
            idx = entry["index"]
            pooled[m], z_index[m] = EmbeddingHead.pool(context[m], valid[m]), idx
            if not (seen[m] == "context" and self._binds_whole(m)):
                continue
            others = [batch[o]["index"] for o in present if o != m]
            bound = torch.isin(idx, torch.cat(others)) if others else torch.zeros_like(idx, dtype=torch.bool)
            sel = bound.nonzero().squeeze(1)
            z_index[m] = idx[sel]
            pooled[m] = context[m].new_zeros(0, context[m].shape[-1])
            if reuse:
                with record_function(f"forward/online_full/{m}"):
                    feats, ok = self.encoders[m](entry["x"])
                unmasked[m] = (feats, ok)
                pooled[m] = EmbeddingHead.pool(feats[sel], ok[sel] if ok is not None else None)
            elif len(sel):
                with record_function(f"forward/online_full/{m}"):
                    pooled[m] = EmbeddingHead.pool(*self.encoders[m](entry["x"][sel]))
        return pooled, z_index, unmasked

    def _target_features(self, m: str, entry: dict, unmasked: dict) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B_m, N, D) float target features of m's whole input, normalised per `model.target_norm` up to
        the position centring, no gradient; (B_m, N) validity or None."""
        with torch.no_grad(), record_function(f"forward/target/{m}"):
            if m in unmasked:
                t, t_valid = unmasked[m][0].detach(), unmasked[m][1]  # the binding forward, under stop-gradient
            elif self.cfg.target_layers > 1:  # data2vec: the mean of the last blocks, each normalised
                hs, t_valid = self.feature_encoder(m)(entry["x"], layers=self.cfg.target_layers)  # (L, B_m, N, D)
                t = torch.stack([instance_norm(h.float(), t_valid) for h in hs]).mean(0)
            else:
                t, t_valid = self.feature_encoder(m)(entry["x"])  # (B_m, N, D), whole input
            if self.cfg.target_norm in ("instance", "instance_position"):
                t = instance_norm(t.float(), t_valid)
            return t.float(), t_valid

    def _targets(self, entry: dict, t: torch.Tensor, t_valid: torch.Tensor | None,
                 means: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`_target_features` -> (B_m, T, D) layer-normed targets at the target indices; (B_m, T) validity
        or None. means: (N, D) position means to take out (`model.target_norm` position)."""
        with torch.no_grad():
            if means is not None:
                t = t - means[: t.shape[1]]
            t = F.layer_norm(t, t.shape[-1:])
            return gather_tokens(t, entry["targets"].flatten(1).clamp_min(0)), entry.get("target_valid")

    def _position_means(self, feats: dict[str, tuple[torch.Tensor, torch.Tensor | None]]) -> dict[str, torch.Tensor]:
        """Per learned modality, (N, D) the mean over the rows of the batch of the target features at each
        position, over the whole global batch under torchrun: every process adds its sums and counts
        (zeros for a modality it has no rows of), padded to the longest token count, in one all_reduce,
        so any split of the rows gives one process's targets."""
        names = list(self.predictors)
        sums = {m: position_means(t, valid) for m, (t, valid) in feats.items()}  # (N, D), (N, 1)
        if not distributed.active():
            return {m: s / c.clamp_min(1.0) for m, (s, c) in sums.items()}
        device = self.logit_scale.device
        lengths = torch.tensor([sums[m][0].shape[0] if m in sums else 0 for m in names], device=device)
        torch.distributed.all_reduce(lengths, op=torch.distributed.ReduceOp.MAX)
        parts = []
        for m, n in zip(names, lengths.tolist()):
            block = torch.zeros(n, self.encoders[m].dim + 1, device=device)
            if m in sums:
                block[: sums[m][0].shape[0]] = torch.cat(sums[m], -1)
            parts.append(block.flatten())
        flat = torch.cat(parts)
        torch.distributed.all_reduce(flat)
        means, at = {}, 0
        for m, n in zip(names, lengths.tolist()):
            block = flat[at : at + n * (self.encoders[m].dim + 1)].view(n, -1)
            at += block.numel()
            if m in feats:
                means[m] = block[:, :-1] / block[:, -1:].clamp_min(1.0)
        return means

    def _predict(self, batch: dict, present: list[str], context: dict, valid: dict, unmasked: dict,
                 out: dict) -> None:
        """Predict every learned modality's masked targets from its context and, by cross-attention,
        the other modalities' context tokens of the same rows; adds "pred", "target", ... to `out`."""
        size = batch["size"]
        # Every modality's context tokens laid out over the whole batch, for cross-attention:
        # (B, Nc_m, D) features and (B, Nc_m) validity (False where the row lacks m or on padding).
        full: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for m in present:
            idx = batch[m]["index"]
            feats = context[m].new_zeros(size, *context[m].shape[1:]).index_copy(0, idx, context[m])
            ok_m = valid[m] if valid[m] is not None else torch.ones(context[m].shape[:2], dtype=torch.bool, device=idx.device)
            ok = torch.zeros(size, ok_m.shape[1], dtype=torch.bool, device=idx.device).index_copy(0, idx, ok_m)
            full[m] = (feats, ok)
        learned = [m for m in present if m in self.predictors]  # a frozen encoder: memory for the others only
        own = self.cfg.predictor.own_context
        entries = {m: batch[m] if own else self._rows_with_others(batch, present, m, unmasked) for m in learned}
        learned = [m for m in learned if entries[m]["index"].numel()]  # no row of m has another modality
        feats = {m: self._target_features(m, entries[m], unmasked) for m in learned}
        centre = self.cfg.target_norm in ("position", "instance_position")
        means = self._position_means(feats) if centre else {}
        for m in learned:
            entry = entries[m]
            idx = entry["index"]  # the rows of m that are predicted: all of them, or those with another modality
            target, target_valid = self._targets(entry, *feats[m], means.get(m))
            predictor = self.predictors[m]
            memory = None
            if predictor.use_cross:
                others = {o: (full[o][0][idx], full[o][1][idx]) for o in present if o != m}
                memory = predictor.build_memory(others, idx.shape[0])
            # without its own context a modality is predicted from the memory alone: no context tokens
            ctx, ctx_idx, ctx_ok = (context[m], entry["context"], valid[m]) if own else (
                context[m].new_zeros(idx.shape[0], 0, context[m].shape[-1]), entry["context"][:, :0], None)
            with record_function(f"forward/predictor/{m}"):
                pred = predictor(ctx, ctx_idx, entry["targets"].flatten(1), memory, ctx_ok, target_valid)
            out[m].update(pred=pred, target=target, target_valid=target_valid, context=context[m],
                          context_valid=valid[m])

    @staticmethod
    def _rows_with_others(batch: dict, present: list[str], m: str, unmasked: dict) -> dict:
        """m's entry cut to its rows that have another modality (`model.predictor.own_context` false: a row
        alone has nothing to be predicted from), and `unmasked[m]` with it. Their prediction error is
        summed and divided by all of m's rows, as a row without a prediction adds 0."""
        entry = batch[m]
        others = [batch[o]["index"] for o in present if o != m]
        sel = torch.isin(entry["index"], torch.cat(others)).nonzero().squeeze(1)
        if m in unmasked:
            feats, ok = unmasked[m]
            unmasked[m] = (feats[sel], ok[sel] if ok is not None else None)
        keys = ("x", "lengths", "index", "context", "targets", "target_valid")
        return {k: entry[k][sel] for k in keys if entry.get(k) is not None}

    # ------------------------------------------------------------------ the prediction phase

    @property
    def predicting(self) -> bool:
        """Whether the model predicts now: it has predictors and its prediction phase has begun."""
        return self.predictors is not None and self._predicting

    @property
    def needs_pairs(self) -> bool:
        """Whether a batch without a pair leaves the loss nothing to learn from: while it binds alone, or
        predicts each modality from the others only (`model.predictor.own_context` false)."""
        return not self.predicting or not self.cfg.predictor.own_context

    @torch.no_grad()
    def start_prediction(self) -> None:
        """The switch of `loss.pred_start`: each target encoder becomes a copy of its online encoder
        (trained so far by binding, not the random one it was built as) and prediction begins."""
        if self.target_encoders is not None:
            for m, target in self.target_encoders.items():
                for t, o in zip(target.parameters(), self.encoders[m].parameters()):
                    t.copy_(o.detach())
                for t, o in zip(target.buffers(), self.encoders[m].buffers()):
                    t.copy_(o)
        self.prediction_on.fill_(True)
        self._predicting = True

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """As nn.Module's; a checkpoint from before `loss.pred_start` existed has no "prediction_on":
        such runs predicted from their first step."""
        if "prediction_on" not in state_dict and any(k.startswith("predictors.") for k in state_dict):
            state_dict = {**state_dict, "prediction_on": torch.ones((), dtype=torch.bool)}
        result = super().load_state_dict(state_dict, strict=strict, assign=assign)
        self._predicting = bool(self.prediction_on)
        return result

    def train(self, mode: bool = True) -> MultiJEPA:
        """Frozen encoders stay in eval mode (their norms and dropout as at inference) in training too."""
        super().train(mode)
        for m in self.frozen:
            self.encoders[m].eval()
        return self

    @torch.no_grad()
    def clamp_logit_scale(self) -> None:
        """Keep the log of the InfoNCE scale in [0, ln 100] (temperature 0.01 to 1), as open_clip
        clamps it after every optimizer step: clamping the parameter, not the forward, so it never
        sits where its gradient is zero."""
        self.logit_scale.clamp_(0.0, math.log(100.0))

    @torch.no_grad()
    def update_targets(self, momentum: float) -> None:
        """target <- momentum * target + (1 - momentum) * online (nothing without targets, or before
        the prediction phase)."""
        if self.target_encoders is None or not self._predicting:
            return
        for m in self.target_encoders:
            t = list(self.target_encoders[m].parameters())
            o = [p.detach() for p in self.encoders[m].parameters()]
            torch._foreach_mul_(t, momentum)
            torch._foreach_add_(t, o, alpha=1.0 - momentum)

    # ------------------------------------------------------------------ inference

    def feature_encoder(self, modality: str) -> nn.Module:
        """The encoder whose features are the prediction targets and what evaluations and
        fine-tuning start from: the EMA target where there is one (as I-JEPA evaluates), else the
        online encoder (model.target=sigreg, or a run that does not predict)."""
        if self.target_encoders is not None and modality in self.target_encoders and self._predicting:
            return self.target_encoders[modality]
        return self.encoders[modality]

    @torch.no_grad()
    def encode(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        """Unmasked inputs (as the collator batches them) -> normalised shared embeddings (B, E).
        Audio may come as several clips per sample (B, clips, mel, T): their embeddings are
        averaged (ImageBind's multi-clip evaluation) and normalised again."""
        z = self._over_clips(modality, x, lambda enc, xs: self.heads[modality](*enc(xs)))
        return F.normalize(z, dim=-1)

    @torch.no_grad()
    def features(self, modality: str, x: torch.Tensor, encoder: str = "online") -> torch.Tensor:
        """Unmasked inputs -> the encoder's mean-pooled token features (B, D), before the head: what
        linear and k-NN probes read (I-JEPA's evaluation). encoder: "online" or "target" (the EMA
        copy; a CLIP-objective run has none). Audio clips are averaged, as in `encode`."""
        if encoder == "target" and self.target_encoders is None:
            raise ValueError("this run has no target encoders (loss.objective=clip, loss.pred_weight=0 or model.target=sigreg): "
                             "use the online ones")
        return self._over_clips(modality, x, lambda enc, xs: EmbeddingHead.pool(*enc(xs)), encoder)

    def _over_clips(self, modality: str, x: torch.Tensor, fn, encoder: str = "online") -> torch.Tensor:
        """fn(encoder module, inputs) -> (n, F), applied to every clip of (B, clips, mel, T) audio and
        averaged over the clips; other inputs go through once."""
        if modality not in self.encoders:
            raise ValueError(f"this model has no '{modality}' encoder (it has: {', '.join(self.modalities)})")
        enc = self.feature_encoder(modality) if encoder == "target" else self.encoders[modality]
        clips = get_modality(modality).clips(x)
        if not clips:
            return fn(enc, x)
        return fn(enc, x.flatten(0, 1)).unflatten(0, (-1, clips)).mean(1)  # (B * clips, F) -> (B, F)

    @classmethod
    def from_pretrained(cls, run_dir: str | Path, device: str | torch.device = "cpu") -> "MultiJEPA":
        """Load a pretraining run folder (config.yaml, tokenizer, latest weights), with its preprocessing;
        or one of its checkpoints (RUN/checkpoints/step_N: that checkpoint's weights)."""
        return load_run(run_dir, device)

    def embed(self, modality: str, values: Any, batch_size: int = 64) -> torch.Tensor:
        """Raw values of any modality this model has (paths, bytes, strings, arrays: what its
        `Modality.decode` reads) -> (n, embed_dim) normalised embeddings."""
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
        return self.embed("image", images, batch_size)

    def embed_texts(self, texts: Any, batch_size: int = 64) -> torch.Tensor:
        """Strings -> (n, embed_dim) normalised embeddings."""
        return self.embed("text", texts, batch_size)

    def embed_audio(self, audio: Any, batch_size: int = 64) -> torch.Tensor:
        """Paths, (array, sample_rate) tuples or {'array', 'sampling_rate'} dicts -> (n, embed_dim)."""
        return self.embed("audio", audio, batch_size)


# ----------------------------------------------------------------------------- the model with its preprocessing
# As open_clip's `create_model_and_transforms` hands out its transforms with the model. A run
# folder holds what rebuilds it: config.yaml (the resolved config), tokenizer.model (or CLIP BPE
# from open_clip) and checkpoints/step_*/model.safetensors, of which the latest is loaded.


def create_model(cfg: Config, tokenizer: TextTokenizer | None = None, vocab_size: int | None = None) -> MultiJEPA:
    """A MultiJEPA of `cfg.model` with random weights and its preprocessing attached. The text
    vocabulary is the tokenizer's, or `vocab_size` where there is no tokenizer (benchmarks).
    Pretrained towers settle their grid, widths and preprocessing into `cfg` first (`resolve_towers`:
    a no-op on a run's saved config, which holds them already)."""
    resolve_towers(cfg.model)
    if tokenizer is not None and tower_spec(cfg.model, "text") is not None and tokenizer.kind != "clip":
        raise ConfigError(f"model.text.pretrained={cfg.model.text.pretrained} reads CLIP BPE ids, but the "
                          f"tokenizer given is {tokenizer.kind} (build it with build_tokenizer(cfg.model))")
    vocab = tokenizer.vocab_size if tokenizer is not None else vocab_size
    bind_input = cfg.loss.bind_input if cfg.loss.bind_weight > 0 else "context"  # nothing to bind: no second forward
    return MultiJEPA(cfg.model, vocab, processors=Processors(cfg.model, tokenizer), run_config=cfg,
                     predict=cfg.loss.predicts, bind_input=bind_input, pred_start=cfg.loss.pred_start)


def read_run_config(run_dir: str | Path) -> Config:
    run = Path(run_dir)
    path = run / "config.yaml"
    if not path.is_file():
        raise CheckpointError(f"{run}: not a MultiJEPA run folder (no config.yaml)")
    try:
        return load_run_config(path)
    except ConfigError as e:
        raise CheckpointError(f"{path}: {e}") from None


def load_run(run_dir: str | Path, device: str | torch.device = "cpu") -> MultiJEPA:
    """Rebuild the model of a run folder from its config, tokenizer and latest weights; given one of
    its checkpoints (RUN/checkpoints/step_N, e.g. the held-out best), that checkpoint's weights."""
    run, ckpt = run_of(run_dir)
    cfg = read_run_config(run)
    ckpt = ckpt or latest_checkpoint(run)
    if ckpt is None:
        raise CheckpointError(f"{run}: no checkpoint yet (looked in {run / CKPT_DIR})")
    model = create_model(cfg, build_tokenizer(cfg.model, run))
    load_weights(model, ckpt)
    return model.to(device).eval()
