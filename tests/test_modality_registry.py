"""A modality of one's own, registered from this file alone (no edit under multijepa/ or
modalities/), goes through everything a built-in one does: its settings in the config, pretraining
(bound to text and images, predicted from its context), embedding, an index, search by it and for
it, and bad input named in one line. docs/guides/add-a-modality.md is built from this file."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from modalities.errors import DataError
from modalities.masking import MultiBlockMasker
from modalities.paths import resolve_path
from modalities.positions import position_table
from multijepa.cli import main
from multijepa.config import EncoderConfig, load_config, save_config
from multijepa.modality import Modality, get_modality, register_modality, registered_modalities, unregister_modality
from multijepa.model import load_run

ROOT = Path(__file__).parent.parent


# --- the modality: a 1-D signal stored as a .npy file of `length` float32 samples ------------------
# --8<-- [start:modality]
@dataclass
class SignalConfig:
    """model.signal: what a config may set for it."""

    length: int = 32  # samples per signal
    chunk: int = 4  # samples per token
    encoder: EncoderConfig = field(default_factory=lambda: EncoderConfig(width=16, depth=1, heads=2))


class SignalTokens(nn.Module):
    """(B, length) -> (B, length / chunk, D): each chunk of samples projected, plus its position."""

    def __init__(self, length: int, chunk: int, dim: int):
        super().__init__()
        self.chunk, self.grid = chunk, (length // chunk,)
        self.proj = nn.Linear(chunk, dim)
        self.register_buffer("pos", position_table(dim, self.grid), persistent=False)  # (N, D)

    @property
    def num_tokens(self) -> int:
        return self.grid[0]

    def forward(self, x: torch.Tensor):
        return self.proj(x.unflatten(1, (-1, self.chunk))) + self.pos, None  # (B, N, D), no padding


@register_modality
class Signal(Modality):
    name = "signal"
    suffixes = (".npy",)
    config_class = SignalConfig

    def processor(self, cfg, tokenizer=None):
        return cfg.signal  # its settings are all the preprocessing needs

    def decode(self, processor, value, base_dir=None):
        path = resolve_path(value, base_dir, "signal")  # missing or empty files: one line, as for images
        try:
            x = np.load(path, allow_pickle=False)
        except ValueError as e:
            raise DataError(f"signal {path}: not a .npy array ({e})", "undecodable") from None
        if x.shape != (processor.length,) or not np.isfinite(x).all():
            raise DataError(f"signal {path}: need {processor.length} finite samples, got shape {x.shape}", "invalid")
        return torch.from_numpy(x.astype(np.float32))  # (length,)

    def grid(self, cfg):
        return (cfg.signal.length // cfg.signal.chunk,)

    def masker(self, cfg):  # I-JEPA's blocks on a one-row grid: spans of chunks
        return MultiBlockMasker((1, self.grid(cfg)[0]), num_targets=2, target_scale=(0.2, 0.3), min_keep=2,
                                pad_context=True)

    def tokens(self, cfg, vocab_size=None):
        return SignalTokens(cfg.signal.length, cfg.signal.chunk, cfg.signal.encoder.width)
# --8<-- [end:modality]


# --- its data: the demo scenes, each with a signal whose frequency is the scene's class ------------


def _signal(label: str, seed: int, length: int = 32) -> np.ndarray:
    rng = np.random.default_rng(seed)
    freq = 1 + sum(map(ord, label)) % 7
    return (np.sin(np.arange(length) * freq * 2 * np.pi / length) + 0.1 * rng.standard_normal(length)).astype(np.float32)


def _manifest(demo: Path, split: str, out: Path) -> Path:
    rows = [json.loads(line) for line in (demo / f"{split}.jsonl").read_text().splitlines()]
    (out / "signals").mkdir(parents=True, exist_ok=True)
    with open(out / f"{split}.jsonl", "w") as f:
        for i, r in enumerate(rows):
            name = f"signals/{split}_{i:03d}.npy"
            np.save(out / name, _signal(r["label"], i))
            f.write(json.dumps({"image": str(demo / r["image"]), "text": r["text"], "signal": name,
                                "label": r["label"]}) + "\n")
    return out / f"{split}.jsonl"


@pytest.fixture(scope="module")
def signal_run(demo, tmp_path_factory):
    """A tiny run over image, text and the signal: its folder, config and data folder."""
    work = tmp_path_factory.mktemp("signal")
    train, test = _manifest(demo, "train", work), _manifest(demo, "test", work)
    # --8<-- [start:pretrain]
    cfg = load_config("tiny", ["model.modalities=[image,text,signal]", "model.signal.chunk=8"])
    save_config(cfg, work / "signal.yaml")
    run = work / "run"
    assert main(["pretrain", "--config", str(work / "signal.yaml"), "--data", str(train), "--out", str(run),
                 "--max-steps", "4", "--no-progress"]) == 0
    # --8<-- [end:pretrain]
    return run, train, test


def test_it_is_registered_beside_the_built_ins():
    assert registered_modalities()[:3] == ["image", "text", "audio"] and "signal" in registered_modalities()
    assert isinstance(get_modality("signal"), Signal)


def test_its_settings_load_validate_and_save_like_a_built_ins(tmp_path):
    cfg = load_config("tiny", ["model.modalities=[image,signal]", "model.signal.length=64"])
    assert cfg.model.signal == SignalConfig(length=64)
    save_config(cfg, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml").model.signal.length == 64
    with pytest.raises(Exception, match="model.signal.lenght"):
        load_config("tiny", ["model.signal.lenght=3"])
    with pytest.raises(Exception, match="model.signal.encoder.width=15 must be a multiple"):
        load_config("tiny", ["model.modalities=[image,signal]", "model.signal.encoder.width=15"])
    with pytest.raises(Exception, match="unknown modality 'sonar'.*MULTIJEPA_PLUGINS"):
        load_config("tiny", ["model.modalities=[image,sonar]"])


def test_it_pretrains_with_binding_and_prediction(signal_run):
    run, _, _ = signal_run
    assert "signal:" in (run / "config.yaml").read_text()
    model = load_run(run)
    assert model.modalities == ["image", "text", "signal"]
    assert "signal" in model.predictors and "signal" in model.target_encoders
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    keys = {k for r in logged for k in r}
    assert {"bind/image-signal", "bind/text-signal", "pred/signal", "rankme/signal"} <= keys, keys
    from safetensors.torch import load_file  # its encoder, predictor and head learned between the checkpoints

    step2, step4 = (load_file(run / "checkpoints" / f"step_0000000{s}" / "model.safetensors") for s in (2, 4))
    for part in ("encoders.signal.", "predictors.signal.", "heads.signal."):
        names = [n for n in step4 if n.startswith(part)]
        assert names and any(not torch.equal(step2[n], step4[n]) for n in names), part


def test_it_embeds_indexes_and_searches(signal_run, tmp_path, capsys):
    run, _, test = signal_run
    # --8<-- [start:use]
    model = load_run(run)
    z = model.embed("signal", [str(test.parent / "signals/test_000.npy")])
    assert z.shape == (1, 16) and torch.allclose(z.norm(dim=-1), torch.ones(1))
    assert main(["embed", "--checkpoint", str(run), "--data", str(test), "--out", str(tmp_path / "emb")]) == 0
    assert np.load(tmp_path / "emb" / "signal.npy").shape == (24, 16)
    assert main(["index", "--checkpoint", str(run), "--data", str(test), "--out", str(tmp_path / "idx"),
                 "--no-progress"]) == 0
    capsys.readouterr()
    query = test.parent / "signals" / "test_003.npy"
    assert main(["search", "--index", str(tmp_path / "idx"), "--signal", str(query), "--top-k", "3", "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert set(found["results"]) == {"image", "text"} and len(found["results"]["text"]) == 3
    assert main(["search", "--index", str(tmp_path / "idx"), "--text", "a red circle", "--modality", "signal",
                 "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)["results"]["signal"]
    assert hits and all(h["signal"].endswith(".npy") for h in hits)  # the row's own file, as indexed
    # --8<-- [end:use]


def test_its_bad_input_is_one_line_naming_the_file(signal_run, tmp_path, capsys):
    run, _, test = signal_run
    (tmp_path / "signals").mkdir()
    np.save(tmp_path / "signals" / "short.npy", np.zeros(5, np.float32))
    (tmp_path / "bad.jsonl").write_text(json.dumps({"text": "a red circle", "signal": "signals/short.npy"}) + "\n")
    assert main(["embed", "--checkpoint", str(run), "--data", str(tmp_path / "bad.jsonl"), "--out",
                 str(tmp_path / "emb")]) != 0
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip() and not line.startswith("embed:")]
    assert len(err) == 1 and err[0].startswith("error: ") and "short.npy: need 32 finite samples, got shape (5,)" in err[0]


def test_the_commands_find_it_through_multijepa_plugins(signal_run, tmp_path):
    """From another process: MULTIJEPA_PLUGINS imports the module that registers it."""
    run, _, test = signal_run
    env = {"MULTIJEPA_PLUGINS": "test_modality_registry", "PYTHONPATH": str(Path(__file__).parent),
           "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-m", "multijepa", "embed", "--checkpoint", str(run), "--data", str(test),
                          "--out", str(tmp_path / "emb")], env=env, capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "emb" / "signal.npy").exists()
    del env["MULTIJEPA_PLUGINS"]
    out = subprocess.run([sys.executable, "-m", "multijepa", "embed", "--checkpoint", str(run), "--data", str(test),
                          "--out", str(tmp_path / "emb2")], env=env, capture_output=True, text=True, cwd=ROOT)
    assert out.returncode != 0 and "'model.signal'" in out.stderr and "MULTIJEPA_PLUGINS=" in out.stderr


def teardown_module():
    unregister_modality("signal")
