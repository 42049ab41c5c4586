"""One pretraining step, shared by the training loop and the benchmarks so they time the same work.

Set the schedule's learning rate and weight decay; for each micro-batch, forward and objective
under the precision's autocast and backward (gradients reduced over processes on the last one
only); clip, AdamW, clamp the learned temperature, then move the EMA targets toward the online
encoders.

Gradient accumulation and the contrastive batch: the prediction loss of A micro-batches equals
that of one batch A times larger, but InfoNCE scores each row only against the rows of its own
micro-batch (gathered over processes), so its negatives are A times fewer than in one big batch.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch.profiler import record_function

from ..distributed import World, gather_counts
from ..model import MultiJEPA
from ..objective import MultiJEPAObjective, StepCounts
from .schedule import Schedule


def autocast_for(device: torch.device, precision: str):
    """bf16 autocast (CPU or CUDA) for precision "bf16"; nothing for "fp32"."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()


@dataclass
class StepResult:
    loss: torch.Tensor  # detached
    logs: dict[str, torch.Tensor]
    outputs: dict
    grad_norm: torch.Tensor
    lr: float
    weight_decay: float
    rows: int  # rows of the whole step, over every process and micro-batch


class TrainStep:
    """`wrapped` is what runs the forward: the model itself, or its DDP / FSDP2 form (see
    `parallelize.py`); `model` is the plain module (EMA update, logit scale)."""

    def __init__(self, model: MultiJEPA, objective: MultiJEPAObjective, optimizer: torch.optim.Optimizer,
                 schedule: Schedule, precision: str, grad_clip: float, device: torch.device,
                 world: World = World(), wrapped: torch.nn.Module | None = None):
        self.model, self.objective, self.optimizer, self.schedule = model, objective, optimizer, schedule
        self.grad_clip, self.device, self.world = grad_clip, device, world
        self.wrapped = wrapped if wrapped is not None else model
        self.amp = lambda: autocast_for(device, precision)
        self.trainable = [p for p in model.parameters() if p.requires_grad]
        self.encoder_params = [p for p in model.encoders.parameters() if p.requires_grad]
        self.no_pair_steps = 0  # steps that were no-ops: no pair to bind and nothing predicted (see __call__)

    def __call__(self, batch: dict | list[dict], step: int, measure_terms: bool = False) -> StepResult | None:
        """batch: a collated batch on the device, or the list of micro-batches of one step
        (gradient accumulation); step: the 0-based step being taken; measure_terms: also log each
        loss term's gradient norm on the online encoders (`term_grad_norms`; costs a partial
        backward per term, so the loop asks on log steps only). Returns None when no
        micro-batch could be used: every process lacks rows (all bad) in each of them, or (counted in
        `no_pair_steps`) none gives the loss anything to learn from: no pair to bind while the model
        does not predict, or predicts from the other modalities only (`MultiJEPA.needs_pairs`), as a
        batch of a mixture of mostly single-modality rows sometimes is."""
        micro = [batch] if isinstance(batch, dict) else list(batch)
        local = torch.stack([self.objective.local_counts(b, int(b["size"])) for b in micro])  # (A, k)
        per_rank = gather_counts(local.flatten(), self.world, self.device).view(self.world.size, *local.shape)  # (W, A, k)
        # a micro-batch is used only when every process has rows in it (all decide alike)
        use = [j for j in range(len(micro)) if bool((per_rank[:, j, 0] > 0).all())]
        if not use:
            return None
        if self.model.needs_pairs and not self.objective.cfg.variance_weight > 0:  # pairs needed
            use = [j for j in use if self.objective.bound_pairs(per_rank[:, j])]
            if not use:
                self.no_pair_steps += 1
                return None
        total = per_rank[:, use].sum((0, 1))  # (k,) rows of the whole step
        lr, wd = self.schedule.apply(self.optimizer, step)
        self.optimizer.zero_grad(set_to_none=True)
        logs: dict[str, torch.Tensor] = {}
        measured: dict[str, torch.Tensor] = {}
        for i, j in enumerate(use):
            with grad_sync(self.wrapped, i == len(use) - 1):
                with self.amp():
                    with record_function("step/forward"):
                        outputs = self.wrapped(micro[j])
                    with record_function("step/objective"):
                        counts = StepCounts(per_rank[:, j], total, self.world.rank)
                        terms, micro_logs = self.objective.terms(outputs, self.model.logit_scale, counts,
                                                                 self.schedule.pred_scale(step), seed=step)
                        loss = sum(terms.values())
                self._check_finite(loss, step)
                if measure_terms and i == len(use) - 1 and not self.world.active:
                    measured = term_grad_norms(terms, self.encoder_params)  # on the last micro-batch
                with record_function("step/backward"):
                    loss.backward()
            for k, v in micro_logs.items():  # the loss terms add up over micro-batches; monitors average
                logs[k] = logs.get(k, 0) + (v if k.startswith(SUMMED_LOGS) else v / len(use))
        logs.update(measured)
        if self.model.touch_unused:
            self._skip_unreached()
        with record_function("step/optimizer"):
            grad_norm = torch.nn.utils.clip_grad_norm_(self.trainable, self.grad_clip)
            self.optimizer.step()
            self.model.clamp_logit_scale()
        with record_function("step/ema"):
            self.model.update_targets(self.schedule.ema(step))
        return StepResult(logs["loss"], logs, outputs, grad_norm, lr, wd, int(total[0]))

    def _skip_unreached(self) -> None:
        """Under DDP every weight gets a gradient every step (`MultiJEPA._unused_anchor`), all-zero where
        no process's loss reached it (a modality no process had rows of, the predictors before the
        prediction phase). Such a gradient is dropped, so that AdamW skips the weight (no momentum
        step, no decay) as it does at world size 1, where the weight has no gradient at all."""
        have = [p for p in self.trainable if p.grad is not None]
        if not have:
            return
        with record_function("step/unreached"):
            zero = (torch.stack([p.grad.detach().abs().amax() for p in have]) == 0).tolist()  # one sync
        for p, z in zip(have, zero):
            if z:
                p.grad = None

    def _check_finite(self, loss: torch.Tensor, step: int) -> None:
        """Stop on a non-finite loss, on every process together: the flags are gathered, so no
        process goes on into the next collective while another has stopped."""
        finite = torch.isfinite(loss.detach()).long().view(1)
        flags = gather_counts(finite, self.world, self.device).view(-1)  # (world,)
        if bool(flags.all()):
            return
        where = f" on process(es) {', '.join(str(r) for r in (flags == 0).nonzero().view(-1).tolist())}" \
            if self.world.active else ""
        raise FloatingPointError(f"step {step}: the loss is not finite{where} (this process's: {float(loss.detach())}); "
                                 "lower optim.lr or check the data")


SUMMED_LOGS = ("loss", "pred/", "bind/")


def term_grad_norms(terms: dict[str, torch.Tensor], params: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Each weighted loss term's gradient norm on `params` (the online encoders), before clipping,
    and the prediction term's share of the two: how much of what trains the encoders is prediction.
    One process's gradients (the loop measures at world size 1 only: DDP allows no autograd.grad)."""
    logs = {}
    for name, term in terms.items():
        if not term.requires_grad:  # a term with nothing in it this step (no pairs, no prediction)
            continue
        grads = torch.autograd.grad(term, params, retain_graph=True, allow_unused=True)
        sq = [g.detach().float().pow(2).sum() for g in grads if g is not None]
        logs[f"grad_norm/{name}"] = torch.stack(sq).sum().sqrt() if sq else torch.zeros(())
    if "grad_norm/pred" in logs and "grad_norm/bind" in logs:
        total = logs["grad_norm/pred"] + logs["grad_norm/bind"]
        logs["grad_share/pred"] = logs["grad_norm/pred"] / total.clamp_min(1e-12)
    return logs


def grad_sync(wrapped: torch.nn.Module, sync: bool):
    """Reduce gradients over processes only on the last micro-batch of a step."""
    if sync:
        return contextlib.nullcontext()
    if hasattr(wrapped, "no_sync"):  # DDP
        return wrapped.no_sync()
    if hasattr(wrapped, "set_requires_gradient_sync"):  # FSDP2

        @contextlib.contextmanager
        def paused():
            wrapped.set_requires_gradient_sync(False)
            try:
                yield
            finally:
                wrapped.set_requires_gradient_sync(True)

        return paused()
    return contextlib.nullcontext()
