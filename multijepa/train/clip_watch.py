"""Whether the gradient clip guards against spikes or rescales every step.

`optim.grad_clip` is meant as a guard: it should act on the few steps whose gradient jumps, not on
every step. A clip below the run's steady gradient norm turns it into a normaliser instead (the
update no longer follows the gradient's size), which a recipe tuned on short runs can do unseen on
long ones. Each log record carries `grad_clipped`, the share of the steps since the last record
whose pre-clip norm was above the clip; once the LR warm-up and the first fifth of the run are over,
a clip acting on nearly every step of the last few records is said in the log, once.
"""

from __future__ import annotations

from collections import deque

import torch

WINDOW = 5  # log records
SHARE = 0.9  # of their steps clipped


class ClipWatch:
    def __init__(self, grad_clip: float, warmup_steps: int, device: torch.device):
        self.clip, self.warmup = grad_clip, warmup_steps
        self.clipped = torch.zeros((), device=device)  # counted on the device: no sync per step
        self.steps = 0
        self.recent: deque = deque(maxlen=WINDOW)  # (share clipped, grad_norm) of the last records
        self.warned = False

    def count(self, grad_norm: torch.Tensor) -> None:
        """One optimizer step's pre-clip gradient norm."""
        if hasattr(grad_norm, "full_tensor"):  # FSDP2's norm is a DTensor
            grad_norm = grad_norm.full_tensor()
        self.clipped += (grad_norm.detach() > self.clip).float()
        self.steps += 1

    def record(self, rec: dict, schedule_steps: int, say) -> None:
        """Adds `grad_clipped` to a log record, and says when the clip has become a normaliser."""
        share = float(self.clipped) / max(self.steps, 1)
        rec["grad_clipped"] = share
        self.clipped.zero_()
        self.steps = 0
        settled = rec["step"] >= max(2 * self.warmup, schedule_steps // 5)  # past the first steps' large norms
        if self.warned or not settled:
            return
        self.recent.append((share, rec["grad_norm"]))
        if len(self.recent) < WINDOW:
            return
        if min(s for s, _ in self.recent) >= SHARE:
            norms = sorted(n for _, n in self.recent)
            typical = norms[len(norms) // 2]
            self.warned = True
            say(f"step {rec['step']}: optim.grad_clip={self.clip:g} rescaled {SHARE:.0%}+ of the steps of the last "
                f"{WINDOW} log records (pre-clip grad_norm about {typical:.3g}): the clip acts on every step, "
                f"not on spikes. Set it a few times above the steady grad_norm, e.g. optim.grad_clip={3 * typical:.2g} "
                "(grad_clipped in metrics.jsonl is the share of steps clipped)")
