"""Owning a run folder: one writer at a time, and no mixing with another run's files.

`hold_run_folder` takes an exclusive `flock` on RUN/.multijepa.lock for the life of a command that
writes the folder (`pretrain`, `vqa train`, `index`) and writes the holder (PID, host, command)
into it. A second writer stops at once with one line naming the holder. The OS drops the lock when
its process dies however it dies, so a lock file left by a killed run is taken over (with a notice)
rather than blocking the folder forever; its text only tells who held it.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

CKPT_DIR = "checkpoints"  # RUN/checkpoints/step_00000200/


def run_of(path: str | Path) -> tuple[Path, Path | None]:
    """A run folder, or one of its checkpoints (RUN/checkpoints/step_N) -> (the run folder, that
    checkpoint or None for the latest)."""
    p = Path(path)
    if p.parent.name == CKPT_DIR and p.name.startswith("step_") and (p / "model.safetensors").is_file():
        return p.parent.parent, p
    return p, None


LOCK_NAME = ".multijepa.lock"


class RunFolderError(RuntimeError):
    """A run folder is in use, or holds files this command would mix with its own."""


@contextmanager
def hold_run_folder(out: str | Path, command: str, hold: bool = True,
                    unstarted: Callable[[Path], bool] | None = None) -> Iterator[None]:
    """Own `out` (created if needed) until the block ends. hold=False (torchrun ranks other than 0,
    whose rank 0 holds it) does nothing. When the block fails in a folder it created, the folder is
    removed again if it holds only the lock, or if `unstarted(out)` says nothing worth keeping was
    written yet (a refused start leaves no half-made run behind)."""
    if not hold:
        yield
        return
    out = Path(out)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "another process"
            raise RunFolderError(f"{out} is in use by {holder}: wait for it to end, or choose another folder") from None
        left = os.pread(fd, 4096, 0).decode(errors="replace").strip()
        if left:
            print(f"note: {out}: taking over the lock of {left}, which is no longer running", file=sys.stderr)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} ({command}, since "
                      f"{time.strftime('%Y-%m-%d %H:%M:%S')})\n".encode(), 0)
        os.fsync(fd)
        try:
            yield
        except BaseException:
            if created and ([p.name for p in out.iterdir()] == [LOCK_NAME] or (unstarted and unstarted(out))):
                shutil.rmtree(out, ignore_errors=True)  # refused before its work began: leave no trace
            raise
        finally:
            if path.exists():
                os.ftruncate(fd, 0)  # released cleanly: nothing to take over
    finally:
        os.close(fd)  # drops the flock


def run_files(out: str | Path, names: tuple[str, ...]) -> list[str]:
    """Which of `names` (files or folders a run writes) exist in `out`."""
    return [n for n in names if (Path(out) / n).exists()]
