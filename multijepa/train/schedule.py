"""Per-step schedules: learning rate (linear warmup + cosine), weight decay (cosine ramp, as
I-JEPA) and EMA momentum (linear to 1.0). Pure functions of the step and of the total steps they are
laid out over, which a time-limited run fixes once it has measured its rate (`state_dict`)."""

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
    ema_horizon > 0: the start momentum is 1 - 1 / (ema_horizon * total steps) instead, so the
    targets average over that share of the run (see `ModelConfig.ema_horizon`)."""

    def __init__(self, optim, total_steps: int, ema: tuple[float, float] = (1.0, 1.0), ema_horizon: float = 0.0):
        self.o, self.total = optim, max(1, total_steps)
        self.momentum = ema
        self.horizon = ema_horizon
        self.final_wd = getattr(optim, "final_weight_decay", optim.weight_decay)  # VQA: constant

    def _progress(self, step: int) -> float:
        return min(1.0, step / self.total)

    def lr(self, step: int) -> float:
        return warmup_cosine(step, self.o.lr, self.o.min_lr, self.o.warmup_steps, self.total)

    def weight_decay(self, step: int) -> float:
        start = self.o.weight_decay
        return self.final_wd + 0.5 * (start - self.final_wd) * (1 + math.cos(math.pi * self._progress(step)))

    def ema(self, step: int) -> float:
        start, end = self.momentum
        if self.horizon > 0:
            start = min(end, 1.0 - 1.0 / max(1.0, self.horizon * self.total))
        return start + (end - start) * self._progress(step)

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> tuple[float, float]:
        """Set this step's values on the optimizer's groups: lr times the group's "lr_scale"
        (VQA's encoders), and the scheduled decay on groups marked "apply_wd". -> (lr, wd)."""
        lr, wd = self.lr(step), self.weight_decay(step)
        for g in optimizer.param_groups:
            g["lr"] = lr * g.get("lr_scale", 1.0)
            if g.get("apply_wd"):
                g["weight_decay"] = wd
        return lr, wd

    def state_dict(self) -> dict:
        return {"total_steps": self.total}

    def load_state_dict(self, state: dict) -> None:
        self.total = max(1, int(state["total_steps"]))
