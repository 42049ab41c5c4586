"""Video modality: decoding a clip's frames (PyAV), sampling T of them, and preprocessing each
as an image is (shorter side resized, centre crop, normalised) -> (3, T, size, size).

Why PyAV: its wheels bundle FFmpeg (no system package to install, the same decoder on every
machine), it is BSD-licensed and kept up by the PyAV project; torchcodec would need Debian's
FFmpeg libraries of a version matching its build.

A long file is never decoded whole. `decode` opens it and reads its header (streams, size, duration,
rate): no frame yet. `clip` then decodes one window of `clip_seconds` from a seek to its start
(random in training, evenly spaced windows averaged at evaluation, as audio's), at most
`max_decoded_frames` frames per window, so a 4-hour file or one with broken timestamps costs
what a short one does. A file no longer than one window is decoded in `decode`, once (its
windows all start at 0), so a cached row is never decoded again. Frames larger than `max_pixels`
are refused before any is decoded.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from modalities.errors import ABSURD_SIZE, EMPTY_FILE, UNDECODABLE, UNSUPPORTED_VALUE, ZERO_FRAMES, DataError
from modalities.image import MIN_SIDE, ImagePreprocessor
from modalities.paths import resolve_path, unpack_media

MAX_PIXELS = 4096 * 4096  # a frame larger than this (width * height) is refused: absurd_size


@dataclass
class DecodedVideo:
    """An opened video, not yet decoded: where its bytes are and what its header says."""

    source: Any  # a Path, or bytes
    name: str  # for messages
    width: int
    height: int
    duration: float | None  # seconds; None when the container does not say
    fps: float | None  # average frame rate; None when unknown
    whole: torch.Tensor | None = None  # a file no longer than a window: its one clip, decoded once


    def open(self):
        return _av_open(self.source)


def _av_open(source: Any):
    """A container of a Path or of bytes in memory."""
    import av

    return av.open(io.BytesIO(source) if isinstance(source, bytes) else str(source))


def _video_source(value: Any, base_dir: str | Path | None) -> tuple[Any, str]:
    """A path (relative to `base_dir`), bytes, or a {'bytes'|'path'} dict -> (a Path or bytes, a name
    for messages). DataError for a missing file or a value of another type."""
    name = "<video>"
    if isinstance(value, dict):
        value, named = unpack_media(value, "video")
        name = named or name
    if isinstance(value, (str, Path)):
        path = resolve_path(value, base_dir, "video")
        return path, str(path)
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        return data, name if name != "<video>" else f"<{len(data)} bytes>"
    raise DataError(f"unsupported video value of type {type(value).__name__}", UNSUPPORTED_VALUE)


def _av_errors() -> tuple[type[BaseException], ...]:
    import av

    return (av.error.FFmpegError, av.error.InvalidDataError, UnicodeDecodeError, EOFError, OSError, ValueError)


def open_video(value: Any, base_dir: str | Path | None = None) -> DecodedVideo:
    """A path (relative to `base_dir`), bytes, or a `datasets`-style {'bytes'|'path'} dict -> its
    header, checked: a video stream, a frame size in 2 px .. MAX_PIXELS. DataError names the file."""
    import av

    source, name = _video_source(value, base_dir)
    if isinstance(source, bytes) and not source:
        raise DataError(f"video {name}: empty (0 bytes)", EMPTY_FILE)
    try:
        with _av_open(source) as container:
            if not container.streams.video:
                raise DataError(f"video {name}: no video stream", UNDECODABLE)
            stream = container.streams.video[0]
            width, height = int(stream.codec_context.width or 0), int(stream.codec_context.height or 0)
            duration = None
            if stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                duration = container.duration / av.time_base
            rate = stream.average_rate or stream.guessed_rate
            fps = float(rate) if rate else None
    except DataError:
        raise
    except _av_errors() as e:
        raise DataError(f"video {name}: not a video or undecodable ({type(e).__name__}: {e})", UNDECODABLE) from e
    if width * height > MAX_PIXELS:
        raise DataError(f"video {name}: absurd frame size {width}x{height} (max {MAX_PIXELS:,} pixels)", ABSURD_SIZE)
    if width < MIN_SIDE or height < MIN_SIDE:
        raise DataError(f"video {name}: absurd frame size {width}x{height} (min {MIN_SIDE}x{MIN_SIDE})", ABSURD_SIZE)
    return DecodedVideo(source, name, width, height, duration if duration and duration > 0 else None, fps)


def decode_window(video: DecodedVideo, start: float, seconds: float, max_frames: int) -> list:
    """The frames (PIL images) shown in [start, start + seconds), at most `max_frames` of them,
    decoded from a seek to the keyframe before `start`. A window past the last frame gives the
    last frames before it. DataError when the file is truncated or holds no frame at all."""
    frames: list = []
    last: list = []  # the most recent frames before the window, in case the window is empty
    decoded = 0
    try:
        with video.open() as container:
            stream = container.streams.video[0]
            base = stream.time_base
            if start > 0 and base is not None:
                container.seek(int(start / base), stream=stream, backward=True, any_frame=False)
            for frame in container.decode(stream):
                decoded += 1
                t = float(frame.pts * base) if frame.pts is not None and base is not None else None
                if t is not None and t >= start + seconds and frames:
                    break
                if t is None or t >= start:
                    frames.append(frame.to_image())
                else:
                    last = [*last[-max_frames + 1:], frame.to_image()] if max_frames > 1 else [frame.to_image()]
                if len(frames) >= max_frames or decoded >= 4 * max_frames + 256:
                    break  # bounded, whatever the timestamps say
    except _av_errors() as e:
        if not frames and not last:
            raise DataError(f"video {video.name}: truncated or corrupt ({type(e).__name__}: {e})", UNDECODABLE) from e
    frames = frames or last
    if not frames:
        raise DataError(f"video {video.name}: no frames could be decoded", ZERO_FRAMES)
    return frames


def sound_track(value: Any, base_dir: str | Path | None = None, max_seconds: float = 600.0):
    """The sound of a video file (path, bytes, or a {'bytes'|'path'} dict) -> (samples (n,) float32
    mono, sample rate), its first `max_seconds` at most. DataError when the file has no sound track
    or it cannot be decoded."""
    import av
    import numpy as np

    source, name = _video_source(value, base_dir)
    parts: list = []
    try:
        with _av_open(source) as container:
            if not container.streams.audio:
                raise DataError(f"video {name}: no sound track (data.audio_from_video)", UNDECODABLE)
            stream = container.streams.audio[0]
            rate = int(stream.codec_context.sample_rate or stream.rate or 0)
            if rate <= 0:
                raise DataError(f"video {name}: its sound track has no sample rate", UNDECODABLE)
            mono = av.AudioResampler(format="flt", layout="mono", rate=rate)
            limit, got = int(max_seconds * rate), 0
            for frame in container.decode(stream):
                for out in mono.resample(frame):
                    parts.append(out.to_ndarray().reshape(-1))
                    got += parts[-1].shape[0]
                if got >= limit:
                    break
    except DataError:
        raise
    except _av_errors() as e:
        if not parts:
            raise DataError(f"video {name}: its sound track cannot be decoded ({type(e).__name__}: {e})",
                            UNDECODABLE) from e
    samples = np.concatenate(parts)[:limit] if parts else np.zeros(0, np.float32)
    if samples.size == 0:
        raise DataError(f"video {name}: its sound track holds no samples", ZERO_FRAMES)
    return samples.astype(np.float32), rate


def even_indices(n: int, k: int) -> list[int]:
    """k indices into n items, evenly spread (the middle of each of k equal parts); repeats when n < k."""
    return [min(n - 1, int((i + 0.5) * n / k)) for i in range(k)]


class VideoPreprocessor:
    """Video value -> (3, frames, size, size): `frames` frames sampled evenly over a window of
    `clip_seconds`, each resized and centre-cropped like an image (`ImagePreprocessor`)."""

    def __init__(self, size: int = 64, frames: int = 8, clip_seconds: float = 2.0, mean=None, std=None,
                 max_decoded_frames: int = 256):
        if frames < 1 or clip_seconds <= 0 or max_decoded_frames < frames:
            raise ValueError(f"frames={frames}, clip_seconds={clip_seconds}, max_decoded_frames={max_decoded_frames}:"
                             " need frames >= 1, clip_seconds > 0, max_decoded_frames >= frames")
        kw = {k: v for k, v in (("mean", mean), ("std", std)) if v is not None}
        self.image = ImagePreprocessor(size, **kw)
        self.frames, self.clip_seconds, self.max_decoded_frames = int(frames), float(clip_seconds), int(max_decoded_frames)

    def decode(self, value: Any, base_dir: str | Path | None = None) -> DecodedVideo:
        """The header; a file no longer than one window is decoded now, once (every window of it
        starts at 0), so a cached row (data.cache_decoded) is never decoded again."""
        video = open_video(value, base_dir)
        if video.duration is not None and video.duration <= self.clip_seconds:
            video.whole = self.clip(video, 0.0)
        return video

    def starts(self, video: DecodedVideo, mode: str, rng: torch.Generator | None = None, num_clips: int = 1) -> list[float]:
        """Window starts in seconds: "random" one (training), "start" (0), "clips" `num_clips` evenly spaced."""
        room = max(0.0, (video.duration or 0.0) - self.clip_seconds)
        if mode == "random":
            return [float(torch.rand((), generator=rng)) * room]
        if mode == "clips" and num_clips > 1:
            return [room * i / (num_clips - 1) for i in range(num_clips)]
        if mode in ("start", "clips"):
            return [0.0]
        raise ValueError(f"mode='{mode}': give random, start or clips")

    def clip(self, video: DecodedVideo, start: float) -> torch.Tensor:
        """One window -> (3, T, size, size)."""
        if video.whole is not None and start == 0.0:
            return video.whole
        frames = decode_window(video, start, self.clip_seconds, self.max_decoded_frames)
        picked = [self.image(frames[i]) for i in even_indices(len(frames), self.frames)]  # T x (3, S, S)
        return torch.stack(picked, dim=1)  # (3, T, S, S)

    def crop(self, video: DecodedVideo, mode: str = "start", rng: torch.Generator | None = None,
             num_clips: int = 1) -> torch.Tensor:
        """(3, T, S, S), or with mode "clips" and num_clips > 1: (clips, 3, T, S, S)."""
        clips = [self.clip(video, s) for s in self.starts(video, mode, rng, num_clips)]
        return torch.stack(clips) if mode == "clips" and num_clips > 1 else clips[0]

    def __call__(self, value: Any, base_dir: str | Path | None = None) -> torch.Tensor:
        return self.crop(self.decode(value, base_dir))


def write_video(path: str | Path, frames, fps: int = 8, audio=None, sample_rate: int = 16000,
                codec: str = "mpeg4", options: dict | None = None) -> Path:
    """frames: (T, H, W, 3) uint8 (a tensor or array) -> an .mp4 at `fps`; `audio` (samples,) float
    in [-1, 1] adds an AAC sound track; `options`: the encoder's (e.g. {"crf": "18"} for libx264).
    For demo data and tests."""
    import av
    import numpy as np

    frames = np.asarray(frames, dtype=np.uint8)
    path = Path(path)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = dict(options or {})
        sound = None
        if audio is not None:
            sound = container.add_stream("aac", rate=sample_rate)
            sound.layout = "mono"
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        if sound is not None:
            samples = np.asarray(audio, dtype=np.float32).reshape(1, -1)
            chunk = 1024
            for i in range(0, samples.shape[1], chunk):
                part = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples[:, i:i + chunk]), format="fltp",
                                                  layout="mono")
                part.sample_rate = sample_rate
                part.pts = i
                for packet in sound.encode(part):
                    container.mux(packet)
            for packet in sound.encode():
                container.mux(packet)
    return path

