"""Test-suite setup: the helper modules in tests/ are importable from every test."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def ca_env():
    """One private CA 'network' for the whole session (libca reads it once per process)."""
    from ioc.tools._caenv import CAEnvironment

    env = CAEnvironment(3)  # the simulator, the writer (or coordinator), a pvAccess mirror
    env.apply_to_this_process()
    yield env
    env.close()
