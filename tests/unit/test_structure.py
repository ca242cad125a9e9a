"""The package shows the data path: a stage imports only from the stages before it."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "ioc"
# Stages in data-path order; a module may import from its own stage and earlier ones.
STAGES = ["base", "layout", "writer", "plugin", "sources", "tools", "app"]
BASE = {"__init__", "ndarray", "_resources", "_thread_names"}
APP = {"server", "serve_summary", "cli", "commands"}


def _stage(module: str) -> str:
    """'ioc.writer.nexus' -> 'writer'; top-level modules are base or app."""
    parts = module.split(".")[1:]
    if not parts or parts[0] in BASE:
        return "base"
    if parts[0] in APP:
        return "app"
    return parts[0]


def _imports(path: Path, module: str):
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target == "ioc" or target.startswith("ioc."):
                names = [a.name for a in node.names]
                # "from . import x" names a module of that package
                yield from ([f"{target}.{n}" for n in names] if target.count(".") < 1 else [target])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("ioc."):
                    yield alias.name


def test_no_stage_imports_from_a_later_one():
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        module = ".".join(rel.parts).removesuffix(".__init__")
        own = STAGES.index(_stage(module))
        for target in _imports(path, module):
            stage = _stage(target)
            if stage in STAGES and STAGES.index(stage) > own:
                problems.append(f"{module} imports {target} ({stage} comes after {_stage(module)})")
    assert not problems, "\n".join(problems)
