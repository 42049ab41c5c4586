"""Run by tests/test_distributed.py under torchrun (2 processes, gloo): two training steps in which
process 1's loss is NaN. Every process prints what stopped it."""

from __future__ import annotations

import os

import torch

from multijepa.config import load_config
from multijepa.distributed import close_distributed, init_distributed
from multijepa.train.builder import build_training
from tests.conftest import VOCAB, make_batch


def main() -> None:
    world, device = init_distributed("cpu")
    torch.set_num_threads(1)
    cfg = load_config("tiny")
    torch.manual_seed(0)
    training = build_training(cfg, device, vocab_size=VOCAB, world=world)
    training.model.train()
    first = make_batch(cfg, 4, seed=world.rank)
    if world.rank == 1:  # a loss that is not finite here only (a NaN input would reach every process
        terms = training.objective.terms  # through the heads' global batch statistics)

        def nan_terms(*args, **kwargs):
            t, logs = terms(*args, **kwargs)
            return {**t, "pred": t["pred"] * float("nan")}, logs

        training.objective.terms = nan_terms
    try:
        training.step(first, 0)
        training.step(make_batch(cfg, 4, seed=10 + world.rank), 1)
        print(f"rank {world.rank}: no error", flush=True)
    except FloatingPointError as e:
        print(f"rank {world.rank}: FloatingPointError: {e}", flush=True)
        os._exit(0)  # what stopped each process is the finding; not the group's teardown
    close_distributed(world)


if __name__ == "__main__":
    main()
