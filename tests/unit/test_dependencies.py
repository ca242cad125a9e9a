"""A runtime-only install (``pip install -e .``, the README's first command) runs every
command: whatever ``ioc/`` imports is a runtime dependency in pyproject.toml, not only in
the test extra."""

from __future__ import annotations

import ast
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _imported_modules() -> dict[str, str]:
    """Top-level modules imported anywhere in ioc/ (at any depth: lazy imports count)."""
    found: dict[str, str] = {}
    for path in sorted((ROOT / "ioc").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], str(path.relative_to(ROOT)))
    return found


def test_everything_ioc_imports_is_a_runtime_dependency():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = {_normal(re.split(r"[<>=!~\[; ]", dep, maxsplit=1)[0])
               for dep in project["dependencies"]}
    distributions = packages_distributions()
    missing = []
    for module, where in _imported_modules().items():
        if module in sys.stdlib_module_names or module in ("ioc", "__future__"):
            continue
        owners = {_normal(d) for d in distributions.get(module, [])}
        assert owners, f"{module} (imported in {where}) is not installed"
        if not owners & runtime:
            missing.append(f"{module} ({where}) from {sorted(owners)}")
    assert not missing, "imported by ioc/ but not a runtime dependency: " + ", ".join(missing)
