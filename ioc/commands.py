"""Registration of the run-time sub-commands (serve, sim, demo, bench)."""

from __future__ import annotations

REGISTRY: list = []
