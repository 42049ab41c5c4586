"""Video as a registered modality: its settings, batches (training windows and evaluation clips),
V-JEPA masks on the tubelet grid, pretraining beside text, embedding, and bad files under both
bad-input policies."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from modalities.video import write_video
from multijepa.cli import main
from multijepa.config import load_config, save_config
from multijepa.data.collate import MultiModalCollator, build_maskers
from multijepa.modality import get_modality, registered_modalities
from multijepa.model import MultiJEPA, load_run
from multijepa.processors import Processors
from tests.conftest import make_batch

TINY_VIDEO = ["model.modalities=[text,video]", "model.video.size=16", "model.video.patch=4", "model.video.frames=4",
              "model.video.clip_seconds=1.0", "model.video.encoder={width: 16, depth: 1, heads: 2}",
              "model.video.mask.min_keep=2"]
COLOURS = {"red": (255, 0, 0), "green": (0, 160, 0), "blue": (0, 0, 255)}


def _clip(path, colour: str, direction: str, frames: int = 12, fps: int = 8, sound: bool = True):
    """A square of `colour` moving left or right across 24 x 24 px, with a tone of its colour."""
    video = np.full((frames, 24, 24, 3), 255, np.uint8)
    for t in range(frames):
        x = 2 + t if direction == "right" else 14 - t
        video[t, 8:16, x:x + 8] = COLOURS[colour]
    pitch = {"red": 440, "green": 660, "blue": 880}[colour]
    tone = 0.3 * np.sin(2 * np.pi * pitch * np.arange(16000 * frames // fps) / 16000) if sound else None
    return write_video(path, video, fps=fps, audio=tone)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("video")
    (root / "clips").mkdir()
    rows = []
    for i in range(24):
        colour, direction = list(COLOURS)[i % 3], ("left", "right")[i // 3 % 2]
        _clip(root / "clips" / f"{i:02d}.mp4", colour, direction)
        rows.append({"video": f"clips/{i:02d}.mp4", "text": f"a {colour} square moving to the {direction}",
                     "label": f"{colour} {direction}"})
    (root / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def test_video_is_a_built_in_modality_with_its_own_settings():
    assert registered_modalities()[:4] == ["image", "text", "audio", "video"]
    cfg = load_config("tiny", TINY_VIDEO)
    assert get_modality("video").grid(cfg.model) == (2, 4, 4)
    with pytest.raises(Exception, match="model.video: size=18 must be a multiple of patch=4"):
        load_config("tiny", [*TINY_VIDEO, "model.video.size=18"])


def test_batches_masks_and_clips(clips):
    cfg = load_config("tiny", [*TINY_VIDEO, "model.video.eval_clips=3"])
    proc = Processors(cfg.model, None)
    items = [{"row": i, "video": proc.decode("video", f"clips/{i:02d}.mp4", clips)} for i in range(4)]
    train = MultiModalCollator(["video"], build_maskers(cfg.model), processors=proc, train=True)(items)
    v = train["video"]
    assert v["x"].shape == (4, 3, 4, 16, 16)  # (B, 3, T, H, W): one random window each
    assert v["context"].shape[0] == 4 and v["targets"].shape[:2] == (4, 1)  # V-JEPA: one union target per clip
    n = 2 * 4 * 4
    for b in range(4):
        c, t = v["context"][b], v["targets"][b, 0]
        assert not set(c[c >= 0].tolist()) & set(t[t >= 0].tolist()) and int(t.max()) < n
    evaluation = MultiModalCollator(["video"], processors=proc, train=False)(items)["video"]["x"]
    assert evaluation.shape == (4, 3, 3, 4, 16, 16)  # (B, clips, 3, T, H, W)
    model = MultiJEPA(cfg.model, vocab_size=64).eval()
    z = model.encode("video", evaluation)
    per_clip = model.encode("video", evaluation[0])
    assert torch.allclose(z[0], torch.nn.functional.normalize(per_clip.mean(0), dim=-1), atol=1e-5)


def test_it_pretrains_beside_text_and_embeds(clips, tmp_path):
    cfg = load_config("tiny", TINY_VIDEO)
    save_config(cfg, tmp_path / "video.yaml")
    run = tmp_path / "run"
    assert main(["pretrain", "--config", str(tmp_path / "video.yaml"), "--data", str(clips / "train.jsonl"),
                 "--out", str(run), "--max-steps", "4", "--no-progress"]) == 0
    keys = {k for line in (run / "metrics.jsonl").read_text().splitlines() for k in json.loads(line)}
    assert {"bind/text-video", "pred/video"} <= keys
    model = load_run(run)
    z = model.embed("video", [str(clips / "clips" / "00.mp4")])
    assert z.shape == (1, 16) and torch.allclose(z.norm(dim=-1), torch.ones(1))
    assert main(["embed", "--checkpoint", str(run), "--data", str(clips / "train.jsonl"),
                 "--out", str(tmp_path / "emb")]) == 0
    assert np.load(tmp_path / "emb" / "video.npy").shape == (24, 16)


def test_bad_video_is_one_line_or_skipped_and_counted(clips, tmp_path, capsys):
    (tmp_path / "clips").mkdir()
    good = (clips / "clips" / "00.mp4").read_bytes()
    (tmp_path / "clips" / "cut.mp4").write_bytes(good[: len(good) // 3])
    rows = [{"video": str(clips / "clips" / f"{i:02d}.mp4"), "text": "a red square"} for i in range(7)]
    rows.append({"video": "clips/cut.mp4", "text": "a cut clip"})
    (tmp_path / "bad.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = load_config("tiny", TINY_VIDEO)
    save_config(cfg, tmp_path / "video.yaml")
    argv = ["pretrain", "--config", str(tmp_path / "video.yaml"), "--data", str(tmp_path / "bad.jsonl"),
            "--max-steps", "2", "--no-progress"]
    assert main([*argv, "--out", str(tmp_path / "raise")]) != 0
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert len(err) == 1 and "cut.mp4" in err[0] and "row 7" in err[0], err
    assert main([*argv, "--out", str(tmp_path / "skip"), "data.on_error=skip", "data.max_bad_fraction=0.5"]) == 0
    logged = [json.loads(line) for line in (tmp_path / "skip" / "metrics.jsonl").read_text().splitlines()]
    assert logged[-1].get("bad_rows", 0) >= 1, logged[-1]  # the cut clip, skipped and counted


def test_audio_from_video_takes_each_files_sound_track(clips, tmp_path, capsys):
    cfg = load_config("tiny", [*TINY_VIDEO, "model.modalities=[text,audio,video]", "data.audio_from_video=true"])
    save_config(cfg, tmp_path / "av.yaml")
    run = tmp_path / "run"
    assert main(["pretrain", "--config", str(tmp_path / "av.yaml"), "--data", str(clips / "train.jsonl"),
                 "--out", str(run), "--max-steps", "3", "--no-progress"]) == 0
    keys = {k for line in (run / "metrics.jsonl").read_text().splitlines() for k in json.loads(line)}
    assert {"bind/audio-video", "bind/text-video", "pred/audio", "pred/video"} <= keys  # MJEPA's pair
    model = load_run(run)
    from modalities.video import sound_track

    samples, rate = sound_track(clips / "clips" / "00.mp4")  # what the row's audio is
    assert torch.allclose(model.embed("audio", [(samples, rate)]), _embedded(run, clips, tmp_path), atol=1e-5)
    _clip(tmp_path / "silent.mp4", "red", "left", sound=False)
    (tmp_path / "silent.jsonl").write_text(json.dumps({"video": "silent.mp4", "text": "a red square"}) + "\n")
    assert main(["embed", "--checkpoint", str(run), "--data", str(tmp_path / "silent.jsonl"),
                 "--out", str(tmp_path / "e2")]) != 0
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert len(err) == 1 and "silent.mp4: no sound track" in err[0], err


def _embedded(run, clips, tmp_path):
    """Row 0's audio embedding as `multijepa embed` makes it from the video column alone."""
    assert main(["embed", "--checkpoint", str(run), "--data",
                 str(clips / "train.jsonl"), "--out", str(tmp_path / "e")]) == 0
    z, rows = np.load(tmp_path / "e" / "audio.npy"), np.load(tmp_path / "e" / "audio_rows.npy")
    assert len(rows) == 24
    return torch.from_numpy(z[list(rows).index(0)])[None]


def test_an_image_tower_starts_the_video_encoder_and_the_run_rebuilds_without_its_file(clips, tmp_path):
    """model.video.pretrained=timm:NAME:PATH: trained from the inflated image tower, recorded in
    towers.json, rebuilt from the run folder alone (the file gone), and embedding clips."""
    import timm
    from safetensors.torch import save_file

    weights = tmp_path / "vit.safetensors"
    torch.manual_seed(3)
    save_file({k: v.contiguous() for k, v in timm.create_model("vit_tiny_patch16_224").state_dict().items()}, str(weights))
    cfg = load_config("tiny", TINY_VIDEO)
    save_config(cfg, tmp_path / "video.yaml")
    run = tmp_path / "run"
    assert main(["pretrain", "--config", str(tmp_path / "video.yaml"), "--data", str(clips / "train.jsonl"),
                 "--out", str(run), "--max-steps", "2", "--no-progress", "data.batch_size=4",
                 f"model.video.pretrained=timm:vit_tiny_patch16_224:{weights}"]) == 0
    record = json.loads((run / "towers.json").read_text())["video"]
    assert record["adapted"] == ["patch_embed.proj.weight"] and len(record["sha256"]) == 64
    weights.unlink()
    model = load_run(run)
    assert (model.cfg.video.size, model.cfg.video.patch) == (224, 16) and model.encoders["video"].grid == (2, 14, 14)
    assert model.encoders["video"].time_pos.abs().sum() > 0  # trained: the time positions left zero
    z = model.embed("video", [str(clips / "clips" / "00.mp4")])
    assert z.shape == (1, 16) and torch.isfinite(z).all()


@pytest.mark.parametrize("kind", ["transformer", "mamba", "hybrid"])
def test_every_encoder_kind_encodes_tubelets_and_predicts_them(kind):
    cfg = load_config("tiny", [*TINY_VIDEO, f"model.video.encoder.kind={kind}", "model.video.encoder.depth=2"])
    model = MultiJEPA(cfg.model, vocab_size=64)
    out = model(make_batch(cfg, 4))
    assert out["video"]["pred"].shape == out["video"]["target"].shape and torch.isfinite(out["video"]["pred"]).all()
    out["video"]["pred"].square().mean().backward()
    grads = [p.grad for n, p in model.encoders["video"].named_parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)
