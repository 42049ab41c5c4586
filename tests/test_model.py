import copy

import pytest
import torch

from multijepa.model import MultiJEPA
from multijepa.objective import MultiJEPAObjective, paired_rows
from tests.conftest import VOCAB, make_batch

MIXED = [{"image", "text", "audio"}, {"image", "text"}, {"image", "audio"}, {"text", "audio"}, {"image"}, {"text"}, {"audio"}]


def _loss(model, cfg, batch):
    out = model(batch)
    loss, logs = MultiJEPAObjective(cfg.loss, model.modalities)(out, model.logit_scale)
    return out, loss, logs


def test_forward_shapes_with_mixed_rows(tiny_cfg):
    torch.manual_seed(0)
    model = MultiJEPA(tiny_cfg.model, VOCAB)
    batch = make_batch(tiny_cfg, n=14, presence=MIXED)
    out, loss, logs = _loss(model, tiny_cfg, batch)
    for m in ("image", "text", "audio"):
        b_m = batch[m]["x"].shape[0]
        t = batch[m]["targets"].shape[1] * batch[m]["targets"].shape[2]
        width = tiny_cfg.model.__getattribute__(m).encoder.width
        assert out[m]["pred"].shape == out[m]["target"].shape == (b_m, t, width)
        # binding embeds the whole input (bind_mask_ratio 0) of the rows that have another modality
        bound = out[m]["index"]
        assert 0 < bound.shape[0] <= b_m and set(bound.tolist()) <= set(batch[m]["index"].tolist())
        assert out[m]["z"].shape == (bound.shape[0], tiny_cfg.model.embed_dim)
        assert torch.allclose(out[m]["z"].norm(dim=-1), torch.ones(bound.shape[0]), atol=1e-5)
    assert torch.isfinite(loss)
    # every pair is bound, over the rows that have both sides only
    assert {"bind/image-text", "bind/image-audio", "bind/text-audio"} <= set(logs)


def test_every_trainable_parameter_gets_a_gradient_and_the_target_none(tiny_cfg):
    torch.manual_seed(0)
    model = MultiJEPA(tiny_cfg.model, VOCAB)
    batch = make_batch(tiny_cfg, n=14, presence=MIXED)
    _, loss, _ = _loss(model, tiny_cfg, batch)
    loss.backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert trainable
    for name, p in trainable:
        assert not name.startswith("target_encoders."), name
        assert p.grad is not None, f"{name} got no gradient"
        assert p.grad.abs().sum() > 0, f"{name} got a zero gradient"
    for name, p in model.target_encoders.named_parameters():
        assert not p.requires_grad and p.grad is None, name


def test_rows_with_a_single_modality_train_without_binding(tiny_cfg):
    model = MultiJEPA(tiny_cfg.model, VOCAB)
    batch = make_batch(tiny_cfg, n=9, presence=[{"image"}, {"text"}, {"audio"}])
    _, loss, logs = _loss(model, tiny_cfg, batch)
    assert float(logs["loss/bind"]) == 0.0 and float(logs["loss/pred"]) > 0
    loss.backward()


def test_paired_rows_matches_the_same_batch_rows():
    a = torch.tensor([0, 2, 3, 5, 7])
    b = torch.tensor([1, 2, 5, 6, 7])
    sa, sb = paired_rows(a, b)
    assert a[sa].tolist() == b[sb].tolist() == [2, 5, 7]


def test_ema_update_moves_targets_towards_online(tiny_cfg):
    model = MultiJEPA(tiny_cfg.model, VOCAB)
    with torch.no_grad():
        for p in model.encoders.parameters():
            p.add_(torch.randn_like(p))
    before = copy.deepcopy(model.target_encoders.state_dict())
    online = model.encoders.state_dict()
    model.update_targets(0.9)
    after = model.target_encoders.state_dict()
    for k, v in after.items():
        assert torch.allclose(v, 0.9 * before[k] + 0.1 * online[k], atol=1e-6), k
    model.update_targets(1.0)  # momentum 1 freezes the target
    for k, v in model.target_encoders.state_dict().items():
        assert torch.equal(v, after[k])


def test_weight_decay_skips_norms_biases_and_tokens(tiny_cfg):
    tiny_cfg.model.learn_temperature = True
    model = MultiJEPA(tiny_cfg.model, VOCAB)
    decay, no_decay = model.param_groups()
    assert all(p.ndim >= 2 for p in decay["params"])
    ids = {id(p) for p in no_decay["params"]}
    assert id(model.logit_scale) in ids
    assert all(id(p) in ids for n, p in model.named_parameters() if p.requires_grad and n.endswith(("bias", "mask_token")))
    n_trainable = sum(p.requires_grad for p in model.parameters())
    assert len(decay["params"]) + len(no_decay["params"]) == n_trainable


@pytest.mark.parametrize("kind", ["transformer", "mamba", "hybrid"])
def test_loss_falls_when_overfitting_one_batch(tiny_cfg, kind):
    for m in ("image", "text", "audio"):  # every encoder of this kind (text 2 blocks deep, so a hybrid fits)
        getattr(tiny_cfg.model, m).encoder.kind = kind
        getattr(tiny_cfg.model, m).encoder.depth = 2
    torch.manual_seed(0)
    model = MultiJEPA(tiny_cfg.model, VOCAB)
    batch = make_batch(tiny_cfg, n=8)
    opt = torch.optim.AdamW(model.param_groups(), lr=3e-3)
    objective = MultiJEPAObjective(tiny_cfg.loss, model.modalities)
    losses = []
    for _ in range(40):
        loss, logs = objective(model(batch), model.logit_scale)
        opt.zero_grad()
        loss.backward()
        opt.step()
        model.update_targets(0.996)
        losses.append((float(logs["loss/pred"]), float(logs["loss/bind"])))
    assert losses[-1][0] < 0.6 * losses[0][0], losses
    assert losses[-1][1] < 0.6 * losses[0][1], losses


@pytest.mark.parametrize("modalities", [["image"], ["text", "audio"], ["image", "text"]])
def test_subsets_of_modalities_build_and_run(tiny_cfg, modalities):
    tiny_cfg.model.modalities = modalities
    model = MultiJEPA(tiny_cfg.model, VOCAB)
    batch = make_batch(tiny_cfg, n=6)
    _, loss, _ = _loss(model, tiny_cfg, batch)
    loss.backward()
    assert set(model.encoders) == set(modalities)


def test_bf16_autocast_matches_fp32_loss(tiny_cfg):
    torch.manual_seed(0)
    model = MultiJEPA(tiny_cfg.model, VOCAB)
    batch = make_batch(tiny_cfg, n=8)
    objective = MultiJEPAObjective(tiny_cfg.loss, model.modalities)
    loss32, _ = objective(model(batch), model.logit_scale)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss16, _ = objective(model(batch), model.logit_scale)
    loss16.backward()
    assert torch.isfinite(loss16)
    l16, l32 = float(loss16.detach()), float(loss32.detach())
    assert abs(l16 - l32) < 0.05 * l32
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_a_learned_temperature_is_clamped_after_each_step_and_never_stuck(tiny_cfg):
    """open_clip's rule: the log-scale parameter is clamped to [0, ln 100] after every optimizer
    step (and here at construction), not in the forward, so its gradient is never cut to zero."""
    import math

    from multijepa.objective import MultiJEPAObjective
    from multijepa.train.builder import build_training

    tiny_cfg.model.learn_temperature = True
    tiny_cfg.model.init_temperature = 0.001  # scale 1000: above the cap
    tiny_cfg.optim.lr = 10.0  # big steps, so the clamp has to act
    torch.manual_seed(0)
    training = build_training(tiny_cfg, torch.device("cpu"), vocab_size=VOCAB)
    model = training.model
    assert float(model.logit_scale.detach()) == pytest.approx(math.log(100.0))
    batch = make_batch(tiny_cfg, 8)
    loss, _ = MultiJEPAObjective(tiny_cfg.loss, model.modalities)(model.train()(batch), model.logit_scale)
    loss.backward()
    assert model.logit_scale.grad is not None and float(model.logit_scale.grad) != 0.0  # at the cap, still alive
    model.zero_grad()
    seen = []
    for step in range(4):
        if step == 2:
            with torch.no_grad():
                model.logit_scale.fill_(10.0)  # far above the cap: one step brings it back
        training.step(make_batch(tiny_cfg, 8, seed=step), step)
        seen.append(float(model.logit_scale.detach()))
    assert all(0.0 <= s <= math.log(100.0) + 1e-6 for s in seen), seen
    assert seen[0] != pytest.approx(math.log(100.0))  # it moved off the cap
