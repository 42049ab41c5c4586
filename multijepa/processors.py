"""Turns raw values (paths, PIL images, strings, arrays) into model inputs, per modality.

One object shared by the data loader and the Python API (`MultiJEPA.embed_*`), so training and
inference preprocess identically.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch

from modalities.text import TextTokenizer

from .config import ModelConfig
from .modality import get_modality
from .towers import resolve_towers


class Processors:
    """Each configured modality's preprocessing object (`Modality.processor`), and the run's tokenizer."""

    def __init__(self, cfg: ModelConfig, tokenizer: TextTokenizer | None):
        self.modalities = list(cfg.modalities)
        self.cfg = cfg
        self._tokenizer = tokenizer
        self.by_modality = {m: get_modality(m).processor(cfg, tokenizer) for m in self.modalities}

    @property
    def tokenizer(self) -> TextTokenizer | None:
        return self._tokenizer

    @tokenizer.setter
    def tokenizer(self, tokenizer: TextTokenizer | None) -> None:
        """A tokenizer trained after the processors were made (on the sources they read): the
        modalities whose preprocessing uses it are made again."""
        self._tokenizer = tokenizer
        self.by_modality = {m: get_modality(m).processor(self.cfg, tokenizer) for m in self.modalities}

    def of(self, modality: str) -> Any:
        """The preprocessing object of one modality (an ImagePreprocessor, the tokenizer, ...)."""
        if modality not in self.by_modality:
            raise ValueError(f"no '{modality}' preprocessing: this model has {', '.join(self.modalities)}")
        return self.by_modality[modality]

    def decode(self, modality: str, value: Any, base_dir: str | Path | None = None) -> Any:
        """One raw value -> a decoded sample, cacheable (`Modality.decode`: image (3, H, W), text
        (ids (L,), length), audio a DecodedAudio). Without a tokenizer, text is only checked."""
        return get_modality(modality).decode(self.by_modality.get(modality), value, base_dir)

    def finish(self, modality: str, decoded: Any, train: bool, rng: torch.Generator | None = None) -> Any:
        """Decoded sample -> model input (`Modality.finish`: audio's window, at random when `train`)."""
        return get_modality(modality).finish(self.by_modality.get(modality), decoded, train, rng)

    def item(self, modality: str, value: Any, base_dir: str | Path | None = None) -> Any:
        """One value -> the evaluation input: image (3, H, W), audio (mel, T) or (clips, mel, T),
        text (ids (L,), length)."""
        return self.finish(modality, self.decode(modality, value, base_dir), train=False)

    def batch(self, modality: str, values: list) -> torch.Tensor:
        """Values -> one unmasked input batch, as the encoders take it."""
        return get_modality(modality).batch(self.of(modality), values)


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
