"""timm's attention reads our boolean padding masks as masks, fused (SDPA) or not.

Encoders and predictors pass timm `Block`s a (B, 1, 1, N) boolean mask of the keys that may be
attended. timm before 1.0.26 added the mask to the scores in its unfused path (`maybe_add_mask`):
a boolean became 0/1, so padding was attended (silently, wherever fused attention is off:
TIMM_FUSED_ATTN=0, some exports). pyproject.toml asks for 1.0.26 or newer, which turns a boolean mask into
-inf first; checked here on the timm installed and on the floor itself."""

from __future__ import annotations

import re
from pathlib import Path

import torch
from packaging.version import Version
from timm.models.vision_transformer import Block

FIRST_GOOD = Version("1.0.26")  # timm/layers/attention.py: resolve_self_attn_mask, bool -> -inf


def test_a_boolean_mask_hides_padding_in_the_fused_and_the_unfused_path():
    torch.manual_seed(0)
    blk = Block(16, 2).eval()
    x = torch.randn(2, 5, 16)
    valid = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    mask = valid[:, None, None, :]
    with torch.no_grad():
        blk.attn.fused_attn = True
        fused = blk(x, attn_mask=mask)
        blk.attn.fused_attn = False
        unfused = blk(x, attn_mask=mask)
        alone = blk(x[:1, :3])  # the first row's valid tokens without any padding
    assert torch.allclose(fused, unfused, atol=1e-5)
    assert torch.allclose(unfused[0, :3], alone[0], atol=1e-5)


def test_the_required_timm_masks_in_both_paths():
    text = (Path(__file__).parents[1] / "pyproject.toml").read_text()
    floor = re.search(r'"timm>=([0-9.]+)"', text)
    assert floor is not None and Version(floor.group(1)) >= FIRST_GOOD
