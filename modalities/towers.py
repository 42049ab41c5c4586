"""Pretrained towers as modality encoders, behind the same interface as our own
`Encoder` (`forward(x, keep) -> (features, valid)`, `.grid`, `.dim`), so masking,
prediction and binding work over them unchanged:

    timm:NAME                 a timm Vision Transformer (images; spectrograms, as AST), weights from the run's checkpoint (or random)
    timm:NAME:PATH            ... initialised from a local safetensors / torch file (no download)
    open_clip:ARCH            the image (`.visual`) or text tower of an open_clip model, random
    open_clip:ARCH:TAG        ... with open_clip's pretrained weights TAG (from the hub or its local cache)
    open_clip:ARCH:PATH       ... from a local file of the whole open_clip model (no network)

A video tower is an image ViT of either library inflated to clips, as ImageBind starts its video
encoder from OpenCLIP's image one: the patch embedding becomes a (tubelet, p, p) 3-D convolution
(the image kernel spread over the tubelet's frames), every time step shares the image positions,
and a learned time position, zero at the start, tells the steps apart (TimeSformer's).

The context-only forward runs the tower's own patch embedding and positions (class and register
tokens included), then keeps the prefix tokens and gathers the context patches before the blocks,
as I-JEPA's context encoder does. Features come back for the patch tokens only, on the tower's
token grid. Pooling: the head mean-pools those patch tokens (the class token steers the blocks but
is not pooled), for every tower alike, so a masked context and a whole input pool the same way; a
tower's own pooling (CLIP's class or end-of-text token) is not used.

An open_clip text tower keeps its causal attention over the tokens it is given: over a masked
context, a token attends to the context tokens at or before its own position in the caption.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .encoder import gather_tokens
from .errors import DataError
from .tokens import inflate_kernel

WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")


@dataclass(frozen=True)
class TowerSpec:
    """A parsed `model.<m>.pretrained` string."""

    library: str  # "timm" or "open_clip"
    name: str
    path: str | None = None  # a local file, or (open_clip) a pretrained tag

    @classmethod
    def parse(cls, text: str, key: str) -> TowerSpec:
        library, _, rest = text.partition(":")
        name, _, path = rest.partition(":")
        if library not in ("timm", "open_clip") or not name:
            raise DataError(f"{key}='{text}': expected timm:NAME[:PATH] or open_clip:ARCH[:TAG_OR_PATH]")
        return cls(library, name, path or None)

    @property
    def is_file(self) -> bool:
        """A local file rather than an open_clip pretrained tag (tags have no '/' and no suffix)."""
        p = self.path or ""
        return self.library == "timm" or "/" in p or p.endswith(WEIGHT_SUFFIXES) or Path(p).exists()


def _keep_context(h: torch.Tensor, keep: torch.Tensor | None, prefix: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(B, P + N, D) embedded tokens -> the prefix tokens and the context patches `keep` (B, K)
    (-1 = padding) gathered after them, (B, P + K, D), and the (B, K) validity (None: all valid)."""
    if keep is None:
        return h, None
    kept = keep >= 0  # (B, K)
    h = torch.cat([h[:, :prefix], gather_tokens(h[:, prefix:], keep.clamp_min(0))], dim=1)
    return h, None if bool(kept.all()) else kept


def _additive_mask(allowed: torch.Tensor, heads: int, dtype: torch.dtype) -> torch.Tensor:
    """(B, Q, K) may-attend -> the (B * heads, Q, K) additive mask open_clip's blocks take. A query
    always sees itself, so a padding query never attends to nothing (no NaN to leak into sums)."""
    eye = torch.eye(allowed.shape[1], allowed.shape[2], dtype=torch.bool, device=allowed.device)
    mask = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    mask.masked_fill_(~(allowed | eye), float("-inf"))
    return mask.repeat_interleave(heads, 0)


class TimmViTTower(nn.Module):
    """A timm VisionTransformer (no classifier) as an encoder: (B, C, H, W) -> (B, N or K, D)."""

    file_prefix = ""  # the file's keys are the timm model's own

    def __init__(self, name: str, in_chans: int = 3, img_size: tuple[int, int] | None = None):
        super().__init__()
        import timm

        size = {} if img_size is None else {"img_size": tuple(img_size)}
        try:
            self.vit = timm.create_model(name, pretrained=False, num_classes=0, in_chans=in_chans, **size)
        except RuntimeError as e:  # timm: "Unknown model (...)"
            raise DataError(f"timm has no model '{name}' ({e})") from None
        if not hasattr(self.vit, "patch_embed") or not hasattr(self.vit, "blocks"):
            raise DataError(f"timm model '{name}' is not a Vision Transformer (no patch_embed / blocks)")
        self.dim = int(self.vit.embed_dim)
        self.grid: tuple[int, ...] = tuple(int(g) for g in self.vit.patch_embed.grid_size)
        self.prefix = int(self.vit.num_prefix_tokens)

    @property
    def weights(self) -> nn.Module:
        """The module whose state dict a weights file holds."""
        return self.vit

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, P + N, D): patches, prefix tokens, positions."""
        v = self.vit
        if x.dim() == 3:  # (B, mel, time) spectrogram without a channel axis
            x = x.unsqueeze(1)
        return v.norm_pre(v.patch_drop(v._pos_embed(v.patch_embed(x))))

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        v = self.vit
        h, valid = _keep_context(self.embed(x), keep, self.prefix)
        attn_mask = None
        if valid is not None:  # prefix tokens are always there
            full = torch.cat([valid.new_ones(valid.shape[0], self.prefix), valid], dim=1)
            attn_mask = full[:, None, None, :]  # (B, 1, 1, P + K)
        for blk in v.blocks:
            h = blk(h, attn_mask=attn_mask)
        return v.norm(h)[:, self.prefix :], valid

    def adapt(self, state: dict[str, torch.Tensor]) -> list[str]:
        """An image model's weights onto this tower's channels and grid, as AST starts its spectrogram
        ViT from an ImageNet one: the patch embedding summed over the colour channels (3 -> 1), the
        position table resampled to the spectrogram's grid (timm's `resample_abs_pos_embed`, its
        prefix tokens kept). -> the keys changed."""
        from timm.layers import resample_abs_pos_embed

        own, changed = self.vit.state_dict(), []
        w = state.get("patch_embed.proj.weight")
        if w is not None and w.dim() == 4 and w.shape[1] != own["patch_embed.proj.weight"].shape[1] \
                and own["patch_embed.proj.weight"].shape[1] == 1:
            state["patch_embed.proj.weight"] = w.sum(1, keepdim=True)
            changed.append("patch_embed.proj.weight")
        pos = state.get("pos_embed")
        if pos is not None and pos.shape != own["pos_embed"].shape and pos.dim() == 3 and pos.shape[-1] == self.dim:
            n = pos.shape[1] - self.prefix
            side = int(round(n ** 0.5))
            if side * side == n:  # a square image grid
                state["pos_embed"] = resample_abs_pos_embed(pos, list(self.grid[-2:]), [side, side], self.prefix)
                changed.append("pos_embed")
        return changed

    def facts(self) -> dict:
        v = self.vit
        cfg = getattr(v, "pretrained_cfg", {}) or {}
        return {"size": tuple(int(s) for s in v.patch_embed.img_size), "patch": int(v.patch_embed.patch_size[0]),
                "width": self.dim, "depth": len(v.blocks), "heads": int(v.blocks[0].attn.num_heads),
                "mean": tuple(float(m) for m in cfg.get("mean", (0.5, 0.5, 0.5))),
                "std": tuple(float(s) for s in cfg.get("std", (0.5, 0.5, 0.5)))}


def open_clip_model(arch: str) -> nn.Module:
    """open_clip's architecture `arch` with random weights (weights come from a file or a run)."""
    import open_clip

    if open_clip.get_model_config(arch) is None:
        raise DataError(f"open_clip has no model '{arch}' (open_clip.list_models() names them)")
    log = logging.getLogger()
    level = log.level
    log.setLevel(logging.ERROR)  # open_clip warns "No pretrained weights loaded": we load them ourselves
    try:
        return open_clip.create_model(arch, pretrained=None, device=torch.empty(0).device, force_patch_dropout=0.0)
    finally:
        log.setLevel(level)


def _heads(block: nn.Module) -> int:
    return int(block.attn.num_heads)


class OpenClipImageTower(nn.Module):
    """The visual tower of an open_clip model (a ViT with a class token): (B, 3, H, W) -> (B, N or K, D)."""

    file_prefix = "visual."

    def __init__(self, arch: str):
        super().__init__()
        from open_clip.transformer import VisionTransformer

        visual = open_clip_model(arch).visual
        if not isinstance(visual, VisionTransformer) or visual.attn_pool is not None:
            raise DataError(f"open_clip model '{arch}': its image tower is not a plain Vision Transformer "
                            f"({type(visual).__name__}); use a ViT model")
        self.visual = visual
        self.dim = int(visual.transformer.width)
        self.grid: tuple[int, ...] = tuple(int(g) for g in visual.grid_size)
        self.heads = _heads(visual.transformer.resblocks[0])

    @property
    def weights(self) -> nn.Module:
        return self.visual

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.visual._embeds(x)  # (B, 1 + N, D): class token, positions, ln_pre

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        v = self.visual
        h, valid = _keep_context(self.embed(x), keep, 1)
        mask = None
        if valid is not None:
            full = torch.cat([valid.new_ones(valid.shape[0], 1), valid], dim=1)  # (B, 1 + K)
            mask = _additive_mask(full[:, None, :].expand(-1, full.shape[1], -1), self.heads, h.dtype)
        return v.ln_post(v.transformer(h, attn_mask=mask))[:, 1:], valid

    def facts(self) -> dict:
        v = self.visual
        pre = getattr(v, "preprocess_cfg", {}) or {}
        return {"size": tuple(int(s) for s in v.image_size), "patch": int(v.patch_size[0]),
                "width": self.dim, "depth": len(v.transformer.resblocks), "heads": self.heads,
                "mean": tuple(float(m) for m in pre.get("mean", (0.48145466, 0.4578275, 0.40821073))),
                "std": tuple(float(s) for s in pre.get("std", (0.26862954, 0.26130258, 0.27577711)))}


class _TextParts(nn.Module):
    """A CLIP model's text tower, which open_clip keeps as attributes of the whole model: the same
    names here, so the file's keys load as they are."""

    def __init__(self, clip: nn.Module):
        super().__init__()
        self.token_embedding, self.positional_embedding = clip.token_embedding, clip.positional_embedding
        self.transformer, self.ln_final = clip.transformer, clip.ln_final
        self.register_buffer("attn_mask", clip.attn_mask, persistent=False)

    def no_weight_decay(self) -> set[str]:  # as open_clip's TextTransformer says of its own table
        return {"positional_embedding"}


class OpenClipTextTower(nn.Module):
    """The text tower of an open_clip model: (B, L) CLIP BPE ids (0 = padding) -> (B, L or K, D)."""

    def __init__(self, arch: str):
        super().__init__()
        clip = open_clip_model(arch)
        text = getattr(clip, "text", None)  # CustomTextCLIP keeps a TextTransformer; CLIP its parts
        if text is not None and (getattr(text, "cls_emb", None) is not None or not hasattr(text, "token_embedding")):
            raise DataError(f"open_clip model '{arch}': its text tower ({type(text).__name__}) is not supported; "
                            "use a CLIP model with a plain text transformer")
        self.text = text if text is not None else _TextParts(clip)
        self.file_prefix = "text." if text is not None else ""
        self.causal = getattr(self.text, "attn_mask", None) is not None
        self.dim = int(self.text.transformer.width)
        self.grid: tuple[int, ...] = (int(self.text.positional_embedding.shape[0]),)
        self.heads = _heads(self.text.transformer.resblocks[0])
        self.vocab_size = int(self.text.token_embedding.num_embeddings)

    @property
    def weights(self) -> nn.Module:
        return self.text

    def forward(self, ids: torch.Tensor, keep: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        t = self.text
        h = t.token_embedding(ids) + t.positional_embedding[: ids.shape[1]]  # (B, L, D)
        valid = ids != 0
        pos = torch.arange(ids.shape[1], device=ids.device).expand_as(ids)  # (B, L) place in the caption
        if keep is not None:
            safe = keep.clamp_min(0)
            h, pos = gather_tokens(h, safe), torch.gather(pos, 1, safe)
            valid = torch.gather(valid, 1, safe) & (keep >= 0)
        allowed = valid[:, None, :].expand(-1, valid.shape[1], -1)  # (B, Q, K) keys that are tokens
        if self.causal:  # at or before the query's own place, as CLIP's causal mask
            allowed = allowed & (pos[:, None, :] <= pos[:, :, None])
        h = t.transformer(h, attn_mask=_additive_mask(allowed, self.heads, h.dtype))
        return t.ln_final(h), None if bool(valid.all()) else valid

    def facts(self) -> dict:
        return {"max_len": self.grid[0], "vocab_size": self.vocab_size, "width": self.dim,
                "depth": len(self.text.transformer.resblocks), "heads": self.heads}


class _Inflated:
    """What turns an image ViT into a video one (the mixin of the two video towers): its patch
    convolution `proj_key` made 3-D over `tubelet` frames, and a time position per tubelet step."""

    proj_key: str  # the patch convolution's name in the tower's state dict

    def _inflate(self, conv: nn.Conv2d, frames: int, tubelet: int) -> nn.Conv3d:
        if frames % tubelet:
            raise DataError(f"a video tower needs frames ({frames}) to be a multiple of the tubelet ({tubelet})")
        self.tubelet = tubelet
        self.grid = (frames // tubelet, *self.grid)  # (T', H', W'), time-major as our TubeletTokens
        self.time_pos = nn.Parameter(torch.zeros(1, frames // tubelet, 1, self.dim))
        proj = nn.Conv3d(conv.in_channels, conv.out_channels, (tubelet, *conv.kernel_size), (tubelet, *conv.stride),
                         bias=conv.bias is not None)
        with torch.no_grad():  # random towers start inflated too: a still clip embeds as its frame would
            proj.weight.copy_(inflate_kernel(conv.weight, tubelet))
            if conv.bias is not None:
                proj.bias.copy_(conv.bias)
        return proj

    def _frames_as_images(self, h: torch.Tensor) -> tuple[torch.Tensor, int]:
        """(B, D, T', H', W') tubelet features -> ((B * T', H' * W', D) one image per time step, T')."""
        B, D, T = h.shape[:3]
        return h.permute(0, 2, 3, 4, 1).reshape(B * T, -1, D), T

    def _images_as_clip(self, h: torch.Tensor, T: int, prefix: int) -> torch.Tensor:
        """(B * T', P + N, D) positioned steps -> (B, P + T' * N, D): the first step's prefix tokens,
        then every step's patches, each with its time position."""
        h = h.view(-1, T, *h.shape[1:])
        return torch.cat([h[:, 0, :prefix], (h[:, :, prefix:] + self.time_pos.to(h.dtype)).flatten(1, 2)], dim=1)

    def adapt(self, state: dict[str, torch.Tensor]) -> list[str]:
        """An image model's patch convolution (D, C, p, p) -> this tower's (D, C, t, p, p)."""
        key = self.file_prefix + self.proj_key
        changed = super().adapt(state) if hasattr(super(), "adapt") else []
        if key in state and state[key].dim() == 4:
            state[key] = inflate_kernel(state[key], self.tubelet)
            changed.insert(0, key)
        return changed

    def no_weight_decay(self) -> set[str]:
        return {"time_pos"}


class TimmVideoTower(_Inflated, TimmViTTower):
    """A timm image ViT inflated to clips: (B, 3, T, H, W) -> (B, N or K, D) on a (T', H', W') grid."""

    proj_key = "patch_embed.proj.weight"

    def __init__(self, name: str, frames: int, tubelet: int):
        super().__init__(name)
        pe = self.vit.patch_embed
        pe.proj = self._inflate(pe.proj, frames, tubelet)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        v = self.vit
        h, T = self._frames_as_images(v.patch_embed.proj(x))
        h = self._images_as_clip(v._pos_embed(v.patch_embed.norm(h)), T, self.prefix)
        return v.norm_pre(v.patch_drop(h))  # (B, P + T' * N, D)


class OpenClipVideoTower(_Inflated, OpenClipImageTower):
    """open_clip's image ViT inflated to clips: (B, 3, T, H, W) -> (B, N or K, D) on a (T', H', W') grid."""

    proj_key = "conv1.weight"

    def __init__(self, arch: str, frames: int, tubelet: int):
        super().__init__(arch)
        self.visual.conv1 = self._inflate(self.visual.conv1, frames, tubelet)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        v = self.visual
        h, T = self._frames_as_images(v.conv1(x))
        cls = v.class_embedding.to(h.dtype).view(1, 1, -1).expand(h.shape[0], -1, -1)
        h = torch.cat([cls, h], dim=1) + v.positional_embedding.to(h.dtype)  # (B * T', 1 + N, D)
        return v.ln_pre(v.patch_dropout(self._images_as_clip(h, T, 1)))  # (B, 1 + T' * N, D)


def tower_facts(tower: Callable[[], nn.Module]) -> dict:
    """What the rest of the model and the preprocessing must follow (token grid, patch, input size,
    width, depth, heads, mean/std from timm's pretrained_cfg or open_clip's preprocess_cfg; the
    context length and vocabulary of a text tower), from the architecture alone: `tower()` builds it
    on the meta device (shapes without weights, no time spent initialising them)."""
    with torch.device("meta"):
        return tower().facts()


def weights_file(spec: TowerSpec) -> Path:
    """The local file a spec's weights come from: its path, or open_clip's download (or cached copy)
    of a pretrained tag."""
    if spec.is_file:
        return Path(spec.path)
    import open_clip
    from open_clip.pretrained import download_pretrained

    cfg = open_clip.get_pretrained_cfg(spec.name, spec.path)
    if not cfg:
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(spec.name)) or "none"
        raise DataError(f"open_clip has no pretrained weights '{spec.path}' for {spec.name} (it has: {tags})")
    try:
        return Path(download_pretrained(cfg))
    except Exception as e:
        raise DataError(f"open_clip:{spec.name}:{spec.path}: the weights could not be fetched or found in the "
                        f"cache ({str(e).splitlines()[0][:160]}); give a local file instead: "
                        f"open_clip:{spec.name}:/path/open_clip_model.safetensors") from None


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """A local weights file: safetensors, or a torch file read with weights_only=True (never unpickled)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no such weights file")
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(p))
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:
        raise DataError(f"{p}: unreadable weights file ({str(e).splitlines()[0][:200]})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise DataError(f"{p}: expected a dict of tensors")
    return state


def file_sha256(path: str | Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def load_tower(tower: nn.Module, path: str | Path, state: dict[str, torch.Tensor] | None = None,
               sha256: str | None = None) -> dict:
    """Initialise the tower from `path` (`state`, `sha256`: its tensors and hash, when a file serving
    two towers was already read; a classifier head and the other tower of a CLIP file are ignored)
    -> a record of what was loaded (path, sha256 of the file, tensors). Missing or misshapen weights
    name the file."""
    state = read_weights(path) if state is None else state
    state = {k.removeprefix("module."): v for k, v in state.items()}  # saved from DDP
    adapted = tower.adapt(state) if hasattr(tower, "adapt") else []
    own = tower.weights.state_dict()
    want = {k: tower.file_prefix + k for k in own}
    missing = sorted(f for f in want.values() if f not in state)
    wrong = sorted(k for k, f in want.items() if f in state and tuple(state[f].shape) != tuple(own[k].shape))
    if missing or wrong:
        detail = (f"missing {missing[:3]}" if missing else "") + (" " if missing and wrong else "") + \
                 (f"shape of {want[wrong[0]]} is {tuple(state[want[wrong[0]]].shape)}, expected "
                  f"{tuple(own[wrong[0]].shape)}" if wrong else "")
        raise DataError(f"{path}: not weights of this tower ({detail})")
    tower.weights.load_state_dict({k: state[f] for k, f in want.items()})
    return {"path": str(Path(path).resolve()), "sha256": sha256 or file_sha256(path), "tensors": len(own), **({"adapted": adapted} if adapted else {})}
