"""Text modality: tokenizers that turn captions into fixed-length id tensors."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Iterable

import sentencepiece as spm
import torch

from modalities.errors import ABSURD_SIZE, EMPTY_TEXT, DataError

# ----------------------------------------------------------------------------- preprocessing

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3  # SentencePiece ids we train with


def _check_text(text, max_chars: int = 100_000) -> str:
    """A caption must be a non-blank string of at most `max_chars` characters (longer is
    surely not a caption, and tokenizing it wastes time before truncation); the message
    shows (a cut) repr of what came."""
    if not isinstance(text, str):
        raise DataError(f"text {repr(text)[:80]} is a {type(text).__name__}, not a string", EMPTY_TEXT)
    if not text.strip():
        raise DataError(f"text {repr(text)[:80]} is empty", EMPTY_TEXT)
    if len(text) > max_chars:
        raise DataError(f"text {repr(text)[:80]} has absurd size: {len(text):,} characters "
                        f"(max {max_chars:,})", ABSURD_SIZE)
    return text


def _with_words(texts: Iterable) -> Iterable[str]:
    """Yield the usable texts, then each distinct word once.

    Unigram training seeds its vocabulary with maximal repeated substrings; in templated
    captions ('a red circle is left of ...') whole words are rarely maximal, so a small
    corpus trains to near-character pieces (25 ids for an 11-word caption). One extra
    occurrence of each word makes it a seed and barely moves a large corpus's statistics.
    """
    words: set[str] = set()
    for t in texts:
        if isinstance(t, str) and t.strip():
            words.update(t.split())
            yield t
    yield from sorted(words)


class TextTokenizer:
    """Turns captions into fixed-length id tensors.

    Two kinds: 'sentencepiece' (our default; a model file trained on the corpus when none
    is given) and 'clip' (open_clip's CLIP BPE, which ships inside the open_clip package,
    no download). Either way a row is `[bos] pieces [eos] pad...` with pad_id 0.
    """

    def __init__(self, kind: str, max_len: int, model_proto: bytes | None = None):
        if max_len < 2:
            raise ValueError(f"max_len must be >= 2 (bos and eos), got {max_len}")
        self.kind, self.max_len, self.pad_id = kind, int(max_len), 0
        self._proto = model_proto
        if kind == "sentencepiece":
            self._sp = spm.SentencePieceProcessor(model_proto=model_proto)
            self.vocab_size = self._sp.get_piece_size()
            self.bos_id, self.eos_id = self._sp.bos_id(), self._sp.eos_id()
            if min(self.bos_id, self.eos_id) < 0 or self._sp.pad_id() != 0:
                raise DataError("sentencepiece model must define bos/eos and pad_id 0 (train with TextTokenizer.train)")
            self._encode, self._decode = self._sp.encode, self._sp.decode
        elif kind == "clip":
            from open_clip.tokenizer import SimpleTokenizer  # imported here: open_clip is slow to import

            bpe = SimpleTokenizer()
            self.vocab_size = len(bpe.encoder)
            self.bos_id, self.eos_id = bpe.sot_token_id, bpe.eot_token_id
            self._encode = bpe.encode
            self._decode = lambda ids: bpe.decode(ids).strip()
        else:
            raise ValueError(f"unknown tokenizer kind {kind!r} (expected 'sentencepiece' or 'clip')")

    # --- construction

    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        path: str | Path,
        vocab_size: int = 1000,
        max_len: int = 32,
        model_type: str = "unigram",
    ) -> "TextTokenizer":
        """Train SentencePiece on `texts`, write the model to `path` (.model), return it loaded.

        Trains from an in-memory iterator (no temp files) and quietly. `vocab_size` is an upper
        bound (hard_vocab_limit=False): small corpora yield fewer pieces instead of failing.
        Blank or non-string texts are skipped here; they are errors only at tokenization.
        `model_type` is any SentencePiece type ('unigram', 'bpe', ...).
        """
        buf = io.BytesIO()
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=_with_words(texts),
                model_writer=buf,
                model_type=model_type,
                vocab_size=vocab_size,
                hard_vocab_limit=False,
                pad_id=PAD_ID,
                unk_id=UNK_ID,
                bos_id=BOS_ID,
                eos_id=EOS_ID,
                num_threads=min(8, os.cpu_count() or 1),
                minloglevel=2,  # no log spam
            )
        except RuntimeError as e:
            raise DataError(f"cannot train a SentencePiece tokenizer on the given texts: {e}") from e
        tok = cls("sentencepiece", max_len, buf.getvalue())
        tok.save(path)
        return tok

    @classmethod
    def load(cls, path: str | Path, max_len: int = 32) -> "TextTokenizer":
        """Load a SentencePiece .model file."""
        path = Path(path)
        if not path.is_file():
            raise DataError(f"tokenizer model not found: {path}")
        try:
            return cls("sentencepiece", max_len, path.read_bytes())
        except (RuntimeError, OSError) as e:
            raise DataError(f"tokenizer model {path}: not a SentencePiece model ({e})") from e

    @classmethod
    def clip(cls, max_len: int = 77) -> "TextTokenizer":
        """open_clip's CLIP BPE (lower-cased, 49408 ids); pad_id 0 as open_clip pads."""
        return cls("clip", max_len)

    def save(self, path: str | Path) -> None:
        """Write the SentencePiece model file (the CLIP kind has nothing to save)."""
        if self.kind != "sentencepiece":
            raise ValueError("the CLIP tokenizer ships with open_clip; there is no model file to save")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(self._proto)
        os.replace(tmp, path)  # atomic: a crash never leaves half a model

    # --- use

    def __call__(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """-> ids (B, max_len) int64, lengths (B,) int64 (bos and eos included).

        Too-long texts are cut so the row still ends with eos. A single string counts as a
        batch of one. Raises DataError for an empty/blank or non-string text.
        """
        if isinstance(texts, str):
            texts = [texts]
        ids = torch.full((len(texts), self.max_len), self.pad_id, dtype=torch.long)  # (B, L)
        lengths = torch.empty(len(texts), dtype=torch.long)  # (B,)
        for i, text in enumerate(texts):
            pieces = self._encode(_check_text(text))[: self.max_len - 2]
            row = [self.bos_id, *pieces, self.eos_id]
            ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
            lengths[i] = len(row)
        return ids, lengths

    def with_max_len(self, max_len: int) -> "TextTokenizer":
        """The same tokenizer, cutting texts to `max_len` ids (bos and eos included)."""
        return TextTokenizer(self.kind, max_len, self._proto)

    def decode(self, ids: list[int]) -> str:
        """Token ids (a leading bos optional) -> text, cut at the first eos; padding and bos dropped."""
        if self.eos_id in ids:
            ids = ids[: ids.index(self.eos_id)]
        return self._decode([i for i in ids if i not in (self.pad_id, self.bos_id)])

    def __getstate__(self):  # picklable for DataLoader workers: rebuild from the model bytes
        return {"kind": self.kind, "max_len": self.max_len, "model_proto": self._proto}

    def __setstate__(self, state):
        self.__init__(state["kind"], state["max_len"], state["model_proto"])

    def __repr__(self) -> str:
        return f"TextTokenizer(kind={self.kind!r}, vocab_size={self.vocab_size}, max_len={self.max_len})"
