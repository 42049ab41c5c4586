"""The docs' reference pages, generated from the code so they cannot drift from it: the CLI from the
argparse parsers, the config keys from the settings dataclasses (type, default, range or choices, and
the comment beside the field in the source as its meaning).

    python scripts/docs_reference.py OUT_DIR     # writes OUT_DIR/cli.md and OUT_DIR/config.md

`mkdocs build` runs it through mkdocs-gen-files (docs/gen_pages.py); tests/test_docs.py checks it.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import io
import sys
import textwrap
import tokenize
import typing
from pathlib import Path

# ----------------------------------------------------------------------------- CLI


def _subparsers(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser, str]]:
    """(name, parser, one-line help) of a parser's subcommands, in the order --help lists them."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            return [(name, sub, helps.get(name, "")) for name, sub in action.choices.items()]
    return []


def walk_commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """Every (command path, parser, help) below `parser`, depth first, in --help's order."""
    for name, sub, helptext in _subparsers(parser):
        yield (*path, name), sub, helptext
        yield from walk_commands(sub, (*path, name))


def cli_markdown() -> str:
    from multijepa.cli import _parser

    root = _parser()
    lines = ["# CLI reference", "",
             "Generated from the argparse parsers (`multijepa/<wing>/commands.py`) when the docs are built:",
             "what `multijepa COMMAND --help` prints, command by command.", "",
             "```text", _help(root), "```", ""]
    for path, parser, helptext in walk_commands(root):
        lines += [f"{'#' * min(len(path) + 1, 4)} multijepa {' '.join(path)}", ""]
        if helptext:
            lines += [helptext[0].upper() + helptext[1:] + ".", ""]
        lines += ["```text", _help(parser), "```", ""]
    return "\n".join(lines)


def _help(parser: argparse.ArgumentParser) -> str:
    """--help as an 100-column terminal shows it, whatever the terminal running this is."""
    old = parser.formatter_class

    def formatter(prog):
        try:
            return old(prog, width=100)
        except TypeError:
            return old(prog)

    parser.formatter_class = formatter
    try:
        return parser.format_help().rstrip()
    finally:
        parser.formatter_class = old


# ----------------------------------------------------------------------------- config

SECTIONS = (  # (title, root dataclass, how a user sets it)
    ("Pretraining (`multijepa pretrain`)", "multijepa.config:Config", "`--config NAME` and `section.key=value`"),
    ("VQA fine-tuning (`multijepa vqa train`)", "multijepa.vqa.config:VQAConfig", "`--config vqa_demo` and `key=value`"),
    ("Captioning (`multijepa caption train`)", "multijepa.caption.config:CaptionConfig", "`--config caption_demo` and `key=value`"),
    ("Index (`multijepa index`)", "multijepa.retrieval.index:IndexConfig", "`key=value` after the options"),
)


def _load(spec: str):
    module, name = spec.split(":")
    __import__(module)
    return getattr(sys.modules[module], name)


def field_comments(cls: type) -> dict[str, str]:
    """Each field's comment in `cls`'s source (inherited fields from the bases'): the comment at the
    end of its line, else the comment lines right above it."""
    out: dict[str, str] = {}
    for base in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(base) or base is object:
            continue
        try:
            source = textwrap.dedent(inspect.getsource(base))
        except (OSError, TypeError):
            continue
        comments: dict[int, str] = {}
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.COMMENT:
                comments[tok.start[0]] = tok.string.lstrip("#").strip()
        lines = source.splitlines()
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                row = node.lineno
                if row in comments and lines[row - 1].lstrip()[:1] != "#":
                    out[node.target.id] = comments[row]
                    continue
                above, r = [], row - 1
                while r in comments and lines[r - 1].lstrip().startswith("#"):
                    above.insert(0, comments[r])
                    r -= 1
                if above:
                    out[node.target.id] = " ".join(above)
    return out


def _type_name(t) -> str:
    if isinstance(t, type):
        return t.__name__
    text = str(t).replace("typing.", "")
    return text.replace("NoneType", "None")


def _default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _allowed(cls: type, name: str) -> str:
    choices = getattr(cls, "CHOICES", {}).get(name)
    if choices is not None:
        return " \\| ".join(f"`{c}`" for c in choices)
    r = getattr(cls, "RANGES", {}).get(name)
    if r is None:
        return ""
    parts = []
    if r.lo is not None:
        parts.append(f"{'>' if r.lo_open else '≥'} {r.lo:g}")
    if r.hi is not None:
        parts.append(f"{'<' if r.hi_open else '≤'} {r.hi:g}")
    text = ", ".join(parts) or "any"
    return text + (" (low ≤ high)" if r.ordered else "")


def config_rows(cls: type, prefix: str = ""):
    """(key, type, default, allowed, meaning) of every key below `cls`, nested dataclasses flattened."""
    hints = typing.get_type_hints(cls)
    comments = field_comments(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        t = hints.get(f.name, f.type)
        default = _default(f)
        if dataclasses.is_dataclass(t) and isinstance(t, type):
            yield from config_rows(t, key + ".")
            continue
        yield key, _type_name(t), default, _allowed(cls, f.name), comments.get(f.name, "")


def _cell(value) -> str:
    text = repr(value) if isinstance(value, str) else str(value)
    return f"`{text}`".replace("|", "\\|")


def config_markdown() -> str:
    lines = ["# Config reference", "",
             "Generated from the settings dataclasses when the docs are built: every key, its type, its default",
             "(the dataclass's; a shipped config may set another), the values it allows (checked as a config",
             "loads) and its meaning, the comment beside it in the code. Unknown keys are errors that name the key.",
             ""]
    for title, spec, how in SECTIONS:
        cls = _load(spec)
        lines += [f"## {title}", "", f"`{spec.replace(':', '.')}`; set with {how}.", "",
                  "| key | type | default | allowed | meaning |", "|---|---|---|---|---|"]
        for key, t, default, allowed, meaning in config_rows(cls):
            lines.append(f"| `{key}` | `{t.replace('|', chr(92) + '|')}` | {_cell(default)} | {allowed} | {meaning.replace('|', chr(92) + '|')} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    out = Path(argv[0] if argv else "docs/reference")
    out.mkdir(parents=True, exist_ok=True)
    (out / "cli.md").write_text(cli_markdown())
    (out / "config.md").write_text(config_markdown())
    print(f"wrote {out / 'cli.md'} and {out / 'config.md'}")


if __name__ == "__main__":
    main(sys.argv[1:])
