"""CLIPA's resized binding: how many patches a side holds once its input is resized (no torch here,
so the config can check a setting without loading the model code)."""

from __future__ import annotations


def resized_patches(side: int, patch: int, scale: float) -> int:
    """Patches along a side of `side` pixels (or mel bins, frames) resized by `scale`; a ValueError
    where that is not a whole number of `patch`-wide patches."""
    n = side * scale / patch
    if abs(n - round(n)) > 1e-6 or round(n) < 1:
        raise ValueError(f"resizing by {scale:g} makes a side of {side} into {side * scale:g}, not a whole "
                         f"number of {patch}-wide patches")
    return round(n)
