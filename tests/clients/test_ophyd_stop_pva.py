"""Acceptance over pvAccess (the simulator's ``Pva1:Image``, ``serve --source pva://``):
see ``ophyd_acceptance``."""

from __future__ import annotations

import pytest
from conftest_rsrv import PP
from ophyd_acceptance import twenty_runs

pytest.importorskip("ophyd")


def test_ophyd_20_runs_of_5_triggers_keep_every_frame_over_pva(pva_fresh, tmp_path):
    twenty_runs(pva_fresh, PP, tmp_path)
