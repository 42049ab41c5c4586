"""Mamba encoders: the chunked scan against the recurrence, the bidirectional block against a
token-by-token loop, padding kept out of the state, scan order, every kind training end to end."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from modalities import ssm
from modalities.encoder import Encoder, encoder_blocks
from modalities.mamba import BiMambaMixer, MambaBlock
from modalities.ssm import naive_scan, ssd_scan
from modalities.tokens import PatchTokens, TextTokens
from multijepa.cli import main
from multijepa.config import ConfigError, load_config
from multijepa.model import MultiJEPA, build_encoder, load_run
from multijepa.objective import MultiJEPAObjective
from tests.conftest import VOCAB, make_batch

KINDS = ["transformer", "mamba", "hybrid"]


def _scan_inputs(b=2, L=37, H=3, P=4, N=5, seed=0, dt_max=0.5, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, L, H, P, generator=g, dtype=dtype), torch.rand(b, L, H, generator=g, dtype=dtype) * dt_max,
            -torch.rand(H, generator=g, dtype=dtype) * 8 - 0.5, torch.randn(b, L, N, generator=g, dtype=dtype),
            torch.randn(b, L, N, generator=g, dtype=dtype))


@pytest.mark.parametrize("factored", [True, False])
@pytest.mark.parametrize("L,chunk", [(1, 64), (7, 4), (37, 8), (64, 16), (65, 64), (40, 1)])
def test_chunked_scan_equals_the_recurrence(L, chunk, factored, monkeypatch):
    # both ways of taking the decays inside a chunk: as products (limit 1e9) and as differences (0)
    monkeypatch.setattr(ssm, "FACTORED_DECAY_LIMIT", 1e9 if factored else 0.0)
    args = _scan_inputs(L=L)
    torch.testing.assert_close(ssd_scan(*args, chunk=chunk), naive_scan(*args), rtol=1e-10, atol=1e-10)


def test_scan_stays_finite_and_exact_with_steep_decays():
    # dt * A down to -800 per step: exp(-acs) would overflow float32, so these chunks take differences
    args = _scan_inputs(L=70, dt_max=100.0, dtype=torch.float32)
    y = ssd_scan(*args, chunk=32)
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y.double(), naive_scan(*(a.double() for a in args)), rtol=1e-4, atol=1e-4)


def test_the_directions_of_a_batch_decay_by_their_own_A():
    x, dt, A, B, C = _scan_inputs(b=4)
    A2 = torch.stack([A, A * 0.3])  # rows 0-1 decay by A, rows 2-3 by 0.3 A
    y = ssd_scan(x, dt, A2, B, C, chunk=8)
    torch.testing.assert_close(y[:2], naive_scan(x[:2], dt[:2], A, B[:2], C[:2]))
    torch.testing.assert_close(y[2:], naive_scan(x[2:], dt[2:], A * 0.3, B[2:], C[2:]))


def test_a_zero_step_leaves_the_state_alone():
    x, dt, A, B, C = _scan_inputs(L=12)
    dt[:, 4:8] = 0  # steps 4..7: no input, no decay
    y = ssd_scan(x, dt, A, B, C, chunk=4)
    keep = [i for i in range(12) if not 4 <= i < 8]
    y_without = ssd_scan(x[:, keep], dt[:, keep], A, B[:, keep], C[:, keep], chunk=4)
    torch.testing.assert_close(y[:, keep], y_without)  # outputs read the state with their own C


def _naive_mixer(mix: BiMambaMixer, u: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """BiMambaMixer's maths one token at a time, each direction its own loop (the reference)."""
    b, L, _ = u.shape
    v = torch.ones(b, L, dtype=u.dtype) if valid is None else valid.to(u.dtype)
    sizes = [mix.inner, mix.conv_dim + mix.heads, mix.conv_dim + mix.heads]
    z, *parts = mix.in_proj(u).split(sizes, -1)
    ys = []
    for d, part in enumerate(parts):
        own = slice(d * mix.conv_dim, (d + 1) * mix.conv_dim)  # this direction's convolution channels
        w, bias = mix.conv_weight[own], mix.conv_bias[own]  # (C, k), (C,)
        k = w.shape[-1]
        state = u.new_zeros(b, mix.heads, mix.head_dim, mix.state)
        window: list[torch.Tensor] = []
        y = u.new_zeros(b, L, mix.inner)
        for t in (range(L) if d == 0 else reversed(range(L))):
            window = (window + [part[:, t, : mix.conv_dim] * v[:, t, None]])[-k:]
            conv = bias + sum(w[:, k - 1 - i] * window[-1 - i] for i in range(len(window)))
            x, B, C = F.silu(conv).split([mix.inner, mix.state, mix.state], -1)
            x = x.view(b, mix.heads, mix.head_dim)
            dt = F.softplus(part[:, t, mix.conv_dim:] + mix.dt_bias[d]) * v[:, t, None]  # (b, H)
            state = torch.exp(dt * -torch.exp(mix.A_log[d]))[..., None, None] * state \
                + (dt[..., None] * x)[..., None] * B[:, None, None, :]
            y[:, t] = (torch.einsum("bhpn,bn->bhp", state, C) + mix.D[d][:, None] * x).reshape(b, -1)
        ys.append(y)
    return mix.out_proj(mix.norm((ys[0] + ys[1]) / 2 * F.silu(z)))


@pytest.mark.parametrize("with_padding", [False, True])
def test_bidirectional_mixer_equals_a_token_by_token_loop(with_padding):
    torch.manual_seed(0)
    mix = BiMambaMixer(dim=8, state=4, expand=2, head_dim=4, conv=3, chunk=4).double()
    u = torch.randn(3, 11, 8, dtype=torch.float64)
    valid = None
    if with_padding:
        valid = torch.ones(3, 11, dtype=torch.bool)
        valid[1, 8:] = False
        valid[2, 5:] = False
    torch.testing.assert_close(mix(u, valid), _naive_mixer(mix, u, valid))


def test_the_backward_scan_reads_what_comes_later():
    torch.manual_seed(0)
    block = MambaBlock(8, state=4, head_dim=4)
    x = torch.randn(1, 10, 8)
    y = block(x)
    x2 = x.clone()
    x2[:, -1] = torch.randn(8)  # change only the last token
    changed = (block(x2) - y).abs().amax(-1)[0]  # (L,)
    assert (changed[:-1] > 1e-6).all()  # every earlier token sees it (through the backward scan)


def _image_encoder(kind: str, scan: str = "rows") -> Encoder:
    torch.manual_seed(0)
    tokens = PatchTokens((16, 24), (4, 4), 1, 16, scan=scan)  # (4, 6) grid
    return Encoder(tokens, 16, encoder_blocks(kind, 16, 2, 2, state=4, head_dim=8, chunk=4)).eval()


@pytest.mark.parametrize("kind", ["mamba", "hybrid"])
@pytest.mark.parametrize("scan", ["rows", "columns"])
def test_padding_does_not_leak_into_the_valid_tokens(kind, scan):
    enc = _image_encoder(kind, scan)
    x = torch.randn(2, 1, 16, 24)
    keep = torch.tensor([[0, 2, 3, 7, 8, 13, 19, 23], [1, 4, 5, 6, 11, 12, 17, 22]])
    h, valid = enc(x, keep)
    assert valid is None and h.shape == (2, 8, 16)
    padded = torch.cat([keep, torch.full((2, 5), -1)], 1)
    hp, valid_p = enc(x, padded)
    assert valid_p[:, :8].all() and not valid_p[:, 8:].any()
    torch.testing.assert_close(hp[:, :8], h, rtol=1e-5, atol=1e-5)
    # rows of different lengths in one batch: row 1 keeps 5 tokens, padded to row 0's 8
    ragged = keep.clone()
    ragged[1, 5:] = -1
    hr, _ = enc(x, ragged)
    alone, _ = enc(x[1:], keep[1:, :5])
    torch.testing.assert_close(hr[1, :5], alone[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(hr[0], h[0], rtol=1e-5, atol=1e-5)


def test_text_padding_does_not_leak():
    torch.manual_seed(0)
    enc = Encoder(TextTokens(VOCAB, 12, 16), 16, encoder_blocks("mamba", 16, 2, 2, state=4, head_dim=8)).eval()
    ids = torch.tensor([[5, 9, 7, 30, 2, 0, 0, 0, 0, 0, 0, 0]])
    h, valid = enc(ids)
    alone, _ = enc(ids[:, :5])
    assert valid[0, :5].all() and not valid[0, 5:].any()
    torch.testing.assert_close(h[:, :5], alone, rtol=1e-5, atol=1e-5)


def test_audio_is_scanned_in_time_order_and_handed_back_in_grid_order():
    enc = _image_encoder("mamba", "columns")  # a (mel 4, time 6) grid numbered band by band
    x = torch.randn(2, 1, 16, 24)
    h, _ = enc(x)
    tokens, _ = enc.tokens(x)
    time_major = [r * 6 + c for c in range(6) for r in range(4)]
    assert enc.tokens.scan_rank[time_major].tolist() == list(range(24))
    seq = tokens[:, time_major]
    for blk in enc.blocks:
        seq = blk(seq)
    want = torch.empty_like(seq)
    want[:, time_major] = enc.norm(seq)
    torch.testing.assert_close(h, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("modality", ["image", "text", "audio"])
def test_every_kind_and_modality_gives_shapes_and_gradients(tiny_cfg, kind, modality):
    c = getattr(tiny_cfg.model, modality)
    c.encoder.kind, c.encoder.depth = kind, 2
    torch.manual_seed(0)
    enc = build_encoder(modality, tiny_cfg.model, vocab_size=VOCAB)
    want = {"transformer": ["Block", "Block"], "mamba": ["MambaBlock"] * 2, "hybrid": ["MambaBlock", "Block"]}[kind]
    assert [type(b).__name__ for b in enc.blocks] == want
    batch = make_batch(tiny_cfg, n=4)[modality]
    h, valid = enc(batch["x"], batch["context"])
    assert h.shape == (*batch["context"].shape, c.encoder.width)
    loss = (h if valid is None else h * valid[..., None]).square().mean()
    loss.backward()
    for name, p in enc.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert sum(bool(p.grad.abs().sum() > 0) for p in enc.parameters()) >= 0.9 * len(list(enc.parameters()))


def test_bf16_autocast_runs_the_scan_in_float32(tiny_cfg):
    tiny_cfg.model.audio.encoder.kind = "mamba"
    torch.manual_seed(0)
    model = MultiJEPA(tiny_cfg.model, VOCAB)
    batch = make_batch(tiny_cfg, n=8)
    objective = MultiJEPAObjective(tiny_cfg.loss, model.modalities)
    loss32, _ = objective(model(batch), model.logit_scale)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss16, _ = objective(model(batch), model.logit_scale)
    loss16.backward()
    assert torch.isfinite(loss16) and abs(float(loss16.detach()) - float(loss32.detach())) < 0.05 * abs(float(loss32.detach()))


@pytest.mark.parametrize("override, message", [
    ("model.image.encoder.kind=ssm", "must be one of transformer, mamba, hybrid"),
    ("model.text.encoder.kind=hybrid", "depth >= 2"),
    ("model.audio.encoder.mamba.head_dim=7", "multiple of mamba.head_dim=7"),
])
def test_bad_kinds_are_named(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config("tiny", [override, override.split(".encoder.")[0] + ".encoder.kind=mamba"] if "kind=" not in override
                    else [override])


def test_a_pretrained_tower_is_not_a_mamba():
    with pytest.raises(ConfigError, match="pretrained tower"):
        load_config("tiny", ["model.image.encoder.kind=mamba", "model.image.pretrained=timm:vit_tiny_patch16_224"])


def test_mamba_and_hybrid_runs_train_resume_embed_index_and_fine_tune(demo, tmp_path):
    run = tmp_path / "run"
    args = ["pretrain", "--config", "tiny", "--data", str(demo / "train.jsonl"), "--out", str(run), "--no-progress",
            "model.audio.encoder.kind=mamba", "model.image.encoder.kind=hybrid", "train.ckpt_every=3"]
    assert main(args + ["--max-steps", "3"]) == 0
    assert main(args + ["--max-steps", "5", "--resume"]) == 0
    assert (run / "checkpoints" / "step_00000005").is_dir()
    model = load_run(run)
    assert type(model.encoders["audio"].blocks[0]).__name__ == "MambaBlock"
    assert [type(b).__name__ for b in model.encoders["image"].blocks] == ["MambaBlock", "Block"]
    z = model.embed_texts(["a red circle"])
    assert z.shape == (1, model.cfg.embed_dim) and torch.isfinite(z).all()
    assert main(["index", "--checkpoint", str(run), "--data", str(demo / "test.jsonl"), "--out", str(tmp_path / "ix"),
                 "--no-progress"]) == 0
    assert main(["vqa", "train", "--checkpoint", str(run), "--data", str(demo / "vqa_train.jsonl"), "--out",
                 str(tmp_path / "vqa"), "--config", "vqa_tiny", "--no-progress", "train.max_steps=2"]) == 0


def test_activation_checkpointing_of_mamba_blocks_gives_the_same_gradients(tiny_cfg):
    from tests.test_speed import _loss_and_grads, _twin_models

    tiny_cfg.model.audio.encoder.kind = "mamba"
    tiny_cfg.model.image.encoder.kind = "hybrid"
    plain, ckpt = _twin_models(tiny_cfg, True)
    wrapped = [type(m).__name__ for m in ckpt.encoders["audio"].blocks]
    assert all("checkpoint" in w.lower() for w in wrapped), wrapped
    batch = make_batch(tiny_cfg, 8)
    loss_a, grads_a = _loss_and_grads(tiny_cfg, plain, batch)
    loss_b, grads_b = _loss_and_grads(tiny_cfg, ckpt, batch)
    assert torch.allclose(loss_a, loss_b, atol=1e-6)
    for a, b in zip(grads_a, grads_b):
        assert (a is None) == (b is None) and (a is None or torch.allclose(a, b, atol=1e-6, rtol=1e-5))


def test_causal_conv_gradients_are_exact():
    from modalities.mamba import CausalDepthwiseConv

    torch.manual_seed(0)
    x = torch.randn(2, 7, 3, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(CausalDepthwiseConv.apply, (x, w, b))
    out = CausalDepthwiseConv.apply(x, w, b)  # out_t = b + sum_i w[:, i] x_{t-3+i}
    want = b + sum(w[:, i] * F.pad(x, (0, 0, 3 - i, 0))[:, :7] for i in range(4))
    torch.testing.assert_close(out, want)


def test_decays_step_sizes_and_skips_are_not_weight_decayed(tiny_cfg):
    from multijepa.train.builder import encoder_scaled_groups

    tiny_cfg.model.audio.encoder.kind = "mamba"
    model = MultiJEPA(tiny_cfg.model, VOCAB)
    mixer = model.encoders["audio"].blocks[0].mixer
    no_decay = {id(p) for g in model.param_groups() if not g["apply_wd"] for p in g["params"]}
    assert {id(mixer.A_log), id(mixer.dt_bias), id(mixer.D)} <= no_decay
    assert id(mixer.conv_weight) not in no_decay and id(mixer.in_proj.weight) not in no_decay
    from multijepa.config import FinetuneOptimConfig

    groups = encoder_scaled_groups(model, [model.encoders["audio"]], FinetuneOptimConfig())
    assert all(g["weight_decay"] == 0.0 for g in groups if any(p is mixer.A_log for p in g["params"]))
