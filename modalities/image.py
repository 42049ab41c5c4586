"""Image modality: loading and preprocessing (PIL -> RGB -> resize -> normalise)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from timm.data.constants import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

from modalities.errors import ABSURD_SIZE, EMPTY_FILE, UNDECODABLE, UNSUPPORTED_VALUE, DataError
from modalities.paths import resolve_path, unpack_media

# ----------------------------------------------------------------------------- preprocessing

MIN_SIDE = 2  # smaller images are almost surely broken data, not pictures


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    """Scale an integer or float array to uint8: 16-bit by /257, floats taken as [0, 1]."""
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    if np.issubdtype(arr.dtype, np.floating):
        return (np.clip(np.nan_to_num(arr), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if np.issubdtype(arr.dtype, np.integer):
        # 16-bit (or 32-bit 'I' mode holding 16-bit data): keep the full range visible.
        scale = 257 if arr.size and arr.max() > 255 else 1
        return np.clip(arr // scale, 0, 255).astype(np.uint8)
    raise TypeError(f"unsupported array dtype {arr.dtype}")


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB; transparency is composited on white (not black) as viewers show it."""
    if img.mode == "RGB":
        return img
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if img.mode in ("I", "F") or img.mode.startswith("I;"):
        # 16/32-bit grey: PIL's convert('RGB') would clip at 255, so rescale by hand.
        return Image.fromarray(_to_uint8(np.asarray(img))).convert("RGB")
    return img.convert("RGB")  # L, 1, CMYK, YCbCr, ...


def load_image(value, base_dir: str | Path | None = None) -> Image.Image:
    """Decode any supported image value to an RGB PIL image, fully loaded.

    `value`: a path (str/Path, relative to `base_dir`), a PIL image, raw bytes, a dict with
    'bytes' or 'path' (the `datasets` Image feature undecoded), or an HxW / HxWxC array
    (uint8; uint16 and float in [0, 1] are rescaled). EXIF orientation is applied.
    Raises DataError naming the file and the reason.
    """
    name = "<image>"
    try:
        if isinstance(value, dict):
            value, named = unpack_media(value, "image")
            name = named or name

        if isinstance(value, (str, Path)):
            path = resolve_path(value, base_dir, "image")
            name = str(path)
            img = Image.open(path)
        elif isinstance(value, (bytes, bytearray, memoryview)):
            if name == "<image>":
                name = f"<{len(value)} bytes>"
            if len(value) == 0:
                raise DataError(f"image {name}: empty (0 bytes)", EMPTY_FILE)
            img = Image.open(io.BytesIO(bytes(value)))
        elif isinstance(value, Image.Image):
            img = value
        elif isinstance(value, np.ndarray):
            name = f"<array {value.shape} {value.dtype}>"
            if value.ndim == 3 and value.shape[2] == 1:
                value = value[:, :, 0]
            if not (value.ndim == 2 or (value.ndim == 3 and value.shape[2] in (3, 4))):
                raise DataError(f"image array {name}: expected HxW or HxWxC with C in 1, 3, 4", UNSUPPORTED_VALUE)
            try:
                value = _to_uint8(value)
            except TypeError as e:
                raise DataError(f"image array {name}: {e}", UNSUPPORTED_VALUE) from e
            img = Image.fromarray(value)
        else:
            raise DataError(f"unsupported image value of type {type(value).__name__}", UNSUPPORTED_VALUE)

        img.load()  # full decode now, so a truncated file fails here and not in the model
        img = ImageOps.exif_transpose(img)
        img = _to_rgb(img)
    except DataError:
        raise
    except Image.DecompressionBombError as e:
        raise DataError(f"image {name}: absurd size, decompression bomb ({e})", ABSURD_SIZE) from e
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, zlib/struct errors...
        what = "truncated" if "truncated" in str(e) else "not an image or undecodable"
        raise DataError(f"image {name}: {what} ({type(e).__name__}: {e})", UNDECODABLE) from e

    if img.width < MIN_SIDE or img.height < MIN_SIDE:
        raise DataError(f"image {name}: absurd size {img.width}x{img.height} (min {MIN_SIDE}x{MIN_SIDE})",
                        ABSURD_SIZE)
    return img


class ImagePreprocessor:
    """Image value -> normalised (3, size, size) float32 tensor.

    Shorter side resized to `size` (bicubic, antialiased by PIL), then a centre crop, as CLIP
    evaluation does; mean/std default to OpenAI CLIP's.
    """

    def __init__(self, size: int = 64, mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD):
        self.size = int(size)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)

    def __call__(self, value, base_dir=None) -> torch.Tensor:
        img = load_image(value, base_dir)
        w, h = img.size
        scale = self.size / min(w, h)
        nw, nh = max(self.size, round(w * scale)), max(self.size, round(h * scale))
        img = img.resize((nw, nh), Image.Resampling.BICUBIC)
        left, top = (nw - self.size) // 2, (nh - self.size) // 2
        img = img.crop((left, top, left + self.size, top + self.size))
        x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0)  # (H, W, 3)
        x = x.permute(2, 0, 1).contiguous()  # (3, H, W)
        return (x - self.mean) / self.std
