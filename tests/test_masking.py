"""Maskers: shapes, bounds, disjoint context/targets, reproducibility, audio time spans, spans,
rank independence (a row's masks depend on its key, not on the rest of the batch)."""

import pytest
import torch

from modalities.errors import DataError
from modalities.masking import MultiBlockMasker, RandomKeepMasker, RandomMasker, SpanMasker

GRIDS = [(8, 8), (8, 12), (4, 4), (14, 14)]


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def check_disjoint_sorted(context, targets, n_valid):
    """Per row: int64, in 0..n_valid-1, sorted, unique, targets non-empty, no overlap with the context.
    -1 (padding) may only follow a context row's or a target span's real indices."""
    B, K, Nt = targets.shape
    assert context.dtype == torch.int64 and targets.dtype == torch.int64
    assert context.shape[0] == B and context.shape[1] >= 1 and Nt >= 1
    n_valid = torch.as_tensor(n_valid).expand(B)
    for b in range(B):
        c = strip(context[b])
        assert c.numel() >= 1
        assert int(c.min()) >= 0 and int(c.max()) < int(n_valid[b])
        assert bool((c[1:] > c[:-1]).all())
        tgt = set()
        for t in targets[b]:
            t = strip(t)
            assert t.numel() >= 1
            assert int(t.min()) >= 0 and int(t.max()) < int(n_valid[b])
            assert bool((t[1:] > t[:-1]).all())
            tgt |= set(t.tolist())
        assert not set(c.tolist()) & tgt


def strip(row: torch.Tensor) -> torch.Tensor:
    """The real indices of a padded 1-D index row; asserts the -1 padding is only at the tail."""
    n = int((row >= 0).sum())
    assert bool((row[n:] == -1).all()), f"-1 padding must come last: {row.tolist()}"
    return row[:n]


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


@pytest.mark.parametrize("grid", [(4, 12), (8, 8), (1, 8), (8, 64)])
def test_full_width_targets_are_whole_bands(grid):
    """Band targets cover every column of the rows they take, and still leave a context."""
    H, W = grid
    masker = MultiBlockMasker(grid, full_width_prob=1.0, min_keep=2)
    for seed in range(5):
        context, targets = masker(16, gen(seed))
        check_disjoint_sorted(context, targets, H * W)
        assert context.shape[1] >= 2
        for t in targets.reshape(-1, targets.shape[-1]).tolist():
            rows = {i // W for i in t}
            if H > 1:
                assert set(t) == {r * W + c for r in rows for c in range(W)}
            else:  # a one-row grid cannot give up a whole band: the band is cut short
                assert len(rows) == 1 and len(t) <= W - 2


def test_full_height_and_width_share_the_batches():
    masker = MultiBlockMasker((4, 12), full_height_prob=0.4, full_width_prob=0.4, min_keep=2)
    kinds = set()
    for seed in range(60):
        _, t = masker(4, gen(seed))
        rows, cols = {i // 12 for i in t[0, 0].tolist()}, {i % 12 for i in t[0, 0].tolist()}
        kinds.add("time span" if len(rows) == 4 else "band" if len(cols) == 12 else "block")
    assert kinds == {"time span", "band", "block"}


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
    dict(grid=(8, 8), full_height_prob=0.75, full_width_prob=0.5),
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
        assert context.shape[1] == 1  # length 2 forces one context token (cut to the batch min)
        span_len = (targets >= 0).sum(-1)  # (B, K)
        assert bool((span_len[LENGTHS == 2] == 1).all())  # ... and one-token spans there
        assert targets.shape[2] == int(span_len.max())  # padded to the longest span, not beyond


def test_span_targets_contiguous_and_context_complete():
    lengths = torch.full((16,), 40)
    masker = SpanMasker(num_targets=2, target_scale=(0.2, 0.2), min_keep=1)
    for seed in range(10):
        context, targets = masker(lengths, gen(seed))
        assert targets.shape == (16, 2, 8)  # round(0.2 * 40): nothing truncated, no padding
        assert bool((targets.diff(dim=-1) == 1).all())
        free = [40 - len(set(targets[b].flatten().tolist())) for b in range(16)]
        assert context.shape[1] == min(free)  # context = every other token, cut to the batch min
        check_disjoint_sorted(context, targets, lengths)


@pytest.mark.parametrize("pad_context", [False, True])
def test_span_padded_targets_are_whole_spans(pad_context):
    """Targets are never cut: each span is its row's full contiguous run, then -1 up to the longest."""
    masker = SpanMasker(num_targets=3, target_scale=(0.15, 0.3), min_keep=2, pad_context=pad_context)
    lengths = torch.tensor([10, 50, 64, 33, 2, 3, 77, 12])
    keep = (lengths - 1).clamp(max=2)
    for seed in range(10):
        context, targets = masker(lengths, gen(seed))
        check_disjoint_sorted(context, targets, lengths)
        span_len = (targets >= 0).sum(-1)  # (B, K)
        assert targets.shape[2] == int(span_len.max())
        # recompute each row's span length from the batch's fractions (the generator's first draws)
        frac = 0.15 + torch.rand(3, generator=gen(seed), dtype=torch.float64) * (0.3 - 0.15)
        expect = (frac[None] * lengths[:, None]).round().long().clamp(min=1)
        expect = torch.minimum(expect, (lengths - keep)[:, None])
        assert torch.equal(span_len, expect)
        for b in range(len(lengths)):
            if pad_context:  # (cut to the batch minimum otherwise: the 2-token row keeps 1)
                assert int((context[b] >= 0).sum()) >= int(keep[b])
            for k in range(3):
                t = strip(targets[b, k])
                assert torch.equal(t, torch.arange(int(t[0]), int(t[0]) + int(expect[b, k])))  # contiguous


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
    # span masker: the context is exactly the valid tokens outside the spans
    L = torch.tensor([10, 10, 10, 17, 30])
    ctx, tgt = SpanMasker(num_targets=1, target_scale=(0.2, 0.2), pad_context=True)(L, torch.Generator().manual_seed(1))
    for b in range(len(L)):
        assert sorted(ctx[b][ctx[b] >= 0].tolist() + tgt[b][tgt[b] >= 0].tolist()) == list(range(int(L[b])))


def _split_equal(masker, arg, keys, parts, seed: int):
    """Masks for the whole batch == masks for each part alone, row by row (same generator state):
    targets exactly (padding dropped for text), contexts after dropping -1."""
    whole_ctx, whole_tgt = masker(arg(keys), gen(seed), row_keys=keys)
    got = []
    for part in parts:
        ctx, tgt = masker(arg(part), gen(seed), row_keys=part)
        got += list(zip(ctx, tgt))
    assert len(got) == len(keys)
    for b, (ctx, tgt) in enumerate(got):
        assert torch.equal(strip(ctx), strip(whole_ctx[b]))
        assert tgt.shape[0] == whole_tgt.shape[1]
        for k in range(tgt.shape[0]):
            assert torch.equal(strip(tgt[k]), strip(whole_tgt[b, k]))


@pytest.mark.parametrize("grid,full_height_prob", [((14, 14), 0.0), ((8, 12), 1.0), ((2, 8), 1.0)])
def test_multiblock_rank_independent(grid, full_height_prob):
    """Data parallel: the rows a rank builds get the masks of their global slots, whatever the split."""
    masker = MultiBlockMasker(grid, full_height_prob=full_height_prob, min_keep=6, pad_context=True)
    keys = list(range(8))
    for seed in range(5):
        _split_equal(masker, len, keys, [keys[:4], keys[4:]], seed)
        _split_equal(masker, len, keys, [keys[:1], keys[1:6], keys[6:]], seed)
    # not the same masks for every row, and the keys (not the positions) decide
    ctx, tgt = masker(8, gen(0), row_keys=keys)
    assert not all(torch.equal(tgt[0], tgt[b]) for b in range(1, 8))
    ctx2, tgt2 = masker(8, gen(0), row_keys=keys[::-1])
    assert torch.equal(tgt2, tgt.flip(0))


@pytest.mark.parametrize("grid,ratio", [((8, 8), 0.5), ((4, 12), 0.75), ((1, 2), 0.5)])
def test_random_masks_split_the_patches_into_flips_keep_set_and_its_targets(grid, ratio):
    """kind random: the context is the keep set FLIP's masker draws from the same generator state
    (one keep set can serve binding and prediction), the one target group every patch it drops."""
    n = grid[0] * grid[1]
    masker, keys = RandomMasker(n, ratio), [3, 9, 4, 1, 7, 0]
    context, targets = masker(len(keys), gen(0), row_keys=keys)
    keep = n - round(n * ratio)
    assert context.shape == (6, keep) and targets.shape == (6, 1, n - keep)
    check_disjoint_sorted(context, targets, n)
    assert torch.equal(torch.cat([context, targets[:, 0]], 1).sort(1).values, torch.arange(n).expand(6, n))
    assert torch.equal(context, RandomKeepMasker(n, ratio)(len(keys), gen(0), row_keys=keys))
    for seed in range(3):  # a row's masks depend on its key, not on the rest of the batch
        _split_equal(masker, len, keys, [keys[:2], keys[2:]], seed)
    if n > 2:
        assert len({tuple(r) for r in context.tolist()}) == 6


def test_random_masks_need_a_target():
    with pytest.raises(ValueError, match="masks no token"):
        RandomMasker(8, 0.05)
    with pytest.raises(ValueError, match="ratio"):
        RandomMasker(8, 1.0)


def test_span_rank_independent():
    lengths = {k: n for k, n in enumerate([5, 77, 10, 33, 2, 64, 19, 40])}  # a different length per row
    masker = SpanMasker(num_targets=2, target_scale=(0.15, 0.25), min_keep=2, pad_context=True)
    keys = list(range(8))
    arg = lambda ks: torch.tensor([lengths[k] for k in ks])  # noqa: E731
    for seed in range(5):
        _split_equal(masker, arg, keys, [keys[:4], keys[4:]], seed)
        _split_equal(masker, arg, keys, [[k] for k in keys], seed)


def test_row_keys_checked_and_default_to_positions():
    masker = MultiBlockMasker((8, 8), pad_context=True)
    a, b = masker(4, gen(1)), masker(4, gen(1), row_keys=torch.arange(4))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    with pytest.raises(ValueError, match="row_keys"):
        masker(4, gen(1), row_keys=[0, 1, 2])
    with pytest.raises(ValueError, match="row_keys"):
        SpanMasker()(torch.tensor([5, 6]), gen(1), row_keys=[0])


def test_collator_masks_do_not_depend_on_the_split():
    """Two data-parallel ranks each collate half of a global batch (rows carry their global slot):
    every row gets the masks the whole batch would have given it, even when one rank has no
    text at all, and text targets come with `target_valid`."""
    from multijepa.config import load_config
    from multijepa.data.collate import MultiModalCollator, build_maskers

    cfg = load_config("tiny").model
    collate = MultiModalCollator(cfg.modalities, build_maskers(cfg), seed=5)
    g = gen(0)
    items = []
    for slot in range(8):
        it = {"row": slot, "batch_no": 3, "slot": slot,
              "image": torch.randn(3, cfg.image.size, cfg.image.size, generator=g),
              "audio": torch.randn(cfg.audio.num_mel_bins, cfg.audio.target_frames, generator=g)}
        if slot < 4:  # rank 1 below has no text rows
            n = 3 + 5 * slot
            it["text"] = (torch.randint(4, 64, (cfg.text.max_len,), generator=g), torch.tensor(n))
        items.append(it)
    whole = collate(items)
    parts = [collate(items[:4]), collate(items[4:])]
    for m in cfg.modalities:
        rows = {}  # slot -> (context, targets)
        for part in parts:
            if m in part:
                for j, i in enumerate(part[m]["index"].tolist()):
                    rows[part["rows"][i].item()] = (part[m]["context"][j], part[m]["targets"][j])
        assert len(rows) == whole[m]["index"].numel()
        for j, i in enumerate(whole[m]["index"].tolist()):
            ctx, tgt = rows[whole["rows"][i].item()]
            assert torch.equal(strip(ctx), strip(whole[m]["context"][j]))
            for k in range(tgt.shape[0]):
                assert torch.equal(strip(tgt[k]), strip(whole[m]["targets"][j, k]))
    text = whole["text"]
    assert bool((text["targets"] < 0).any())  # spans of rows of 3..18 tokens differ in length
    assert torch.equal(text["target_valid"], text["targets"].flatten(1) >= 0)
    assert "target_valid" not in whole["image"]
    again = collate(items)  # reproducible; another batch number gives other masks
    assert torch.equal(again["image"]["targets"], whole["image"]["targets"])
    other = collate([{**it, "batch_no": 4} for it in items])
    assert not torch.equal(other["image"]["context"], whole["image"]["context"]) or \
        not torch.equal(other["image"]["targets"], whole["image"]["targets"])


# --- V-JEPA's 3-D multi-block masks -----------------------------------------------------------------
# facebookresearch/jepa, src/masks/multiblock3d.py, `_MaskGenerator`: its block size and block mask,
# ported as is (the generator passed in instead of torch's global one for the positions).

def _ref_block_size(generator, duration, height, width, temporal_scale, spatial_scale, aspect_ratio_scale):
    import math

    _rand = torch.rand(1, generator=generator).item()
    min_t, max_t = temporal_scale
    t = max(1, int(duration * (min_t + _rand * (max_t - min_t))))
    _rand = torch.rand(1, generator=generator).item()
    min_s, max_s = spatial_scale
    spatial_num_keep = int(height * width * (min_s + _rand * (max_s - min_s)))
    _rand = torch.rand(1, generator=generator).item()
    min_ar, max_ar = aspect_ratio_scale
    aspect_ratio = min_ar + _rand * (max_ar - min_ar)
    h = int(round(math.sqrt(spatial_num_keep * aspect_ratio)))
    w = int(round(math.sqrt(spatial_num_keep / aspect_ratio)))
    return t, min(h, height), min(w, width)


def _ref_block_mask(generator, b_size, duration, height, width):
    t, h, w = b_size
    top = torch.randint(0, height - h + 1, (1,), generator=generator)
    left = torch.randint(0, width - w + 1, (1,), generator=generator)
    start = torch.randint(0, duration - t + 1, (1,), generator=generator)
    mask = torch.ones((duration, height, width), dtype=torch.int32)
    mask[start:start + t, top:top + h, left:left + w] = 0
    return mask
# ----------------------------------------------------------------------------------------------------


GRIDS_3D = [(8, 14, 14), (4, 8, 8), (2, 4, 6)]


@pytest.mark.parametrize("grid", GRIDS_3D)
@pytest.mark.parametrize("kind", [0, 1])
def test_3d_block_sizes_are_v_jepas(grid, kind):
    from modalities.masking import V_JEPA_MASKS, MultiBlock3DMasker

    space, time, aspect, _ = V_JEPA_MASKS[kind]
    masker = MultiBlock3DMasker(grid, masks=[V_JEPA_MASKS[kind]], min_keep=1)
    for seed in range(30):
        want = _ref_block_size(gen(seed), *grid, time, space, aspect)
        u = torch.rand(3, generator=gen(seed)).tolist()  # the same three draws, in the same order
        assert masker.block_size(u) == want
    wide = MultiBlock3DMasker(grid, masks=[((0.1, 0.9), (0.25, 1.0), (0.3, 3.0), 2)], min_keep=1)
    for seed in range(30):
        u = torch.rand(3, generator=gen(seed)).tolist()
        assert wide.block_size(u) == _ref_block_size(gen(seed), *grid, (0.25, 1.0), (0.1, 0.9), (0.3, 3.0))


@pytest.mark.parametrize("grid", GRIDS_3D)
@pytest.mark.parametrize("kind", [0, 1])
def test_3d_masks_are_unions_of_tubes_and_match_v_jepas_coverage(grid, kind):
    """Each row's target is the union of num_blocks (t, h, w) tubes and its context all the rest;
    over many rows the masked share is V-JEPA's for the same block size."""
    from modalities.masking import V_JEPA_MASKS, MultiBlock3DMasker

    T, H, W = grid
    masker = MultiBlock3DMasker(grid, masks=[V_JEPA_MASKS[kind]], min_keep=1)
    blocks = V_JEPA_MASKS[kind][3]
    ours, theirs = [], []
    for seed in range(40):
        g = gen(seed)
        context, targets = masker(8, g)
        check_disjoint_sorted(context, targets, T * H * W)
        for b in range(8):  # context + target = every token (max_context_frames_ratio 1)
            assert sorted(strip(context[b]).tolist() + strip(targets[b, 0]).tolist()) == list(range(T * H * W))
        size = masker.block_size(torch.rand(3, generator=gen(seed)).tolist())
        ours += [int((targets[b, 0] >= 0).sum()) / (T * H * W) for b in range(8)]
        rg = gen(1000 + seed)
        for _ in range(8):
            empty_context = True
            while empty_context:  # V-JEPA redraws a row whose context is empty
                keep = torch.ones(T, H, W, dtype=torch.int32)
                for _ in range(blocks):
                    keep *= _ref_block_mask(rg, size, T, H, W)
                empty_context = int(keep.sum()) == 0
            theirs.append(float((keep == 0).float().mean()))
        for b in range(8):  # the target is a union of whole (t, h, w) tubes: the tubes inside it cover it
            m = torch.zeros(T * H * W, dtype=torch.bool)
            m[strip(targets[b, 0])] = True
            m = m.view(1, 1, T, H, W).float()
            inside = torch.nn.functional.avg_pool3d(m, size, stride=1) > 1 - 1e-6  # placements fully masked
            covered = torch.nn.functional.conv_transpose3d(inside.float(), torch.ones(1, 1, *size)) > 0
            assert torch.equal(covered, m > 0)
    mean = sum(ours) / len(ours)
    ref = sum(theirs) / len(theirs)
    assert abs(mean - ref) < 0.03, (mean, ref)


def test_3d_masks_keep_context_limits_and_row_independence():
    from modalities.masking import MultiBlock3DMasker

    masker = MultiBlock3DMasker((4, 6, 6), masks=[((0.7, 0.7), (1.0, 1.0), (0.75, 1.5), 2)], min_keep=20,
                                max_context_frames_ratio=0.5)
    context, targets = masker(6, gen(0), row_keys=[10, 11, 12, 13, 14, 15])
    for b in range(6):
        c = strip(context[b])
        assert len(c) >= 20 and int(c.max()) < 2 * 36  # the first half of the time steps only
    _, part = masker(2, gen(0), row_keys=[12, 13])  # the same rows in another split: the same targets
    n = part.shape[-1]
    assert torch.equal(strip(part[0, 0]), strip(targets[2, 0])) and torch.equal(strip(part[1, 0]), strip(targets[3, 0]))
    assert n >= 1
    full = MultiBlock3DMasker((2, 2, 2), masks=[((1.0, 1.0), (1.0, 1.0), (1.0, 1.0), 3)], min_keep=4)
    c, t = full(3, gen(1))  # blocks as big as the grid shrink until 4 tokens of context remain
    assert all(len(strip(c[b])) >= 4 for b in range(3))
    with pytest.raises(ValueError, match="num_blocks"):
        MultiBlock3DMasker((2, 4, 4), masks=[((0.1, 0.1), (1.0, 1.0), (1.0, 1.0), 0)])
    with pytest.raises(ValueError, match="max_context_frames_ratio"):
        MultiBlock3DMasker((2, 4, 4), max_context_frames_ratio=0)
