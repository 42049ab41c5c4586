"""Zero-shot classification, CLIP-style: images or sounds against text prompts of class names.

Each class's prompts ("a {}.", "the sound of a {}.", ...) are embedded with the text tower and
averaged (open_clip's `build_zero_shot_classifier`); a sample's class is the prompt average its
embedding is nearest to. Accuracy is measured against the manifest's label column.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from open_clip.zero_shot_classifier import build_zero_shot_classifier

from modalities.errors import DataError

from ..model import MultiJEPA
from .embed import embed_rows, manifest_labels, open_manifest

DEFAULT_TEMPLATES = ("a {}.", "an image of a {}.", "a picture of a {}.", "the sound of a {}.")


def read_classes(path: str | Path) -> list[str]:
    """Class names: a text file with one per line (blank lines and #-comments skipped), or a JSON list."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"classes file not found: {p}")
    text = p.read_text(encoding="utf-8")
    if p.suffix == ".json":
        names = json.loads(text)
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise DataError(f"{p}: expected a JSON list of class names")
    else:
        names = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if len(names) < 2:
        raise DataError(f"{p}: zero-shot classification needs at least 2 classes, found {len(names)}")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise DataError(f"{p}: classes listed twice: {', '.join(dupes)}")
    return names


def read_templates(values: list[str] | None) -> list[str]:
    """Prompt templates: strings with one `{}` for the class name, or files of them (one per line)."""
    if not values:
        return list(DEFAULT_TEMPLATES)
    out: list[str] = []
    for v in values:
        if "{}" not in v and Path(v).is_file():
            out += [line.strip() for line in Path(v).read_text(encoding="utf-8").splitlines() if line.strip()]
        else:
            out.append(v)
    bad = [t for t in out if t.count("{}") != 1]
    if bad:
        raise DataError(f"a template must hold exactly one '{{}}' for the class name: {bad[0]!r}")
    return out


class _TextTower:
    """What `build_zero_shot_classifier` expects of a model: encode_text(tokens, normalize)."""

    def __init__(self, model: MultiJEPA):
        self.model = model

    def encode_text(self, tokens: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        return self.model.encode("text", tokens)  # already L2-normalised


def zero_shot_classifier(model: MultiJEPA, classes: list[str], templates: list[str]) -> torch.Tensor:
    """-> (E, C) class embeddings (each the normalised mean of its prompts)."""
    if "text" not in model.modalities:
        raise ValueError("zero-shot classification needs a model with a text encoder")
    model.eval()
    device = model.logit_scale.device
    return build_zero_shot_classifier(
        _TextTower(model), lambda texts: model.processors.batch("text", texts), classes, templates, device=device
    ).float().cpu()


def accuracy(logits: torch.Tensor, target: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """logits (n, C), target (n,) -> {"top1": share whose class is the best guess, "top5": ... in the best 5}."""
    top = logits.topk(min(max(ks), logits.shape[1]), dim=1).indices  # (n, k)
    hit = top == target.unsqueeze(1)
    return {f"top{k}": float(hit[:, :k].any(1).float().mean()) for k in ks}


def zero_shot_eval(
    model: MultiJEPA,
    manifest: str | Path,
    classes: list[str],
    templates: list[str],
    modalities: list[str] | None = None,
    batch_size: int = 128,
    progress: bool = True,
) -> dict[str, dict]:
    """Classify every image/audio of `manifest` -> {modality: {"top1", "top5", "n", "classes", "chance_top1"}}."""
    wanted = modalities or [m for m in model.modalities if m != "text"]  # what the prompts classify
    dataset = open_manifest(model, manifest, wanted)  # the captions need no decoding here
    labels = manifest_labels(dataset)
    if labels is None:
        col = model.run_config.data.columns.get("label", "label")
        raise DataError(f"{manifest}: no label column '{col}' to score zero-shot predictions against "
                        "(map another with data.columns.label)")
    unknown = sorted({lab for lab in labels if lab is not None and lab not in classes})
    if unknown:
        raise DataError(f"{manifest}: {len(unknown)} labels are not in the class list, e.g. {', '.join(map(repr, unknown[:5]))}")
    if not modalities:
        wanted = [m for m in wanted if m in dataset.columns]
    if not wanted:
        raise DataError(f"{manifest} has no image or audio column to classify (or the model no encoder for it)")
    weights = zero_shot_classifier(model, classes, templates)  # (E, C)
    embs, _ = embed_rows(model, dataset, batch_size=batch_size, progress=progress)
    index = {c: i for i, c in enumerate(classes)}
    results = {}
    for m in wanted:
        if m not in embs:
            raise DataError(f"{manifest} has no '{m}' values to classify")
        z, rows = embs[m]
        row_ids = rows.tolist()
        keep = [i for i, r in enumerate(row_ids) if labels[r] is not None]
        target = torch.tensor([index[labels[row_ids[i]]] for i in keep], dtype=torch.long)
        logits = z[keep] @ weights  # (n, C)
        results[m] = {**accuracy(logits, target), "n": len(keep), "classes": len(classes), "chance_top1": 1 / len(classes)}
    return results


def format_zero_shot(results: dict[str, dict]) -> str:
    head = f"{'modality':<10}{'n':>7}{'classes':>9}{'top-1':>8}{'top-5':>8}{'chance top-1':>14}"
    lines = [head, "-" * len(head)]
    for m, r in results.items():
        lines.append(f"{m:<10}{r['n']:>7}{r['classes']:>9}{r['top1']:>8.3f}{r['top5']:>8.3f}{r['chance_top1']:>14.4f}")
    return "\n".join(lines)
