"""The detector stand-in served by EPICS base's CA server (RSRV) + the writer.

What a real areaDetector IOC does to a lagging client (a few queued updates per
subscription, arrays read when sent), which caproto's server hides.  Its own prefix, so
that client-side channel caches never mix it up with the caproto simulator.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from ioc_harness import Client, IOCProcess, wait_for
from system_setup import Setup

RP = "RS:"
RW = RP + "HDF1:"
RCAM = RP + "cam1:"
PP = "PA:"  # the caproto simulator read over pvAccess, for tests that also use libca clients
PORTS = ("NOWHERE=NO:SUCH:image1:", f"SAME={RP}image1:", "OVERPVA=pva://NO:SUCH:Pva1:Image")


@dataclass
class RsrvSetup(Setup):
    """``Setup``'s helpers on the stand-in's prefixes."""

    def put(self, suffix: str, value, **kw):
        if suffix == "Capture" and value in (1, "Capture") and not kw:
            return self.client.start_capture(RW)  # a busy record: completes at the end
        return self.client.put(RW + suffix, value, **kw)

    def get(self, suffix: str, **kw):
        return self.client.get(RW + suffix, **kw)

    def put_refused(self, suffix: str, value) -> None:
        self.client.put(RW + suffix, value, wait=False)
        time.sleep(0.2)
        self.get("WriteMessage")

    def cam_put(self, suffix: str, value, **kw):
        return self.client.put(RCAM + suffix, value, **kw)

    def cam_get(self, suffix: str, **kw):
        return self.client.get(RCAM + suffix, **kw)


def start_rsrv_sim(env, logs: Path, size=(1024, 1024)) -> IOCProcess:
    return IOCProcess(["sim", "--ca-server", "rsrv", "--prefix", RP, "--size", "64", "48",
                       "--max-size", str(size[0]), str(size[1])], env.server_env(0),
                      logs / "rsrv-sim.log").wait_serving()


def _quiet_get(setup, suffix):
    """None while the IOC is still starting (a loaded machine may take a while)."""
    try:
        return setup.get(suffix)
    except Exception:  # noqa: BLE001 - not up yet
        return None


@pytest.fixture(scope="module")
def rsrv(ca_env, tmp_path_factory) -> RsrvSetup:
    pytest.importorskip("softioc")
    logs = tmp_path_factory.mktemp("logs")
    sim = start_rsrv_sim(ca_env, logs)
    ports = [a for p in PORTS for a in ("--port", p)]
    writer = IOCProcess(["serve", "--prefix", RW, "--source", RP + "image1:", "--cam", RCAM,
                         "--queue-size", "50", *ports], ca_env.server_env(1), logs / "writer.log")
    client = Client()
    setup = RsrvSetup(client, ca_env, sim, writer, logs)
    try:
        wait_for(lambda: _quiet_get(setup, "SourceConnected_RBV") == "Connected", 90,
                 what="writer connected to the RSRV stand-in")
        wait_for(lambda: setup.get("NDArrayPort_RBV") == "SIM1", 30, what="the driver's port")
        yield setup
    finally:
        client.close()
        writer.stop()
        sim.stop()


@dataclass
class PvaSetup(Setup):
    """``Setup``'s helpers on the pvAccess pair's prefixes."""

    def put(self, suffix: str, value, **kw):
        if suffix == "Capture" and value in (1, "Capture") and not kw:
            return self.client.start_capture(PP + "HDF1:")  # completes at the end
        return self.client.put(PP + "HDF1:" + suffix, value, **kw)

    def get(self, suffix: str, **kw):
        return self.client.get(PP + "HDF1:" + suffix, **kw)

    def cam_put(self, suffix: str, value, **kw):
        return self.client.put(PP + "cam1:" + suffix, value, **kw)

    def cam_get(self, suffix: str, **kw):
        return self.client.get(PP + "cam1:" + suffix, **kw)


@pytest.fixture(scope="module")
def pva_fresh(ca_env, tmp_path_factory) -> PvaSetup:
    """The simulator and a writer reading its ``Pva1:Image`` over pvAccess, under names no
    earlier module used: libca (pyepics, ophyd) reconnects a name whose server went away
    only after its search back-off, which can outlast a test's timeouts."""
    logs = tmp_path_factory.mktemp("logs")
    sim = IOCProcess(["sim", "--prefix", PP, "--size", "64", "48", "--max-size", "1024", "1024"],
                     ca_env.server_env(0), logs / "sim.log").wait_serving()
    writer = IOCProcess(["serve", "--prefix", PP + "HDF1:", "--source", f"pva://{PP}Pva1:Image",
                         "--cam", PP + "cam1:"], ca_env.server_env(1), logs / "writer.log")
    client = Client()
    setup = PvaSetup(client, ca_env, sim, writer, logs)
    try:
        wait_for(lambda: _quiet_get(setup, "SourceConnected_RBV") == "Connected", 90,
                 what="writer connected to the simulator over pvAccess")
        yield setup
    finally:
        client.close()
        writer.stop()
        sim.stop()


@pytest.fixture
def rready(rsrv, tmp_path) -> RsrvSetup:
    rsrv.reset(tmp_path)
    rsrv.put("NDArrayPort", "SIM1")
    rsrv.cam_put("NDAttributesFile", "")
    rsrv.cam_put("ArrayCallbacks", "Enable")
    return rsrv


class CPULoad:
    """Busy processes, one more than there are cores: the machine is saturated."""

    def __init__(self, n: int | None = None):
        import os

        self.procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                      for _ in range(n or (os.cpu_count() or 2) + 1)]
        time.sleep(0.2)

    def stop(self) -> None:
        for p in self.procs:
            p.kill()
            p.wait(10)
