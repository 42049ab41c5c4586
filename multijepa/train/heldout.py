"""Held-out retrieval while a run trains (`train.eval_data`).

On few pairs a longer run can end worse than a shorter one (the demo with 10 % pairs: class-match
P@1 0.77 after 380 steps, 0.63 after 1,810, with every objective), and nothing in the training loss
shows it. So every `train.eval_every` steps (at every checkpoint by default; an evaluation writes a
checkpoint of its own) and at its end, a run embeds a held-out manifest and scores retrieval between
its modalities with the same code as `multijepa eval retrieval`: the mean R@1 over the directions
("best" means the highest of it) and, where the rows have labels, the mean class-match P@1. Each
evaluation is a metrics.jsonl record of its own. A run whose best is PATIENCE or more evaluations
old, and which scores below it (by more than BELOW_BEST), is said in the log: one dip is the noise of
a held-out score (on the demo with 10 % pairs it swings by 0.1-0.2 R@1 from one evaluation to the
next early on), no new best for several is a run past its best. The best checkpoint is never
pruned, so the user can take it (`--checkpoint RUN/checkpoints/step_N`).

The evaluation runs in eval mode, draws no random numbers of the run's (its generators are saved
and restored), and is not counted in `train.max_seconds`: a run trains the same with it or without.
Every process evaluates the whole held-out set (FSDP2 gathers each block's weights as it runs).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from modalities.errors import DataError

from ..checkpoint import checkpoint_dir
from ..data.demo_paths import resolve_manifest
from ..retrieval.embed import open_manifest
from ..retrieval.metrics import dataset_retrieval

SCORE = "heldout/R@1"  # what "best" means: the mean R@1 over the retrieval directions
# an evaluation this far below the best (R@1, absolute) counts as below it: a demo run with 10 % pairs
# stayed within 0.017 of its best on its plateau (docs/results/objective.md)
BELOW_BEST = 0.02
PATIENCE = 3  # a best this many evaluations old (and a score below it) says the run is past its best


class HeldOutEval:
    """The held-out manifest, opened once at the start (a wrong path fails before training), and
    the best evaluation so far (kept in checkpoints: a resumed run knows it)."""

    def __init__(self, manifest: str, model, every: int, out: Path, say):
        path = resolve_manifest(manifest, "test")
        self.name, self.every, self.out, self.say = str(path), every, out, say
        self.dataset = open_manifest(model, path)
        if len(self.dataset.modalities) < 2:
            raise DataError(f"train.eval_data={manifest}: {path} has rows of {self.dataset.modalities} only; "
                            "held-out retrieval needs two of the run's modalities in one row")
        self.best_step: int | None = None
        self.best = -math.inf
        self.since_best = 0  # evaluations since the best
        self.last: dict | None = None  # the last evaluation's record

    def wants_checkpoint(self, step: int) -> bool:
        """Whether step `step` is an evaluation's, which then writes a checkpoint too (the best is kept)."""
        return self.every > 0 and step % self.every == 0

    def due(self, step: int, final: bool) -> bool:
        """At the checkpoint of step `step`: every `every` steps (0: at every checkpoint), and the last."""
        return final or self.every == 0 or step % self.every == 0

    @torch.no_grad()
    def evaluate(self, model, step: int, device: torch.device) -> dict:
        """Score the held-out manifest with `model` (left in train mode again) -> its record."""
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            unshard = getattr(model, "unshard", None)  # FSDP2: the root's own weights, for calls outside forward
            if unshard is not None:
                unshard()
            try:
                results, _ = dataset_retrieval(model, self.dataset, progress=False)
            finally:
                if unshard is not None:
                    model.reshard()
                model.train()
        if not results:
            raise DataError(f"train.eval_data={self.name}: no two modalities share two rows to retrieve between")
        rec = {"step": step, SCORE: sum(r["R@1"] for r in results.values()) / len(results)}
        p1 = [r["P@1"] for r in results.values() if "P@1" in r]
        if p1:
            rec["heldout/P@1"] = sum(p1) / len(p1)
        if rec[SCORE] > self.best:
            self.best, self.best_step, self.since_best = rec[SCORE], step, 0
        else:
            self.since_best += 1
        rec["heldout/best_step"] = self.best_step
        self.last = rec
        shown = f"mean R@1 {rec[SCORE]:.3f}" + (f", class-match P@1 {rec['heldout/P@1']:.3f}" if p1 else "")
        self.say(f"step {step}: held-out {shown} ({len(self.dataset)} rows of {self.name})")
        if self.since_best >= PATIENCE and rec[SCORE] < self.best - BELOW_BEST:
            self.say(f"warning: step {step}: held-out mean R@1 {rec[SCORE]:.3f}; the best, {self.best:.3f}, came "
                     f"{self.since_best} evaluations ago at step {self.best_step}: the run may be past its best "
                     f"(on few pairs, compare a shorter run). That checkpoint is kept: --checkpoint "
                     f"{self.best_checkpoint()}")
        return rec

    def best_checkpoint(self) -> Path | None:
        """The folder of the best evaluation's checkpoint (never pruned), once there is one."""
        return None if self.best_step is None else checkpoint_dir(self.out, self.best_step)

    def summary(self) -> str:
        return (f"held-out: best mean R@1 {self.best:.3f} at step {self.best_step}; use it with "
                f"--checkpoint {self.best_checkpoint()}")

    def card(self) -> dict | None:
        """What the model card says of it (`model_card`'s `heldout`), once there is an evaluation."""
        if self.last is None:
            return None
        return {"data": self.name, "last": self.last, "best": self.best, "best_step": self.best_step,
                "checkpoint": str(self.best_checkpoint())}

    def state_dict(self) -> dict:
        return {"best_step": self.best_step, "best": self.best, "since_best": self.since_best}

    def load_state_dict(self, state: dict | None) -> None:
        if state:
            self.best_step, self.best = state["best_step"], float(state["best"])
            self.since_best = int(state["since_best"])
