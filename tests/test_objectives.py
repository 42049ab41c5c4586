"""The CLIP baseline inside the product, time-limited runs, the EMA horizon and the per-term
gradient norms (issue 13)."""

import json

import numpy as np
import pytest
import torch

from multijepa.checkpoint import latest_checkpoint, load_train_state
from multijepa.cli import main
from multijepa.config import ConfigError, load_config
from multijepa.data.collate import MultiModalCollator
from multijepa.model import create_model, load_run
from multijepa.objective import MultiJEPAObjective
from multijepa.train.schedule import Schedule
from multijepa.train.step import term_grad_norms
from tests.conftest import VOCAB, make_batch, make_items


def _unmasked_batch(cfg, n=8):
    return MultiModalCollator(cfg.model.modalities)(make_items(cfg, n))


def test_clip_objective_builds_no_target_encoders_or_predictors(tiny_cfg):
    jepa = create_model(tiny_cfg, vocab_size=VOCAB)
    tiny_cfg.loss.objective = "clip"
    clip = create_model(tiny_cfg, vocab_size=VOCAB)
    assert clip.target_encoders is None and clip.predictors is None
    assert not any(k.startswith(("target_encoders.", "predictors.")) for k in clip.state_dict())
    n_clip = sum(p.numel() for p in clip.parameters())
    n_jepa = sum(p.numel() for p in jepa.parameters())
    n_extra = sum(p.numel() for part in (jepa.target_encoders, jepa.predictors) for p in part.parameters())
    assert n_clip == n_jepa - n_extra

    batch = _unmasked_batch(tiny_cfg)
    assert "context" not in batch["image"]  # no masks are made for it
    out = clip.train()(batch)
    assert all(set(o) == {"z", "index"} for o in out.values())
    loss, logs = MultiJEPAObjective(tiny_cfg.loss, clip.modalities)(out, clip.logit_scale)
    assert float(logs["loss/pred"]) == 0 and float(logs["loss/bind"]) > 0
    loss.backward()
    for name, p in clip.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("other", ["loss.objective=clip", "loss.pred_weight=0"])
def test_the_encoders_and_heads_start_the_same_whatever_the_objective(other):
    """The predictors draw their initial weights apart, so an objective comparison (`vs_clip.py`)
    starts every arm from the same encoders and heads: only the objective differs."""
    models = []
    for overrides in ([], [other]):
        torch.manual_seed(3)
        models.append(create_model(load_config("tiny", overrides), vocab_size=VOCAB))
    predicting, plain = (m.state_dict() for m in models)
    shared = [k for k in plain if not k.startswith(("target_encoders.", "predictors.", "prediction_on"))]
    assert shared and all(k in predicting for k in shared)
    for k in shared:
        assert torch.equal(predicting[k], plain[k]), k
    torch.manual_seed(4)  # another seed gives other predictors (they follow the seed, apart)
    again = create_model(load_config("tiny"), vocab_size=VOCAB).state_dict()
    assert not torch.equal(again["heads.image.proj.weight"], predicting["heads.image.proj.weight"])
    assert any(not torch.equal(again[k], predicting[k]) for k in predicting if k.startswith("predictors."))


def test_clip_binding_sees_the_whole_input(tiny_cfg):
    """The CLIP objective embeds unmasked inputs exactly as inference does (`encode`)."""
    tiny_cfg.loss.objective = "clip"
    torch.manual_seed(0)
    model = create_model(tiny_cfg, vocab_size=VOCAB).eval()
    batch = _unmasked_batch(tiny_cfg)
    out = model(batch)
    for m in ("image", "text"):
        assert torch.allclose(out[m]["z"], model.encode(m, batch[m]["x"]), atol=1e-5)


def test_no_prediction_term_builds_no_predictors_but_keeps_masks(tiny_cfg):
    tiny_cfg.loss.pred_weight = 0.0
    model = create_model(tiny_cfg, vocab_size=VOCAB)
    assert model.predictors is None and model.target_encoders is None
    batch = make_batch(tiny_cfg, 8)
    out = model.train()(batch)
    loss, _ = MultiJEPAObjective(tiny_cfg.loss, model.modalities)(out, model.logit_scale)
    loss.backward()  # binding alone, on whole inputs (FLIP's keep sets where bind_mask_ratio > 0)


def test_binding_on_the_full_input_uses_an_unmasked_forward(tiny_cfg):
    torch.manual_seed(0)
    tiny_cfg.loss.bind_input = "full"
    model = create_model(tiny_cfg, vocab_size=VOCAB).eval()
    batch = make_batch(tiny_cfg, 8)
    out = model(batch)
    assert "pred" in out["image"]  # prediction still reads the masked context
    assert torch.allclose(out["image"]["z"], model.encode("image", batch["image"]["x"]), atol=1e-5)
    tiny_cfg.loss.bind_input = "context"
    tiny_cfg.model.image.bind_mask_ratio = 0.5  # binding may then embed the prediction context
    masked = create_model(tiny_cfg, vocab_size=VOCAB).eval()
    masked.load_state_dict(model.state_dict())
    assert not torch.allclose(masked(batch)["image"]["z"], out["image"]["z"], atol=1e-3)


@pytest.mark.parametrize("override, message", [
    ("loss.objective=byol", "loss.objective"),
    ("loss.bind_input=half", "loss.bind_input"),
    ("train.max_seconds=-1", "train.max_seconds"),
    ("model.ema_horizon=1.5", "model.ema_horizon"),
])
def test_bad_objective_settings_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config("tiny", [override])


def test_clip_needs_two_modalities_and_binding():
    with pytest.raises(ConfigError, match="binding alone"):
        load_config("tiny", ["loss.objective=clip", "model.modalities=[image]"])


def test_ema_horizon_sets_the_start_momentum_from_the_run_length(tiny_cfg):
    s = Schedule(tiny_cfg.optim, 400, ema=(0.996, 1.0), ema_horizon=0.05)
    assert s.ema(0) == pytest.approx(1 - 1 / 20)  # a 20-step average in a 400-step run
    assert s.ema(400) == pytest.approx(1.0)
    s.load_state_dict({"total_steps": 4000})
    assert s.ema(0) == pytest.approx(1 - 1 / 200)
    assert Schedule(tiny_cfg.optim, 400, ema=(0.996, 1.0)).ema(0) == pytest.approx(0.996)


def test_the_ema_horizon_is_bounded_in_steps_for_long_runs(tiny_cfg):
    """A 300-step CPU run and a 100k-step GPU run: the first averages its targets over 15 steps, the
    second over I-JEPA's 250 (not 5,000, which would keep most of the random target through warm-up)."""
    short = Schedule(tiny_cfg.optim, 300, ema=(0.996, 1.0), ema_horizon=0.05)
    long = Schedule(tiny_cfg.optim, 100_000, ema=(0.996, 1.0), ema_horizon=0.05)
    assert short.ema(0) == pytest.approx(1 - 1 / 15) and short.ema(300) == pytest.approx(1.0)
    assert long.ema(0) == pytest.approx(1 - 1 / 250) and long.ema(50_000) == pytest.approx(0.998)
    # what is left of the random initial target after the first 10k steps: ~0 (with 1 - 1/5000, ~13 %)
    left = 1.0
    for step in range(10_000):
        left *= long.ema(step)
    assert left < 1e-10
    # a late prediction phase ramps the momentum over the phase, from the step it began
    long.phase_start = 80_000
    assert long.ema(80_000) == pytest.approx(1 - 1 / 250) and long.ema(90_000) == pytest.approx(0.998)


def test_term_grad_norms_equal_separate_backward_passes(tiny_cfg):
    torch.manual_seed(0)
    model = create_model(tiny_cfg, vocab_size=VOCAB).train()
    objective = MultiJEPAObjective(tiny_cfg.loss, model.modalities)
    terms, _ = objective.terms(model(make_batch(tiny_cfg, 8)), model.logit_scale)
    params = [p for p in model.encoders.parameters() if p.requires_grad]
    logs = term_grad_norms(terms, params)
    for name in ("pred", "bind"):
        model.zero_grad()
        terms[name].backward(retain_graph=True)
        direct = torch.sqrt(sum(p.grad.pow(2).sum() for p in params if p.grad is not None))
        assert float(logs[f"grad_norm/{name}"]) == pytest.approx(float(direct), rel=1e-5)
    share = float(logs["grad_norm/pred"] / (logs["grad_norm/pred"] + logs["grad_norm/bind"]))
    assert float(logs["grad_share/pred"]) == pytest.approx(share)


def _pretrain(demo, out, *overrides, resume=False):
    args = ["pretrain", "--config", "tiny", "--data", str(demo / "train.jsonl"), "--out", str(out), "--no-progress",
            *(["--resume"] if resume else []), "train.threads=1", *overrides]
    assert main(args) == 0


def _metrics(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_metrics_log_each_terms_gradient_norm(demo, tmp_path):
    _pretrain(demo, tmp_path / "r", "train.max_steps=4")
    rec = _metrics(tmp_path / "r")[-1]
    assert rec["grad_norm/pred"] > 0 and rec["grad_norm/bind"] > 0 and 0 < rec["grad_share/pred"] < 1


def test_max_seconds_stops_with_a_checkpoint_and_ends_its_schedule_at_its_last_step(demo, tmp_path):
    run = tmp_path / "timed"
    _pretrain(demo, run, "train.max_steps=100000", "train.max_seconds=4", "train.ckpt_every=100000")
    ckpt = latest_checkpoint(run)
    state = load_train_state(ckpt)
    steps = state["step"]
    assert 10 <= steps < 100000  # stopped by the clock, past the steps that measure the rate
    assert 3.5 < state["train_seconds"] < 30
    total = state["schedule"]["total_steps"]
    assert abs(total - steps) <= max(2, 0.05 * steps)  # the schedule ends where the run does
    logged = _metrics(run)
    assert max(r["step"] for r in logged) == steps  # the last step is logged
    late = [r["schedule_steps"] for r in logged if r["step"] >= steps / 2]
    assert late and all(abs(t - steps) <= 0.25 * steps for t in late)  # re-read as the run goes, not fixed once

    # a resumed run counts the seconds already trained, and its schedule again ends at its last step
    _pretrain(demo, run, "train.max_steps=100000", "train.max_seconds=8", "train.ckpt_every=100000", resume=True)
    again = load_train_state(latest_checkpoint(run))
    assert again["step"] > steps and abs(again["schedule"]["total_steps"] - again["step"]) <= max(2, 0.05 * again["step"])
    assert again["train_seconds"] >= 8


def test_a_clip_run_evaluates_probes_and_fine_tunes_from_its_online_encoders(demo, tmp_path, capsys):
    run = tmp_path / "clip"
    _pretrain(demo, run, "train.max_steps=3", "loss.objective=clip")
    model = load_run(run)
    assert model.target_encoders is None
    from multijepa.vqa.config import load_vqa_config
    from multijepa.vqa.model import VQAModel

    vqa = VQAModel(model.cfg, load_vqa_config("vqa_demo"), model.processors.tokenizer.vocab_size, 5)
    vqa.load_pretrained_encoders(model)  # a CLIP run fine-tunes from its online encoders
    for a, b in zip(vqa.image_encoder.state_dict().values(), model.encoders["image"].state_dict().values()):
        assert torch.equal(a, b)
    out = tmp_path / "probe.json"
    assert main(["eval", "probe", "--checkpoint", str(run), "--data", str(demo / "train.jsonl"),
                 "--test", str(demo / "test.jsonl"), "--modality", "image,audio", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert set(res) == {"image", "audio"} and res["image"]["n_train"] == 48 and res["image"]["n_test"] == 24
    assert 0 <= res["image"]["linear"]["top1"] <= 1 and 0 <= res["audio"]["knn"]["top1"] <= 1
    assert main(["eval", "probe", "--checkpoint", str(run), "--encoder", "target", "--data", str(demo / "train.jsonl")]) == 2
    assert "no target encoders" in capsys.readouterr().err


def test_input_probe_reads_pixels_mean_spectra_and_token_counts(demo, tmp_path, capsys):
    from multijepa.retrieval.probe import labelled_features

    run = tmp_path / "run"
    _pretrain(demo, run, "train.max_steps=1")
    model = load_run(run)
    row = [json.loads(line) for line in (demo / "train.jsonl").read_text().splitlines()][3]
    proc, tok = model.processors, model.processors.tokenizer
    feats = {m: labelled_features(model, demo / "train.jsonl", m, "input", progress=False) for m in model.modalities}
    x, labels, skipped = feats["image"]
    assert skipped == 0 and labels[3] == row["label"]
    assert np.allclose(x[3], proc.item("image", row["image"], demo).flatten().numpy())
    clips = proc.item("audio", row["audio"], demo)  # (clips, mel, T) or (mel, T)
    spectrum = clips.mean(-1).reshape(-1, clips.shape[-2]).mean(0)  # (mel,)
    assert np.allclose(feats["audio"][0][3], spectrum.numpy(), atol=1e-5)
    ids, length = tok([row["text"]])
    words = ids[0, 1 : int(length[0]) - 1].numpy()  # without bos and eos
    assert np.allclose(feats["text"][0][3], np.bincount(words, minlength=tok.vocab_size) / len(words), atol=1e-6)
    assert main(["eval", "probe", "--checkpoint", str(run), "--encoder", "input", "--data", str(demo / "train.jsonl"),
                 "--test", str(demo / "test.jsonl"), "--modality", "audio"]) == 0
    assert "probes of the inputs themselves (no encoder)" in capsys.readouterr().out
    assert main(["eval", "probe", "--checkpoint", str(run), "--encoder", "input", "--random-init"]) == 2


def test_knn_probe_is_dinos_weighted_vote():
    from multijepa.retrieval.probe import KNN_TEMPERATURE, knn_probe

    rng = np.random.default_rng(0)
    train, test = rng.normal(size=(30, 5)).astype(np.float32), rng.normal(size=(10, 5)).astype(np.float32)
    ytr = [str(v) for v in rng.integers(0, 3, 30)]
    yte = [str(v) for v in rng.integers(0, 3, 10)]
    a = train / np.linalg.norm(train, axis=1, keepdims=True)
    b = test / np.linalg.norm(test, axis=1, keepdims=True)
    expected = []
    for row in b @ a.T:  # a direct loop: the 5 nearest vote with exp(sim / T)
        top = np.argsort(-row)[:5]
        votes = {}
        for j in top:
            votes[ytr[j]] = votes.get(ytr[j], 0.0) + np.exp(row[j] / KNN_TEMPERATURE)
        expected.append(max(votes, key=votes.get))
    got = knn_probe(train, ytr, test, yte, k=5)
    assert got["top1"] == pytest.approx(np.mean([e == y for e, y in zip(expected, yte)]))


def test_linear_probe_separates_separable_classes():
    from multijepa.retrieval.probe import linear_probe

    rng = np.random.default_rng(0)
    centres = rng.normal(scale=5, size=(4, 8))
    y = rng.integers(0, 4, 200)
    x = centres[y] + rng.normal(size=(200, 8))
    labels = [f"c{v}" for v in y]
    assert linear_probe(x[:150], labels[:150], x[150:], labels[150:])["top1"] > 0.95


def test_epps_pulley_matches_its_closed_form():
    """With the Gaussian weight the integral over the whole line has a closed form:
    sqrt(2 pi)/N^2 sum_jk exp(-(x_j - x_k)^2 / 2) - 2 sqrt(pi)/N sum_j exp(-x_j^2 / 4) + sqrt(2 pi / 3),
    times N. A wide, fine quadrature must agree with it; the default one (LeJEPA's 17 knots on
    [0, 3]) to within its truncation."""
    import math

    from multijepa.objective import epps_pulley

    g = torch.Generator().manual_seed(0)
    for x in (torch.randn(200, generator=g), 0.3 * torch.randn(200, generator=g) + 0.5, torch.zeros(50)):
        x64 = x.double()
        n = x.shape[0]
        closed = (math.sqrt(2 * math.pi) / n**2 * torch.exp(-(x64[:, None] - x64[None]) ** 2 / 2).sum()
                  - 2 * math.sqrt(math.pi) / n * torch.exp(-x64**2 / 4).sum() + math.sqrt(2 * math.pi / 3)) * n
        wide = epps_pulley(x[:, None], t_max=8.0, knots=801)[0]
        assert float(wide) == pytest.approx(float(closed), rel=1e-3, abs=1e-4)
        assert float(epps_pulley(x[:, None])[0]) == pytest.approx(float(closed), rel=0.05, abs=0.02)


def test_sigreg_is_small_for_a_gaussian_and_large_for_a_collapse():
    from multijepa.objective import sigreg

    g = torch.Generator().manual_seed(0)
    gaussian = sigreg(torch.randn(512, 32, generator=g), torch.Generator().manual_seed(1))
    collapsed = sigreg(torch.ones(512, 32) + 0.01 * torch.randn(512, 32, generator=g), torch.Generator().manual_seed(1))
    squashed = sigreg(0.1 * torch.randn(512, 32, generator=g), torch.Generator().manual_seed(1))
    # N times a squared error of order 1/N: about 1 for a Gaussian sample, in the hundreds otherwise
    assert float(gaussian) < 3.0 and 50 * float(gaussian) < float(squashed) < float(collapsed)


@pytest.mark.parametrize("bind_input", ["context", "full"])
def test_sigreg_targets_come_from_the_online_encoder_without_a_copy(tiny_cfg, bind_input):
    import torch.nn.functional as F

    from modalities.encoder import gather_tokens

    tiny_cfg.model.target = "sigreg"
    tiny_cfg.loss.sigreg_weight = 0.05
    tiny_cfg.loss.bind_input = bind_input
    torch.manual_seed(0)
    model = create_model(tiny_cfg, vocab_size=VOCAB).train()
    assert model.target_encoders is None and model.predictors is not None
    batch = make_batch(tiny_cfg, 8)
    out = model(batch)
    with torch.no_grad():
        t, _ = model.encoders["image"](batch["image"]["x"])
        t = F.layer_norm(t, t.shape[-1:])
    expected = gather_tokens(t, batch["image"]["targets"].flatten(1))
    assert torch.allclose(out["image"]["target"], expected, atol=1e-5)
    assert not out["image"]["target"].requires_grad  # stop-gradient
    terms, logs = MultiJEPAObjective(tiny_cfg.loss, model.modalities).terms(out, model.logit_scale)
    assert set(terms) == {"pred", "bind", "sigreg"} and float(logs["sigreg"]) > 0
    sum(terms.values()).backward()
    assert all(p.grad is not None for p in model.encoders.parameters() if p.requires_grad)


def test_sigreg_target_needs_its_weight():
    with pytest.raises(ConfigError, match="sigreg_weight"):
        load_config("tiny", ["model.target=sigreg"])


def test_full_binding_embeds_only_rows_with_another_modality(tiny_cfg):
    from tests.test_model import MIXED

    tiny_cfg.loss.bind_input = "full"
    model = create_model(tiny_cfg, vocab_size=VOCAB).train()
    batch = make_batch(tiny_cfg, n=14, presence=MIXED)
    out = model(batch)
    presence = [MIXED[i % len(MIXED)] for i in range(14)]
    for m in ("image", "text", "audio"):
        bound = [i for i, p in enumerate(presence) if m in p and len(p) > 1]
        assert out[m]["index"].tolist() == bound and out[m]["z"].shape[0] == len(bound)
        assert len(bound) < batch[m]["index"].shape[0] == out[m]["pred"].shape[0]  # every row is still predicted
    loss, logs = MultiJEPAObjective(tiny_cfg.loss, model.modalities)(out, model.logit_scale)
    loss.backward()


def test_instance_norm_standardises_each_feature_over_a_samples_valid_tokens():
    from multijepa.model import instance_norm

    torch.manual_seed(0)
    t = torch.randn(3, 7, 5) * 4 + torch.randn(3, 1, 5) * 10  # a large per-sample offset: a global code
    valid = torch.ones(3, 7, dtype=torch.bool)
    valid[1, 5:] = False  # padding is neither counted nor standardised into the rest
    out = instance_norm(t, valid)
    for b in range(3):
        n = int(valid[b].sum())
        x = t[b, :n]
        expected = (x - x.mean(0)) / (x.var(0, unbiased=False) + 1e-5).sqrt()
        assert torch.allclose(out[b, :n], expected, atol=1e-5)
    changed = t.clone()
    changed[1, 5:] = 1e6  # what padding holds does not reach the valid tokens
    assert torch.allclose(instance_norm(changed, valid)[1, :5], out[1, :5], atol=1e-5)


def test_instance_target_norm_removes_what_all_tokens_share(tiny_cfg):
    """A feature every token of a sample carries equally cannot be a target under `instance`."""
    from modalities.encoder import gather_tokens
    from multijepa.model import instance_norm

    tiny_cfg.model.target_norm = "instance"
    torch.manual_seed(0)
    model = create_model(tiny_cfg, vocab_size=VOCAB).train()
    batch = make_batch(tiny_cfg, 8)
    out = model(batch)
    with torch.no_grad():
        t, _ = model.target_encoders["image"](batch["image"]["x"])
        t = torch.nn.functional.layer_norm(instance_norm(t), t.shape[-1:])
    assert torch.allclose(out["image"]["target"], gather_tokens(t, batch["image"]["targets"].flatten(1)), atol=1e-5)
    with torch.no_grad():
        shifted = instance_norm(t + 3.0 * torch.randn(t.shape[0], 1, t.shape[2]))
    assert torch.allclose(shifted, instance_norm(t), atol=1e-4)


@pytest.mark.parametrize("kind", ["transformer", "mamba"])
def test_data2vec_targets_average_the_last_blocks_each_normalised(tiny_cfg, kind):
    """model.target_layers=2: the targets are layer_norm(mean of instance_norm(block output)) over
    the target encoder's last two blocks, read back in the caller's token order (a Mamba audio
    encoder scans in time order)."""
    from modalities.encoder import gather_tokens
    from multijepa.model import instance_norm

    tiny_cfg.model.target_layers = 2
    tiny_cfg.model.audio.encoder.kind = kind
    torch.manual_seed(0)
    model = create_model(tiny_cfg, vocab_size=VOCAB).train()
    batch = make_batch(tiny_cfg, 8)
    out = model(batch)
    for m in ("image", "audio"):
        enc = model.target_encoders[m]
        with torch.no_grad():
            h = enc.tokens(batch[m]["x"])[0]
            blocks = []
            order = enc._scan_order(h, None, None) if enc.scans else None
            h = h if order is None else gather_tokens(h, order)
            for blk in enc.blocks:
                h = blk(h)
                blocks.append(h if order is None else torch.empty_like(h).scatter_(1, order[..., None].expand_as(h), h))
            t = torch.stack([instance_norm(b) for b in blocks[-2:]]).mean(0)
            t = torch.nn.functional.layer_norm(t, t.shape[-1:])
        assert torch.allclose(out[m]["target"], gather_tokens(t, batch[m]["targets"].flatten(1)), atol=1e-4), m
    out["image"]["pred"].sum().backward()  # the predictions still train the online encoder
    with pytest.raises(ConfigError, match="target_layers=2 averages our encoders"):
        load_config("tiny", ["model.target_layers=2", "model.image.pretrained=timm:vit_tiny_patch16_224"])


def test_position_centre_removes_what_every_sample_carries_at_a_place():
    from multijepa.model import position_centre

    torch.manual_seed(0)
    place = torch.randn(1, 6, 4) * 10  # a mel band's typical level: the same in every sample
    t = torch.randn(5, 6, 4) + place
    valid = torch.ones(5, 6, dtype=torch.bool)
    valid[2, 4:] = False  # padding counts in no mean
    out = position_centre(t, valid)
    for n in range(6):
        rows = valid[:, n]
        assert torch.allclose(out[rows, n], t[rows, n] - t[rows, n].mean(0), atol=1e-5)
    assert torch.allclose(position_centre(t - place, valid)[valid], out[valid], atol=1e-4)
    changed = t.clone()
    changed[2, 4:] = 1e6
    assert torch.allclose(position_centre(changed, valid)[valid], out[valid], atol=1e-5)


def test_batch_statistic_terms_do_not_grow_with_gradient_accumulation():
    """A step of two micro-batches that are the same 8 rows has the gradient of one step of those 8
    rows: SIGReg and the variance hinge count each micro-batch by its share of the step's rows, as
    the prediction and binding terms do (SIGReg draws the same directions for every micro-batch)."""
    from multijepa.train.builder import build_training

    cfg = load_config("tiny", ["loss.variance_weight=1", "loss.sigreg_weight=1", "optim.grad_clip=1e9"])
    norms = []
    for micro in (1, 2):
        torch.manual_seed(0)
        training = build_training(cfg, torch.device("cpu"), vocab_size=VOCAB)
        training.model.train()
        result = training.step([make_batch(cfg, 8)] * micro, 0)
        assert result.logs["sigreg"] > 0 and result.logs["variance"] > 0
        norms.append(float(result.grad_norm))
    assert norms[1] == pytest.approx(norms[0], rel=1e-5)
