"""Sources through `datasets`, weighted mixing, streaming and its resume."""

from __future__ import annotations

import io
import json
import tarfile
from collections import Counter
from pathlib import Path

import datasets
import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from modalities.errors import DataError
from multijepa.checkpoint import latest_checkpoint, load_train_state
from multijepa.config import SourceConfig, load_config
from multijepa.data.dataset import PairedDataset
from multijepa.data.loader import build_train_data, open_sources
from multijepa.data.sampler import MixedBatchSampler, slot_sources
from multijepa.data.shards import write_shards
from multijepa.data.sources import expand_braces, open_source
from multijepa.processors import Processors, build_tokenizer
from multijepa.train.loop import pretrain

WORDS = ["red", "green", "blue", "circle", "square", "left", "right", "top", "bottom", "large", "small"]


def _png(path: Path, i: int) -> None:
    Image.new("RGB", (12, 12), (i * 37 % 256, i * 91 % 256, 50)).save(path)


def _wav(path: Path, i: int) -> None:
    t = np.arange(8000) / 16000
    sf.write(path, (0.3 * np.sin(2 * np.pi * (200 + 20 * i) * t)).astype(np.float32), 16000)


def make_manifest(root: Path, n: int, mods=("image", "text", "audio"), name="pairs") -> Path:
    """n rows; `label` is a unique id per row so tests can tell which rows a batch held."""
    (root / "media").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        row: dict = {"label": f"{name}-{i}"}
        if "image" in mods:
            _png(root / "media" / f"{name}_{i}.png", i)
            row["image"] = f"media/{name}_{i}.png"
        if "audio" in mods:
            _wav(root / "media" / f"{name}_{i}.wav", i)
            row["audio"] = f"media/{name}_{i}.wav"
        if "text" in mods:
            row["text"] = " ".join(WORDS[(i + k) % len(WORDS)] for k in range(4))
        rows.append(row)
    path = root / f"{name}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def data_root(tmp_path) -> Path:
    return tmp_path / "data"


def _cfg(overrides=()):
    return load_config("tiny", ["data.batch_size=4", *overrides])


def _labels(batch) -> list[str]:
    return list(batch.get("labels", []))


def _batches(cfg, start=0, position=None, stop=None, tokenizer_dir=None):
    """Labels per batch from the real training pipeline (tokenizer trained on the sources)."""
    if stop is not None:
        cfg.train.max_steps = stop
    sources = open_sources(cfg)
    processors = Processors(cfg.model, None)
    from multijepa.data.loader import training_texts

    processors.tokenizer = build_tokenizer(cfg.model, tokenizer_dir, texts=training_texts(sources))
    data = build_train_data(cfg, sources, processors, start, position)
    out = []
    for batch in data.loader:
        assert "fatal" not in batch, batch.get("fatal")
        out.append(batch)
    return out, data


# ----------------------------------------------------------------------------- formats


def test_expand_braces():
    assert expand_braces("s-{000..002}.tar") == ["s-000.tar", "s-001.tar", "s-002.tar"]
    assert expand_braces("{a,b}/x-{1..2}") == ["a/x-1", "a/x-2", "b/x-1", "b/x-2"]


def test_every_format_reads_the_same_rows(data_root, tmp_path):
    manifest = make_manifest(data_root, 6)
    ds = datasets.load_dataset("json", data_files=str(manifest), split="train")
    ds.to_csv(str(data_root / "pairs.csv"))
    ds.to_parquet(str(data_root / "pairs.parquet"))
    ds.save_to_disk(str(tmp_path / "saved"))  # relative paths resolve against the saved folder
    (tmp_path / "saved" / "media").symlink_to(data_root / "media")
    cfg = _cfg()
    proc = Processors(cfg.model, None)
    ref = None
    for path in (manifest, data_root / "pairs.csv", data_root / "pairs.parquet", tmp_path / "saved"):
        src = open_source(SourceConfig(path=str(path), name="p"), cfg.data.columns, cfg.model.modalities, streaming=False)
        items = [PairedDataset(src, proc)[i] for i in range(6)]
        assert all("error" not in it for it in items), items
        labels = [it["label"] for it in items]
        images = torch.stack([it["image"] for it in items])
        if ref is None:
            ref = (labels, images)
        assert labels == ref[0] and torch.equal(images, ref[1]), path


def test_webdataset_shards_with_mapped_columns(data_root, tmp_path):
    manifest = make_manifest(data_root, 7)
    cfg = _cfg()
    src = open_source(SourceConfig(path=str(manifest), name="m"), cfg.data.columns, ["image", "text", "audio"], streaming=False)
    shards = write_shards(src, tmp_path / "wds", ["image", "audio"], shard_size=3, progress=False)
    assert [p.name for p in shards] == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    for streaming in (False, True):
        wds = open_source(
            SourceConfig(path=str(tmp_path / "wds" / "shard-{000000..000002}.tar"), name="w", columns={"image": "png", "audio": "wav"}),
            cfg.data.columns, cfg.model.modalities, streaming=streaming,
        )
        assert wds.columns == {"image": "png", "audio": "wav"}
        rows = list(wds.ds) if streaming else [wds.ds[i] for i in range(len(wds.ds))]
        assert [r["__key__"] for r in rows] == [f"{i:08d}" for i in range(7)]
        assert isinstance(rows[0]["png"], bytes) and isinstance(rows[0]["wav"], bytes)


def test_datasets_image_and_audio_features_are_decoded_by_us(tmp_path):
    """A saved dataset with `datasets` Image/Audio columns: bytes go to our decoders (no torchcodec)."""
    png, wav = io.BytesIO(), io.BytesIO()
    Image.new("RGB", (10, 10), (200, 10, 10)).save(png, "PNG")
    sf.write(wav, np.zeros(4000, np.float32), 8000, format="FLAC")
    ds = datasets.Dataset.from_dict({
        "img": [{"bytes": png.getvalue(), "path": None}],
        "snd": [{"bytes": wav.getvalue(), "path": None}],
        "caption": ["a red square"],
    }).cast_column("img", datasets.Image()).cast_column("snd", datasets.Audio(decode=False))
    ds.save_to_disk(str(tmp_path / "saved"))
    cfg = _cfg()
    src = open_source(SourceConfig(path=str(tmp_path / "saved"), name="s", columns={"image": "img", "audio": "snd", "text": "caption"}),
                      cfg.data.columns, cfg.model.modalities, streaming=False)
    item = PairedDataset(src, Processors(cfg.model, None))[0]
    assert "error" not in item, item
    assert item["image"].shape == (3, 16, 16) and item["text"] == "a red square"


def test_missing_source_and_columns_are_named(data_root):
    cfg = _cfg()
    with pytest.raises(DataError, match="no such file: .*nope.jsonl"):
        open_source(SourceConfig(path=str(data_root / "nope.jsonl"), name="x"), cfg.data.columns, cfg.model.modalities, False)
    manifest = make_manifest(data_root, 2)
    with pytest.raises(DataError, match="none of the columns 'jpg'"):
        open_source(SourceConfig(path=str(manifest), name="x", columns={"image": "jpg"}), cfg.data.columns, ["image"], False)


# ----------------------------------------------------------------------------- mixing


def test_slot_sources_follow_the_weights_in_every_batch():
    counts = Counter()
    for b in range(200):
        s = slot_sources(0, b, [3.0, 1.0], 16)
        c = torch.bincount(s, minlength=2)
        assert abs(int(c[0]) - 12) <= 1  # 16 * 3/4, give or take one
        counts.update(s.tolist())
    assert counts[0] / (counts[0] + counts[1]) == pytest.approx(0.75, abs=0.005)
    assert torch.equal(slot_sources(5, 7, [1, 2, 3], 8), slot_sources(5, 7, [1, 2, 3], 8))


def test_mixed_sampler_resumes_from_a_saved_position_or_by_replay():
    args = ([10, 7], [2.0, 1.0], 4, 0)
    full = list(MixedBatchSampler(*args, start=0, stop=30))
    s = MixedBatchSampler(*args, start=0, stop=12)
    list(s)
    pos = s.position_after(11)
    resumed = list(MixedBatchSampler(*args, start=12, stop=30, position=pos))
    replayed = list(MixedBatchSampler(*args, start=12, stop=30))
    assert resumed == full[12:] == replayed
    # within an epoch of a source no row repeats; each epoch covers the source
    rows0 = [r for batch in full for (_, _, src, r) in batch if src == 0]
    assert sorted(rows0[:10]) == list(range(10))
    # ranks split each global batch without overlap
    r0 = list(MixedBatchSampler(*args, start=0, stop=5, rank=0, world=2))
    r1 = list(MixedBatchSampler(*args, start=0, stop=5, rank=1, world=2))
    for a, b in zip(r0, r1):
        assert len(a) == len(b) == 4 and not {k[1] for k in a} & {k[1] for k in b}


def test_streaming_gives_the_map_style_batches_when_the_order_is_defined(data_root, tmp_path):
    a = make_manifest(data_root, 9, ("image", "text"), name="it")
    b = make_manifest(data_root, 5, ("image", "audio"), name="ia")
    sources = json.dumps([{"path": str(a), "weight": 2}, {"path": str(b), "weight": 1}])
    got = {}
    for streaming in ("false", "true"):
        cfg = _cfg([f"data.sources={sources}", f"data.streaming={streaming}", "data.shuffle=false"])
        batches, _ = _batches(cfg, stop=8, tokenizer_dir=tmp_path / streaming)
        got[streaming] = [(_labels(x), x["image"]["x"]) for x in batches]
    assert [g[0] for g in got["false"]] == [g[0] for g in got["true"]]
    assert all(torch.equal(x[1], y[1]) for x, y in zip(got["false"], got["true"]))


@pytest.mark.parametrize("workers,shuffle", [(0, "false"), (2, "true")])
def test_streaming_resume_sees_no_row_twice_in_the_epoch(data_root, tmp_path, workers, shuffle):
    """Stop after 4 batches, resume from the positions those batches carried: the rest of the
    epoch holds no row already seen. Unshuffled, the two parts make up the epoch exactly;
    shuffled, rows that sat in a shuffle buffer at the stop are skipped, never repeated."""
    n = 80
    manifest = make_manifest(data_root, n, ("image", "text"))
    shards = write_shards(
        open_source(SourceConfig(path=str(manifest), name="m"), {}, ["image", "text"], False),
        tmp_path / "wds", ["image", "text"], shard_size=5, progress=False,
    )
    for shard in shards:  # the label travels as the `id.txt` field
        _add_labels(shard)
    over = [
        f"data.train={json.dumps(str(tmp_path / 'wds' / 'shard-*.tar'))}",
        "data.columns={image: png, text: txt, label: id.txt}",
        "data.streaming=true", f"data.shuffle={shuffle}", "data.shuffle_buffer=6",
        f"data.num_workers={workers}", "model.modalities=[image, text]",
    ]
    first, _ = _batches(_cfg(over), stop=4, tokenizer_dir=tmp_path / "t")
    streams = {str(b["position"]["stream"]): b["position"] for b in first}  # as the training loop keeps them
    assert len(streams) == max(1, workers)
    # unshuffled: resume to the end of the epoch; shuffled: a stretch that cannot reach it
    stop = n // 4 if shuffle == "false" else 8
    rest, _ = _batches(_cfg(over), start=4, position={"num_streams": max(1, workers), "streams": streams},
                       stop=stop, tokenizer_dir=tmp_path / "t")
    assert all(s["epoch"] == 0 for b in rest for s in b["position"]["sources"])
    seen = [lab for b in first + rest for lab in _labels(b)]
    assert len(seen) == len(set(seen)), Counter(seen).most_common(3)
    if shuffle == "false":
        assert sorted(seen) == sorted(f"{i:08d}" for i in range(n))


def _add_labels(shard: Path) -> None:
    """Add KEY.id.txt = the sample's label (here: its key) to every sample of a shard."""
    with tarfile.open(shard) as tf:
        members = [(m, tf.extractfile(m).read()) for m in tf.getmembers()]
    with tarfile.open(shard, "w") as tf:
        for m, data in members:
            tf.addfile(m, io.BytesIO(data))
            if m.name.endswith(".png"):
                key = m.name.split(".")[0]
                info = tarfile.TarInfo(f"{key}.id.txt")
                info.size = len(key.encode())
                tf.addfile(info, io.BytesIO(key.encode()))


def test_two_mixed_sources_pretrain_and_log_counts_matching_the_weights(data_root, tmp_path):
    """The ImageBind setting: image-text pairs from a manifest, image-audio pairs from shards."""
    it = make_manifest(data_root, 24, ("image", "text"), name="it")
    ia = make_manifest(data_root, 12, ("image", "audio"), name="ia")
    write_shards(open_source(SourceConfig(path=str(ia), name="ia"), {}, ["image", "audio"], False),
                 tmp_path / "ia_wds", ["image", "audio"], shard_size=4, progress=False)
    sources = [
        {"path": str(it), "name": "captions", "weight": 3},
        {"path": str(tmp_path / "ia_wds" / "shard-{000000..000002}.tar"), "name": "sounds", "weight": 1,
         "columns": {"image": "png", "audio": "wav"}},
    ]
    for streaming in ("false", "true"):
        cfg = load_config("tiny", [f"data.sources={json.dumps(sources)}", f"data.streaming={streaming}",
                                   "data.batch_size=8", "train.max_steps=10", "train.log_every=5", "loss.bind_anchor=image"])
        run = tmp_path / f"run_{streaming}"
        last = pretrain(cfg, run, progress=False)
        assert np.isfinite(last["loss"])
        assert last["drawn/captions"] + last["drawn/sounds"] == 80
        assert last["drawn/captions"] / 80 == pytest.approx(0.75, abs=0.02)
        state = load_train_state(latest_checkpoint(run))
        assert state["drawn"] == {"captions": last["drawn/captions"], "sounds": last["drawn/sounds"]}
        assert "data_position" in state


def test_empty_bytes_in_a_shard_are_reported_not_dropped(tiny_cfg):
    from multijepa.data.dataset import RowDecoder
    from multijepa.data.sources import Source

    src = Source("wds", None, None, {"image": "png", "text": "txt"}, origin="shards")
    item = RowDecoder(src, Processors(tiny_cfg.model, None))({"png": b"", "txt": "a caption", "__key__": "k1"}, 0)
    assert item["error"].reason == "empty_file" and "key k1" in item["error"].message
