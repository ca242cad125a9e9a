"""Acceptance over Channel Access, against EPICS base's own CA server (the RSRV
stand-in, ``sim --ca-server rsrv``): see ``ophyd_acceptance``."""

from __future__ import annotations

import pytest
from conftest_rsrv import RP
from ophyd_acceptance import twenty_runs

pytest.importorskip("ophyd")


def test_ophyd_20_runs_of_5_triggers_keep_every_frame_over_ca(rsrv, tmp_path):
    twenty_runs(rsrv, RP, tmp_path)
