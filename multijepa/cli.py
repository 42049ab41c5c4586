"""The `multijepa` command line: the root parser, the shape of its errors and the dispatch. Each
wing registers its own commands (`<wing>/commands.py`); every command works with no data argument,
and then uses the built-in demo dataset (generated locally on first use)."""

from __future__ import annotations

import argparse
import os
import sys

from .caption.commands import COMMANDS as CAPTION
from .cli_args import UsageError
from .data.commands import COMMANDS as DATA
from .retrieval.commands import COMMANDS as RETRIEVAL
from .serve.commands import COMMANDS as SERVE
from .train.commands import COMMANDS as TRAIN
from .vqa.commands import COMMANDS as VQA

# every wing's commands by name, in the order `multijepa --help` lists them
COMMANDS = {**DATA, **TRAIN, **RETRIEVAL, **SERVE, **VQA, **CAPTION}
ORDER = ("data", "tokenizer", "pretrain", "embed", "index", "search", "serve", "vqa", "plot", "caption", "eval")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="multijepa",
        description="Joint-embedding predictive architectures over text, image and audio: "
        "pretrain on paired data, retrieve across modalities, fine-tune for VQA.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    assert set(ORDER) == set(COMMANDS), "a wing's command is missing from ORDER"
    for name in ORDER:
        COMMANDS[name](sub)
    return p


def _parse(argv: list[str] | None) -> argparse.Namespace:
    """Options and `key=value` overrides in any order: argparse takes the overrides before the first
    option as the positional list; the ones after it come back unrecognised and are added here."""
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    target = "overrides" if hasattr(args, "overrides") else "items" if hasattr(args, "items") else None
    stray = [e for e in extra if target is None or e.startswith("-") or (target == "overrides" and "=" not in e)]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if extra:
        getattr(args, target).extend(extra)
    return args


# errors that are the user's to fix, printed as one line: (module, class). Looked up only in modules
# already imported (an exception cannot come from one that is not), so a failing command never
# waits for torch to import just to print its error.
ONE_LINE_ERRORS = (("modalities.errors", "DataError"), ("multijepa.config", "ConfigError"),
                   ("multijepa.checkpoint", "CheckpointError"), ("multijepa.objective", "CollapseError"),
                   ("multijepa.run_folder", "RunFolderError"), ("builtins", "FileExistsError"),
                   ("builtins", "FileNotFoundError"))


def _ours(e: BaseException) -> bool:
    return any(isinstance(e, getattr(sys.modules[m], name)) for m, name in ONE_LINE_ERRORS if m in sys.modules)


def main(argv: list[str] | None = None) -> int:
    """Exit status: 0 done, 1 an error (one line on stderr; MULTIJEPA_DEBUG=1 adds the traceback),
    2 a usage error, 128+N stopped by signal N after writing a checkpoint."""
    from .interrupts import TrainingInterrupted

    args = _parse(argv)
    try:
        return args.func(args) or 0
    except TrainingInterrupted as e:
        print(str(e), file=sys.stderr)
        return e.exit_code
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if os.environ.get("MULTIJEPA_DEBUG"):
            raise
        if _ours(e):
            print(f"error: {e}", file=sys.stderr)
        else:  # not one of ours: still one line
            first = (str(e).strip().splitlines() or [""])[0][:300]
            print(f"error: {type(e).__name__}: {first} (MULTIJEPA_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
