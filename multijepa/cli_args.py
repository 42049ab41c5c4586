"""What the wings' commands share: the usage error, the options several commands take (declared
once, as argparse parents), and loading a run, a config or torchrun's processes for a command."""

from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path

EPILOG_SOURCES = """\
MANIFEST may be a .jsonl/.csv/.parquet file, a saved datasets folder, WebDataset tar shards
(a glob or shard-{000000..000009}.tar) or a hub dataset name. Columns are mapped with
data.columns.image=jpg data.columns.text=txt ... when they are not named image/text/audio.
A benchmark in its published layout reads as KIND:PATH?key=value&..., e.g.
karpathy:dataset_coco.json?split=test&root=images, coco:captions_val2017.json?root=val2017,
audiocaps:test.csv?root=audio, clotho:clotho_captions_evaluation.csv?root=evaluation,
esc50:meta/esc50.csv?root=audio&fold=1, vqa2:QUESTIONS.json?annotations=ANNOTATIONS.json&root=val2014,
msrvtt:MSRVTT_JSFUSION_test.csv?root=videos, vggsound:vggsound.csv?split=test&root=video.
"""


class UsageError(Exception):
    """A command given arguments it cannot work with: printed as one line, exit code 2."""


def parent(*arguments: tuple[tuple, dict]) -> argparse.ArgumentParser:
    """Options several commands share, declared once (argparse `parents=`)."""
    p = argparse.ArgumentParser(add_help=False)
    for flags, kwargs in arguments:
        p.add_argument(*flags, **kwargs)
    return p


RUN = parent((("--checkpoint",), dict(required=True, help="pretraining run folder (its latest weights), or one of "
                                     "its checkpoints: RUN/checkpoints/step_N")))
DEVICE = parent((("--device",), dict(default="auto", help="auto | cpu | cuda [auto: CUDA when there is one]")))
BATCH = parent((("--batch-size",), dict(type=int, default=128, help="rows per forward pass [128]")))
PROGRESS = parent((("--no-progress",), dict(action="store_true", help="no progress bar")))
INDEX = parent((("--index",), dict(required=True, help="index folder (from `multijepa index`)")),
               (("--checkpoint",), dict(help="pretraining run folder [the one the index was built with]")))


def overrides_arg(what: str) -> argparse.ArgumentParser:
    """The `key=value` settings a command takes after its options."""
    return parent((("overrides",), dict(nargs="*", metavar="key=value", help=what)))


def run_config(load, args: argparse.Namespace, saved_name: str, overrides: list[str], say=print, load_saved=None):
    """A resumed run keeps the config it saved (plus this command's overrides; `load_saved` reads it,
    when that differs from `load`); a new one reads --config."""
    saved = Path(args.out) / saved_name
    if args.resume and saved.exists():
        say(f"resuming with the run's saved config {saved} (+ overrides)")
        return (load_saved or load)(saved, overrides)
    return load(args.config, overrides)


def need(path: str | Path, what: str, inside: str | None = None) -> None:
    """A path the command needs, checked before the heavy imports (torch, faiss) so a typo costs no wait."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file or folder ({what})")
    if inside is not None and not (p / inside).exists():
        raise FileNotFoundError(f"{p}: not {what}: it has no {inside}")


def need_run(path: str | Path) -> None:
    """--checkpoint: a pretraining run folder, or one of its checkpoints (RUN/checkpoints/step_N)."""
    from .run_folder import run_of

    p = Path(path)
    need(p, "the --checkpoint pretraining run folder")
    if not (run_of(p)[0] / "config.yaml").exists():
        raise FileNotFoundError(f"{p}: not the --checkpoint pretraining run folder (or one of its checkpoints): "
                                "it has no config.yaml")


def load_run(args: argparse.Namespace, device=None):
    """The pretraining run folder (or checkpoint) --checkpoint names, as a model on --device (or `device`)."""
    need_run(args.checkpoint)
    from .distributed import pick_device
    from .model import MultiJEPA

    return MultiJEPA.from_pretrained(args.checkpoint, device=device or pick_device(args.device))


@contextlib.contextmanager
def processes(args: argparse.Namespace):
    """-> (world, device): torchrun's process group when launched by it (one process per GPU),
    else a world of one; left again when the command ends."""
    from .distributed import close_distributed, init_distributed

    world, device = init_distributed(args.device)
    try:
        yield world, device
    finally:
        close_distributed(world)


def finetune_overrides(args: argparse.Namespace) -> list[str]:
    """The overrides a fine-tuning command's options stand for (vqa train, caption train)."""
    overrides = list(args.overrides)
    if args.freeze_encoders:
        overrides.append("optim.encoder_lr_scale=0")
    elif getattr(args, "encoder_lr_scale", None) is not None:
        overrides.append(f"optim.encoder_lr_scale={args.encoder_lr_scale}")
    elif args.from_scratch and not any(o.startswith("optim.encoder_lr_scale") for o in overrides):
        # random encoders at a tenth of the LR would be a handicapped baseline: full LR for them
        overrides.append("optim.encoder_lr_scale=1")
    if args.max_steps is not None:
        overrides.append(f"train.max_steps={args.max_steps}")
    return overrides


def write_json(path: str | None, results: dict) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(results, indent=2))
        print(f"wrote {path}")
