"""Shared fixtures: the tiny model flavour and batches built without touching the disk."""

from __future__ import annotations

import pytest
import torch

from multijepa.cli import main
from multijepa.config import load_config
from multijepa.data.collate import MultiModalCollator, build_maskers
from multijepa.data.demo import generate_demo

VOCAB = 64


@pytest.fixture(scope="session")
def demo(tmp_path_factory):
    """A small demo dataset: 48 training and 24 held-out scenes (+ classes.txt)."""
    root = tmp_path_factory.mktemp("demo")
    generate_demo(root, n_train=48, n_test=24, seed=3, progress=False)
    return root


@pytest.fixture(scope="session")
def run(demo, tmp_path_factory):
    """A tiny pretraining run on `demo` (4 steps): a real run folder for the commands that read one."""
    out = tmp_path_factory.mktemp("run") / "tiny"
    code = main(["pretrain", "--config", "tiny", "--data", str(demo / "train.jsonl"), "--out", str(out), "--max-steps", "4", "--no-progress"])
    assert code == 0
    return out


@pytest.fixture
def tiny_cfg():
    return load_config("tiny")


def make_items(cfg, n: int, presence: list[set[str]] | None = None, seed: int = 0) -> list[dict]:
    """n rows of random inputs; `presence[i]` lists the modalities row i has (default: all)."""
    g = torch.Generator().manual_seed(seed)
    m = cfg.model
    items = []
    for i in range(n):
        have = presence[i % len(presence)] if presence else set(m.modalities)
        item: dict = {"row": i, "batch_no": 0}
        if "image" in have:
            item["image"] = torch.randn(3, m.image.size, m.image.size, generator=g)
        if "audio" in have:
            item["audio"] = torch.randn(m.audio.num_mel_bins, m.audio.target_frames, generator=g)
        if "video" in have:
            item["video"] = torch.randn(3, m.video.frames, m.video.size, m.video.size, generator=g)
        if "text" in have:
            length = int(torch.randint(4, m.text.max_len, (1,), generator=g))
            ids = torch.zeros(m.text.max_len, dtype=torch.long)
            ids[:length] = torch.randint(4, VOCAB, (length,), generator=g)
            item["text"] = (ids, torch.tensor(length))
        items.append(item)
    return items


def make_batch(cfg, n: int = 8, presence=None, seed: int = 0) -> dict:
    collate = MultiModalCollator(cfg.model.modalities, build_maskers(cfg.model), seed=seed)
    return collate(make_items(cfg, n, presence, seed))
