"""Client tests: unmodified ophyd / ophyd-async devices against the simulator + writer."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "system"))

from conftest_system import iocs, listing, pva_iocs, pva_ready, ready  # noqa: E402,F401
