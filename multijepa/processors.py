"""Turns raw values (paths, PIL images, strings, arrays) into model inputs, per modality.

One object shared by the data loader and the Python API (`MultiJEPA.embed_*`), so training and
inference preprocess identically.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch

from modalities.audio import AudioPreprocessor
from modalities.image import ImagePreprocessor
from modalities.text import TextTokenizer, _check_text

from .config import ModelConfig
from .towers import resolve_towers


class Processors:
    def __init__(self, cfg: ModelConfig, tokenizer: TextTokenizer | None):
        self.modalities = list(cfg.modalities)
        self.image = (ImagePreprocessor(cfg.image.size, cfg.image.mean, cfg.image.std)
                      if "image" in self.modalities else None)
        a = cfg.audio
        self.audio = (
            AudioPreprocessor(a.target_frames, a.sample_rate, a.num_mel_bins, a.mean, a.std, max_full_seconds=a.max_full_seconds)
            if "audio" in self.modalities
            else None
        )
        self.train_crop, self.eval_clips = a.train_crop, a.eval_clips
        self.tokenizer = tokenizer

    def decode(self, modality: str, value: Any, base_dir: str | Path | None = None) -> Any:
        """One raw value -> a decoded sample, cacheable: image (3, H, W), text (ids (L,), length),
        audio a DecodedAudio (the whole clip's fbank, or a window reader for long files).
        Without a tokenizer, text is only checked (as `data check` does)."""
        if modality == "image":
            return self.image(value, base_dir)
        if modality == "audio":
            return self.audio.decode(value, base_dir)
        if modality == "text":
            if self.tokenizer is None:
                return _check_text(value)
            _check_text(value)
            ids, lengths = self.tokenizer([value])
            return ids[0], lengths[0]
        raise ValueError(f"unknown modality '{modality}'")

    def finish(self, modality: str, decoded: Any, train: bool, rng: torch.Generator | None = None) -> Any:
        """Decoded sample -> model input. Audio: a window of the clip, at random in training,
        `eval_clips` evenly spaced ones (clips, mel, T) at evaluation."""
        if modality != "audio" or isinstance(decoded, torch.Tensor):
            return decoded
        if train:
            return self.audio.crop(decoded, self.train_crop, rng)
        if self.eval_clips > 1:
            return self.audio.crop(decoded, "clips", num_clips=self.eval_clips)
        return self.audio.crop(decoded, "start")

    def item(self, modality: str, value: Any, base_dir: str | Path | None = None) -> Any:
        """One value -> the evaluation input: image (3, H, W), audio (mel, T) or (clips, mel, T),
        text (ids (L,), length)."""
        return self.finish(modality, self.decode(modality, value, base_dir), train=False)

    def batch(self, modality: str, values: list) -> torch.Tensor:
        """Values -> one unmasked input batch, as the encoders take it."""
        if modality == "text":
            ids, lengths = self.tokenizer([_check_text(v) for v in values])
            return ids[:, : int(lengths.max())]
        return torch.stack([self.item(modality, v) for v in values])


def build_tokenizer(cfg: ModelConfig, run_dir: str | Path | None = None, texts=None) -> TextTokenizer | None:
    """The run's tokenizer: the run folder's copy if any, the configured file, CLIP BPE, or a
    SentencePiece model trained on `texts` (and saved in the run folder). An open_clip text tower
    settles CLIP BPE and its context length first (`resolve_towers`)."""
    resolve_towers(cfg)
    t = cfg.text
    if "text" not in cfg.modalities:
        return None
    if t.tokenizer == "clip":
        return TextTokenizer.clip(t.max_len)
    saved = Path(run_dir) / "tokenizer.model" if run_dir is not None else None
    if saved is not None and saved.exists():
        return TextTokenizer.load(saved, t.max_len)
    if t.tokenizer_file:
        tok = TextTokenizer.load(t.tokenizer_file, t.max_len)
        if saved is not None:
            tok.save(saved)
        return tok
    if texts is None or saved is None:
        raise FileNotFoundError(
            "no tokenizer: set model.text.tokenizer_file, or train one on the training captions"
        )
    tok = TextTokenizer.train(texts() if callable(texts) else texts, saved, vocab_size=t.vocab_size, max_len=t.max_len)
    if tok.vocab_size < t.vocab_size // 2:
        print(f"warning: model.text.vocab_size={t.vocab_size}, but the training captions make only "
              f"{tok.vocab_size} pieces: the run's vocabulary is {tok.vocab_size} (a smaller model.text.vocab_size "
              "says so in the config)", file=sys.stderr)
    return tok
