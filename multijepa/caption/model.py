"""The captioning model: the pretraining run's image or audio encoder, a projection to the
decoder's width, (for the meshed decoder) M2's memory-augmented encoder layers, and a decoder
(fusion/decoder.py) over the run's text tokenizer.

A captioning folder holds everything to rebuild it without the pretraining run:
model.safetensors, caption_config.yaml, model_config.yaml (the encoder's shapes), tokenizer.model
and caption.json (the modality).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from fusion.decoder import CaptionDecoder, MemoryEncoder
from modalities.encoder import init_weights
from modalities.text import TextTokenizer

from ..checkpoint import CheckpointError
from ..config import ModelConfig, load_settings, save_config
from ..modality import get_modality
from ..model import build_encoder
from ..processors import Processors, build_tokenizer
from ..train.builder import encoder_scaled_groups
from .config import CaptionConfig, load_caption_config
from .decode import beam_search


class CaptionModel(nn.Module):
    def __init__(self, model_cfg: ModelConfig, cfg: CaptionConfig, modality: str, tokenizer: TextTokenizer):
        super().__init__()
        d = cfg.decoder
        self.modality = modality
        self.encoder = build_encoder(modality, model_cfg)
        self.proj = nn.Linear(self.encoder.dim, d.width)
        self.memory = MemoryEncoder(d.width, d.memory_layers, d.heads, d.memory_slots) if d.kind == "meshed" else None
        n_memories = d.memory_layers if d.kind == "meshed" else 1
        self.decoder = CaptionDecoder(d.kind, tokenizer.vocab_size, d.width, d.depth, d.heads, d.max_len, n_memories)
        self.pad_id, self.bos_id, self.eos_id = tokenizer.pad_id, tokenizer.bos_id, tokenizer.eos_id
        for m in (self.proj, self.memory, self.decoder.layers):
            if m is not None:
                m.apply(init_weights)

    def encode(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        """Inputs -> the decoder's memories (each (B, N, W)) and their validity (B, N) or None."""
        if get_modality(self.modality).clips(x):  # (B, clips, ...): every clip's tokens, side by side
            h, _ = self.encoder(x.flatten(0, 1))  # (B*clips, N, D); patches and tubelets have no padding
            h, valid = h.reshape(x.shape[0], -1, h.shape[-1]), None
        else:
            h, valid = self.encoder(x)  # (B, N, D)
        h = self.proj(h)
        return (self.memory(h, valid) if self.memory is not None else [h]), valid

    def forward(self, x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """x: inputs, ids (B, T) bos ... -> next-token logits (B, T, V) (teacher forcing)."""
        memories, valid = self.encode(x)
        return self.decoder(ids, memories, valid)

    def param_groups(self, optim) -> list[dict]:
        """The encoder at lr * optim.encoder_lr_scale (0 freezes it), the rest at lr."""
        return encoder_scaled_groups(self, [self.encoder], optim)


class Captioner:
    """A loaded captioning folder: the model, its preprocessing, its tokenizer."""

    def __init__(self, model: CaptionModel, processors: Processors, cfg: CaptionConfig, model_cfg: ModelConfig):
        self.model, self.processors, self.cfg, self.model_cfg = model, processors, cfg, model_cfg
        self.tokenizer = processors.tokenizer.with_max_len(cfg.decoder.max_len)

    @property
    def modality(self) -> str:
        return self.model.modality

    @torch.no_grad()
    def caption(self, inputs: list, beam: int | None = None) -> list[str]:
        """Images or sounds (paths, arrays, ...) -> one caption each."""
        device = next(self.model.parameters()).device
        x = self.processors.batch(self.modality, inputs).to(device)
        return self.caption_batch(x, beam)

    @torch.no_grad()
    def caption_batch(self, x: torch.Tensor, beam: int | None = None) -> list[str]:
        d = self.cfg.decode
        self.model.eval()
        ids = beam_search(self.model, x, beam or d.beam, d.max_len, d.length_penalty, d.no_repeat_ngram)
        return [self.tokenizer.decode(row) for row in ids.tolist()]


def save_captioner(out: str | Path, model: CaptionModel, cfg: CaptionConfig, model_cfg: ModelConfig,
                   tokenizer: TextTokenizer) -> None:
    """Write the captioning folder; the weights last and atomically."""
    out = Path(out)
    save_caption_config(out, cfg, model.modality)
    save_config(model_cfg, out / "model_config.yaml")
    if tokenizer.kind == "sentencepiece":  # CLIP BPE ships with open_clip
        tokenizer.save(out / "tokenizer.model")
    tmp = out / "model.safetensors.tmp"
    save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}, str(tmp))
    os.replace(tmp, out / "model.safetensors")


def save_caption_config(out: Path, cfg: CaptionConfig, modality: str) -> None:
    """The resolved settings and the modality, written when a run starts (so --resume reuses them) and at its end."""
    save_config(cfg, out / "caption_config.yaml")
    (out / "caption.json").write_text(json.dumps({"modality": modality}) + "\n")


def load_captioner(folder: str | Path, device: str | torch.device = "cpu") -> Captioner:
    folder = Path(folder)
    if not (folder / "model.safetensors").is_file():
        raise CheckpointError(f"{folder}: not a captioning folder (no model.safetensors; make one with "
                              "`multijepa caption train`)")
    cfg = load_caption_config(folder / "caption_config.yaml")
    model_cfg = load_settings(ModelConfig, folder / "model_config.yaml")
    modality = json.loads((folder / "caption.json").read_text())["modality"]
    tokenizer = build_tokenizer(model_cfg, folder)
    model = CaptionModel(model_cfg, cfg, modality, tokenizer)
    try:
        model.load_state_dict(load_file(str(folder / "model.safetensors")))
    except Exception as e:  # a cut-short file, or weights of another shape
        raise CheckpointError(f"{folder / 'model.safetensors'}: unreadable or not this model's weights "
                              f"({str(e).splitlines()[0][:200]})") from None
    return Captioner(model.to(device).eval(), Processors(model_cfg, tokenizer), cfg, model_cfg)
