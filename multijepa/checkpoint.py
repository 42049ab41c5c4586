"""Full-state checkpoints, written atomically.

    RUN/checkpoints/step_00000200/model.safetensors   all weights (online, EMA target, predictors, heads)
    RUN/checkpoints/step_00000200/train_state.pt      optimizer, schedule, step, RNG (tensors and numbers only)

A checkpoint is written into a hidden temporary folder and renamed into place, so a run killed
mid-write leaves either the whole checkpoint or none. `train_state.pt` is read with
`torch.load(weights_only=True)`: nothing is unpickled.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import sys
import zipfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .run_folder import CKPT_DIR


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete or does not fit the model."""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def checkpoint_dir(run_dir: str | Path, step: int) -> Path:
    """RUN/checkpoints/step_00000200: the folder of the checkpoint of `step`."""
    return Path(run_dir) / CKPT_DIR / f"step_{step:08d}"


def save_checkpoint(run_dir: str | Path, step: int, model: torch.nn.Module | dict, train_state: dict, keep: int = 2,
                    protect: Path | None = None) -> Path:
    """model: the module, or its full state dict (see parallel.full_state). Of the older checkpoints the
    newest `keep` stay (0: all), and `protect` (the held-out best) whatever its age."""
    final = checkpoint_dir(run_dir, step)
    root = final.parent
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-step_{step:08d}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    state = model if isinstance(model, dict) else model.state_dict()
    weights = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    save_file(weights, str(tmp / "model.safetensors"), metadata={"step": str(step), "format": "multijepa"})
    torch.save(train_state, tmp / "train_state.pt")
    for f in tmp.iterdir():
        _fsync_file(f)
    if final.exists():  # re-saving the same step (e.g. after a resume): replace it whole
        shutil.rmtree(final)
    os.rename(tmp, final)
    _fsync_dir(root)
    for old in list_checkpoints(run_dir)[:-keep] if keep > 0 else []:
        if protect is None or old.name != protect.name:
            shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    root = Path(run_dir) / CKPT_DIR
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("step_"))


def latest_checkpoint(run_dir: str | Path, warn: bool = True) -> Path | None:
    """The newest checkpoint whose files are whole: a newer one cut short (a full disk, a copy
    that stopped) is passed over, saying so on stderr, for the newest intact one before it."""
    for ckpt in reversed(list_checkpoints(run_dir)):
        problem = checkpoint_problem(ckpt)
        if problem is None:
            return ckpt
        if warn:
            print(f"warning: skipping checkpoint {ckpt}: {problem}", file=sys.stderr)
    return None


def checkpoint_problem(ckpt: Path) -> str | None:
    """Why a checkpoint folder cannot be read, from its files' structure alone (cheap: no tensor
    is read): a safetensors header and a file size that match, a train_state zip whose directory
    (at its end) is there. None when it looks whole."""
    weights, state = ckpt / "model.safetensors", ckpt / "train_state.pt"
    for f in (weights, state):
        if not f.is_file():
            return f"{f.name} is missing"
    try:
        with open(weights, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(n))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        if weights.stat().st_size != 8 + n + end:
            return f"{weights.name} is {weights.stat().st_size} bytes where its header describes {8 + n + end}"
    except (struct.error, ValueError, KeyError, TypeError, OSError, MemoryError):
        return f"{weights.name} has no valid safetensors header"
    try:
        zipfile.ZipFile(state).close()
    except (zipfile.BadZipFile, OSError):
        return f"{state.name} is truncated or not a torch.save file"
    return None


def remove_partial_checkpoints(run_dir: str | Path) -> int:
    """Delete the `.tmp-step_*` folders a run killed mid-write left (call with the folder owned). -> count"""
    root = Path(run_dir) / CKPT_DIR
    partial = sorted(root.glob(".tmp-step_*")) if root.is_dir() else []
    for p in partial:
        shutil.rmtree(p, ignore_errors=True)
    return len(partial)


def finetune_checkpoint(out: Path, resume: bool, what: str) -> Path | None:
    """A fine-tuning folder about to be (re)used -> its last checkpoint when resuming, else None.
    Refuses a finished folder, and an unfinished one without `resume`; clears half-written
    checkpoints of a run killed while saving. `what`: "VQA", "captioning"."""
    if (out / "model.safetensors").exists():
        raise FileExistsError(f"{out} already holds a {what} model; choose another --out")
    ckpt = latest_checkpoint(out)
    if ckpt is not None and not resume:
        raise FileExistsError(f"{out} holds an unfinished {what} run (last checkpoint {ckpt.name}): pass --resume, "
                              "or choose another --out")
    if n := remove_partial_checkpoints(out):
        print(f"removed {n} half-written checkpoint folder(s) of a run killed while saving")
    return ckpt


def load_weights(model: torch.nn.Module, ckpt: str | Path) -> None:
    path = Path(ckpt) / "model.safetensors"
    if not path.is_file():
        raise CheckpointError(f"{path}: missing (an incomplete or foreign checkpoint folder)")
    try:
        state = load_file(str(path))
    except Exception as e:
        raise CheckpointError(f"{path}: unreadable safetensors file: {e}") from e
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"{path} does not fit the model: missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}"
        )


def load_train_state(ckpt: str | Path) -> dict:
    path = Path(ckpt) / "train_state.pt"
    if not path.is_file():
        raise CheckpointError(f"{path}: missing (an incomplete checkpoint folder)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{path}: unreadable training state: {e}") from e
