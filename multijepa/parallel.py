"""Data parallelism, applied in one place after the model is built (the model code stays single-device).

- `train.parallel: ddp` (default): DistributedDataParallel over the trainable modules. The EMA
  target encoders are left out of DDP (no gradients, no buffer broadcasts): every process updates
  them from identical online weights, so they stay identical without communication.
- `train.parallel: fsdp`: FSDP2 `fully_shard` on every transformer block (online, target and
  predictor) and then on the whole model, so weights, gradients and AdamW state are sharded;
  online and target blocks shard alike, so the EMA update stays local to each shard.

Checkpoints always hold the full, unsharded state keyed by parameter name (`full_state`), so a
run resumes at any world size and under either kind of parallelism.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from timm.models.vision_transformer import Block
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)
from torch.nn.parallel import DistributedDataParallel

from fusion.cross_attention import CrossAttentionBlock

from .config import TrainConfig
from .distributed import World

BLOCKS = (Block, CrossAttentionBlock)
FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


def apply_parallel(model: nn.Module, world: World, train: TrainConfig, device: torch.device,
                   find_unused: bool = False) -> nn.Module:
    """-> the module to call for the forward (the model itself at world size 1).
    find_unused: some processes may lack a modality in a batch (sources with different modalities)."""
    if not world.active:
        return model
    if train.parallel == "fsdp":
        if find_unused:
            raise ValueError("train.parallel=fsdp needs every source to hold every modality of the model "
                             "(a process without one would leave its shards' collectives waiting): use ddp")
        from torch.distributed.fsdp import fully_shard

        for part in (model.encoders, model.target_encoders, model.predictors):
            for m in list(part.modules()):
                if isinstance(m, BLOCKS):
                    fully_shard(m)
        # the temperature is a scalar (FSDP2 shards no scalars): kept whole, its gradient averaged here
        scale = model.logit_scale
        if scale.requires_grad:
            scale.register_hook(_world_mean)
        fully_shard(model, ignored_params={scale})
        return model
    ignore = [f"target_encoders.{name}" for name, _ in model.target_encoders.named_parameters()]
    ignore += [f"target_encoders.{name}" for name, _ in model.target_encoders.named_buffers()]
    DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, ignore)
    return DistributedDataParallel(
        model,
        device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=find_unused,
        broadcast_buffers=False,  # the BatchNorm statistics are already global (model.global_batch_stats)
    )


def _world_mean(grad: torch.Tensor) -> torch.Tensor:
    grad = grad.clone()
    dist.all_reduce(grad)
    return grad / dist.get_world_size()


def is_sharded(model: nn.Module) -> bool:
    return any(type(p).__name__ == "DTensor" for p in model.parameters())


def full_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """(weights, optimizer state) unsharded, on the CPU, keyed by parameter name. A collective
    under FSDP: every process must call it."""
    if is_sharded(model):
        return get_model_state_dict(model, options=FULL), get_optimizer_state_dict(model, optimizer, options=FULL)
    weights = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return weights, get_optimizer_state_dict(model, optimizer, options=FULL)


def load_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Load a `full_state` optimizer state (or a state saved before names were used)."""
    if state.get("state") and all(isinstance(k, int) for k in state["state"]):  # param-index keyed
        optimizer.load_state_dict(state)
        return
    options = StateDictOptions(full_state_dict=True) if is_sharded(model) else None
    set_optimizer_state_dict(model, optimizer, state, options=options)
