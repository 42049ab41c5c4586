"""Audio modality: decoding and preprocessing into normalised kaldi log-mel filterbanks.

The recipe follows AST and ImageBind: mono, 16 kHz, kaldi fbank (128 mel bins, 25 ms
Hanning window, 10 ms shift), fixed number of frames, `(fbank - mean) / (2 * std)`.

Decoding and cropping are separate steps: `decode` gives a small, cacheable DecodedAudio
(the whole fbank of a short clip, or only a reference to a long one), `crop` cuts a window
from it ('start', 'random' for training, or evenly spaced 'clips' for evaluation).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.compliance.kaldi as kaldi
import torchaudio.functional as AF

from modalities.errors import (
    ABSURD_SIZE,
    BAD_SAMPLE_RATE,
    EMPTY_FILE,
    NON_FINITE_AUDIO,
    UNDECODABLE,
    UNSUPPORTED_VALUE,
    ZERO_LENGTH_AUDIO,
    DataError,
)
from modalities.paths import resolve_path, unpack_media

# ----------------------------------------------------------------------------- preprocessing

MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 1000, 1_000_000  # outside this, the rate is surely wrong
MAX_SECONDS = 4 * 3600  # longer is surely not one clip (a whole recording day, a bad header)
# MP3 frames borrow bits from earlier frames (the bit reservoir, <= 511 bytes back: a few
# frames at low bitrates), so a window read right after a seek starts with garbage; decoding
# this many samples (10 frames of 1152) before the seek point and dropping them fixes it.
MP3_PREROLL = 10 * 1152


def _as_channels_first(arr: np.ndarray) -> np.ndarray:
    """(samples,) -> (1, samples); 2-D arrays -> (channels, samples).

    `datasets` gives (channels, samples), `soundfile.read` gives (samples, channels): the
    shorter axis is taken as channels (no real clip has more channels than samples).
    """
    if arr.ndim == 1:
        return arr[None]
    if arr.ndim == 2:
        return arr.T if arr.shape[0] > arr.shape[1] else arr
    raise ValueError(f"expected a 1-D or 2-D array, got shape {arr.shape}")


def _to_float32(arr: np.ndarray) -> np.ndarray:
    """Integer PCM is scaled to [-1, 1); float stays as is."""
    arr = np.asarray(arr)
    if np.issubdtype(arr.dtype, np.signedinteger):
        return (arr / float(-np.iinfo(arr.dtype).min)).astype(np.float32)
    if np.issubdtype(arr.dtype, np.unsignedinteger):  # e.g. 8-bit WAV: centred on 128
        half = (np.iinfo(arr.dtype).max + 1) / 2.0
        return ((arr - half) / half).astype(np.float32)
    return arr.astype(np.float32, copy=False)


def _open(value, base_dir) -> tuple[str, object]:
    """Audio value -> (name for messages, source) without decoding anything.

    source: a path str, encoded bytes, or an (array (channels, samples) float32, rate) pair.
    """
    name = "<audio>"
    if isinstance(value, dict):
        if value.get("array") is not None:
            name = str(value.get("path") or "<audio array>")
            if value.get("sampling_rate") is None:
                raise DataError(f"audio {name}: dict has 'array' but no 'sampling_rate'", BAD_SAMPLE_RATE)
            value = (value["array"], value["sampling_rate"])
        else:
            value, named = unpack_media(value, "audio", keys="none of 'array', 'bytes', 'path'")
            name = named or name

    if isinstance(value, (str, Path)):
        path = resolve_path(value, base_dir, "audio")
        return str(path), str(path)
    if isinstance(value, (bytes, bytearray, memoryview)):
        value = bytes(value)
        if name == "<audio>":
            name = f"<{len(value)} bytes>"
        if not value:
            raise DataError(f"audio {name}: empty (0 bytes)", EMPTY_FILE)
        return name, value
    if isinstance(value, tuple) and len(value) == 2:
        arr, sr = value
        try:
            arr = np.asarray(arr.detach().cpu() if isinstance(arr, torch.Tensor) else arr)
        except (TypeError, ValueError) as e:  # a ragged list, an object that is no array
            raise DataError(f"audio array of type {type(arr).__name__}: cannot read it ({e})", UNSUPPORTED_VALUE) from e
        if name == "<audio>":
            name = f"<audio array {arr.shape}>"
        if arr.ndim not in (1, 2) or arr.dtype.kind not in "biuf":
            raise DataError(f"audio {name}: expected a 1-D or 2-D numeric array, got {arr.ndim}-D {arr.dtype}",
                            UNSUPPORTED_VALUE)
        return name, (_as_channels_first(_to_float32(arr)), sr)
    raise DataError(f"unsupported audio value of type {type(value).__name__}", UNSUPPORTED_VALUE)


def _probe(source) -> tuple[object, int, int, str]:
    """-> (sample_rate as given, samples per channel, channels, soundfile format or '')."""
    if isinstance(source, tuple):
        wav, sr = source
        return sr, wav.shape[1], wav.shape[0], ""
    info = sf.info(io.BytesIO(source) if isinstance(source, bytes) else source)
    return info.samplerate, info.frames, info.channels, info.format


def _wav_shortfall(source) -> tuple[int, int] | None:
    """A RIFF WAVE whose data chunk declares more bytes than the file holds -> (declared, present).
    libsndfile reads such a cut-short file without a word, as a shorter clip."""
    if isinstance(source, bytes):
        head, total = source[: 1 << 16], len(source)
    else:
        with open(source, "rb") as f:
            head = f.read(1 << 16)
        total = Path(source).stat().st_size
    if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None  # RF64, Wave64: left to libsndfile
    pos = 12
    while pos + 8 <= len(head):
        size = int.from_bytes(head[pos + 4 : pos + 8], "little")
        if head[pos : pos + 4] == b"data":
            present = total - pos - 8
            streamed = size in (0, 0xFFFFFFFF)  # written before its length was known
            return (size, present) if not streamed and present < size else None
        pos += 8 + size + (size & 1)
    return None


def _validate(name: str, sr, frames: int, channels: int) -> int:
    """Header checks (rate, length) before any sample is decoded; -> the rate as an int."""
    try:
        ok = float(sr) == int(sr) and MIN_SAMPLE_RATE <= int(sr) <= MAX_SAMPLE_RATE
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise DataError(f"audio {name}: unexpected sample rate {sr!r}", BAD_SAMPLE_RATE)
    if frames == 0 or channels == 0:
        raise DataError(f"audio {name}: zero samples ({frames} samples, {channels} channels)", ZERO_LENGTH_AUDIO)
    if frames / int(sr) > MAX_SECONDS:
        raise DataError(f"audio {name}: absurd size, {frames / int(sr) / 3600:.1f} h "
                        f"(max {MAX_SECONDS / 3600:.0f} h)", ABSURD_SIZE)
    return int(sr)


def _read(source, fmt: str, start: int = 0, stop: int | None = None) -> np.ndarray:
    """Samples [start, stop) of a source -> float32 (channels, samples); only those are decoded."""
    if isinstance(source, np.ndarray):
        return source[:, start:stop]
    if isinstance(source, tuple):
        return source[0][:, start:stop]
    pre = min(start, MP3_PREROLL) if fmt == "MP3" else 0
    f = io.BytesIO(source) if isinstance(source, bytes) else source
    data, _ = sf.read(f, start=start - pre, stop=stop, dtype="float32", always_2d=True)  # (samples, ch)
    return data[pre:].T


def _check_samples(name: str, wav: np.ndarray) -> None:
    """Decoded samples: some, and all finite (headers can lie; NaN only shows here)."""
    if wav.shape[0] == 0 or wav.shape[1] == 0:
        raise DataError(f"audio {name}: zero samples (shape {tuple(wav.shape)})", ZERO_LENGTH_AUDIO)
    if not np.isfinite(wav).all():
        raise DataError(f"audio {name}: non-finite samples (NaN or inf)", NON_FINITE_AUDIO)


def _mono(wav: np.ndarray) -> np.ndarray:
    """(channels, samples) -> (1, samples), the mean of any number of channels."""
    return wav if wav.shape[0] == 1 else wav.mean(0, keepdims=True, dtype=np.float32)


def _undecodable(name: str, e: Exception) -> DataError:
    return DataError(f"audio {name}: cannot decode ({type(e).__name__}: {e})", UNDECODABLE)


@dataclass
class DecodedAudio:
    """A decoded clip: small, picklable and cheap to cache.

    Clips up to `max_full_seconds` hold their whole normalised fbank; longer ones hold only
    the reference, and `AudioPreprocessor.crop` decodes the window it needs, so an hour-long
    file is never decoded whole.
    """

    name: str  # file or value, for messages
    sample_rate: int  # of the source
    num_samples: int  # of the source, per channel
    channels: int
    num_frames: int  # fbank frames of the whole clip at the target rate
    fbank: torch.Tensor | None = None  # (mel, num_frames) normalised; None when lazy
    source: str | bytes | np.ndarray | None = None  # lazy: path, encoded bytes or mono (1, num_samples)
    format: str = ""  # soundfile's major format ('WAV', 'MP3', ...), '' for arrays

    @property
    def lazy(self) -> bool:
        return self.fbank is None

    @property
    def seconds(self) -> float:
        return self.num_samples / self.sample_rate


class AudioPreprocessor:
    """Audio value -> normalised log-mel filterbank (num_mel_bins, target_frames) float32.

    Mel is dim 0 and time dim 1, so a patch embedding sees it as a 1-channel image.
    Clips shorter than `target_frames` are padded with 0 *after* normalisation, i.e. with
    the dataset-mean log energy, a neutral value (AST/ImageBind pad the raw fbank with 0
    instead: log energy 0, well above the mean, and not tied to any real frame).
    Cropping works on fbank frames; kaldi frames are computed independently (DC removed per
    frame), so a crop of the whole fbank equals the fbank of the cropped waveform.
    """

    def __init__(
        self,
        target_frames: int,  # no default here: the run config's model.audio.target_frames is the one
        sample_rate: int = 16000,
        num_mel_bins: int = 128,
        mean: float = -4.268,
        std: float = 4.569,
        max_full_seconds: float = 30.0,
    ):
        self.sample_rate = int(sample_rate)
        self.num_mel_bins = int(num_mel_bins)
        self.target_frames = int(target_frames)
        self.mean, self.std = float(mean), float(std)
        self.max_full_seconds = float(max_full_seconds)
        self.win = int(self.sample_rate * 0.025)  # samples per 25 ms window
        self.hop = int(self.sample_rate * 0.010)  # samples per 10 ms shift
        # Samples at the target rate needed for target_frames frames.
        self.max_samples = (self.target_frames - 1) * self.hop + self.win

    # --- decoding

    def decode(self, value, base_dir=None) -> DecodedAudio:
        """Value -> DecodedAudio; DataError naming the file and reason.

        `value`: a path (relative to `base_dir`), raw bytes, a `datasets` Audio dict
        ({'array', 'sampling_rate'} or {'bytes'} / {'path'}), or an (array, sample_rate) tuple.

        A long file is checked from its header and its first window only (a NaN or a
        corrupt frame later on shows when `crop` reads that window).
        """
        name, source = _open(value, base_dir)
        try:
            sr, frames, channels, fmt = _probe(source)
            sr = _validate(name, sr, frames, channels)
            cut = _wav_shortfall(source) if fmt == "WAV" else None
            if cut:
                raise DataError(f"audio {name}: truncated WAV (its header declares {cut[0]} bytes of samples, "
                                f"{cut[1]} are there)", UNDECODABLE)
            if frames / sr <= self.max_full_seconds:
                wav = _read(source, fmt)
                _check_samples(name, wav)
                fbank = self._fbank(self._resample(torch.from_numpy(_mono(wav)), sr))  # (mel, frames)
                return DecodedAudio(name, sr, wav.shape[1], wav.shape[0], fbank.shape[1], fbank=fbank)
            if isinstance(source, tuple):  # already in memory: check it all, keep it mono
                _check_samples(name, source[0])
                source = np.ascontiguousarray(_mono(source[0]))
            src = self._source_rate(sr)
            n_target = frames if src == self.sample_rate else -(-frames * self.sample_rate // src)
            decoded = DecodedAudio(name, sr, frames, channels, self._num_frames(n_target), source=source, format=fmt)
        except DataError:
            raise
        except Exception as e:  # soundfile.LibsndfileError, TypeError, ValueError...
            raise _undecodable(name, e) from e
        if not isinstance(source, np.ndarray):
            self._window(decoded, 0)  # a file that is corrupt or NaN from the start fails now
        return decoded

    # --- cropping

    def crop(self, decoded: DecodedAudio, mode: str = "start", rng: torch.Generator | None = None,
             num_clips: int = 3) -> torch.Tensor:
        """A window of `target_frames` frames, shorter clips padded with 0 at the end.

        mode 'start': (mel, T) from the beginning. 'random': (mel, T) from a uniformly random
        frame (`torch.randint` with `rng`, one draw even for short clips, so the generator
        advances the same way for every clip). 'clips': (num_clips, mel, T), starts evenly
        spaced from the first to the last possible one, as ImageBind evaluates audio.
        """
        max_start = max(0, decoded.num_frames - self.target_frames)
        if mode == "start":
            return self._window(decoded, 0)
        if mode == "random":
            return self._window(decoded, int(torch.randint(0, max_start + 1, (1,), generator=rng)))
        if mode == "clips":
            if num_clips < 1:
                raise ValueError(f"num_clips must be >= 1, got {num_clips}")
            starts = [i * max_start // (num_clips - 1) if num_clips > 1 else 0 for i in range(num_clips)]
            return torch.stack([self._window(decoded, s) for s in starts])  # (clips, mel, T)
        raise ValueError(f"unknown crop mode {mode!r} (expected 'start', 'random' or 'clips')")

    def __call__(self, value, base_dir=None, mode: str = "start", rng: torch.Generator | None = None,
                 num_clips: int = 3) -> torch.Tensor:
        """`crop(decode(value, base_dir), mode, rng, num_clips)`."""
        return self.crop(self.decode(value, base_dir), mode, rng, num_clips)

    # --- internals

    def _source_rate(self, sr: int) -> int:
        """The rate resampling assumes for a source rate.

        An odd rate (e.g. 44101 Hz) would need a huge exact polyphase kernel; the nearest
        multiple of 100 Hz is off by < 0.6 % in pitch, which is harmless.
        """
        if sr // math.gcd(sr, self.sample_rate) > 1000:
            return round(sr / 100) * 100
        return sr

    def _resample(self, wav: torch.Tensor, sr: int) -> torch.Tensor:
        """(1, samples) at `sr` -> (1, samples') at the target rate."""
        src = self._source_rate(sr)
        return wav if src == self.sample_rate else AF.resample(wav, src, self.sample_rate)

    def _num_frames(self, n: int) -> int:
        """kaldi frames of `n` samples at the target rate (a clip under one window is padded to one)."""
        return 1 + (max(n, self.win) - self.win) // self.hop

    def _fbank(self, wav: torch.Tensor) -> torch.Tensor:
        """(1, samples) at the target rate -> normalised (mel, frames)."""
        if wav.shape[1] < self.win:  # shorter than one window: pad so fbank yields one frame
            wav = torch.nn.functional.pad(wav, (0, self.win - wav.shape[1]))
        fbank = kaldi.fbank(
            wav,
            htk_compat=True,
            sample_frequency=self.sample_rate,
            use_energy=False,
            window_type="hanning",
            num_mel_bins=self.num_mel_bins,
            dither=0.0,
            frame_length=25,
            frame_shift=10,
        )  # (frames, mel); remove_dc_offset=True: DC is removed per frame
        fbank = (fbank - self.mean) / (2 * self.std)
        return fbank.T.contiguous().float()  # (mel, frames)

    def _window(self, decoded: DecodedAudio, start: int) -> torch.Tensor:
        """Frames [start, start + T) -> (mel, T), zero-padded at the end; always a new tensor
        (pad copies), never a view that would pin or expose a cached fbank."""
        if decoded.fbank is not None:
            x = decoded.fbank[:, start : start + self.target_frames]
        else:
            x = self._lazy_window(decoded, start)
        return torch.nn.functional.pad(x, (0, self.target_frames - x.shape[1]))

    def _lazy_window(self, d: DecodedAudio, start: int) -> torch.Tensor:
        """Decode only the samples of frames [start, start + T) of a long clip -> (mel, <= T)."""
        t0 = start * self.hop  # first target-rate sample of the window
        src = self._source_rate(d.sample_rate)
        if src == self.sample_rate:
            first, offset, stop = t0, 0, t0 + self.max_samples
        else:
            # Read from a source sample that maps exactly onto a target sample (a multiple of
            # `us`), with a 10 ms margin on both sides for the resampling filter's edges, so
            # the window matches the same samples of the whole clip resampled.
            g = math.gcd(src, self.sample_rate)
            us, ut = src // g, self.sample_rate // g  # us source samples = ut target samples
            k = max(0, t0 - self.hop) // ut
            first, offset = k * us, t0 - k * ut
            stop = first + -(-(offset + self.max_samples + self.hop) * us // ut)
        try:
            wav = _read(d.source, d.format, first, min(stop, d.num_samples))
        except Exception as e:  # soundfile.LibsndfileError on a corrupt frame
            raise _undecodable(d.name, e) from e
        if wav.shape[1] == 0:  # the header promised more samples than the file has
            raise DataError(f"audio {d.name}: no samples at {t0 / self.sample_rate:.2f} s "
                            f"(header says {d.seconds:.2f} s)", UNDECODABLE)
        _check_samples(d.name, wav)
        wav = self._resample(torch.from_numpy(np.ascontiguousarray(_mono(wav))), d.sample_rate)
        return self._fbank(wav[:, offset : offset + self.max_samples])[:, : self.target_frames]
