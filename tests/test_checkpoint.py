import pytest
import torch

from multijepa.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    list_checkpoints,
    load_train_state,
    load_weights,
    save_checkpoint,
)
from multijepa.model import MultiJEPA
from multijepa.objective import MultiJEPAObjective
from tests.conftest import VOCAB, make_batch


def _trained(cfg):
    torch.manual_seed(0)
    model = MultiJEPA(cfg.model, VOCAB)
    opt = torch.optim.AdamW(model.param_groups(), lr=1e-3)
    loss, _ = MultiJEPAObjective(cfg.loss, model.modalities)(model(make_batch(cfg)), model.logit_scale)
    loss.backward()
    opt.step()
    model.update_targets(0.9)
    return model, opt


def test_round_trip_restores_model_optimizer_and_rng(tiny_cfg, tmp_path):
    model, opt = _trained(tiny_cfg)
    rng = torch.get_rng_state()
    save_checkpoint(tmp_path, 7, model, {"optimizer": opt.state_dict(), "step": 7, "rng_cpu": rng})
    ckpt = latest_checkpoint(tmp_path)
    assert ckpt is not None and ckpt.name == "step_00000007"

    fresh = MultiJEPA(tiny_cfg.model, VOCAB)
    load_weights(fresh, ckpt)
    for (k, a), b in zip(model.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), k
    state = load_train_state(ckpt)
    opt2 = torch.optim.AdamW(fresh.param_groups(), lr=1e-3)
    opt2.load_state_dict(state["optimizer"])
    s1, s2 = opt.state_dict()["state"], opt2.state_dict()["state"]
    assert s1.keys() == s2.keys()
    for k in s1:
        assert torch.equal(s1[k]["exp_avg"], s2[k]["exp_avg"])
    assert state["step"] == 7 and torch.equal(state["rng_cpu"], rng)


def test_only_the_last_checkpoints_are_kept_and_no_temp_folders_remain(tiny_cfg, tmp_path):
    model, _ = _trained(tiny_cfg)
    for step in (2, 4, 6):
        save_checkpoint(tmp_path, step, model, {"step": step}, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000004", "step_00000006"]
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".tmp")]


def test_a_broken_checkpoint_fails_loudly(tiny_cfg, tmp_path):
    model, _ = _trained(tiny_cfg)
    ckpt = save_checkpoint(tmp_path, 1, model, {"step": 1})
    weights = ckpt / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_weights(MultiJEPA(tiny_cfg.model, VOCAB), ckpt)
    (ckpt / "train_state.pt").unlink()
    with pytest.raises(CheckpointError, match="train_state.pt"):
        load_train_state(ckpt)


def test_weights_of_another_model_are_refused(tiny_cfg, tmp_path):
    model, _ = _trained(tiny_cfg)
    ckpt = save_checkpoint(tmp_path, 1, model, {"step": 1})
    tiny_cfg.model.modalities = ["image", "text"]
    with pytest.raises(CheckpointError, match="does not fit"):
        load_weights(MultiJEPA(tiny_cfg.model, VOCAB), ckpt)
