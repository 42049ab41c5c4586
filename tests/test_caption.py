"""Captioning: decoder shapes and causality, the meshed decoder's gates, beam search against
greedy decoding, and train / eval / predict / resume end to end on the tiny config."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from fusion.decoder import CaptionDecoder, MemoryEncoder
from multijepa.caption.config import load_caption_config
from multijepa.caption.decode import beam_search, sample, sequence_logprob
from multijepa.caption.model import CaptionModel, load_captioner
from multijepa.cli import main
from multijepa.config import load_config
from multijepa.model import load_run


@pytest.mark.parametrize("kind", ["transformer", "meshed"])
def test_decoder_shapes_and_causality(kind):
    torch.manual_seed(0)
    dec = CaptionDecoder(kind, vocab_size=50, dim=16, depth=2, heads=2, max_len=12, n_memories=3).eval()
    memories = [torch.randn(2, 7, 16) for _ in range(3)]
    ids = torch.randint(0, 50, (2, 9))
    logits = dec(ids, memories)
    assert logits.shape == (2, 9, 50)
    later = ids.clone()
    later[:, 5:] = (ids[:, 5:] + 1) % 50  # change tokens 5.. only
    changed = (dec(later, memories) - logits).abs().amax(-1)  # (2, 9)
    assert torch.all(changed[:, :5] < 1e-5) and torch.all(changed[:, 5:] > 1e-6)  # no position sees a later one


def test_meshed_gates_and_every_memory_layer_get_gradients():
    torch.manual_seed(0)
    enc = MemoryEncoder(16, depth=3, heads=2, memory_slots=4)
    dec = CaptionDecoder("meshed", vocab_size=30, dim=16, depth=2, heads=2, max_len=10, n_memories=3)
    memories = enc(torch.randn(2, 6, 16))
    assert len(memories) == 3
    dec(torch.randint(0, 30, (2, 8)), memories).logsumexp(-1).sum().backward()
    for layer in dec.layers:
        for gate in layer.gates:
            assert gate.weight.grad is not None and gate.weight.grad.abs().sum() > 0
    for layer in enc.layers:
        assert layer.attn.memory.grad is not None and layer.attn.memory.grad.abs().sum() > 0


class _Tok:
    kind, pad_id, bos_id, eos_id, vocab_size = "sentencepiece", 0, 1, 2, 40


def _tiny_model(kind: str = "transformer") -> CaptionModel:
    cfg = load_caption_config("caption_tiny", [f"decoder.kind={kind}"])
    torch.manual_seed(0)
    return CaptionModel(load_config("tiny").model, cfg, "image", _Tok()).eval()


def _greedy(model, x, max_len):
    """Greedy decoding written plainly: argmax, one input at a time."""
    out = []
    for i in range(x.shape[0]):
        memories, valid = model.encode(x[i:i + 1])
        seq = [model.bos_id]
        for _ in range(max_len):
            nxt = int(model.decoder(torch.tensor([seq]), memories, valid)[0, -1].argmax())
            seq.append(nxt)
            if nxt == model.eos_id:
                break
        out.append(seq[1:])
    return out


@pytest.mark.parametrize("kind", ["transformer", "meshed"])
def test_beam_one_is_greedy_and_a_wider_beam_scores_at_least_as_well(kind):
    model = _tiny_model(kind)
    x = torch.randn(3, 3, 16, 16)
    got = beam_search(model, x, beam=1, max_len=8)
    for row, want in zip(got.tolist(), _greedy(model, x, 8)):
        assert row[: len(want)] == want and all(t == model.pad_id for t in row[len(want):])

    def logprob(seqs):  # summed log-probability of each decoded caption
        memories, valid = model.encode(x)
        full = torch.cat([torch.full((3, 1), model.bos_id), seqs], 1)
        logp = model.decoder(full[:, :-1], memories, valid).log_softmax(-1).gather(2, full[:, 1:, None])[..., 0]
        return (logp * (full[:, 1:] != model.pad_id)).sum(1)

    wide = beam_search(model, x, beam=4, max_len=8, length_penalty=0.0)
    assert torch.all(logprob(wide) >= logprob(got) - 1e-5)


def test_no_repeat_ngram_and_sampling():
    model = _tiny_model()
    x = torch.randn(2, 3, 16, 16)
    ids = beam_search(model, x, beam=2, max_len=12, no_repeat_ngram=2)
    for row in ids.tolist():
        row = [t for t in row if t not in (model.pad_id, model.eos_id)]
        pairs = list(zip(row, row[1:]))
        assert len(pairs) == len(set(pairs)), row



def test_sampled_captions_are_scored_in_one_pass_as_the_loop_would():
    """SCST's log p(sample): one teacher-forced pass equals the decoding loop's per-step sum, up to
    and with the first eos (padding after it counts nothing), and its gradient reaches the encoder."""
    model = _tiny_model().train()
    x = torch.randn(2, 3, 16, 16)
    ids = sample(model, x, n=3, max_len=6, generator=torch.Generator().manual_seed(0))
    assert ids.shape[0] == 6 and not ids.requires_grad
    assert torch.equal(ids, sample(model, x, 3, 6, torch.Generator().manual_seed(0)))  # seeded: repeatable
    ids[0, :3] = torch.tensor([7, model.eos_id, model.pad_id])  # one that ends early, for sure
    ids[0, 3:] = model.pad_id
    logp = sequence_logprob(model, x, ids, n=3)
    memories, valid = model.encode(x)
    memories = [m.repeat_interleave(3, 0) for m in memories]
    ref, done = torch.zeros(6), torch.zeros(6, dtype=torch.bool)
    for t in range(ids.shape[1]):
        prefix = torch.cat([torch.full((6, 1), model.bos_id), ids[:, :t]], 1)
        step = model.decoder(prefix, memories, valid)[:, -1].log_softmax(-1).gather(1, ids[:, t : t + 1]).squeeze(1)
        ref = ref + torch.where(done, 0.0, step)
        done = done | (ids[:, t] == model.eos_id)
    assert torch.allclose(logp, ref, atol=1e-5) and torch.all(logp <= 0)
    logp.sum().backward()
    assert all(p.grad is not None for p in model.encoder.parameters() if p.requires_grad)


def test_train_eval_predict_on_the_tiny_config(run, demo, tmp_path, capsys):
    out = tmp_path / "cap"
    assert main(["caption", "train", "--checkpoint", str(run), "--data", str(demo / "train.jsonl"), "--config",
                 "caption_tiny", "--no-progress", "--out", str(out), "--eval-data", str(demo / "test.jsonl")]) == 0
    scores = json.loads((out / "eval.json").read_text())
    assert scores["n"] == 24 and 0 <= scores["CIDEr-D"] <= 10 and set(scores) >= {"BLEU-4", "ROUGE-L"}
    assert not (out / "checkpoints").exists()

    assert main(["caption", "eval", "--checkpoint", str(out), "--data", str(demo / "test.jsonl"), "--no-progress",
                 "--json", str(tmp_path / "e.json"), "--predictions", str(tmp_path / "p.jsonl")]) == 0
    assert json.loads((tmp_path / "e.json").read_text())["CIDEr-D"] == pytest.approx(scores["CIDEr-D"])
    lines = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert len(lines) == 24 and lines[0]["references"] and isinstance(lines[0]["caption"], str)
    capsys.readouterr()
    image = str(demo / "images" / "test_00000.png")
    assert main(["caption", "predict", "--checkpoint", str(out), "--image", image, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"image": image, "caption": lines[0]["caption"]}
    assert main(["caption", "predict", "--checkpoint", str(out), "--audio", str(demo / "audio" / "test_00000.wav")]) == 2
    assert "give --image" in capsys.readouterr().err


def test_a_killed_run_resumes_to_the_same_weights_through_scst(run, demo, tmp_path, monkeypatch):
    import multijepa.caption.train as caption_train

    cfg = load_caption_config("caption_tiny", ["decoder.kind=meshed", "train.max_steps=4", "train.scst_steps=3",
                                               "train.ckpt_every=2", "train.threads=1"])
    train = demo / "train.jsonl"
    caption_train.train_caption(run, train, tmp_path / "straight", cfg, "audio", progress=False)
    real = caption_train.save_checkpoint

    def dies_after_step_6(out, step, *a, **k):  # inside self-critical training
        real(out, step, *a, **k)
        if step == 6:
            raise KeyboardInterrupt

    monkeypatch.setattr(caption_train, "save_checkpoint", dies_after_step_6)
    with pytest.raises(KeyboardInterrupt):
        caption_train.train_caption(run, train, tmp_path / "killed", cfg, "audio", progress=False)
    monkeypatch.undo()
    with pytest.raises(FileExistsError, match="--resume"):
        caption_train.train_caption(run, train, tmp_path / "killed", cfg, "audio", progress=False)
    caption_train.train_caption(run, train, tmp_path / "killed", cfg, "audio", resume=True, progress=False)
    a, b = load_file(str(tmp_path / "straight" / "model.safetensors")), load_file(str(tmp_path / "killed" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    logged = [json.loads(line) for line in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged] == [2, 4, 6, 7] and "reward" in logged[-1]
    assert load_captioner(tmp_path / "killed").modality == "audio"


def test_from_scratch_keeps_the_shapes_but_not_the_weights(run, demo, tmp_path):
    cfg = load_caption_config("caption_tiny", ["train.max_steps=1", "optim.lr=0"])
    from multijepa.caption.train import train_caption

    train_caption(run, demo / "train.jsonl", tmp_path / "pre", cfg, "image", progress=False)
    train_caption(run, demo / "train.jsonl", tmp_path / "scratch", cfg, "image", from_scratch=True, progress=False)
    pre, scratch = load_file(str(tmp_path / "pre" / "model.safetensors")), load_file(str(tmp_path / "scratch" / "model.safetensors"))
    online = load_run(run).feature_encoder("image").state_dict()
    enc = [k for k in pre if k.startswith("encoder.")]
    assert all(torch.equal(pre[k], online[k.removeprefix("encoder.")]) for k in enc)
    assert not all(torch.equal(scratch[k], pre[k]) for k in enc)


def test_decoding_must_fit_the_decoder():
    from multijepa.config import ConfigError

    with pytest.raises(ConfigError, match="decode.max_len 24 must be below decoder.max_len 24"):
        load_caption_config("caption_tiny", ["decode.max_len=24"])
    with pytest.raises(ConfigError, match="decoder.kind"):
        load_caption_config("caption_tiny", ["decoder.kind=lstm"])


def test_references_group_rows_and_a_blank_caption_is_named_in_training(run, demo, tmp_path, capsys):
    rows = [json.loads(line) for line in (demo / "test.jsonl").read_text().splitlines()][:4]
    extra = {**rows[0], "text": "another caption of the first scene"}
    rows[0] = {**rows[0], "text": " "}  # blank: no reference, but the image is still captioned
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("\n".join(json.dumps({**r, "image": str(demo / r["image"])}) for r in [*rows, extra]) + "\n")
    from multijepa.caption.data import CaptionDataset

    pretrained = load_run(run)
    ds = CaptionDataset(manifest, pretrained.processors, "image", pretrained.processors.tokenizer, train=False)
    refs = ds.references()
    assert len(ds.first_rows()) == 4 and refs[str(demo / rows[0]["image"])] == ["another caption of the first scene"]
    out = tmp_path / "cap"
    code = main(["caption", "train", "--checkpoint", str(run), "--data", str(manifest), "--config", "caption_tiny",
                 "--no-progress", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 1 and "row 0" in err and "blank" in err and len(err.strip().splitlines()) == 1
