"""Per-step schedules: learning rate (linear warmup + cosine), weight decay (cosine ramp, as
I-JEPA) and EMA momentum (linear to 1.0). Pure functions of the step, so resuming needs only it."""

from __future__ import annotations

import math

from .config import ModelConfig, OptimConfig


class Schedule:
    def __init__(self, optim: OptimConfig, model: ModelConfig, total_steps: int):
        self.o, self.total = optim, max(1, total_steps)
        self.momentum = model.ema_momentum

    def _progress(self, step: int) -> float:
        return min(1.0, step / self.total)

    def lr(self, step: int) -> float:
        o = self.o
        if step < o.warmup_steps:
            return o.lr * (step + 1) / o.warmup_steps
        t = (step - o.warmup_steps) / max(1, self.total - o.warmup_steps)
        return o.min_lr + 0.5 * (o.lr - o.min_lr) * (1 + math.cos(math.pi * min(1.0, t)))

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
