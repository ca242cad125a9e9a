"""System tests: the simulator and the writer as subprocesses on private CA ports."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from conftest_system import iocs, listing, pva_iocs, pva_ready, ready  # noqa: E402,F401
