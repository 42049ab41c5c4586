"""The attention-fusion variants: shapes, gradients, padding, memory slots."""

import pytest
import torch

from fusion.attention import Attention
from fusion.registry import FUSIONS, build_fusion

KINDS = sorted(FUSIONS)


def _inputs(b=3, length=7, n=10, d=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    text, image = torch.randn(b, length, d, generator=g), torch.randn(b, n, d, generator=g)
    valid = torch.ones(b, length, dtype=torch.bool)
    valid[0, 4:] = False  # row 0 has 4 real tokens
    return text, valid, image


@pytest.mark.parametrize("slots", [0, 3])
@pytest.mark.parametrize("kind", KINDS)
def test_fusion_shapes_and_gradients(kind, slots):
    fusion = build_fusion(kind, 32, depth=2, heads=4, memory_slots=slots)
    text, valid, image = _inputs()
    text.requires_grad_(True)
    image.requires_grad_(True)
    out = fusion(text, valid, image)
    assert out.shape == (3, fusion.out_dim) and torch.isfinite(out).all()
    # a random readout (a plain sum of LayerNorm outputs is constant, its gradient zero)
    (out * torch.randn(out.shape, generator=torch.Generator().manual_seed(1))).sum().backward()
    assert text.grad.abs().sum() > 1e-3 and image.grad.abs().sum() > 1e-3  # both streams feed the answer
    assert all(p.grad is not None for p in fusion.parameters()), "an unused parameter"


@pytest.mark.parametrize("kind", KINDS)
def test_question_padding_is_ignored(kind):
    fusion = build_fusion(kind, 32, depth=2, heads=4, memory_slots=2).eval()
    text, valid, image = _inputs()
    out = fusion(text, valid, image)
    text2 = text.clone()
    text2[0, 4:] = 100.0  # garbage in row 0's padding
    assert torch.allclose(fusion(text2, valid, image), out, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_the_answer_depends_on_the_image(kind):
    fusion = build_fusion(kind, 32, depth=1, heads=4).eval()
    text, valid, image = _inputs()
    assert not torch.allclose(fusion(text, valid, image), fusion(text, valid, image.flip(0)))


def test_memory_slots_are_attended_even_with_all_context_masked():
    attn = Attention(16, 2, memory_slots=4)
    x, ctx = torch.randn(2, 3, 16), torch.randn(2, 5, 16)
    valid = torch.zeros(2, 5, dtype=torch.bool)  # nothing to read but the memory
    out = attn(x, ctx, valid)
    assert torch.isfinite(out).all()
    out.sum().backward()
    assert attn.memory.grad.abs().sum() > 0


def test_unknown_fusion_is_named():
    with pytest.raises(ValueError, match="unknown fusion 'late'"):
        build_fusion("late", 32, 1, 4)
