"""Audio modality: decoding and preprocessing into normalised kaldi log-mel filterbanks.

The recipe follows AST and ImageBind: mono, 16 kHz, kaldi fbank (128 mel bins, 25 ms
Hanning window, 10 ms shift), fixed number of frames, `(fbank - mean) / (2 * std)`.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.compliance.kaldi as kaldi
import torchaudio.functional as AF

from modalities.errors import DataError
from modalities.paths import resolve_path

# ----------------------------------------------------------------------------- preprocessing

MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 1000, 1_000_000  # outside this, the rate is surely wrong


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


def load_waveform(value, base_dir: str | Path | None = None) -> tuple[np.ndarray, int]:
    """Decode an audio value to (float32 array (channels, samples), sample_rate).

    `value`: a path (relative to `base_dir`), raw bytes, a `datasets` Audio dict
    ({'array', 'sampling_rate'} or {'bytes'} / {'path'}), or an (array, sample_rate) tuple.
    Raises DataError naming the file or value and the reason.
    """
    name = "<audio>"
    try:
        if isinstance(value, dict):
            if value.get("array") is not None:
                name = str(value.get("path") or "<audio array>")
                if value.get("sampling_rate") is None:
                    raise DataError(f"audio {name}: dict has 'array' but no 'sampling_rate'")
                value = (value["array"], value["sampling_rate"])
            elif value.get("bytes") is not None:
                name = str(value.get("path") or f"<{len(value['bytes'])} bytes>")
                value = value["bytes"]
            elif value.get("path") is not None:
                value = value["path"]
            else:
                raise DataError(f"audio dict has none of 'array', 'bytes', 'path': keys {sorted(value)}")

        if isinstance(value, (str, Path)):
            path = resolve_path(value, base_dir, "audio")
            name = str(path)
            data, sr = sf.read(str(path), dtype="float32", always_2d=True)  # (samples, channels)
            wav = data.T
        elif isinstance(value, (bytes, bytearray, memoryview)):
            if name == "<audio>":
                name = f"<{len(value)} bytes>"
            data, sr = sf.read(io.BytesIO(bytes(value)), dtype="float32", always_2d=True)
            wav = data.T
        elif isinstance(value, tuple) and len(value) == 2:
            arr, sr = value
            if isinstance(arr, torch.Tensor):
                arr = arr.detach().cpu().numpy()
            if name == "<audio>":
                name = f"<audio array {np.shape(arr)}>"
            wav = _as_channels_first(_to_float32(arr))
        else:
            raise DataError(f"unsupported audio value of type {type(value).__name__}")
        if float(sr) != int(sr) or not MIN_SAMPLE_RATE <= int(sr) <= MAX_SAMPLE_RATE:
            raise DataError(f"audio {name}: unexpected sample rate {sr}")
        if wav.shape[0] == 0 or wav.shape[1] == 0:
            raise DataError(f"audio {name}: zero samples (shape {tuple(wav.shape)})")
        if not np.isfinite(wav).all():
            raise DataError(f"audio {name}: non-finite samples (NaN or inf)")
    except DataError:
        raise
    except Exception as e:  # soundfile.LibsndfileError, TypeError, ValueError...
        raise DataError(f"audio {name}: cannot decode ({type(e).__name__}: {e})") from e
    return np.ascontiguousarray(wav, dtype=np.float32), int(sr)


class AudioPreprocessor:
    """Audio value -> normalised log-mel filterbank (num_mel_bins, target_frames) float32.

    Mel is dim 0 and time dim 1, so a patch embedding sees it as a 1-channel image.
    Clips longer than `target_frames` keep their start (random crops come later); shorter
    ones are padded with 0 *after* normalisation, i.e. with the dataset-mean log energy, a
    neutral value (AST/ImageBind pad the raw fbank with 0 instead: log energy 0, well above
    the mean, and not tied to any real frame).
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        num_mel_bins: int = 128,
        target_frames: int = 204,
        mean: float = -4.268,
        std: float = 4.569,
    ):
        self.sample_rate = int(sample_rate)
        self.num_mel_bins = int(num_mel_bins)
        self.target_frames = int(target_frames)
        self.mean, self.std = float(mean), float(std)
        self.win = int(self.sample_rate * 0.025)  # samples per 25 ms window
        self.hop = int(self.sample_rate * 0.010)  # samples per 10 ms shift
        # Samples needed for target_frames frames; decoding more is wasted work.
        self.max_samples = (self.target_frames - 1) * self.hop + self.win

    def __call__(self, value, base_dir=None) -> torch.Tensor:
        wav, sr = load_waveform(value, base_dir)
        # Crop before resampling (plus a margin for the filter's edge) so long files stay cheap.
        keep = math.ceil(self.max_samples * sr / self.sample_rate) + sr // 100
        wav = torch.from_numpy(wav[:, :keep]).mean(0, keepdim=True)  # (1, T) mono
        if sr != self.sample_rate:
            src = sr
            if sr // math.gcd(sr, self.sample_rate) > 1000:
                # An odd rate (e.g. 44101 Hz) would need a huge exact polyphase kernel; the
                # nearest multiple of 100 Hz is off by < 0.6 % in pitch, which is harmless.
                src = round(sr / 100) * 100
            wav = AF.resample(wav, src, self.sample_rate)
        wav = wav[:, : self.max_samples]
        wav = wav - wav.mean()  # remove DC
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
        )  # (frames, mel)
        fbank = (fbank - self.mean) / (2 * self.std)
        fbank = fbank[: self.target_frames]
        fbank = torch.nn.functional.pad(fbank, (0, 0, 0, self.target_frames - fbank.shape[0]))
        return fbank.T.contiguous().float()  # (mel, time)
