"""Files shipped in ``layouts/`` (installed as the ``ioc.layouts`` package)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def layout_file(name: str) -> Path:
    """Path of a shipped layout/attributes/schema file, e.g. ``default.xml``."""
    path = Path(str(resources.files("ioc.layouts").joinpath(name)))
    if not path.is_file():
        raise FileNotFoundError(f"no shipped layout file {name!r}")
    return path
