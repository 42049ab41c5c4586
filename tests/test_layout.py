"""The house's one rule, checked: imports run one way, wings -> core -> fusion -> modalities, and no
wing imports another wing except as allowed (train reads data/ and scores held-out retrieval with
retrieval/'s embedding and metrics; retrieval, VQA and captioning may use data/ and train/'s
builder; serve is a front end to retrieval/). The entry points (cli.py, __init__.py, __main__.py)
sit above the wings."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
WINGS = ("data", "train", "retrieval", "vqa", "caption", "serve")
ENTRY = {"multijepa.cli", "multijepa", "multijepa.__main__"}
ALLOWED = {  # wing -> what it may import of the other wings
    "data": set(),
    "train": {"multijepa.data", "multijepa.retrieval.metrics", "multijepa.retrieval.embed"},  # train.eval_data
    "retrieval": {"multijepa.data", "multijepa.train.builder"},
    "vqa": {"multijepa.data", "multijepa.train.builder"},
    "caption": {"multijepa.data", "multijepa.train.builder"},
    "serve": {"multijepa.retrieval"},
}


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Absolute names of every module `path` imports, top-level or inside functions."""
    mod = _module(path)
    package = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module
            if node.module:
                out.add(name)
            else:  # `from . import distributed`
                out |= {f"{name}.{a.name}" for a in node.names}
    return {n for n in out if n.split(".")[0] in ("multijepa", "fusion", "modalities")}


FILES = sorted(p for d in ("multijepa", "fusion", "modalities") for p in (ROOT / d).rglob("*.py"))
PATHS = {_module(p): p for p in FILES}  # a package's module is its __init__.py
MODULES = set(PATHS)


def _layer(mod: str) -> str:
    parts = mod.split(".")
    if parts[0] != "multijepa":
        return parts[0]
    if mod in ENTRY:
        return "entry"
    return parts[1] if len(parts) >= 2 and parts[1] in WINGS else "core"


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_run_one_way(path):
    mod, layer = _module(path), _layer(_module(path))
    for name in _imports(path):
        target = next((m for m in sorted(MODULES, key=len, reverse=True) if name == m or name.startswith(m + ".")), name)
        to = _layer(target)
        if layer == "modalities":
            assert to == "modalities", f"{mod} imports {target}: modalities/ knows nothing of fusion or multijepa"
        elif layer == "fusion":
            assert to in ("fusion", "modalities"), f"{mod} imports {target}: fusion/ knows nothing of multijepa"
        elif layer == "core":
            assert to in ("core", "fusion", "modalities"), f"{mod} (core) imports the wing module {target}"
        elif layer in WINGS and to in WINGS and to != layer:
            assert any(target == a or target.startswith(a + ".") for a in ALLOWED[layer]), \
                f"{mod} ({layer}/) imports {target}, another wing"


def test_the_core_has_no_import_cycle():
    """Between the core modules (lazy imports inside functions included)."""
    core = {m for m in MODULES if _layer(m) == "core"}
    graph = {m: {t for t in _imports(PATHS[m]) if t in core and t != m} for m in core}
    seen, stack = set(), []

    def visit(m):
        assert m not in stack, "import cycle: " + " -> ".join([*stack[stack.index(m):], m])
        if m in seen:
            return
        stack.append(m)
        for t in graph[m]:
            visit(t)
        stack.pop()
        seen.add(m)

    for m in sorted(core):
        visit(m)


def test_each_wing_registers_its_own_commands():
    """cli.py keeps the root parser, the error shape and the dispatch; the commands live in their wings."""
    cli = (ROOT / "multijepa" / "cli.py").read_text()
    assert len(cli.splitlines()) <= 200
    assert "add_parser(" not in cli and "def _cmd_" not in cli
    from multijepa.cli import COMMANDS, ORDER

    assert set(ORDER) == set(COMMANDS)
    for name, add in COMMANDS.items():
        assert add.__module__.split(".")[1] in WINGS and add.__module__.endswith(".commands"), (name, add.__module__)


def test_no_modality_is_named_outside_its_own_files():
    """The modalities are registered definitions (multijepa/modality/): the rest of the package asks
    the registry instead of testing a modality's name. Left out: the demo data and the benchmark
    readers, which write and read particular modalities, and VQA, whose question is about an image.
    Text is the language side of zero-shot prompts, captions and questions, so `!= "text"` stays."""
    import re

    named = re.compile(r"""(==|!=)\s*["'](image|audio|video)["']|in \(["'](image|audio|video)["'],""")
    exempt = ("multijepa/modality/", "multijepa/data/demo.py", "multijepa/data/benchmarks.py", "multijepa/vqa/")
    found = [f"{p.relative_to(ROOT)}:{i}: {line.strip()}"
             for p in sorted((ROOT / "multijepa").rglob("*.py")) if not str(p.relative_to(ROOT)).startswith(exempt)
             for i, line in enumerate(p.read_text().splitlines(), 1) if named.search(line)]
    assert not found, "\n".join(found)
