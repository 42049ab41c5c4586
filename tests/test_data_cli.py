"""`multijepa tokenizer train` and `multijepa data shards` from the command line."""

from __future__ import annotations

import tarfile

from modalities.text import TextTokenizer
from multijepa.cli import main
from multijepa.config import load_config
from multijepa.train.loop import pretrain
from tests.test_sources import make_manifest


def test_tokenizer_train_and_use_it_in_a_run(tmp_path, capsys):
    manifest = make_manifest(tmp_path / "data", 12, ("image", "text"))
    out = tmp_path / "tok" / "captions.model"
    assert main(["tokenizer", "train", "--data", str(manifest), "--vocab-size", "40", "--out", str(out)]) == 0
    assert "trained on 12 captions" in capsys.readouterr().out
    tok = TextTokenizer.load(out, 16)
    ids, lengths = tok(["red green circle left"])
    assert int(lengths[0]) > 2 and tok.vocab_size <= 40
    cfg = load_config("tiny", [f"data.train={manifest}", f"model.text.tokenizer_file={out}", "train.max_steps=2",
                               "data.batch_size=4", "model.modalities=[image, text]"])
    pretrain(cfg, tmp_path / "run", progress=False)
    assert (tmp_path / "run" / "tokenizer.model").read_bytes() == out.read_bytes()


def test_tokenizer_train_without_captions_fails_clearly(tmp_path, capsys):
    manifest = make_manifest(tmp_path / "data", 3, ("image",))
    assert main(["tokenizer", "train", "--data", str(manifest), "--out", str(tmp_path / "t.model")]) == 1
    assert "none of the columns 'text'" in capsys.readouterr().err


def test_data_shards_writes_webdataset_tars(tmp_path, capsys):
    manifest = make_manifest(tmp_path / "data", 5, ("image", "text", "audio"))
    assert main(["data", "shards", str(manifest), "--out", str(tmp_path / "wds"), "--shard-size", "2",
                 "--modalities", "image,text"]) == 0
    shards = sorted((tmp_path / "wds").glob("*.tar"))
    assert len(shards) == 3
    with tarfile.open(shards[0]) as tf:
        assert tf.getnames() == ["00000000.png", "00000000.txt", "00000001.png", "00000001.txt"]
