"""The order test (after ARO, Yuksekgonul et al., ICLR 2023): on the demo's scenes of two or more
objects, does an image prefer its own caption to the same caption with two objects' places
swapped, and its own sound to the sound of the swapped scene?

Both captions are written by the demo's own caption generator from the same random state, so they
use the same phrasing and (up to the phrase each place takes) the same words: a bag of words scores
50 %. The same holds for the two sounds (the demo's renderer, same noise). ARO found CLIP near chance
on such swaps; prediction of masked parts from their context is the training that should know where
things are.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from multijepa.data.demo import _caption, _render_audio

SAMPLE_RATE, SECONDS = 16000, 2.0  # the demo's defaults


def swapped_scenes(manifest: Path, limit: int = 300) -> list[tuple[str, list[dict], list[dict], int]]:
    """(image path, objects, the objects with the first two objects' places swapped, seed) of each
    scene with two objects in different places, at most `limit`."""
    out = []
    for i, line in enumerate(manifest.read_text().splitlines()):
        row = json.loads(line)
        objs = row.get("objects") or []
        if len(objs) < 2 or (objs[0]["row"], objs[0]["col"]) == (objs[1]["row"], objs[1]["col"]):
            continue
        swapped = [dict(o) for o in objs]
        for key in ("row", "col"):
            swapped[0][key], swapped[1][key] = objs[1][key], objs[0][key]
        out.append((str(manifest.parent / row["image"]), objs, swapped, i))
        if len(out) == limit:
            break
    return out


def order_accuracy(model, manifest: Path, limit: int = 300) -> dict:
    """{"text": share of scenes whose image is closer to its own caption than to the swapped one,
    "audio": the same for the scene's sound (absent without an audio encoder), "n": scenes}."""
    scenes = swapped_scenes(manifest, limit)
    if not scenes:
        return {"n": 0}
    images = model.embed_images([s[0] for s in scenes])  # (n, E)
    res: dict = {"n": len(scenes)}
    if "text" in model.modalities:
        own = [_caption(objs, np.random.default_rng([seed, 1])) for _, objs, _, seed in scenes]
        swap = [_caption(sw, np.random.default_rng([seed, 1])) for _, _, sw, seed in scenes]
        res["text"] = _prefers_own(images, model.embed_texts(own), model.embed_texts(swap))
    if "audio" in model.modalities:
        n = int(SAMPLE_RATE * SECONDS)

        def sounds(which: int) -> list:
            return [(_render_audio(s[which], SAMPLE_RATE, n, np.random.default_rng([s[3], 2])), SAMPLE_RATE)
                    for s in scenes]

        res["audio"] = _prefers_own(images, model.embed_audio(sounds(1)), model.embed_audio(sounds(2)))
    return res


def _prefers_own(anchor: torch.Tensor, own: torch.Tensor, swapped: torch.Tensor) -> float:
    """Share of rows whose anchor is strictly closer (cosine) to `own` than to `swapped`; ties count half."""
    a, b = (anchor * own).sum(-1), (anchor * swapped).sum(-1)
    return float(((a > b).float() + 0.5 * (a == b).float()).mean())
