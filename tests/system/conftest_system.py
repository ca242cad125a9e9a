"""Fixtures: the simulator and the writer as subprocesses on private CA ports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from ioc_harness import Client, IOCProcess, wait_for  # noqa: E402
from system_setup import CAM, SIZE, P, Setup, W  # noqa: E402

SIM_ARGS = ["sim", "--prefix", P, "--size", str(SIZE[0]), str(SIZE[1])]


@pytest.fixture(scope="module")
def iocs(ca_env, tmp_path_factory) -> Setup:
    logs = tmp_path_factory.mktemp("logs")
    sim = IOCProcess(SIM_ARGS, ca_env.server_env(0), logs / "sim.log").wait_serving()
    writer = IOCProcess(["serve", "--prefix", W, "--source", P + "image1:", "--cam", CAM],
                        ca_env.server_env(1), logs / "writer.log")
    client = Client()
    setup = Setup(client, ca_env, sim, writer, logs)
    def connected() -> bool:
        from caproto import CaprotoTimeoutError

        try:
            return setup.get("SourceConnected_RBV") == "Connected"
        except CaprotoTimeoutError:  # still starting: slow on a loaded machine
            return False

    try:
        wait_for(connected, 90, what="writer connected to the simulator")
        yield setup
    finally:
        client.close()
        writer.stop()
        sim.stop()


@pytest.fixture
def ready(iocs, tmp_path) -> Setup:
    iocs.reset(tmp_path)
    return iocs


@pytest.fixture(scope="module")
def pva_iocs(ca_env, tmp_path_factory) -> Setup:
    """The simulator and a writer reading its ``Pva1:Image`` over pvAccess."""
    logs = tmp_path_factory.mktemp("logs")
    sim = IOCProcess(SIM_ARGS, ca_env.server_env(0), logs / "sim.log").wait_serving()
    writer = IOCProcess(["serve", "--prefix", W, "--source", f"pva://{P}Pva1:Image", "--cam", CAM],
                        ca_env.server_env(1), logs / "writer.log")
    client = Client()
    setup = Setup(client, ca_env, sim, writer, logs)
    try:
        wait_for(lambda: setup.get("SourceConnected_RBV") == "Connected", 30,
                 what="writer connected to the simulator over pvAccess")
        yield setup
    finally:
        client.close()
        setup.writer.stop()
        setup.sim.stop()


@pytest.fixture
def pva_ready(pva_iocs, tmp_path) -> Setup:
    pva_iocs.reset(tmp_path)
    for suffix, value in (("NDAttributesFile", ""), ("NDAttributesMacros", ""), ("MinX", 0),
                          ("MinY", 0), ("BinX", 1), ("BinY", 1), ("ReverseX", "No"),
                          ("ReverseY", "No")):
        pva_iocs.cam_put(suffix, value)
    pva_iocs.client.put(P + "Codec1:Compressor", "None")
    pva_iocs.client.put(P + "Stats1:NDAttributesFile", "")
    return pva_iocs


@pytest.fixture(scope="module")
def listing(ca_env, tmp_path_factory):
    """``serve --list-pvs`` output (the IOC keeps serving; we stop it once listed)."""
    proc = subprocess.Popen([sys.executable, "-m", "ioc.cli", "serve", "--prefix", "LIST:",
                             "--source", "", "--list-pvs"], env=ca_env.server_env(1),
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    lines = []
    try:
        for line in proc.stdout:
            if line.startswith("# end of PV list"):
                break
            lines.append(line.rstrip("\n"))
    finally:
        proc.terminate()
        proc.wait(15)
    return {line.split("\t")[0][len("LIST:"):]: line.split("\t")[1:] for line in lines}
