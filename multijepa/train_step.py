"""One pretraining step, shared by the training loop and the benchmarks so they time the same work.

Set the schedule's learning rate and weight decay, forward and objective under the precision's
autocast, backward, clip, AdamW, then move the EMA targets toward the online encoders.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from .model import MultiJEPA
from .objective import MultiJEPAObjective
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


class TrainStep:
    def __init__(self, model: MultiJEPA, objective: MultiJEPAObjective, optimizer: torch.optim.Optimizer,
                 schedule: Schedule, precision: str, grad_clip: float, device: torch.device):
        self.model, self.objective, self.optimizer, self.schedule = model, objective, optimizer, schedule
        self.grad_clip = grad_clip
        self.amp = lambda: autocast_for(device, precision)
        self.trainable = [p for p in model.parameters() if p.requires_grad]

    def __call__(self, batch: dict, step: int) -> StepResult:
        """batch: a collated batch already on the device; step: the 0-based step being taken."""
        lr, wd = self.schedule.lr(step), self.schedule.weight_decay(step)
        for g in self.optimizer.param_groups:
            g["lr"] = lr
            if g["apply_wd"]:
                g["weight_decay"] = wd
        with self.amp():
            outputs = self.model(batch)
            loss, logs = self.objective(outputs, self.model.logit_scale)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"step {step}: loss is {float(loss)}; lower optim.lr or check the data")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.trainable, self.grad_clip)
        self.optimizer.step()
        self.model.update_targets(self.schedule.ema(step))
        return StepResult(loss.detach(), logs, outputs, grad_norm, lr, wd)
