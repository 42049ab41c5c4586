"""Everything applied to a built model from outside, in one place and one fixed order (as
torchtitan's `parallelize_llama`): activation checkpointing -> compile -> DDP or FSDP2. The model
code stays single-device.

- `train.activation_checkpointing`: the online encoders' and predictors' transformer blocks keep
  no activations for backward and recompute them instead (PyTorch's checkpoint wrapper, non-
  reentrant): less memory for more compute. The EMA target encoders run without gradients and
  are left alone. State-dict keys do not change, so checkpoints move freely between on and off.
- `train.compile`: each of those blocks is compiled with `torch.compile` (dynamic shapes: the
  context length varies from batch to batch), as torchtitan compiles per block.
- `train.parallel: ddp` (default, under torchrun): DistributedDataParallel over the trainable
  modules. The EMA target encoders are left out of DDP (no gradients, no buffer broadcasts): every
  process updates them from identical online weights, so they stay identical without communication.
- `train.parallel: fsdp`: FSDP2 `fully_shard` on every transformer block (online, target and
  predictor) and then on the whole model, so weights, gradients and AdamW state are sharded;
  online and target blocks shard alike, so the EMA update stays local to each shard.
- `train.precision: bf16` is autocast, applied around the forward by `TrainStep`; attention is
  always the fused `scaled_dot_product_attention` (timm blocks and fusion/attention.py).

Checkpoints always hold the full, unsharded state keyed by parameter name (`full_state`), so a
run resumes at any world size and under either kind of parallelism.
"""

from __future__ import annotations

import sys
from functools import partial

import torch
import torch.distributed as dist
from timm.models.vision_transformer import Block
from torch import nn
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import (
    CheckpointImpl,
    apply_activation_checkpointing,
    checkpoint_wrapper,
)
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)
from torch.nn.parallel import DistributedDataParallel

from fusion.attention import AttentionBlock
from modalities.mamba import MambaBlock

from ..checkpoint import CheckpointError
from ..config import TrainConfig
from ..distributed import World

BLOCKS = (Block, AttentionBlock, MambaBlock)  # the units that are checkpointed, compiled and sharded


def blocks() -> tuple[type, ...]:
    """BLOCKS, and open_clip's when an open_clip tower was built (open_clip is slow to import, so only then)."""
    oc = sys.modules.get("open_clip.transformer")
    return BLOCKS + ((oc.ResidualAttentionBlock, oc.CustomResidualAttentionBlock) if oc is not None else ())


FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


def parallelize(model: nn.Module, train: TrainConfig, world: World = World(), device: torch.device | None = None,
                partial_sources: bool = False) -> nn.Module:
    """Apply the switches of `train` to `model` in place: activation checkpointing, then compile,
    then DDP / FSDP2. -> the module to call for the forward (the model itself at world size 1).
    partial_sources: some source lacks a modality of the model (refused by FSDP2)."""
    # take gradients and hold the blocks; targets do not (a CLIP-objective model has no predictors)
    online = [part for part in (model.encoders, model.predictors) if part is not None]
    kinds = blocks()
    if train.activation_checkpointing:
        wrapper = partial(checkpoint_wrapper, checkpoint_impl=CheckpointImpl.NO_REENTRANT)
        for part in online:
            apply_activation_checkpointing(part, checkpoint_wrapper_fn=wrapper, check_fn=lambda m: isinstance(m, kinds))
    if train.compile:
        for part in online:
            for m in part.modules():
                if isinstance(m, kinds):
                    m.compile(dynamic=True)
    if not world.active:
        return model
    if train.parallel == "fsdp":
        return _fully_shard(model, partial_sources)
    targets = model.target_encoders if model.target_encoders is not None else nn.ModuleDict()
    ignore = [f"target_encoders.{name}" for name, _ in targets.named_parameters()]
    ignore += [f"target_encoders.{name}" for name, _ in targets.named_buffers()]
    DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, ignore)
    # Every forward gives every trainable weight a gradient (zero where this process had no rows of its
    # modality, or nothing to predict yet: MultiJEPA._unused_anchor), so DDP never searches the graph
    # for unused weights and never waits for a gradient one process lacks, whatever rows it drew.
    model.touch_unused = True
    return DistributedDataParallel(
        model,
        device_ids=[device.index] if device is not None and device.type == "cuda" else None,
        find_unused_parameters=False,
        broadcast_buffers=False,  # the BatchNorm statistics are already global (model.global_batch_stats)
    )


def _fully_shard(model: nn.Module, partial_sources: bool) -> nn.Module:
    if partial_sources:
        raise ValueError("train.parallel=fsdp needs every source to hold every modality of the model "
                         "(a process without one would leave its shards' collectives waiting): use ddp")
    from torch.distributed.fsdp import fully_shard

    kinds = blocks()
    for part in (model.encoders, model.target_encoders, model.predictors):
        for m in list(part.modules() if part is not None else ()):
            if isinstance(m, kinds):
                fully_shard(m)
    # the temperature is a scalar (FSDP2 shards no scalars): kept whole, its gradient averaged here
    scale = model.logit_scale
    if scale.requires_grad:
        scale.register_hook(_world_mean)
    fully_shard(model, ignored_params={scale})
    return model


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
    """Load a `full_state` optimizer state (or a state saved before names were used). The groups'
    learning-rate scales stay those of the config (a resumed run may change them); the groups
    themselves must be the saved ones."""
    groups = state.get("param_groups", [])
    if len(groups) != len(optimizer.param_groups):
        raise CheckpointError(f"the checkpoint's optimizer has {len(groups)} parameter groups, this run's "
                              f"{len(optimizer.param_groups)} (optim.lr_scale turned on or off, or a change of "
                              "version): resume with the settings the run was started with")
    scales = [g.get("lr_scale", 1.0) for g in optimizer.param_groups]
    if state.get("state") and all(isinstance(k, int) for k in state["state"]):  # param-index keyed
        optimizer.load_state_dict(state)
    else:
        # not strict: a parameter that never had a gradient has no state (the predictors before a late
        # prediction phase, `loss.pred_start`), and AdamW starts it fresh as it would have; every state
        # the checkpoint holds must still find its parameter
        options = StateDictOptions(full_state_dict=is_sharded(model), strict=False)
        set_optimizer_state_dict(model, optimizer, state, options=options)
        loaded = sum(1 for g in optimizer.param_groups for p in g["params"] if optimizer.state.get(p))
        if loaded != len(state.get("state", {})):
            raise CheckpointError(f"the checkpoint's optimizer holds state for {len(state.get('state', {}))} "
                                  f"parameters, of which {loaded} fit this run's: resume with the settings the run "
                                  "was started with")
    for g, scale in zip(optimizer.param_groups, scales):
        g["lr_scale"] = scale
