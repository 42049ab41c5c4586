"""Maskers: shapes, bounds, disjoint context/targets, reproducibility, audio time spans, spans."""

import pytest
import torch

from modalities.errors import DataError
from modalities.masking import MultiBlockMasker, SpanMasker

GRIDS = [(8, 8), (8, 12), (4, 4), (14, 14)]


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def check_disjoint_sorted(context, targets, n_valid):
    """Per row: int64, in 0..n_valid-1, sorted, unique, targets non-empty, no overlap with the context."""
    B, K, Nt = targets.shape
    assert context.dtype == torch.int64 and targets.dtype == torch.int64
    assert context.shape[0] == B and context.shape[1] >= 1 and Nt >= 1
    n_valid = torch.as_tensor(n_valid).expand(B)
    for b in range(B):
        c, t = context[b], targets[b]
        assert int(c.min()) >= 0 and int(c.max()) < int(n_valid[b])
        assert int(t.min()) >= 0 and int(t.max()) < int(n_valid[b])
        assert bool((c[1:] > c[:-1]).all())
        assert bool((t[:, 1:] > t[:, :-1]).all())
        assert not set(c.tolist()) & set(t.flatten().tolist())


@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("full_height_prob", [0.0, 1.0])
def test_multiblock_valid(grid, full_height_prob):
    H, W = grid
    masker = MultiBlockMasker(grid, full_height_prob=full_height_prob)
    for seed in range(5):
        context, targets = masker(32, gen(seed))
        assert targets.shape[:2] == (32, 4)
        assert context.shape[1] >= min(4, H * W - 1)
        check_disjoint_sorted(context, targets, H * W)


@pytest.mark.parametrize("grid", GRIDS)
def test_multiblock_targets_are_rectangles(grid):
    H, W = grid
    _, targets = MultiBlockMasker(grid)(16, gen(1))
    for t in targets.reshape(-1, targets.shape[-1]):
        r, c = t // W, t % W
        h, w = int(r.max() - r.min() + 1), int(c.max() - c.min() + 1)
        assert h * w == t.numel()  # all tokens of one bounding box


def test_multiblock_reproducible():
    masker = MultiBlockMasker((8, 12))
    a, b = masker(64, gen(7)), masker(64, gen(7))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    c = masker(64, gen(8))
    assert a[0].shape != c[0].shape or not torch.equal(a[0], c[0]) or not torch.equal(a[1], c[1])


def test_multiblock_uses_only_the_generator():
    masker = MultiBlockMasker((8, 8), full_height_prob=0.5)
    torch.manual_seed(0)
    a = masker(8, gen(3))
    torch.manual_seed(123)
    b = masker(8, gen(3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


@pytest.mark.parametrize("grid", [(8, 8), (8, 12), (4, 4), (8, 64)])
def test_full_height_targets_cover_whole_columns(grid):
    H, W = grid
    _, targets = MultiBlockMasker(grid, full_height_prob=1.0)(16, gen(2))
    for t in targets.reshape(-1, targets.shape[-1]).tolist():
        cols = {i % W for i in t}
        assert set(t) == {r * W + c for r in range(H) for c in cols}


def test_full_height_prob_mixes_batches():
    masker = MultiBlockMasker((8, 12), full_height_prob=0.5)
    full = []
    for seed in range(40):
        _, t = masker(4, gen(seed))
        rows = {i // 12 for i in t[0, 0].tolist()}
        full.append(len(rows) == 8)
    assert any(full) and not all(full)


def test_multiblock_min_keep_and_fallback():
    # Four 2-column time spans can cover all of an 8-wide grid: a resample (or the fallback) must
    # still leave min_keep context tokens, even with a single try.
    for tries in (1, 50):
        masker = MultiBlockMasker((2, 8), target_scale=(0.25, 0.25), full_height_prob=1.0,
                                  min_keep=6, max_tries=tries)
        for seed in range(10):
            context, targets = masker(32, gen(seed))
            assert context.shape[1] >= 6
            check_disjoint_sorted(context, targets, 16)


def test_multiblock_tiny_grid_and_huge_min_keep():
    context, targets = MultiBlockMasker((1, 2), min_keep=10, target_scale=(1.0, 1.0))(8, gen(0))
    assert context.shape == (8, 1) and targets.shape == (8, 4, 1)
    check_disjoint_sorted(context, targets, 2)


@pytest.mark.parametrize("kwargs", [
    dict(grid=(1, 1)), dict(grid=(8, 8), num_targets=0), dict(grid=(8, 8), min_keep=0),
    dict(grid=(8, 8), target_scale=(0.3, 0.2)), dict(grid=(8, 8), full_height_prob=1.5),
])
def test_multiblock_rejects_bad_config(kwargs):
    with pytest.raises(ValueError):
        MultiBlockMasker(**kwargs)


LENGTHS = torch.tensor([2, 3, 17, 32, 2, 32, 17, 3])


def test_span_valid_with_mixed_lengths():
    masker = SpanMasker()
    for seed in range(20):
        context, targets = masker(LENGTHS, gen(seed))
        assert targets.shape[:2] == (8, 2)
        check_disjoint_sorted(context, targets, LENGTHS)
        assert targets.shape[2] == 1 and context.shape[1] == 1  # length 2 forces one of each


def test_span_targets_contiguous_and_context_complete():
    lengths = torch.full((16,), 40)
    masker = SpanMasker(num_targets=2, target_scale=(0.2, 0.2), min_keep=1)
    for seed in range(10):
        context, targets = masker(lengths, gen(seed))
        assert targets.shape == (16, 2, 8)  # round(0.2 * 40): nothing truncated
        assert bool((targets.diff(dim=-1) == 1).all())
        free = [40 - len(set(targets[b].flatten().tolist())) for b in range(16)]
        assert context.shape[1] == min(free)  # context = every other token, cut to the batch min
        check_disjoint_sorted(context, targets, lengths)


def test_span_truncated_targets_stay_contiguous():
    context, targets = SpanMasker(num_targets=3)(torch.tensor([10, 50, 64, 33]), gen(4))
    assert bool((targets.diff(dim=-1) == 1).all())
    check_disjoint_sorted(context, targets, torch.tensor([10, 50, 64, 33]))


def test_span_reproducible():
    masker = SpanMasker()
    a, b = masker(LENGTHS, gen(5)), masker(LENGTHS, gen(5))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    lengths = torch.full((8,), 64)
    c, d = masker(lengths, gen(5)), masker(lengths, gen(6))
    assert c[0].shape != d[0].shape or not torch.equal(c[0], d[0]) or not torch.equal(c[1], d[1])


def test_span_min_keep():
    lengths = torch.tensor([4, 10, 30])
    context, targets = SpanMasker(num_targets=3, target_scale=(0.9, 0.9), min_keep=3)(lengths, gen(0))
    assert context.shape[1] == 3  # min(min_keep, 4 - 1)
    check_disjoint_sorted(context, targets, lengths)


def test_span_fallback_when_tries_run_out():
    masker = SpanMasker(num_targets=2, target_scale=(0.25, 0.25))
    masker.max_tries = 1  # two 1-token spans in a 2-token row often leave no context
    lengths = torch.tensor([2, 2, 2, 2, 3, 3])
    for seed in range(10):
        context, targets = masker(lengths, gen(seed))
        check_disjoint_sorted(context, targets, lengths)


@pytest.mark.parametrize("lengths", [torch.tensor([5, 1, 7]), torch.tensor([0]), torch.tensor([])])
def test_span_rejects_short_rows(lengths):
    with pytest.raises(ValueError):
        SpanMasker()(lengths.long(), gen(0))


def test_span_error_names_the_row():
    with pytest.raises(DataError, match="row 1 has 1 tokens"):
        SpanMasker()(torch.tensor([5, 1, 7]), gen(0))


def test_padded_context_keeps_every_context_token():
    """pad_context: no row loses context to the batch minimum; -1 marks padding after the row's tokens."""
    g = torch.Generator().manual_seed(0)
    for masker, arg in (
        (MultiBlockMasker((8, 8), pad_context=True), 16),
        (SpanMasker(pad_context=True), torch.tensor([5, 12, 30, 31])),
    ):
        ctx, tgt = masker(arg, g)
        lengths = arg if isinstance(arg, torch.Tensor) else torch.full((arg,), 64)
        for b in range(ctx.shape[0]):
            row = ctx[b]
            kept = row[row >= 0]
            assert bool((row[len(kept):] == -1).all()), "padding must come after the real indices"
            targets = set(tgt[b].flatten().tolist())
            assert not targets & set(kept.tolist())
            assert bool((kept < lengths[b]).all()) and bool((kept[1:] > kept[:-1]).all())
        counts = (ctx >= 0).sum(1)
        assert int(counts.max()) == ctx.shape[1], "padded to the batch maximum, not beyond"
        if isinstance(arg, torch.Tensor):  # rows of 5 and 31 tokens: the short one is padded
            assert int(counts.min()) < ctx.shape[1]
    # span masker: the context is exactly the valid tokens outside the (untruncated) spans
    L = torch.tensor([10, 10, 10])
    ctx, tgt = SpanMasker(num_targets=1, target_scale=(0.2, 0.2), pad_context=True)(L, torch.Generator().manual_seed(1))
    for b in range(3):
        assert sorted(ctx[b][ctx[b] >= 0].tolist() + tgt[b].flatten().tolist()) == list(range(10))
