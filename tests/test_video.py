"""Video decoding (PyAV): windows, even sampling, preprocessing, and bad input as one line."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch

from modalities.errors import REASONS, DataError
from modalities.video import VideoPreprocessor, decode_window, even_indices, open_video, write_video

av = pytest.importorskip("av")


def _numbered(path, frames=48, fps=8, size=(32, 48), audio=None):
    """A clip whose frame i shows i in binary, one 8 px column per bit (so a decoded frame says which
    it is, through lossy compression)."""
    video = np.zeros((frames, *size, 3), np.uint8)
    for i in range(frames):
        for bit in range(size[1] // 8):
            video[i, :, 8 * bit: 8 * bit + 8] = 255 * ((i >> bit) & 1)
    return write_video(path, video, fps=fps, audio=audio)


def _frame_number(img) -> int:
    a = np.asarray(img, dtype=np.float32).mean(axis=(0, 2))  # (W,) column brightness
    return sum(1 << bit for bit in range(len(a) // 8) if a[8 * bit + 2: 8 * bit + 6].mean() > 128)


def test_header_is_read_without_decoding_frames(tmp_path):
    v = open_video(_numbered(tmp_path / "a.mp4"))
    assert (v.width, v.height, v.fps) == (48, 32, 8.0) and v.duration == pytest.approx(6.0)
    same = open_video({"bytes": (tmp_path / "a.mp4").read_bytes()})  # shards carry bytes
    assert (same.width, same.height, same.duration) == (v.width, v.height, v.duration)


@pytest.mark.parametrize("start", [0.0, 2.0, 3.5])
def test_a_window_holds_exactly_the_frames_shown_in_it(tmp_path, start):
    v = open_video(_numbered(tmp_path / "a.mp4"))  # mpeg4, a keyframe every 12 frames: seeks land before start
    got = [_frame_number(f) for f in decode_window(v, start, 2.0, max_frames=100)]
    first = int(start * 8)
    assert got == list(range(first, first + 16))


def test_frames_are_sampled_evenly_and_preprocessed_like_images(tmp_path):
    v = open_video(_numbered(tmp_path / "a.mp4"))
    pre = VideoPreprocessor(size=16, frames=4, clip_seconds=2.0)
    x = pre.clip(v, 2.0)  # frames 16..31; picks the middle of each quarter: 18, 22, 26, 30
    assert x.shape == (3, 4, 16, 16)
    frames = decode_window(v, 2.0, 2.0, 100)
    want = torch.stack([pre.image(frames[i]) for i in even_indices(16, 4)], dim=1)
    assert torch.equal(x, want)
    assert [_frame_number(frames[i]) for i in even_indices(16, 4)] == [18, 22, 26, 30]
    assert even_indices(3, 5) == [0, 0, 1, 2, 2]  # a short window repeats frames rather than failing


def test_windows_random_in_training_evenly_spaced_at_evaluation(tmp_path):
    v = open_video(_numbered(tmp_path / "a.mp4"))
    pre = VideoPreprocessor(size=16, frames=2, clip_seconds=2.0)
    assert pre.starts(v, "clips", num_clips=3) == [0.0, 2.0, 4.0]
    assert pre.crop(v, "clips", num_clips=3).shape == (3, 3, 2, 16, 16)  # (clips, 3, T, S, S)
    draws = [pre.starts(v, "random", torch.Generator().manual_seed(s))[0] for s in range(20)]
    assert all(0 <= d <= 4.0 for d in draws) and len(set(draws)) == 20
    assert pre.starts(v, "random", torch.Generator().manual_seed(3)) == pre.starts(v, "random", torch.Generator().manual_seed(3))
    short = open_video(_numbered(tmp_path / "b.mp4", frames=6))  # shorter than a window: the whole clip
    assert pre.starts(short, "random", torch.Generator().manual_seed(0)) == [0.0]
    assert [_frame_number(f) for f in decode_window(short, 0.0, 2.0, 100)] == list(range(6))


def test_a_window_past_the_end_gives_the_last_frames(tmp_path):
    v = open_video(_numbered(tmp_path / "a.mp4"))
    got = [_frame_number(f) for f in decode_window(v, 100.0, 2.0, max_frames=4)]
    assert got == [44, 45, 46, 47]


def test_decoding_is_bounded_whatever_the_length(tmp_path):
    """A 4-hour file (three frames, hours apart) opens at once and a window near its middle costs a
    seek and a few frames; a long window never decodes more than max_decoded_frames."""
    path = tmp_path / "long.mp4"
    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=1)
        s.width, s.height, s.pix_fmt = 32, 32, "yuv420p"
        s.codec_context.time_base = Fraction(1, 1)
        for i, t in enumerate((0, 2 * 3600, 4 * 3600)):
            f = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 80 * i, np.uint8), format="rgb24")
            f.pts, f.time_base = t, Fraction(1, 1)
            for packet in s.encode(f):
                c.mux(packet)
        for packet in s.encode():
            c.mux(packet)
    v = open_video(path)
    assert v.duration > 3.9 * 3600
    pre = VideoPreprocessor(size=16, frames=2, clip_seconds=2.0)
    assert pre.crop(v, "clips", num_clips=3).shape == (3, 3, 2, 16, 16)
    many = open_video(_numbered(tmp_path / "a.mp4"))
    assert len(decode_window(many, 0.0, 1000.0, max_frames=5)) == 5


def _bad(value, reason, match, **kw):
    with pytest.raises(DataError, match=match) as e:
        VideoPreprocessor(size=16, frames=2)(value, **kw)
    assert e.value.reason == reason and e.value.reason in REASONS
    assert "\n" not in str(e.value)


def test_bad_video_gets_one_line_naming_the_file(tmp_path, monkeypatch):
    good = _numbered(tmp_path / "a.mp4").read_bytes()
    (tmp_path / "cut.mp4").write_bytes(good[: len(good) // 3])
    _bad(str(tmp_path / "cut.mp4"), "undecodable", "cut.mp4")
    (tmp_path / "junk.mp4").write_bytes(b"not a video at all" * 100)
    _bad(str(tmp_path / "junk.mp4"), "undecodable", r"junk.mp4: not a video")
    _bad(str(tmp_path / "missing.mp4"), "missing_file", "missing.mp4")
    _bad(b"", "empty_file", "empty")
    _bad(3.5, "unsupported_value", "float")

    import soundfile as sf

    sf.write(tmp_path / "sound.wav", np.zeros(1600, np.float32), 16000)
    _bad(str(tmp_path / "sound.wav"), "undecodable", "sound.wav: no video stream")

    c = av.open(str(tmp_path / "nostream.mp4"), "w")  # a video stream but no frame: mp4 then lists no stream
    s = c.add_stream("mpeg4", rate=8)
    s.width, s.height, s.pix_fmt = 32, 32, "yuv420p"
    c.start_encoding()
    c.close()
    _bad(str(tmp_path / "nostream.mp4"), "undecodable", "nostream.mp4: no video stream")

    mkv = _numbered(tmp_path / "a.mkv").read_bytes()  # Matroska: the header, then clusters of frames
    (tmp_path / "header_only.mkv").write_bytes(mkv[: mkv.index(bytes.fromhex("1F43B675")) + 8])  # + a cluster head
    _bad(str(tmp_path / "header_only.mkv"), "zero_frames", "header_only.mkv: no frames")

    import modalities.video as video

    monkeypatch.setattr(video, "MAX_PIXELS", 32 * 32)  # the 48 x 32 clip is now 'huge'
    _bad(str(tmp_path / "a.mp4"), "absurd_size", r"absurd frame size 48x32")


def test_relative_paths_start_from_the_manifest_folder(tmp_path):
    _numbered(tmp_path / "a.mp4")
    assert VideoPreprocessor(size=8, frames=2)("a.mp4", base_dir=tmp_path).shape == (3, 2, 8, 8)
