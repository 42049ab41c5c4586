"""The speed switches change the cost, not the result: activation checkpointing and bf16 autocast."""

import torch

from multijepa.model import MultiJEPA
from multijepa.objective import MultiJEPAObjective
from multijepa.train.parallelize import parallelize
from multijepa.train.step import autocast_for
from tests.conftest import VOCAB, make_batch


def _loss_and_grads(cfg, model, batch, precision="fp32"):
    objective = MultiJEPAObjective(cfg.loss, model.modalities)
    model.train()
    with autocast_for(torch.device("cpu"), precision):
        loss, _ = objective(model(batch), model.logit_scale)
    model.zero_grad()
    loss.backward()
    # in parameter order: the wrapped blocks' parameter names carry the wrapper's prefix
    return loss.detach(), [p.grad.clone() if p.grad is not None else None for p in model.parameters()]


def _twin_models(cfg, switch):
    torch.manual_seed(0)
    plain = MultiJEPA(cfg.model, VOCAB)
    torch.manual_seed(0)
    cfg.train.activation_checkpointing = switch
    fast = parallelize(MultiJEPA(cfg.model, VOCAB), cfg.train)
    return plain, fast


def test_activation_checkpointing_gives_the_same_loss_and_gradients(tiny_cfg):
    plain, ckpt = _twin_models(tiny_cfg, True)
    assert any("checkpoint" in type(m).__name__.lower() for m in ckpt.encoders.modules())
    assert not any("checkpoint" in type(m).__name__.lower() for m in ckpt.target_encoders.modules())
    batch = make_batch(tiny_cfg, 8)
    loss_a, grads_a = _loss_and_grads(tiny_cfg, plain, batch)
    loss_b, grads_b = _loss_and_grads(tiny_cfg, ckpt, batch)
    assert torch.allclose(loss_a, loss_b, atol=1e-6)
    assert [g is None for g in grads_a] == [g is None for g in grads_b]
    for i, (a, b) in enumerate(zip(grads_a, grads_b)):
        assert a is None or torch.allclose(a, b, atol=1e-6, rtol=1e-5), i


def test_checkpoints_load_with_and_without_the_switch(tiny_cfg):
    plain, ckpt = _twin_models(tiny_cfg, True)
    assert plain.state_dict().keys() == ckpt.state_dict().keys()
    missing, unexpected = ckpt.load_state_dict(plain.state_dict())
    assert not missing and not unexpected
    ckpt.update_targets(0.5)  # the EMA still pairs each online weight with its target
    for p, t in zip(ckpt.encoders.parameters(), ckpt.target_encoders.parameters()):
        assert torch.allclose(p, t)


def test_bf16_autocast_gives_the_fp32_loss_within_tolerance(tiny_cfg):
    torch.manual_seed(0)
    model = MultiJEPA(tiny_cfg.model, VOCAB)
    batch = make_batch(tiny_cfg, 8)
    loss32, grads32 = _loss_and_grads(tiny_cfg, model, batch)
    loss16, grads16 = _loss_and_grads(tiny_cfg, model, batch, "bf16")
    assert abs(float(loss16) - float(loss32)) < 0.02 * abs(float(loss32))
    g32 = torch.cat([g.flatten() for g in grads32 if g is not None])
    g16 = torch.cat([g.flatten().float() for g in grads16 if g is not None])
    assert torch.nn.functional.cosine_similarity(g32, g16, dim=0) > 0.99


def test_a_run_with_checkpointing_resumes_without_it(demo, tmp_path):
    from multijepa.cli import main

    args = ["pretrain", "--config", "tiny", "--data", str(demo / "train.jsonl"), "--out", str(tmp_path / "r"), "--no-progress"]
    assert main(args + ["--max-steps", "2", "train.ckpt_every=2", "train.activation_checkpointing=true"]) == 0
    assert main(args + ["--max-steps", "4", "--resume", "train.activation_checkpointing=false"]) == 0
    assert (tmp_path / "r" / "checkpoints" / "step_00000004").is_dir()
