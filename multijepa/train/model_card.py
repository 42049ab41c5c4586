"""RUN/MODEL_CARD.md: what a run folder holds, in words a reader of the folder needs (Mitchell et
al.'s model cards, trimmed to what a pretraining run knows about itself): the recipe, the data and
its row counts, how long it trained on what, its last logged figures, what it is for, and how to
load it. Rewritten at every checkpoint, so a killed run's card describes its last checkpoint."""

from __future__ import annotations

import datetime as dt
import os
import platform
from pathlib import Path

import torch

from .. import __version__
from ..config import Config

FIGURES = ("loss", "loss/pred", "loss/bind", "lr")


def hardware(device: torch.device, world_size: int) -> str:
    """The machine in one line: the accelerator (or CPU) and the processes."""
    if device.type == "cuda":
        chip = torch.cuda.get_device_name(device)
    else:
        chip = f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads)"
    return f"{chip}, {world_size} process{'es' if world_size > 1 else ''}"


def source_rows(sources) -> list[tuple[str, str, str, float]]:
    """(name, where from, rows or "streamed", weight) of each opened source."""
    out = []
    for s in sources:
        rows = "streamed" if s.streaming else f"{len(s.ds):,}"
        out.append((s.name, s.origin or str(s.base_dir or ""), rows, s.weight))
    return out


def model_card(cfg: Config, out: Path, sources, step: int, seconds: float, device: torch.device, world_size: int,
               last: dict, drawn: dict[str, int], parameters: int, heldout: dict | None = None) -> str:
    """The card's Markdown. `heldout`: the held-out evaluation (`HeldOutEval.card`), when the run has one."""
    m, loss = cfg.model, cfg.loss
    sections = {name: getattr(m, name) for name in m.modalities}
    encoders = "; ".join(
        f"{name}: {getattr(c, 'pretrained', None) or c.encoder.kind} (width {c.encoder.width}, depth {c.encoder.depth}"
        f"{', frozen' if getattr(c, 'freeze', False) else ''})" for name, c in sections.items())
    if loss.objective == "clip":
        objective = "binding alone (`loss.objective=clip`, open_clip's symmetric InfoNCE)"
    elif loss.predicts:
        start = f"{loss.pred_start:.0%} of the run" if loss.pred_start else "the first step"
        objective = (f"binding, and masked cross-modal prediction from {start} "
                     f"(`loss.pred_start`; weight {loss.pred_weight:g}, targets: {m.target})")
    else:
        objective = "binding alone (`loss.pred_weight=0`)"
    lines = [
        f"# Model card: {out.name}",
        "",
        f"A MultiJEPA pretraining run, written by `multijepa pretrain` (multijepa {__version__}, torch "
        f"{torch.__version__}) at step {step}, {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC. "
        "The resolved config is `config.yaml`; every logged step is in `metrics.jsonl`.",
        "",
        "## Model",
        "",
        f"- Modalities: {', '.join(m.modalities)}, into one {m.embed_dim}-dimensional shared space.",
        f"- Encoders: {encoders}.",
        f"- Objective: {objective}.",
        f"- Trainable parameters: {parameters:,} (a frozen tower's and the EMA targets' not counted).",
        "",
        "## Data",
        "",
        "| source | from | rows | weight | rows drawn |",
        "|---|---|---|---|---|",
        *(f"| {n} | `{o}` | {r} | {w:g} | {drawn.get(n, 0):,} |" for n, o, r, w in source_rows(sources)),
        "",
        "## Training",
        "",
        f"- Steps: {step:,} of `train.max_steps` {cfg.train.max_steps:,}"
        + (f" (`train.max_seconds` {cfg.train.max_seconds:g})" if cfg.train.max_seconds else "")
        + f"; global batch {cfg.data.batch_size}.",
        f"- Training time: {seconds:,.0f} s (checkpoint writes not counted).",
        f"- Hardware: {hardware(device, world_size)}; precision {cfg.train.precision}.",
        "",
        "## Last logged figures",
        "",
    ]
    if last:
        lines += [f"Step {last.get('step', step)}:", "", "| figure | value |", "|---|---|"]
        keys = [k for k in FIGURES if k in last] + sorted(k for k in last if k.startswith("rankme/"))
        lines += [f"| `{k}` | {last[k]:.4g} |" for k in keys]
        lines.append("")
        lines.append("RankMe (the effective rank of a modality's shared embeddings in a batch) near 1 means a "
                     "collapsed space. Held-out figures come from `multijepa eval retrieval / probe`.")
    else:
        lines.append("No step logged yet.")
    if heldout:
        last_rec = heldout["last"]
        p1 = f", mean class-match P@1 {last_rec['heldout/P@1']:.3f}" if "heldout/P@1" in last_rec else ""
        lines += ["", "## Held-out retrieval", "",
                  f"On `{heldout['data']}` (`train.eval_data`), at step {last_rec['step']}: mean R@1 "
                  f"{last_rec['heldout/R@1']:.3f}{p1}. The best so far: mean R@1 {heldout['best']:.3f} at step "
                  f"{heldout['best_step']}, kept as `{heldout['checkpoint']}` (use it as `--checkpoint`)."]
    lines += [
        "",
        "## Intended use",
        "",
        "Embeddings for retrieval across the modalities above (text to image, image to sound, ...), and "
        "encoders to fine-tune for VQA or captioning. It knows only what its data holds: check it on data "
        "like yours before relying on it, and it carries that data's gaps and biases. A run on the built-in "
        "demo data (synthetic shapes, captions and sounds) is for trying the tool, not for real inputs.",
        "",
        "## How to load it",
        "",
        "```python",
        "from multijepa import MultiJEPA",
        "",
        f'model = MultiJEPA.from_pretrained("{out}")',
        'zt = model.embed_texts(["a caption"])  # (n, embed_dim), L2-normalised; embed_images, embed_audio alike',
        "```",
        "",
        "```bash",
        f"multijepa eval retrieval --checkpoint {out} --data HELD_OUT_MANIFEST",
        f"multijepa pretrain --out {out} --resume   # continue training",
        "```",
        "",
    ]
    return "\n".join(lines)


def write_model_card(path: Path, text: str) -> None:
    """Atomically, as the checkpoints are written: a reader never sees half a card."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
