"""The docs cannot drift from the code: every `multijepa ...` command in README.md and docs/ parses
with today's parsers, every Python import in them imports, every script they run exists, and the
generated reference pages cover every command and every config key."""

from __future__ import annotations

import ast
import importlib
import re
import shlex
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
SHELL_FENCES = ("bash", "sh", "shell", "console", "")
FENCE = re.compile(r"^```(\w*)\s*$")


def code_blocks(text: str) -> list[tuple[str, str, int]]:
    """(language, code, first line number) of every fenced block of a markdown text."""
    blocks, lang, start, lines = [], None, 0, []
    for i, line in enumerate(text.splitlines(), 1):
        m = FENCE.match(line.strip())
        if lang is None and m:
            lang, start, lines = m.group(1), i + 1, []
        elif lang is not None and line.strip() == "```":
            blocks.append((lang, "\n".join(lines), start))
            lang = None
        elif lang is not None:
            lines.append(line)
    return blocks


def shell_commands(code: str) -> list[str]:
    """The commands of a shell block: continuation lines joined, comments dropped, split at && ; |."""
    joined = re.sub(r"\\\n\s*", " ", code)
    out = []
    for line in joined.splitlines():
        line = re.sub(r"(^|\s)#.*$", "", line).strip()
        out += [c.strip() for c in re.split(r"&&|;|\|\|", line) if c.strip()]
    return out


def multijepa_argv(command: str) -> list[str] | None:
    """The arguments after `multijepa` (or `-m multijepa`, as torchrun and python -m run it), else None."""
    try:
        words = shlex.split(command)
    except ValueError:
        return None
    for i, w in enumerate(words):
        if w == "multijepa" and (i == 0 or words[i - 1] == "-m"):
            return words[i + 1 :]
        if w in ("multijepa.cli",) and i > 0 and words[i - 1] == "-m":
            return words[i + 1 :]
    return None


def parse_problem(argv: list[str]) -> str | None:
    """None if the parsers accept `argv`, else what argparse said."""
    import contextlib
    import io

    from multijepa.cli import _parse

    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            _parse(argv)
    except SystemExit as e:
        if e.code not in (0, None):
            return err.getvalue().strip().splitlines()[-1] if err.getvalue().strip() else f"exit {e.code}"
    return None


def doc_commands() -> list[tuple[str, int, str, list[str]]]:
    """(page, line, command, argv) of every multijepa command in a shell block of the docs."""
    found = []
    for page in PAGES:
        for lang, code, line in code_blocks(page.read_text()):
            if lang not in SHELL_FENCES:
                continue
            for command in shell_commands(code):
                argv = multijepa_argv(command)
                if argv is not None and "..." not in argv:
                    found.append((str(page.relative_to(ROOT)), line, command, argv))
    return found


def test_every_multijepa_command_in_the_docs_parses():
    commands = doc_commands()
    assert len(commands) >= 40, f"only {len(commands)} commands found: is the extraction broken?"
    bad = [f"{page}:{line}: {command}\n    {problem}" for page, line, command, argv in commands
           if (problem := parse_problem(argv))]
    assert not bad, "commands in the docs that the CLI refuses:\n" + "\n".join(bad)


def test_the_check_catches_a_misspelt_flag_or_command():
    """What the test above would say of a doc with a typo (it does fail: shown here)."""
    assert parse_problem(["pretrain", "--config", "demo", "--max-step", "3"]) is None  # argparse takes a unique prefix
    assert "unrecognized arguments: --max-stepz" in parse_problem(["pretrain", "--max-stepz", "3"])
    assert "invalid choice: 'retreival'" in parse_problem(["eval", "retreival", "--checkpoint", "RUN"])
    assert "required: --out" in parse_problem(["data", "demo"])
    argv = multijepa_argv(shell_commands("torchrun --standalone --nproc_per_node 8 -m multijepa pretrain \\\n  --config demo --out R")[0])
    assert argv == ["pretrain", "--config", "demo", "--out", "R"]


def python_imports(code: str) -> list[tuple[str, str | None]]:
    """(module, name or None) of every import statement in a Python snippet (that parses)."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return []
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, None) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out += [(node.module, a.name) for a in node.names]
    return out


def doc_imports() -> list[tuple[str, int, str, str | None]]:
    found = []
    for page in PAGES:
        for lang, code, line in code_blocks(page.read_text()):
            snippets = [code] if lang == "python" else []
            if lang in SHELL_FENCES:
                snippets += [m.group(2) for m in re.finditer(r"python3? -c (['\"])(.*?)\1", code, re.S)]
            for snippet in snippets:
                found += [(str(page.relative_to(ROOT)), line, m, n) for m, n in python_imports(snippet)]
    return found


def test_every_python_import_in_the_docs_imports():
    imports = doc_imports()
    assert any(m == "multijepa" for _, _, m, _ in imports), "no `from multijepa import ...` found in the docs"
    bad = []
    for page, line, module, name in imports:
        if module.split(".")[0] not in ("multijepa", "modalities", "fusion"):
            continue  # the field's packages (torch, datasets): installed with ours
        try:
            mod = importlib.import_module(module)
            if name is not None and not hasattr(mod, name):
                importlib.import_module(f"{module}.{name}")
        except ImportError as e:
            bad.append(f"{page}:{line}: from {module} import {name}: {e}")
    assert not bad, "\n".join(bad)


def test_every_script_the_docs_run_exists():
    missing = []
    for page in PAGES:
        for lang, code, line in code_blocks(page.read_text()):
            if lang not in SHELL_FENCES:
                continue
            for command in shell_commands(code):
                for script in re.findall(r"(?:^|\s)((?:benchmarks|examples|scripts)/[\w/]+\.(?:py|sh))", command):
                    if not (ROOT / script).is_file():
                        missing.append(f"{page.relative_to(ROOT)}:{line}: {script}")
    assert not missing, "\n".join(missing)


def test_the_generated_reference_covers_every_command_and_config_key():
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from docs_reference import cli_markdown, config_markdown, walk_commands
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    import dataclasses

    from multijepa.cli import _parser
    from multijepa.config import Config

    cli = cli_markdown()
    for path, _, _ in walk_commands(_parser()):
        assert f"multijepa {' '.join(path)}\n" in cli
    assert "--ties {topk,pessimistic}" in cli  # options come from the parsers themselves

    config = config_markdown()
    rows = {line.split("|")[1].strip().strip("`"): line for line in config.splitlines() if line.startswith("| `")}

    def keys(cls, prefix=""):
        import typing

        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            t = hints[f.name]
            if dataclasses.is_dataclass(t) and isinstance(t, type):
                yield from keys(t, f"{prefix}{f.name}.")
            else:
                yield f"{prefix}{f.name}"

    for key in keys(Config):
        assert key in rows, key
        assert not rows[key].rstrip().endswith("|  |"), f"{key} has no meaning: comment it in the code"
    assert "≥ 0, < 1" in rows["model.image.bind_mask_ratio"] and "`0.0`" in rows["model.image.bind_mask_ratio"]


@pytest.mark.parametrize("page", ["README.md"])
def test_the_readme_is_short(page):
    assert len((ROOT / page).read_text().splitlines()) <= 320
