"""Devices and torchrun, in one place: picking the device, joining the process group and the few
collectives the loop needs.

`init_distributed` reads torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK) and joins the
process group: NCCL on CUDA, gloo on CPU. Run without torchrun, it is a world of one and every
helper here returns at once, so the training loop reads the same either way.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Only this process logs and writes."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.size > 1


def pick_device(name: str) -> torch.device:
    """auto: CUDA when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def world_from_env() -> World:
    return World(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0)))


def init_distributed(device_name: str) -> tuple[World, torch.device]:
    """Join torchrun's process group (if launched by it) and pick this process's device."""
    world = world_from_env()
    cuda = device_name == "cuda" or (device_name == "auto" and torch.cuda.is_available())
    if device_name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device=cuda but no CUDA device is visible")
    device = torch.device("cuda", world.local_rank) if cuda else torch.device(device_name if device_name != "auto" else "cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world.active and not dist.is_initialized():
        backend = "nccl" if cuda else "gloo"
        kwargs = {"device_id": device} if cuda else {}
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30), **kwargs)
    return world, device


def close_distributed(world: World) -> None:
    if world.active and dist.is_initialized():
        dist.destroy_process_group()


def active() -> bool:
    """True inside a process group of more than one process (what the losses check)."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def barrier(world: World) -> None:
    if world.active:
        dist.barrier()


def gather_counts(counts: torch.Tensor, world: World, device: torch.device) -> torch.Tensor:
    """(k,) integer counts of this process -> (world, k) on the CPU, the same on every process."""
    if not world.active:
        return counts.view(1, -1)
    local = counts.to(device)
    out = [torch.empty_like(local) for _ in range(world.size)]
    dist.all_gather(out, local)
    return torch.stack(out).cpu()


def mean_across(values: dict[str, torch.Tensor], world: World, summed: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """0-d log values averaged over processes, for the log line. A process may lack a key (a
    modality it had no rows of). Keys starting with `summed` are per-process shares of a global
    value (a missing one counts 0, divided by the world size); the others are averaged over the
    processes that have them."""
    if not world.active:
        return values
    keys = sorted(set().union(*gather_objects(sorted(values), world)))
    stacked = torch.stack([values[k].detach().float().cpu() if k in values else torch.zeros(()) for k in keys])
    have = torch.tensor([float(k in values) for k in keys])
    device = next(iter(values.values())).device  # NCCL reduces CUDA tensors only
    both = torch.stack([stacked, have]).to(device)  # (2, K)
    dist.all_reduce(both)
    both = both.cpu()
    return {k: v / (world.size if k.startswith(summed) else max(float(n), 1.0))
            for k, v, n in zip(keys, both[0], both[1])}


def gather_objects(obj, world: World) -> list:
    """Every process's `obj` (small, picklable: bad-row records, stream positions), in rank order."""
    if not world.active:
        return [obj]
    out: list = [None] * world.size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj, world: World):
    """Rank 0's `obj` on every process."""
    if not world.active:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
