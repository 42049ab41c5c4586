"""Video tokens: V-JEPA's tubelets, its 3-D sin-cos positions (checked against a port of its
code), and the inflation of an image tower's patch embedding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from modalities.positions import position_table
from modalities.tokens import PatchTokens, TubeletTokens


# --- facebookresearch/jepa, src/models/utils/pos_embs.py, ported as is (square grids only) -------------
def _ref_1d(embed_dim, pos):
    omega = np.arange(embed_dim // 2, dtype=float)
    omega /= embed_dim / 2.0
    omega = 1.0 / 10000**omega
    out = np.einsum("m,d->md", pos.reshape(-1), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def _ref_3d(embed_dim, grid_size, grid_depth):
    grid_d = np.arange(grid_depth, dtype=float)
    grid_h = np.arange(grid_size, dtype=float)
    grid_w = np.arange(grid_size, dtype=float)
    grid_h, grid_d, grid_w = np.meshgrid(grid_h, grid_d, grid_w)
    emb_h = _ref_1d(embed_dim // 4, grid_h)
    emb_w = _ref_1d(embed_dim // 4, grid_w)
    emb_d = _ref_1d(embed_dim // 2, grid_d)
    return np.concatenate([emb_d, emb_h, emb_w], axis=1)[:, :embed_dim]
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dim,size,depth", [(64, 4, 2), (96, 3, 5), (768, 14, 8)])
def test_3d_positions_agree_with_v_jepa(dim, size, depth):
    ours = position_table(dim, (depth, size, size))
    assert ours.shape == (depth * size * size, dim)
    torch.testing.assert_close(ours, torch.from_numpy(_ref_3d(dim, size, depth)).float(), atol=1e-5, rtol=0)


def test_3d_positions_of_a_non_square_grid_follow_the_same_layout():
    t = position_table(32, (2, 3, 4))  # (T, H, W): token (t, r, c) at t * 12 + r * 4 + c
    assert torch.equal(t[1 * 12 + 2 * 4 + 3, :16], position_table(16, (2,))[1])  # time: the first half
    assert torch.equal(t[1 * 12 + 2 * 4 + 3, 16:24], position_table(8, (3,))[2])  # then the row
    assert torch.equal(t[1 * 12 + 2 * 4 + 3, 24:], position_table(8, (4,))[3])  # then the column


def test_tubelets_cut_the_clip_time_major():
    tok = TubeletTokens((4, 8, 12), tubelet=2, patch=4, in_chans=3, dim=16)
    assert tok.grid == (2, 2, 3) and tok.num_tokens == 12
    x = torch.zeros(1, 3, 4, 8, 12)
    x[0, :, 2:4, 4:8, 8:12] = 1.0  # the last tubelet: frames 2-3, bottom row, right column
    with torch.no_grad():
        tok.proj.weight.fill_(1.0)
        tok.proj.bias.zero_()
        out, valid = tok(x)
    assert valid is None and out.shape == (1, 12, 16)
    lit = (out[0] - tok.pos).abs().sum(1).nonzero().flatten().tolist()
    assert lit == [11]
    with pytest.raises(ValueError, match="multiple of tubelet"):
        TubeletTokens((5, 8, 8), tubelet=2, patch=4, in_chans=3, dim=16)


def test_an_inflated_image_embedding_sees_a_still_video_as_the_image():
    torch.manual_seed(0)
    image = PatchTokens((16, 16), 4, 3, 32)
    video = TubeletTokens((4, 16, 16), tubelet=2, patch=4, in_chans=3, dim=32)
    video.inflate_from(image.proj.proj.weight, image.proj.proj.bias)
    frame = torch.randn(2, 3, 16, 16)
    still = frame[:, :, None].expand(-1, -1, 4, -1, -1)  # (B, C, T, H, W): the frame at every time
    img, _ = image(frame)
    vid, _ = video(still)
    per_time = (vid - video.pos).view(2, 2, 16, 32)  # (B, T', H'W', D)
    for t in range(2):
        torch.testing.assert_close(per_time[:, t], img - image.pos, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="cannot inflate"):
        video.inflate_from(torch.zeros(32, 3, 8, 8))
