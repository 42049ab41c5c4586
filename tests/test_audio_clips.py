"""Long audio: random windows in training (seeded per batch), several clips averaged at evaluation."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from multijepa.data.collate import MultiModalCollator, build_maskers
from multijepa.model import MultiJEPA
from multijepa.processors import Processors


def _long_clip(seconds: float = 3.0, sr: int = 16000):
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * (300 + 200 * t) * t)).astype(np.float32), sr  # a chirp: every window differs


def test_training_crops_at_random_but_reproducibly_per_batch(tiny_cfg):
    proc = Processors(tiny_cfg.model, None)
    decoded = proc.decode("audio", _long_clip())
    collate = MultiModalCollator(["audio"], build_maskers(tiny_cfg.model), seed=0, processors=proc, train=True)
    items = [{"row": i, "batch_no": 3, "audio": decoded} for i in range(4)]
    x1, x2 = collate(items)["audio"]["x"], collate(items)["audio"]["x"]
    assert x1.shape == (4, tiny_cfg.model.audio.num_mel_bins, tiny_cfg.model.audio.target_frames)
    assert torch.equal(x1, x2)  # same batch number -> same windows (a resume sees the same data)
    assert not all(torch.equal(x1[0], x1[i]) for i in range(1, 4))  # rows get different windows
    other = collate([{**it, "batch_no": 4} for it in items])["audio"]["x"]
    assert not torch.equal(x1, other)


def test_evaluation_averages_evenly_spaced_clips(tiny_cfg):
    tiny_cfg.model.audio.eval_clips = 3
    proc = Processors(tiny_cfg.model, None)
    x = proc.item("audio", _long_clip())
    assert x.shape == (3, tiny_cfg.model.audio.num_mel_bins, tiny_cfg.model.audio.target_frames)
    assert torch.equal(x[0], proc.of("audio").crop(proc.decode("audio", _long_clip()), "start"))
    model = MultiJEPA(tiny_cfg.model, vocab_size=64).eval()
    z = model.encode("audio", x[None])  # (1, E) from (1, clips, mel, T)
    per_clip = model.encode("audio", x)  # (3, E)
    assert torch.allclose(z[0], F.normalize(per_clip.mean(0), dim=-1), atol=1e-5)
    assert torch.allclose(z.norm(dim=-1), torch.ones(1))


def test_a_bad_window_of_a_long_file_becomes_an_error_record(tiny_cfg, tmp_path):
    """Long files are read window by window, so a NaN late in the file shows up at crop time:
    it must come back as a bad row of the batch, not as an exception in a loader worker."""
    import soundfile as sf

    wav, sr = _long_clip(4.0)
    wav[-4000:] = np.nan
    sf.write(tmp_path / "late_nan.wav", wav, sr, subtype="FLOAT")
    tiny_cfg.model.audio.max_full_seconds = 1.0
    proc = Processors(tiny_cfg.model, None)
    decoded = proc.decode("audio", str(tmp_path / "late_nan.wav"))
    collate = MultiModalCollator(["audio"], None, processors=proc, train=False)
    good = {"row": 0, "audio": proc.decode("audio", _long_clip(1.0))}
    batch = collate([good, {"row": 1, "audio": decoded, "where": ("s", "source 's' row 1")}])
    assert batch["size"] == 1 and batch["audio"]["x"].shape[0] == 1
    assert [e.reason for e in batch["errors"]] == ["non_finite_audio"]
    assert batch["errors"][0].message.startswith("source 's' row 1 column 'audio'")
