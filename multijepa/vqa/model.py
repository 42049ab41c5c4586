"""The VQA model: the pretraining run's image and text encoders, an attention-fusion module
(fusion/), and an answer MLP over the pooled fused features.

A fine-tuning folder holds everything to rebuild it without the pretraining run:
model.safetensors, vqa_config.yaml, model_config.yaml (the encoders' shapes), tokenizer.model
and answers.json (the answer vocabulary).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from fusion.registry import build_fusion
from modalities.encoder import init_weights
from modalities.text import TextTokenizer

from ..checkpoint import CheckpointError
from ..config import ModelConfig, load_settings, save_config
from ..model import build_encoder
from ..processors import Processors, build_tokenizer
from ..train.builder import encoder_scaled_groups
from .answers import AnswerVocab
from .config import VQAConfig, load_vqa_config


class VQAModel(nn.Module):
    def __init__(self, model_cfg: ModelConfig, cfg: VQAConfig, vocab_size: int, num_answers: int):
        super().__init__()
        self.image_encoder = build_encoder("image", model_cfg)
        self.text_encoder = build_encoder("text", model_cfg, vocab_size)
        f = cfg.fusion
        self.image_proj = nn.Linear(self.image_encoder.dim, f.width)
        self.text_proj = nn.Linear(self.text_encoder.dim, f.width)
        self.fusion = build_fusion(f.kind, f.width, f.depth, f.heads, f.memory_slots)
        h = cfg.head_hidden
        self.head = nn.Sequential(nn.Linear(f.width, h), nn.LayerNorm(h), nn.GELU(), nn.Linear(h, num_answers))
        for m in (self.image_proj, self.text_proj, self.fusion, self.head):
            m.apply(init_weights)

    def forward(self, image: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """image (B, 3, H, W), question tokens (B, L) -> answer logits (B, A)."""
        img, _ = self.image_encoder(image)  # (B, N, Di)
        txt, valid = self.text_encoder(tokens)  # (B, L, Dt), (B, L) or None
        if valid is None:
            valid = torch.ones(txt.shape[:2], dtype=torch.bool, device=txt.device)
        pooled = self.fusion(self.text_proj(txt), valid, self.image_proj(img))  # (B, W)
        return self.head(pooled)

    def encoders(self) -> list[nn.Module]:
        return [self.image_encoder, self.text_encoder]

    def param_groups(self, optim) -> list[dict]:
        """The encoders at lr * optim.encoder_lr_scale (0 freezes them), the rest at lr."""
        return encoder_scaled_groups(self, self.encoders(), optim)

    def load_pretrained_encoders(self, pretrained) -> None:
        """Copy the image and text encoders of a MultiJEPA (its EMA target encoders, which I-JEPA
        uses for downstream tasks; the online ones of a CLIP-objective run)."""
        self.image_encoder.load_state_dict(pretrained.feature_encoder("image").state_dict())
        self.text_encoder.load_state_dict(pretrained.feature_encoder("text").state_dict())


class VQAPredictor:
    """A loaded fine-tuning folder: the model, its preprocessing and its answers."""

    def __init__(self, model: VQAModel, processors: Processors, vocab: AnswerVocab, cfg: VQAConfig, model_cfg: ModelConfig):
        self.model, self.processors, self.vocab, self.cfg, self.model_cfg = model, processors, vocab, cfg, model_cfg

    @torch.no_grad()
    def predict(self, image, question: str, k: int = 5) -> list[tuple[str, float]]:
        """One image (path, PIL image or array) and question -> the top-k (answer, sigmoid score)."""
        device = next(self.model.parameters()).device
        self.model.eval()
        x = self.processors.batch("image", [image]).to(device)
        tokens = self.processors.batch("text", [question]).to(device)
        scores = self.model(x, tokens).sigmoid()[0]
        top = scores.topk(min(k, len(self.vocab)))
        return [(self.vocab.answers[i], float(s)) for s, i in zip(top.values.tolist(), top.indices.tolist())]


def save_vqa(out: str | Path, model: VQAModel, cfg: VQAConfig, model_cfg: ModelConfig,
             tokenizer: TextTokenizer, vocab: AnswerVocab) -> None:
    """Write the fine-tuning folder; the weights last and atomically."""
    out = Path(out)
    save_vqa_config(out, cfg)
    save_config(model_cfg, out / "model_config.yaml")
    if tokenizer.kind == "sentencepiece":  # CLIP BPE ships with open_clip
        tokenizer.save(out / "tokenizer.model")
    vocab.save(out / "answers.json")
    tmp = out / "model.safetensors.tmp"
    save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}, str(tmp))
    os.replace(tmp, out / "model.safetensors")


def save_vqa_config(out: Path, cfg: VQAConfig) -> None:
    """The resolved settings, written when a run starts (so --resume reuses them) and at its end."""
    save_config(cfg, out / "vqa_config.yaml")


def load_vqa(folder: str | Path, device: str | torch.device = "cpu") -> VQAPredictor:
    folder = Path(folder)
    if not (folder / "model.safetensors").is_file():
        raise CheckpointError(f"{folder}: not a VQA fine-tuning folder (no model.safetensors; make one with `multijepa vqa train`)")
    cfg = load_vqa_config(folder / "vqa_config.yaml")
    model_cfg = load_settings(ModelConfig, folder / "model_config.yaml")
    tokenizer = build_tokenizer(model_cfg, folder)
    vocab = AnswerVocab.load(folder / "answers.json")
    model = VQAModel(model_cfg, cfg, tokenizer.vocab_size, len(vocab))
    try:
        model.load_state_dict(load_file(str(folder / "model.safetensors")))
    except Exception as e:  # a cut-short file, or weights of another shape
        raise CheckpointError(f"{folder / 'model.safetensors'}: unreadable or not this model's weights "
                              f"({str(e).splitlines()[0][:200]})") from None
    return VQAPredictor(model.to(device).eval(), Processors(model_cfg, tokenizer), vocab, cfg, model_cfg)

