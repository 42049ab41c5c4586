"""CLIPA's resized binding (`model.<m>.bind_scale`): for the first `loss.bind_scale_until` of a run,
binding embeds a smaller copy of each image and spectrogram, in fewer patches, each placed at its
centre's position on the full grid; after it, in the prediction phase, at evaluation and in `embed`,
whole-size inputs."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from modalities.positions import position_table, sincos_1d, sincos_2d
from modalities.tokens import PatchTokens
from multijepa.cli import main
from multijepa.config import load_config
from multijepa.data.collate import MultiModalCollator, build_maskers
from multijepa.errors import ConfigError
from multijepa.modality import get_modality
from multijepa.model import create_model
from multijepa.objective import MultiJEPAObjective
from tests.conftest import VOCAB, make_items

SCALED = ["model.image.bind_scale=0.5", "model.audio.bind_scale=0.5"]


def test_a_resized_grid_places_each_patch_at_its_centre_on_the_full_grid():
    assert torch.equal(sincos_2d(16, (4, 6), extent=(4, 6)), position_table(16, (4, 6)))
    # a 4 x 4 grid resized by half: patch (i, j) covers full-grid rows and columns 2i, 2i+1 -> centre 2i + 0.5
    table = sincos_2d(16, (2, 2), extent=(4, 4))  # (4, 16)
    centres = torch.tensor([0.5, 2.5])
    rows, cols = centres.repeat_interleave(2), centres.repeat(2)
    assert torch.allclose(table, torch.cat([sincos_1d(8, rows), sincos_1d(8, cols)], 1))


def test_patch_tokens_of_a_resized_input():
    torch.manual_seed(0)
    tokens = PatchTokens((16, 32), (4, 8), 1, 32)  # a (mel, frames) spectrogram: a 4 x 4 grid
    x = torch.randn(3, 16, 32)  # without its channel axis
    whole, _ = tokens(x)
    assert torch.equal(tokens(x, scale=1.0)[0], whole) and whole.shape == (3, 16, 32)
    h, valid = tokens(x, scale=0.5)
    assert valid is None and h.shape == (3, 4, 32) and tokens.scaled_grid(0.5) == (2, 2)
    small = F.interpolate(x.unsqueeze(1), size=(8, 16), mode="bilinear", align_corners=False, antialias=True)
    patches = tokens.proj.proj(small).flatten(2).transpose(1, 2)  # (3, 4, 32)
    assert torch.allclose(h, patches + sincos_2d(32, (2, 2), extent=(4, 4)), atol=1e-6)
    with pytest.raises(ValueError, match="not a whole number"):
        tokens(x, scale=0.3)


def _tokens_seen(model) -> dict:
    """{modality: [tokens per row the first block saw, per call]} filled by forward hooks."""
    seen = {m: [] for m in model.encoders}
    for m, enc in model.encoders.items():
        enc.blocks[0].register_forward_hook(lambda _, args, __, m=m: seen[m].append(args[0].shape[1]))
    return seen


def _batch(cfg, n=8):
    collate = MultiModalCollator(cfg.model.modalities, build_maskers(cfg.model), seed=0)
    return collate(make_items(cfg, n))


@pytest.mark.parametrize("objective", ["jepa", "clip"])
def test_binding_embeds_the_resized_input_in_training_until_prediction(objective):
    cfg = load_config("tiny", [*SCALED, f"loss.objective={objective}", "loss.pred_start=0.5"])
    torch.manual_seed(0)
    model = create_model(cfg, vocab_size=VOCAB).train()
    seen = _tokens_seen(model)
    batch = _batch(cfg)
    out = model(batch)
    # tiny: 16 px images in 4 px patches (4 x 4) -> 8 px (2 x 2); 32 x 48 spectrograms in 8 x 8 -> 16 x 24 (2 x 3)
    assert seen["image"] == [4] and seen["audio"] == [6] and seen["text"] == [batch["text"]["x"].shape[1]]
    loss, _ = MultiJEPAObjective(cfg.loss, model.modalities)(out, model.logit_scale)
    loss.backward()
    assert all(p.grad is not None for p in model.encoders["image"].tokens.parameters())
    for calls in seen.values():
        calls.clear()
    model.bind_resized = False  # past loss.bind_scale_until (the loop sets it each step): whole-size inputs
    model(batch)
    assert seen["image"] == [16] and seen["audio"] == [24]
    seen["image"].clear()
    model.bind_resized = True
    model.eval()
    z = model.encode("image", batch["image"]["x"])  # evaluation and embed: whole-size inputs
    assert seen["image"] == [16] and z.shape == (batch["image"]["x"].shape[0], cfg.model.embed_dim)
    if objective == "clip":
        return
    model.train()
    model.start_prediction()
    seen["image"].clear()
    model(batch)
    # the prediction phase: the context's forward, and binding's whole-size input (loss.bind_input=full)
    assert seen["image"] == [batch["image"]["context"].shape[1], 16]


@pytest.mark.parametrize("overrides, message", [
    (["model.image.bind_scale=0.3"], "not a whole number of 4-wide patches"),
    (["model.audio.bind_scale=0.6"], "not a whole number of 8-wide patches"),
    (["model.image.bind_scale=0.5", "model.image.bind_mask_ratio=0.5"], "choose one"),
    (["model.image.bind_scale=0"], "model.image.bind_scale"),
    (["model.audio.bind_scale=0.5", "model.audio.encoder.kind=mamba"], "needs model.audio.encoder.kind=transformer"),
])
def test_a_bind_scale_that_cannot_work_is_one_config_error(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config("tiny", overrides)


def test_each_resizable_modality_says_its_patch_shape_and_the_built_model_agrees():
    """The config's check reads `Modality.patch_shape` where the encoder reads its PatchEmbed: the same."""
    cfg = load_config("tiny")
    model = create_model(cfg, vocab_size=VOCAB)
    for m in ("image", "audio"):
        spec, proj = get_modality(m), model.encoders[m].tokens.proj
        assert spec.patch_shape(cfg.model) == tuple(proj.patch_size)
        assert spec.grid(cfg.model) == tuple(proj.grid_size)
    assert get_modality("text").patch_shape(cfg.model) is None  # token ids: nothing to resize


@pytest.mark.parametrize("objective", ["clip", "jepa"])
def test_a_run_binds_resized_inputs_until_bind_scale_until_then_whole_ones(demo, tmp_path, objective):
    out = tmp_path / objective
    args = ["pretrain", "--config", "tiny", "--data", str(demo / "train.jsonl"), "--out", str(out), "--no-progress",
            "--max-steps", "6", *SCALED, f"loss.objective={objective}", "loss.bind_scale_until=0.5",
            "loss.pred_start=0.8", "train.log_every=1"]
    assert main(args) == 0
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["bind_resized"] for r in logged] == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0]  # steps 1-3 of 6
    if objective == "jepa":  # prediction from 0.8 of 6 steps: the last step (0-based 5 >= 4.8)
        assert [r["predicting"] for r in logged] == [0.0] * 5 + [1.0]


def test_a_run_resumed_across_the_bind_scale_switch_equals_an_uninterrupted_one(demo, tmp_path):
    def pretrain(out, resume=False):
        args = ["pretrain", "--config", "tiny", "--data", str(demo / "train.jsonl"), "--out", str(out), "--no-progress",
                "--max-steps", "6", *SCALED, "loss.bind_scale_until=0.5", "loss.pred_start=0.8", "train.ckpt_every=2"]
        assert main(args + (["--resume"] if resume else [])) == 0

    def weights(run):
        return load_file(str(run / "checkpoints" / "step_00000006" / "model.safetensors"))

    pretrain(tmp_path / "ref")
    cut = tmp_path / "cut"
    pretrain(cut)
    for step in (4, 6):  # as if killed after step 2's checkpoint, before the switch at step 3
        shutil.rmtree(cut / "checkpoints" / f"step_{step:08d}")
    pretrain(cut, resume=True)
    resumed, reference = weights(cut), weights(tmp_path / "ref")
    assert resumed.keys() == reference.keys()
    for k in reference:
        assert torch.allclose(resumed[k].float(), reference[k].float(), atol=1e-6), k
