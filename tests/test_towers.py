"""Pretrained towers (issue 15): a timm Vision Transformer as the image encoder, from a local file."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from modalities.errors import DataError
from modalities.towers import TowerSpec
from multijepa.checkpoint import latest_checkpoint
from multijepa.cli import main
from multijepa.config import load_config
from multijepa.model import load_run, resolve_towers
from multijepa.train.builder import init_model
from tests.conftest import VOCAB, make_batch

ARCH = "vit_tiny_patch16_224"


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A randomly initialised timm ViT-Tiny saved locally (no download), classifier head included."""
    import timm

    torch.manual_seed(7)
    path = tmp_path_factory.mktemp("towers") / "vit_tiny.safetensors"
    save_file({k: v.contiguous() for k, v in timm.create_model(ARCH, pretrained=False).state_dict().items()}, str(path))
    return path


def test_the_tower_arrives_unchanged_and_sets_grid_width_and_preprocessing(weights):
    cfg = load_config("tiny", [f"model.image.pretrained=timm:{ARCH}:{weights}"])
    resolve_towers(cfg.model)
    assert (cfg.model.image.size, cfg.model.image.patch, cfg.model.image.encoder.width) == (224, 16, 192)
    assert cfg.model.image.mean == (0.5, 0.5, 0.5)  # timm's pretrained_cfg for this architecture
    model = init_model(cfg, torch.device("cpu"), vocab_size=VOCAB)
    file = load_file(str(weights))
    for enc in (model.encoders["image"], model.target_encoders["image"]):  # the EMA target starts from it too
        for k, v in enc.vit.state_dict().items():
            assert torch.equal(v, file[k]), k
    assert model.loaded_towers["image"]["tensors"] == len(model.encoders["image"].vit.state_dict())
    assert model.encoders["image"].grid == (14, 14)
    batch = make_batch(cfg, 4)  # the collator's masks, on the tower's 14 x 14 grid
    assert int(batch["image"]["context"].max()) < 196 and int(batch["image"]["targets"].max()) < 196
    out = model(batch)
    assert out["image"]["pred"].shape == out["image"]["target"].shape and out["image"]["pred"].shape[-1] == 192


def test_a_run_on_a_timm_tower_trains_it_and_rebuilds_without_the_file(weights, demo, tmp_path):
    local = tmp_path / "w.safetensors"
    local.write_bytes(weights.read_bytes())
    run = tmp_path / "run"
    assert main(["pretrain", "--config", "tiny", "--data", str(demo / "train.jsonl"), "--out", str(run),
                 "--max-steps", "3", "--no-progress", f"model.image.pretrained=timm:{ARCH}:{local}"]) == 0
    record = json.loads((run / "towers.json").read_text())["image"]
    assert record["path"] == str(local.resolve()) and len(record["sha256"]) == 64
    trained = load_file(str(latest_checkpoint(run) / "model.safetensors"))
    file = load_file(str(local))
    moved = [k for k in file if f"encoders.image.vit.{k}" in trained
             and not torch.equal(trained[f"encoders.image.vit.{k}"], file[k])]
    assert len(moved) > 100, "training should move the tower's weights"

    local.unlink()  # the run folder alone rebuilds it
    model = load_run(run)
    z = model.embed_images([str(demo / "images" / "test_00000.png")])
    assert z.shape == (1, model.cfg.embed_dim) and torch.isfinite(z).all()


def test_a_missing_or_foreign_weights_file_is_one_line(weights, demo, tmp_path, capsys):
    import timm

    other = tmp_path / "small.safetensors"
    save_file({k: v.contiguous() for k, v in timm.create_model("vit_small_patch16_224").state_dict().items()}, str(other))
    for path, said in ((tmp_path / "none.safetensors", "no such weights file"), (other, "not weights of this tower")):
        code = main(["pretrain", "--config", "tiny", "--data", str(demo / "train.jsonl"), "--out", str(tmp_path / "r"),
                     "--max-steps", "1", "--no-progress", f"model.image.pretrained=timm:{ARCH}:{path}"])
        err = capsys.readouterr().err.strip()
        assert code == 1 and len(err.splitlines()) == 1 and str(path) in err and said in err, err
        assert not (tmp_path / "r").exists()


def test_tower_specs_are_checked():
    assert TowerSpec.parse("timm:vit_tiny_patch16_224:/w.pt", "k") == TowerSpec("timm", "vit_tiny_patch16_224", "/w.pt")
    assert TowerSpec.parse("timm:vit_tiny_patch16_224", "k").path is None
    for bad in ("vit_tiny", "hub:x", "timm:"):
        with pytest.raises(DataError, match="timm:NAME"):
            TowerSpec.parse(bad, "model.image.pretrained")


def test_a_frozen_tower_stays_bit_identical_and_gets_no_optimizer_state_or_target(weights, demo, tmp_path):
    run = tmp_path / "frozen"
    assert main(["pretrain", "--config", "tiny", "--data", str(demo / "train.jsonl"), "--out", str(run),
                 "--max-steps", "3", "--no-progress", f"model.image.pretrained=timm:{ARCH}:{weights}",
                 "model.image.freeze=true"]) == 0
    trained = load_file(str(latest_checkpoint(run) / "model.safetensors"))
    file = load_file(str(weights))
    tower = {k: v for k, v in trained.items() if k.startswith("encoders.image.vit.")}
    assert len(tower) == 150 and all(torch.equal(v, file[k.removeprefix("encoders.image.vit.")]) for k, v in tower.items())
    assert not any(k.startswith(("target_encoders.image.", "predictors.image.")) for k in trained)
    assert any(k.startswith("predictors.text.") for k in trained)  # the others still predict
    text_before = load_file(str(sorted((run / "checkpoints").iterdir())[0] / "model.safetensors"))

    cfg = load_config("tiny", [f"model.image.pretrained=timm:{ARCH}:{weights}", "model.image.freeze=true"])
    resolve_towers(cfg.model)
    model = init_model(cfg, torch.device("cpu"), vocab_size=VOCAB).train()
    assert not model.encoders["image"].training and model.encoders["text"].training  # norms/dropout as at inference
    from multijepa.train.builder import init_opt

    opt, _ = init_opt(model, cfg.optim, 10)
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    assert not any(id(p) in in_opt for p in model.encoders["image"].parameters())
    out = model(make_batch(cfg, 4))
    assert "pred" not in out["image"] and "pred" in out["text"]
    out["image"]["z"].sum().backward()  # binding trains the head on top of the frozen tower, not the tower
    assert all(p.grad is not None for p in model.heads["image"].parameters() if p.requires_grad)
    assert all(p.grad is None for p in model.encoders["image"].parameters())
    assert any(not torch.equal(trained[k], text_before[k]) for k in trained if k.startswith("encoders.text."))


@pytest.mark.parametrize("modality", ["text", "audio"])
def test_our_own_encoders_freeze_too(modality, tiny_cfg):
    setattr(getattr(tiny_cfg.model, modality), "freeze", True)
    torch.manual_seed(0)
    model = init_model(tiny_cfg, torch.device("cpu"), vocab_size=VOCAB).train()
    before = {k: v.clone() for k, v in model.encoders[modality].state_dict().items()}
    from multijepa.objective import MultiJEPAObjective
    from multijepa.train.builder import init_opt

    opt, _ = init_opt(model, tiny_cfg.optim, 10)
    objective = MultiJEPAObjective(tiny_cfg.loss, model.modalities)
    for step in range(2):
        terms, _ = objective.terms(model(make_batch(tiny_cfg, 8, seed=step)), model.logit_scale)
        opt.zero_grad()
        sum(terms.values()).backward()
        opt.step()
    after = model.encoders[modality].state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert modality not in model.target_encoders and modality not in model.predictors
    assert not model.encoders[modality].training


# ---------------------------------------------------------------- open_clip towers

CLIP_ARCH = "ViT-S-32"


@pytest.fixture(scope="module")
def clip_weights(tmp_path_factory):
    """A randomly initialised open_clip ViT-S-32 (image and text towers) saved locally (no download)."""
    from modalities.towers import open_clip_model

    torch.manual_seed(11)
    path = tmp_path_factory.mktemp("clip") / "open_clip_model.safetensors"
    save_file({k: v.contiguous() for k, v in open_clip_model(CLIP_ARCH).state_dict().items()}, str(path))
    return path


def test_open_clip_towers_give_open_clips_own_features(clip_weights):
    from modalities.text import TextTokenizer
    from modalities.towers import OpenClipImageTower, OpenClipTextTower, load_tower, open_clip_model

    clip = open_clip_model(CLIP_ARCH).eval()
    clip.load_state_dict(load_file(str(clip_weights)))
    image, text = OpenClipImageTower(CLIP_ARCH).eval(), OpenClipTextTower(CLIP_ARCH).eval()
    assert load_tower(image, clip_weights)["tensors"] == len(clip.visual.state_dict())
    load_tower(text, clip_weights)
    assert (image.grid, image.dim, text.grid, text.dim) == ((7, 7), 384, (77,), 384)
    x = torch.randn(2, 3, 224, 224)
    ids, lengths = TextTokenizer.clip(77)(["a photo of a dog", "two red birds sit on a wire over the road"])
    short = ids[:, : int(lengths.max())]  # batches are cut to their longest caption
    with torch.no_grad():
        clip.visual.output_tokens = True
        _, tokens = clip.visual(x)  # (2, 49, 384) open_clip's patch tokens after ln_post
        feats, valid = image(x)
        assert valid is None and torch.allclose(feats, tokens, atol=1e-5)
        every = torch.arange(49).expand(2, -1)
        assert torch.allclose(image(x, keep=every)[0], tokens, atol=1e-5)  # a context of all patches
        some = torch.tensor([[3, 9, 20, -1], [0, 1, 2, 48]])  # -1: padding
        part, ok = image(x, keep=some)
        assert part.shape == (2, 4, 384) and ok.tolist() == [[True] * 3 + [False], [True] * 4]

        feats, valid = text(short)
        eot = feats[torch.arange(2), lengths - 1] @ clip.text_projection  # CLIP's pooled end-of-text token
        assert torch.allclose(eot, clip.encode_text(ids), atol=1e-5)
        assert valid.tolist() == (short != 0).tolist()
        # causal: a context that is a caption's first k tokens gives the same features as the whole input
        k = 5
        prefix, _ = text(short, keep=torch.arange(k).expand(2, -1))
        assert torch.allclose(prefix, feats[:, :k], atol=1e-5)
        gappy, ok = text(short, keep=torch.tensor([[0, 2, 4, -1], [1, 3, 5, 7]]))
        assert torch.isfinite(gappy).all() and ok.tolist() == [[True] * 3 + [False], [True] * 4]


def test_frozen_open_clip_image_and_text_towers_train_the_rest_and_rebuild_without_the_file(clip_weights, demo, tmp_path):
    local = tmp_path / "open_clip_model.safetensors"
    local.write_bytes(clip_weights.read_bytes())
    run = tmp_path / "run"
    spec = f"open_clip:{CLIP_ARCH}:{local}"
    assert main(["pretrain", "--config", "tiny", "--data", str(demo / "train.jsonl"), "--out", str(run),
                 "--max-steps", "2", "--no-progress", f"model.image.pretrained={spec}", "model.image.freeze=true",
                 f"model.text.pretrained={spec}", "model.text.freeze=true"]) == 0
    towers = json.loads((run / "towers.json").read_text())
    assert towers["image"]["sha256"] == towers["text"]["sha256"] and towers["text"]["path"] == str(local.resolve())
    cfg = load_config(str(run / "config.yaml"))
    assert (cfg.model.text.tokenizer, cfg.model.text.max_len, cfg.model.image.size) == ("clip", 77, 224)
    trained = load_file(str(latest_checkpoint(run) / "model.safetensors"))
    file = load_file(str(local))
    image = {k.removeprefix("encoders.image.visual."): v for k, v in trained.items() if k.startswith("encoders.image.")}
    text = {k.removeprefix("encoders.text.text."): v for k, v in trained.items() if k.startswith("encoders.text.")}
    assert len(image) == len([k for k in file if k.startswith("visual.")]) and len(text) > 100
    assert all(torch.equal(v, file["visual." + k]) for k, v in image.items())
    assert all(torch.equal(v, file[k]) for k, v in text.items())
    assert not any(k.startswith(("target_encoders.image", "target_encoders.text", "predictors.image", "predictors.text"))
                   for k in trained)
    assert any(k.startswith("predictors.audio.") for k in trained)  # audio still learns by prediction

    local.unlink()  # the run folder alone rebuilds it, tokenizer included
    model = load_run(run)
    z = model.embed_texts(["a red circle"])
    assert z.shape == (1, model.cfg.embed_dim) and torch.isfinite(z).all()
    assert main(["index", "--checkpoint", str(run), "--data", str(demo / "test.jsonl"), "--out", str(tmp_path / "ix"),
                 "--no-progress"]) == 0
    assert main(["vqa", "train", "--checkpoint", str(run), "--data", str(demo / "vqa_train.jsonl"), "--out",
                 str(tmp_path / "vqa"), "--config", "vqa_tiny", "--no-progress", "train.max_steps=2"]) == 0


def test_an_unfrozen_open_clip_text_tower_is_masked_predicted_and_moves(clip_weights):
    cfg = load_config("tiny", [f"model.text.pretrained=open_clip:{CLIP_ARCH}:{clip_weights}",
                               "model.modalities=[image,text]"])
    resolve_towers(cfg.model)
    from modalities.text import TextTokenizer
    from multijepa.train.builder import init_opt

    model = init_model(cfg, torch.device("cpu"), vocab_size=None).train()
    file = load_file(str(clip_weights))
    assert all(torch.equal(v, file[k]) for k, v in model.target_encoders["text"].text.state_dict().items())
    tok = TextTokenizer.clip(cfg.model.text.max_len)
    from multijepa.data.collate import MultiModalCollator, build_maskers

    items = []
    for i in range(4):
        ids, length = tok([f"scene {i}: a small blue square above a big green circle"])
        items.append({"row": i, "image": torch.randn(3, 16, 16), "text": (ids[0], length[0])})
    batch = MultiModalCollator(cfg.model.modalities, build_maskers(cfg.model), seed=0)(items)
    assert int(batch["text"]["targets"].max()) < int(length[0])  # spans fall inside the caption
    opt, _ = init_opt(model, cfg.optim, 10)
    from multijepa.objective import MultiJEPAObjective

    terms, _ = MultiJEPAObjective(cfg.loss, model.modalities).terms(model(batch), model.logit_scale)
    opt.zero_grad()
    sum(terms.values()).backward()
    opt.step()
    moved = [k for k, v in model.encoders["text"].text.state_dict().items() if not torch.equal(v, file[k])]
    assert len(moved) > 50


def test_lr_scale_sets_each_encoders_learning_rate_and_survives_a_resume_with_new_values(demo, tmp_path, capsys):
    cfg = load_config("tiny", ["optim.lr_scale.text=0.1"])
    model = init_model(cfg, torch.device("cpu"), vocab_size=VOCAB)
    from multijepa.train.builder import init_opt

    opt, schedule = init_opt(model, cfg.optim, 10)
    lr, _ = schedule.apply(opt, 5)
    names = {id(p): n for n, p in model.named_parameters()}
    for g in opt.param_groups:
        text = {names[id(p)].startswith("encoders.text.") for p in g["params"]}
        assert len(text) == 1  # a group holds one encoder's parameters, or none
        assert g["lr"] == pytest.approx(lr * (0.1 if text == {True} else 1.0))
    assert sum(len(g["params"]) for g in opt.param_groups) == sum(p.requires_grad for p in model.parameters())
    assert len(opt.param_groups) == 2 * 4  # the rest, and image, text and audio encoders
    plain = load_config("tiny")
    assert len(init_opt(init_model(plain, torch.device("cpu"), vocab_size=VOCAB), plain.optim, 10)[0].param_groups) == 2

    run = tmp_path / "run"
    args = ["pretrain", "--config", "tiny", "--data", str(demo / "train.jsonl"), "--out", str(run), "--no-progress"]
    assert main([*args, "--max-steps", "2", "optim.lr_scale.image=0.5"]) == 0
    assert main([*args, "--max-steps", "4", "--resume", "optim.lr_scale.image=0.25"]) == 0  # new values: fine
    groups = torch.load(latest_checkpoint(run) / "train_state.pt", weights_only=True)["optimizer"]["param_groups"]
    image = [g for g in groups if any(n.startswith("encoders.image.") for n in g["params"])]
    rest = [g for g in groups if any(n.startswith("heads.") for n in g["params"])]
    assert len(image) == 2 and all(g["lr"] == pytest.approx(0.25 * rest[0]["lr"]) for g in image)
    capsys.readouterr()
    assert main([*args, "--max-steps", "6", "--resume", "optim.lr_scale.image=1"]) == 1  # off: other groups
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "parameter groups" in err and "optim.lr_scale" in err, err


def test_the_imagebind_config_takes_clips_grid_tokenizer_and_widths():
    from modalities.towers import weights_file

    cfg = load_config("imagebind")
    resolve_towers(cfg.model)  # from the architecture alone: nothing is fetched
    m = cfg.model
    assert (m.image.size, m.image.patch, m.image.encoder.width, m.image.encoder.depth) == (224, 32, 768, 12)
    assert (m.text.tokenizer, m.text.max_len, m.text.vocab_size, m.text.encoder.width) == ("clip", 77, 49408, 512)
    assert m.image.mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))
    with pytest.raises(DataError, match="no pretrained weights 'nosuchtag' for ViT-B-32 .*laion2b_s34b_b79k"):
        weights_file(TowerSpec.parse("open_clip:ViT-B-32:nosuchtag", "k"))
    with pytest.raises(DataError, match="open_clip has no model 'ViT-Q-99'"):
        resolve_towers(load_config("tiny", ["model.image.pretrained=open_clip:ViT-Q-99"]).model)
    with pytest.raises(DataError, match="model.text.pretrained: timm towers do not serve the text modality"):
        resolve_towers(load_config("tiny", [f"model.text.pretrained=timm:{ARCH}"]).model)
    with pytest.raises(DataError, match="model.audio.pretrained: open_clip towers do not serve the audio modality"):
        resolve_towers(load_config("tiny", [f"model.audio.pretrained=open_clip:{CLIP_ARCH}"]).model)


def test_a_timm_image_model_starts_an_audio_tower_as_ast_does(weights, demo, tmp_path):
    size = ["model.audio.num_mel_bins=64", "model.audio.target_frames=96"]
    cfg = load_config("tiny", [f"model.audio.pretrained=timm:{ARCH}:{weights}", *size])
    resolve_towers(cfg.model)
    assert tuple(cfg.model.audio.patch) == (16, 16) and cfg.model.audio.encoder.width == 192
    model = init_model(cfg, torch.device("cpu"), vocab_size=VOCAB)
    tower, file = model.encoders["audio"], load_file(str(weights))
    assert tower.grid == (4, 6) and model.loaded_towers["audio"]["adapted"] == ["patch_embed.proj.weight", "pos_embed"]
    state = tower.vit.state_dict()
    assert torch.equal(state["patch_embed.proj.weight"], file["patch_embed.proj.weight"].sum(1, keepdim=True))
    assert state["pos_embed"].shape == (1, 1 + 24, 192)
    assert torch.equal(state["pos_embed"][:, :1], file["pos_embed"][:, :1])  # the class token's position is kept
    assert torch.equal(state["blocks.3.mlp.fc1.weight"], file["blocks.3.mlp.fc1.weight"])
    batch = make_batch(cfg, 4)
    out = model(batch)
    assert out["audio"]["pred"].shape == out["audio"]["target"].shape
    assert int(batch["audio"]["targets"].max()) < 24

    run = tmp_path / "run"
    assert main(["pretrain", "--config", "tiny", "--data", str(demo / "train.jsonl"), "--out", str(run), "--max-steps", "2",
                 "--no-progress", f"model.audio.pretrained=timm:{ARCH}:{weights}", *size]) == 0
    model = load_run(run)
    z = model.embed_audio([str(p) for p in sorted((demo / "audio").glob("test_*"))[:2]])
    assert z.shape == (2, model.cfg.embed_dim) and torch.isfinite(z).all()


def test_create_model_settles_the_towers_itself(tmp_path):
    from multijepa.config import ConfigError
    from multijepa.model import create_model
    from multijepa.processors import build_tokenizer

    cfg = load_config("tiny", [f"model.image.pretrained=timm:{ARCH}", "model.modalities=[image,text]",
                               f"model.text.pretrained=open_clip:{CLIP_ARCH}"])
    model = create_model(cfg, build_tokenizer(cfg.model))  # no resolve_towers call by the user
    assert (cfg.model.image.size, cfg.model.text.tokenizer, cfg.model.text.max_len) == (224, "clip", 77)
    x = model.processors.item("image", torch.zeros(40, 30, 3, dtype=torch.uint8).numpy())
    assert x.shape == (3, 224, 224)
    from modalities.text import TextTokenizer

    with pytest.raises(ConfigError, match="reads CLIP BPE ids, but the tokenizer given is sentencepiece"):
        create_model(cfg, TextTokenizer.train(["a red circle", "a blue square"] * 20, tmp_path / "t.model",
                                                      vocab_size=20, max_len=77))


@pytest.mark.parametrize("library", ["timm", "open_clip"])
def test_an_inflated_image_tower_starts_the_video_encoder_and_sees_a_still_clip_as_its_image(library, weights, clip_weights):
    """model.video.pretrained: the image ViT's weights, its patch convolution spread over the
    tubelet's frames (I3D / ImageBind), so every time step of a still clip gets the image's tokens."""
    from modalities.towers import OpenClipImageTower, TimmViTTower, load_tower

    timm = library == "timm"
    path, key, g = (weights, "patch_embed.proj.weight", 14) if timm else (clip_weights, "visual.conv1.weight", 7)
    spec = f"timm:{ARCH}:{path}" if timm else f"open_clip:{CLIP_ARCH}:{path}"
    cfg = load_config("tiny", ["model.modalities=[video,text]", f"model.video.pretrained={spec}",
                               "model.video.frames=4", "model.video.tubelet=2"])
    resolve_towers(cfg.model)
    assert (cfg.model.video.size, cfg.model.video.patch) == (224, 16 if timm else 32)
    model = init_model(cfg, torch.device("cpu"), vocab_size=VOCAB)
    tower, file = model.encoders["video"], load_file(str(path))
    assert tower.grid == (2, g, g) and model.loaded_towers["video"]["adapted"] == [key]
    proj = tower.weights.state_dict()[key.removeprefix(tower.file_prefix)]
    assert proj.shape[2] == 2 and torch.allclose(proj.sum(2), file[key], atol=1e-6)  # spread over 2 frames
    assert not tower.time_pos.any()  # the time positions start at zero

    image = (TimmViTTower(ARCH) if timm else OpenClipImageTower(CLIP_ARCH)).eval()
    load_tower(image, path)
    frame = torch.randn(2, 3, 224, 224)
    still = frame[:, :, None].expand(-1, -1, 4, -1, -1)  # (B, 3, T, H, W): the same frame 4 times
    with torch.no_grad():
        own, clip = image.embed(frame), tower.eval().embed(still)  # (2, 1 + N, D), (2, 1 + 2N, D)
    n = g * g
    assert clip.shape == (2, 1 + 2 * n, own.shape[-1]) and torch.allclose(clip[:, :1], own[:, :1], atol=1e-5)
    for t in range(2):
        assert torch.allclose(clip[:, 1 + t * n: 1 + (t + 1) * n], own[:, 1:], atol=1e-4)

    batch = make_batch(cfg, 2)  # V-JEPA's masks on the tower's (2, g, g) grid
    assert int(batch["video"]["targets"].max()) < 2 * n
    out = model.train()(batch)
    assert out["video"]["pred"].shape == out["video"]["target"].shape
    out["video"]["pred"].square().mean().backward()
    assert tower.time_pos.grad.abs().sum() > 0  # the time positions learn
