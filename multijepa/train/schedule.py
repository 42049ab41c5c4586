"""Per-step schedules: learning rate (linear warmup + cosine), weight decay (cosine ramp, as
I-JEPA) and EMA momentum (linear to 1.0); with a late prediction phase (`loss.pred_start`), the
predictors' own learning rate and the prediction weight's ramp from the step it began. Pure
functions of the step, of the total steps they are laid out over (which a time-limited run keeps
re-estimating from the time left) and of the phase's first step (`state_dict`)."""

from __future__ import annotations

import math

import torch


def warmup_cosine(step: int, lr: float, min_lr: float, warmup_steps: int, total_steps: int) -> float:
    """Linear warmup to `lr` over `warmup_steps`, then cosine down to `min_lr` at `total_steps`."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    t = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * min(1.0, t)))


class Schedule:
    """optim: any optimizer config with lr, min_lr, warmup_steps and weight_decay (pretraining's
    also ramps it to final_weight_decay); ema: the (start, end) momentum of EMA targets, if any;
    ema_horizon > 0: the start momentum is 1 - 1 / min(ema_horizon * total steps, ema_horizon_max_steps)
    instead, so the targets average over that share of the run, never longer than that many steps
    (see `ModelConfig.ema_horizon`). pred_warmup: the steps over which the predictors' learning rate
    and the prediction weight ramp up once the prediction phase starts (`phase_start`, set by the
    training loop at the switch)."""

    def __init__(self, optim, total_steps: int, ema: tuple[float, float] = (1.0, 1.0), ema_horizon: float = 0.0,
                 ema_horizon_max_steps: int = 250, pred_warmup: int = 0):
        self.o, self.total = optim, max(1, total_steps)
        self.momentum = ema
        self.horizon, self.horizon_max = ema_horizon, ema_horizon_max_steps
        self.final_wd = getattr(optim, "final_weight_decay", optim.weight_decay)  # VQA: constant
        self.pred_warmup = pred_warmup
        self.phase_start: int | None = None  # the first step of a late prediction phase, once it began

    def _progress(self, step: int) -> float:
        return min(1.0, step / self.total)

    def lr(self, step: int) -> float:
        return warmup_cosine(step, self.o.lr, self.o.min_lr, self.o.warmup_steps, self.total)

    def pred_lr(self, step: int) -> float:
        """The predictors' learning rate in a late prediction phase: 0 before it, then warmup from
        the phase's first step and cosine to min_lr at the end of the run."""
        if self.phase_start is None or step < self.phase_start:
            return 0.0
        return warmup_cosine(step - self.phase_start, self.o.lr, self.o.min_lr, max(1, self.pred_warmup),
                             max(1, self.total - self.phase_start))

    def pred_scale(self, step: int) -> float:
        """The share of `loss.pred_weight` that applies at this step: 1, or in a late prediction phase
        a linear ramp over its first `pred_warmup` steps."""
        if self.phase_start is None:
            return 1.0
        return min(1.0, max(0, step - self.phase_start + 1) / max(1, self.pred_warmup))

    def weight_decay(self, step: int) -> float:
        start = self.o.weight_decay
        return self.final_wd + 0.5 * (start - self.final_wd) * (1 + math.cos(math.pi * self._progress(step)))

    def ema_start(self) -> float:
        start, end = self.momentum
        if self.horizon > 0:
            steps = min(self.horizon * self.total, float(self.horizon_max))
            start = min(end, 1.0 - 1.0 / max(1.0, steps))
        return start

    def ema(self, step: int) -> float:
        """The momentum, ramped linearly to its end over the run (over the prediction phase, when late)."""
        start, end = self.ema_start(), self.momentum[1]
        first = self.phase_start or 0
        progress = min(1.0, max(0, step - first) / max(1, self.total - first))
        return start + (end - start) * progress

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> tuple[float, float]:
        """Set this step's values on the optimizer's groups: lr times the group's "lr_scale"
        (VQA's encoders), the predictors' own lr on groups marked "phase": "pred", and the scheduled
        decay on groups marked "apply_wd". -> (lr, wd)."""
        lr, wd = self.lr(step), self.weight_decay(step)
        pred_lr = self.pred_lr(step)
        for g in optimizer.param_groups:
            g["lr"] = (pred_lr if g.get("phase") == "pred" else lr) * g.get("lr_scale", 1.0)
            if g.get("apply_wd"):
                g["weight_decay"] = wd
        return lr, wd

    def state_dict(self) -> dict:
        return {"total_steps": self.total, "phase_start": self.phase_start}

    def load_state_dict(self, state: dict) -> None:
        self.total = max(1, int(state["total_steps"]))
        self.phase_start = state.get("phase_start")
