"""The cheap objective: FLIP's masked binding, prediction switched on late (`loss.pred_start`),
pair-aware batching, and the steps a batch without pairs makes no-ops."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from multijepa.cli import main
from multijepa.config import load_config
from multijepa.data.collate import MultiModalCollator, build_bind_maskers, build_maskers
from multijepa.data.loader import open_sources
from multijepa.data.pairs import pair_mask, with_pair_floor
from multijepa.data.sampler import MixedBatchSampler
from multijepa.model import EmbeddingHead, create_model
from multijepa.objective import MultiJEPAObjective
from multijepa.train.run_log import _shared_space_warnings
from tests.conftest import VOCAB, make_items

MIXED = [{"image", "text", "audio"}, {"image"}, {"text"}, {"audio"}, {"image", "text"}]


def _batch(cfg, n=10, presence=None):
    collate = MultiModalCollator(cfg.model.modalities, build_maskers(cfg.model), seed=0,
                                 bind_maskers=build_bind_maskers(cfg.model))
    return collate(make_items(cfg, n, presence))


def _count_calls(modules: dict) -> dict:
    """{name: [tokens seen per call]} filled by forward hooks on each module."""
    calls = {name: [] for name in modules}
    for name, mod in modules.items():
        def hook(_, args, kwargs, _out, name=name):
            keep = kwargs.get("keep")
            calls[name].append(None if keep is None else keep.shape[1])
        mod.register_forward_hook(hook, with_kwargs=True)
    return calls


def _flip_cfg(*overrides):
    return load_config("tiny", ["model.image.bind_mask_ratio=0.5", "model.audio.bind_mask_ratio=0.5", *overrides])


def test_the_keep_masker_keeps_the_same_share_of_every_row_from_its_own_generator():
    from modalities.masking import RandomKeepMasker

    masker = RandomKeepMasker(16, 0.75)
    keep = masker(5, torch.Generator().manual_seed(0), row_keys=[10, 11, 12, 13, 14])
    assert keep.shape == (5, 4) and bool((keep.diff(dim=1) > 0).all()) and int(keep.max()) < 16
    again = masker(2, torch.Generator().manual_seed(0), row_keys=[12, 14])  # another split of the batch
    assert torch.equal(again, keep[[2, 4]])
    assert len({tuple(r) for r in keep.tolist()}) == 5  # rows differ


def test_flip_binding_embeds_the_keep_set_in_one_forward_per_modality():
    cfg = _flip_cfg("loss.objective=clip")
    torch.manual_seed(0)
    model = create_model(cfg, vocab_size=VOCAB).train()
    assert model.predictors is None and model.target_encoders is None
    batch = _batch(cfg)
    calls = _count_calls(dict(model.encoders))
    out = model(batch)
    grid = (cfg.model.image.size // cfg.model.image.patch) ** 2
    assert calls["image"] == [grid // 2] and calls["audio"] == [batch["audio"]["bind_keep"].shape[1]]
    assert calls["text"] == [None]  # whole captions
    loss, _ = MultiJEPAObjective(cfg.loss, model.modalities)(out, model.logit_scale)
    loss.backward()
    # what binding saw is the keep set; evaluation embeds the whole image
    model.eval()
    feats, ok = model.encoders["image"](batch["image"]["x"], keep=batch["image"]["bind_keep"])
    assert torch.allclose(model(batch)["image"]["z"], model.heads["image"](feats, ok), atol=1e-5)
    assert not torch.allclose(model.encode("image", batch["image"]["x"]), model(batch)["image"]["z"], atol=1e-3)


@pytest.mark.parametrize("kind", ["blocks", "random"])
def test_while_predicting_the_prediction_context_also_serves_binding(kind):
    """Images and audio: one online forward with gradients, of the prediction context, serves both
    terms (a second, of the whole input without gradients, only feeds the heads' running statistics);
    text (no FLIP masking) binds its whole caption in a second forward of the bound rows. The
    context is I-JEPA's blocks or (kind random) FLIP's random keep set, whose dropped patches are
    the targets."""
    cfg = _flip_cfg("loss.bind_input=context", f"model.image.mask.kind={kind}", f"model.audio.mask.kind={kind}",
                    "model.image.mask.random_ratio=0.75")
    torch.manual_seed(0)
    model = create_model(cfg, vocab_size=VOCAB).train()
    assert model.predicting
    batch = _batch(cfg)
    calls = _count_calls(dict(model.encoders))
    graded = []
    model.encoders["image"].register_forward_hook(lambda *_: graded.append(torch.is_grad_enabled()))
    out = model(batch)
    assert calls["image"] == [batch["image"]["context"].shape[1], None] and graded == [True, False]
    assert calls["audio"] == [batch["audio"]["context"].shape[1], None]
    assert calls["text"] == [batch["text"]["context"].shape[1], None]
    assert "pred" in out["image"] and "pred" in out["text"]
    if kind == "random":
        grid = (cfg.model.image.size // cfg.model.image.patch) ** 2
        assert batch["image"]["context"].shape[1] == grid // 4 and batch["image"]["targets"].shape[1:] == (1, grid - grid // 4)
        assert out["image"]["pred"].shape[:2] == out["image"]["target"].shape[:2] == (batch["image"]["x"].shape[0], grid - grid // 4)
    loss, _ = MultiJEPAObjective(cfg.loss, model.modalities)(out, model.logit_scale)
    loss.backward()
    assert any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in model.encoders["image"].parameters())


@pytest.mark.parametrize("target", ["ema", "sigreg"])
def test_without_its_own_context_a_modality_is_predicted_from_the_others_whole_inputs(target):
    """`model.predictor.own_context=false`: one online forward per modality, of what binding sees (the
    whole input), serves binding and is the memory the other modalities' predictors read; no masked
    forward runs, only the rows with another modality are predicted, and with `model.target=sigreg` no
    other forward runs at all (the targets are that forward, detached)."""
    extra = ["model.target=sigreg", "loss.sigreg_weight=0.02"] if target == "sigreg" else []
    cfg = load_config("tiny", ["model.predictor.own_context=false", *extra])
    torch.manual_seed(0)
    model = create_model(cfg, vocab_size=VOCAB).train()
    assert model.predicting
    batch = _batch(cfg, n=10, presence=MIXED * 2)
    calls = _count_calls(dict(model.encoders))
    targets = _count_calls(dict(model.target_encoders)) if target == "ema" else {}
    out = model(batch)
    for m in model.modalities:
        assert calls[m] == [None]  # the whole input, once
        entry = batch[m]
        others = torch.cat([batch[o]["index"] for o in model.modalities if o != m])
        paired = int(torch.isin(entry["index"], others).sum())
        assert 0 < paired < entry["index"].shape[0]  # the mixture has rows alone
        assert out[m]["pred"].shape[:2] == out[m]["target"].shape[:2] == (paired, entry["targets"].flatten(1).shape[1])
        if target == "ema":
            assert targets[m] == [None]
        else:  # the targets are binding's forward, detached
            assert not out[m]["target"].requires_grad
    loss, _ = MultiJEPAObjective(cfg.loss, model.modalities)(out, model.logit_scale)
    loss.backward()
    # an image's prediction reaches the other modalities' encoders through the memory, not its own
    model.zero_grad()
    out = model(batch)
    out["image"]["pred"].square().mean().backward()
    assert any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in model.encoders["text"].parameters())
    assert all(p.grad is None or not bool(p.grad.abs().sum() > 0) for p in model.encoders["image"].parameters())


def test_own_context_false_needs_cross_attention():
    from multijepa.config import ConfigError

    with pytest.raises(ConfigError, match="own_context=false"):
        load_config("tiny", ["model.predictor.own_context=false", "model.predictor.cross_attention=false"])


@pytest.mark.parametrize("bind_input", ["context", "full"])
def test_the_heads_running_statistics_follow_whole_inputs_while_binding_sees_the_context(bind_input):
    """Evaluation normalises whole inputs with the heads' running statistics: a step that binds the
    prediction context must move them to the statistics of the online encoder's whole inputs, not to
    those of the context it trained on, while the training forward normalises with the context's own
    batch statistics."""
    cfg = _flip_cfg("loss.pred_start=0.5", f"loss.bind_input={bind_input}")
    torch.manual_seed(0)
    model = create_model(cfg, vocab_size=VOCAB).train()
    model.start_prediction()
    for head in model.heads.values():
        head.norm.momentum = 1.0  # the running statistics become this batch's
    batch = _batch(cfg, n=12)
    out = model(batch)
    for m in ("image", "audio"):  # both bind masked views with "context"; text binds whole captions
        entry = batch[m]
        whole = model.features(m, entry["x"])  # (B_m, D) pooled whole-input features
        bound = whole[torch.isin(entry["index"], torch.cat([batch[o]["index"] for o in model.modalities if o != m]))]
        seen = whole if bind_input == "context" else bound  # the whole-input rows behind the statistics
        norm = model.heads[m].norm
        assert torch.allclose(norm.running_mean, seen.mean(0), atol=1e-4)
        assert torch.allclose(norm.running_var, seen.var(0), atol=1e-3, rtol=1e-3)
        if bind_input == "context":  # training normalised the context's pooled features with their own statistics
            pooled = EmbeddingHead.pool(*model.encoders[m](entry["x"], keep=entry["context"]))  # (B_m, D)
            assert not torch.allclose(pooled.mean(0), seen.mean(0), atol=1e-2)
            x = (pooled - pooled.mean(0)) * torch.rsqrt(pooled.var(0, unbiased=False) + norm.eps) * norm.weight + norm.bias
            assert torch.allclose(out[m]["z"], F.normalize(model.heads[m].proj(x), dim=-1), atol=1e-4)


def test_before_pred_start_no_target_or_predictor_runs_and_the_switch_copies_the_online_encoders():
    cfg = _flip_cfg("loss.pred_start=0.5", "loss.bind_input=context")
    torch.manual_seed(0)
    model = create_model(cfg, vocab_size=VOCAB).train()
    assert not model.predicting and not bool(model.prediction_on)
    calls = _count_calls({**{f"t/{m}": e for m, e in model.target_encoders.items()},
                          **{f"p/{m}": p for m, p in model.predictors.items()}})
    batch = _batch(cfg)
    out = model(batch)
    assert all(not c for c in calls.values()), calls
    assert all("pred" not in o for o in out.values())
    # the optimizer keeps the predictors in their own groups, at lr 0 until the phase starts
    groups = model.param_groups(cfg.optim)
    pred_ids = {id(p) for p in model.predictors.parameters()}
    assert all(g.get("phase") == "pred" for g in groups if any(id(p) in pred_ids for p in g["params"]))
    # a model evaluated before the switch reads its online encoders, not the untrained copies
    assert model.feature_encoder("image") is model.encoders["image"]
    online, target = next(model.encoders["image"].parameters()), next(model.target_encoders["image"].parameters())
    with torch.no_grad():
        online.add_(1.0)  # the online encoder has moved on
    assert not torch.equal(online, target)
    model.start_prediction()
    for m, target in model.target_encoders.items():
        for a, b in zip(target.state_dict().values(), model.encoders[m].state_dict().values()):
            assert torch.equal(a, b)
    assert model.predicting and model.feature_encoder("image") is model.target_encoders["image"]
    out = model(batch)
    assert all("pred" in o for o in out.values())
    # the phase travels with the weights
    again = create_model(cfg, vocab_size=VOCAB)
    assert not again.predicting
    again.load_state_dict(model.state_dict())
    assert again.predicting


def _pretrain(demo, out, *overrides, resume=False):
    args = ["pretrain", "--config", "tiny", "--data", str(demo / "train.jsonl"), "--out", str(out), "--no-progress",
            *(["--resume"] if resume else []), "train.threads=1", *overrides]
    assert main(args) == 0


def _weights(run, step):
    return load_file(str(run / "checkpoints" / f"step_{step:08d}" / "model.safetensors"))


LATE = ["train.max_steps=8", "loss.pred_start=0.5", "loss.pred_warmup_steps=2", "model.image.bind_mask_ratio=0.5",
        "model.audio.bind_mask_ratio=0.5", "loss.bind_input=context", "train.ckpt_every=2", "train.keep_checkpoints=10"]


@pytest.mark.parametrize("cut", [2, 6])  # a checkpoint before the switch (at step 4), one after it
def test_a_run_resumed_across_the_switch_equals_an_uninterrupted_one(demo, tmp_path, cut):
    ref = tmp_path / "ref"
    _pretrain(demo, ref, *LATE)
    logged = [json.loads(line) for line in (ref / "metrics.jsonl").read_text().splitlines()]
    assert [r["predicting"] for r in logged] == [0.0, 0.0, 1.0, 1.0]  # after steps 2, 4, 6, 8: the switch after step 4
    assert "pred/image" not in logged[0] and logged[-1]["pred/image"] > 0
    early, at = _weights(ref, 2), _weights(ref, 4)
    assert not bool(early["prediction_on"]) and not bool(at["prediction_on"]) and bool(_weights(ref, 6)["prediction_on"])
    targets = [k for k in early if k.startswith("target_encoders.")]
    assert targets and all(torch.equal(early[k], at[k]) for k in targets)  # untouched before the switch

    run = tmp_path / "cut"
    _pretrain(demo, run, *LATE)
    for ckpt in (run / "checkpoints").iterdir():  # as if killed right after step `cut`'s checkpoint
        if int(ckpt.name.split("_")[1]) > cut:
            for f in ckpt.iterdir():
                f.unlink()
            ckpt.rmdir()
    _pretrain(demo, run, *LATE, resume=True)
    resumed, reference = _weights(run, 8), _weights(ref, 8)
    assert resumed.keys() == reference.keys()
    for k in reference:
        assert torch.allclose(resumed[k].float(), reference[k].float(), atol=1e-6), k


def _mixture(demo, paired: int) -> "Path":  # noqa: F821
    """The demo's training rows as a natural mixture: the first `paired` rows whole, every other row
    cut into three single-modality rows (one manifest, as a user would have it)."""
    rows = [json.loads(line) for line in (demo / "train.jsonl").read_text().splitlines()]
    out = []
    for i, r in enumerate(rows):
        if i < paired:
            out.append(r)
        else:
            out += [{**r, "text": None, "audio": None}, {**r, "image": None, "audio": None},
                    {**r, "image": None, "text": None}]
    path = demo / f"mixture_{paired}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in out))
    return path


def test_one_manifest_of_few_pairs_is_drawn_with_half_pairs(demo):
    path = _mixture(demo, 6)  # 6 pairs, 126 single rows: 4.5 % pairs
    cfg = load_config("tiny", [f"data.train={path}"])
    sources = open_sources(cfg)
    mask = pair_mask(sources[0])
    assert sum(mask) == 6 and mask[:6] == [True] * 6 and len(mask) == 6 + 3 * 42
    parts = with_pair_floor(sources, cfg.data.min_pair_fraction)
    assert [p.name for p in parts] == ["mixture_6:pairs", "mixture_6:single"]
    assert [p.weight for p in parts] == [0.5, 0.5] and parts[0].row_ids == list(range(6))
    assert parts[1].row_ids[:3] == [6, 7, 8]  # rows keep the numbers of the file
    sampler = MixedBatchSampler([len(p.ds) for p in parts], [p.weight for p in parts], 8, seed=0, stop=20)
    for keys in sampler:
        assert 3 <= sum(src == 0 for _, _, src, _ in keys) <= 5  # half of the 8 slots, give or take one
    assert with_pair_floor(sources, 0.0) == sources  # the switch off
    assert with_pair_floor(sources, 0.04) == sources  # already enough pairs


def test_a_bad_row_of_a_part_is_named_by_its_row_in_the_file(demo, tmp_path, capsys):
    path = _mixture(demo, 6)
    rows = path.read_text().splitlines()
    bad = json.loads(rows[20])
    bad.update(image="images/nowhere.png", text=None, audio=None)
    rows[20] = json.dumps(bad)
    path.write_text("\n".join(rows) + "\n")
    code = main(["pretrain", "--config", "tiny", "--data", str(path), "--out", str(tmp_path / "r"), "--no-progress",
                 "train.max_steps=20"])
    err = capsys.readouterr().err
    assert code == 1 and "row 20" in err and "nowhere.png" in err and "Traceback" not in err


@pytest.mark.parametrize("recipe", ["loss.objective=clip", "model.predictor.own_context=false"])
def test_a_run_that_needs_pairs_on_a_mixture_whose_batches_sometimes_hold_none_skips_and_counts_them(
        recipe, demo, tmp_path, capsys):
    """The CLIP objective, or prediction from the other modalities alone, on one manifest of 20 pairs in
    104 rows, drawn as it comes: about half the batches of 8 hold fewer than two pairs. Such a step is
    a counted no-op (it used to stop with 'element 0 of tensors does not require grad')."""
    path = _mixture(demo, 20)
    run = tmp_path / "clip"
    assert main(["pretrain", "--config", "tiny", "--data", str(path), "--out", str(run), "--no-progress", "train.threads=1",
                 recipe, "data.min_pair_fraction=0", "train.max_steps=12"]) == 0
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert logged and 0 < max(r.get("no_pair_steps", 0) for r in logged) < 12  # some steps learned, some were skipped
    assert "step(s) drew no pair to bind and were skipped" in capsys.readouterr().out
    assert (run / "checkpoints" / "step_00000012").is_dir()


def test_a_collapsing_shared_space_is_flagged_in_the_record_and_the_log():
    peaks: dict = {}
    assert not _shared_space_warnings({"step": 10, "rankme/image": 14.0, "rankme/text": 13.0}, peaks, 0.35)
    rec = {"step": 200, "rankme/image": 3.1, "rankme/text": 9.0, "rankme/audio": float("nan")}
    lines = _shared_space_warnings(rec, peaks, 0.35)
    assert rec["collapse/shared/image"] == 1.0 and "collapse/shared/text" not in rec  # 9 of 13 is healthy
    assert len(lines) == 1 and "image" in lines[0] and "RankMe 3.1, below 0.35 of its highest, 14.0" in lines[0]
    assert peaks == {"image": 14.0, "text": 13.0}


def test_a_run_whose_shared_space_collapses_says_so_while_it_trains(demo, tmp_path, capsys, monkeypatch):
    """The warning reaches the log and metrics.jsonl while the run trains (and the run goes on). The
    RankMe a tiny run measures is stood in for by a collapse, 10 then 1 (the demo's own collapse,
    0.12-0.23 of the peak without pair-aware batching, is in docs/results/objective.md)."""
    from multijepa.train import run_log

    values = iter([10.0] * 3 + [1.0] * 1000)  # the first log record's three modalities, then collapsed
    monkeypatch.setattr(run_log, "rankme", lambda z: next(values))
    run = tmp_path / "collapsing"
    _pretrain(demo, run, "train.max_steps=6")
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [sorted(k for k in r if k.startswith("collapse/shared/")) for r in logged] == [
        [], *[["collapse/shared/audio", "collapse/shared/image", "collapse/shared/text"]] * 2]
    out = capsys.readouterr().out
    assert "step 4: the shared embeddings of image are collapsing (RankMe 1.0, below 0.35 of its highest, 10.0" in out
    assert (run / "checkpoints" / "step_00000006").is_dir()
