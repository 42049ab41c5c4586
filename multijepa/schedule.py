"""Per-step schedules: learning rate (linear warmup + cosine), weight decay (cosine ramp, as
I-JEPA) and EMA momentum (linear to 1.0). Pure functions of the step, so resuming needs only it."""

from __future__ import annotations

import math

from .config import ModelConfig, OptimConfig


def warmup_cosine(step: int, lr: float, min_lr: float, warmup_steps: int, total_steps: int) -> float:
    """Linear warmup to `lr` over `warmup_steps`, then cosine down to `min_lr` at `total_steps`."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    t = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * min(1.0, t)))


class Schedule:
    def __init__(self, optim: OptimConfig, model: ModelConfig, total_steps: int):
        self.o, self.total = optim, max(1, total_steps)
        self.momentum = model.ema_momentum

    def _progress(self, step: int) -> float:
        return min(1.0, step / self.total)

    def lr(self, step: int) -> float:
        return warmup_cosine(step, self.o.lr, self.o.min_lr, self.o.warmup_steps, self.total)

    def weight_decay(self, step: int) -> float:
        o = self.o
        return o.final_weight_decay + 0.5 * (o.weight_decay - o.final_weight_decay) * (
            1 + math.cos(math.pi * self._progress(step))
        )

    def ema(self, step: int) -> float:
        start, end = self.momentum
        return start + (end - start) * self._progress(step)

    def state_dict(self) -> dict:
        return {"total_steps": self.total}
