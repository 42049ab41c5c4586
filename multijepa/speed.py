"""The speed switches, applied in one place after the model is built, so the model code stays plain.

- `train.activation_checkpointing`: the online encoders' and predictors' transformer blocks keep
  no activations for backward and recompute them instead (PyTorch's checkpoint wrapper, non-
  reentrant): less memory for more compute. The EMA target encoders run without gradients and
  are left alone. State-dict keys do not change, so checkpoints move freely between on and off.
- `train.compile`: each of those blocks is compiled with `torch.compile` (dynamic shapes: the
  context length varies from batch to batch), as torchtitan compiles per block.
- `train.precision: bf16` is autocast, applied around the forward by `TrainStep`; attention is
  always the fused `scaled_dot_product_attention` (timm blocks and our cross-attention).
"""

from __future__ import annotations

from functools import partial

from timm.models.vision_transformer import Block
from torch import nn
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import (
    CheckpointImpl,
    apply_activation_checkpointing,
    checkpoint_wrapper,
)

from fusion.cross_attention import CrossAttentionBlock

from .config import TrainConfig

BLOCKS = (Block, CrossAttentionBlock)


def online_modules(model: nn.Module) -> list[nn.Module]:
    """The modules that take gradients and hold the transformer blocks: encoders and predictors."""
    return [model.encoders, model.predictors]


def apply_speed(model: nn.Module, train: TrainConfig) -> nn.Module:
    if train.activation_checkpointing:
        wrapper = partial(checkpoint_wrapper, checkpoint_impl=CheckpointImpl.NO_REENTRANT)
        for part in online_modules(model):
            apply_activation_checkpointing(part, checkpoint_wrapper_fn=wrapper, check_fn=lambda m: isinstance(m, BLOCKS))
    if train.compile:
        for part in online_modules(model):
            for m in part.modules():
                if isinstance(m, BLOCKS):
                    m.compile(dynamic=True)
    return model
