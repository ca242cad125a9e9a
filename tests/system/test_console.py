"""What the IOCs print: serve's start-up summary, hints for source problems, log levels
(-v, -vv), beacons without a repeater, the simulator's first lines."""

from __future__ import annotations

import os
import re
import time
from unittest import mock

import pytest
from ioc_harness import CAEnvironment, IOCProcess, free_port, wait_for

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (INFO|WARNING|ERROR|DEBUG) ")
SUMMARY_ITEMS = ("serving", "Channel Access:", "source:", "driver:", "layout:", "attributes:",
                 "allowed roots:")


def _summary(log: str) -> dict[str, str]:
    """The summary lines by item (the first line of each kind)."""
    found = {}
    for line in log.splitlines():
        if " ioc.server: " not in line:
            continue
        text = line.split(" ioc.server: ", 1)[1]
        for item in SUMMARY_ITEMS:
            if item not in found and (text.startswith(item) or
                                      (item == "serving" and " serving " in text)):
                found[item] = line
    return found


@pytest.fixture(scope="module")
def net():
    """This module's own CA network: its many IOC restarts stay off the session's ports,
    where libca channels of other modules wait to reconnect."""
    env = CAEnvironment(2)
    yield env
    env.close()


@pytest.fixture(scope="module")
def detector(net, tmp_path_factory):
    logs = tmp_path_factory.mktemp("console")
    sim = IOCProcess(["sim", "--prefix", "CON:"], net.server_env(0), logs / "sim.log")
    try:
        wait_for(lambda: "Channel Access: TCP port" in sim.log(), 30, what="the simulator")
        yield sim
    finally:
        sim.stop()


def _serve(net, tmp_path, *args, env=None, name="serve.log"):
    return IOCProcess(["serve", "--prefix", "CON:HDF1:", *args], env or net.server_env(1),
                      tmp_path / name)


def test_serve_startup_summary_one_line_each(net, detector, tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    writer = _serve(net, tmp_path, "--source", "CON:image1:", "--cam", "CON:cam1:",
                    "--allow-root", str(root))
    try:
        wait_for(lambda: len(_summary(writer.log())) == len(SUMMARY_ITEMS), 30,
                 what="the start-up summary")
        time.sleep(1.0)  # anything printed after the summary counts too
    finally:
        writer.stop()
    log = writer.log()
    summary = _summary(log)
    assert re.search(r"nexus-writer-ioc \S+: serving CON:HDF1: \((\d+) PVs", summary["serving"])
    n_pvs = int(re.search(r"\((\d+) PVs", summary["serving"]).group(1))
    assert n_pvs > 300
    assert f"TCP port {net.ports[1]}" in summary["Channel Access:"]
    assert f"beacons to 127.0.0.1:{net.repeater}" in summary["Channel Access:"]
    assert "source: CON:image1: " in summary["source:"] and summary["source:"].endswith(
        ": connected")
    assert "driver: CON:cam1:" in summary["driver:"]
    assert summary["layout:"].endswith("layout: default (XMLFileName empty): valid")
    assert "attributes: none" in summary["attributes:"]
    assert summary["allowed roots:"].endswith(f"allowed roots: {root.resolve()}")
    for line in summary.values():
        assert " INFO " in line, line
    # nothing else at the default level: no per-PV connection chatter, no errors
    lines = [line for line in log.splitlines() if line.strip()]
    assert all(TIMESTAMP.match(line) for line in lines), log
    assert not [line for line in lines if " ioc.server: " not in line], log
    assert "connection state changed" not in log and "Traceback" not in log


def test_serve_missing_source_says_where_it_searched(net, tmp_path):
    writer = _serve(net, tmp_path, "--source", "NOWHERE:image1:")
    try:
        wait_for(lambda: "source:" in writer.log(), 30, what="the source line")
    finally:
        writer.stop()
    (line,) = [x for x in writer.log().splitlines() if "source:" in x]
    assert " WARNING " in line and "NOT connected" in line
    assert "EPICS_CA_ADDR_LIST=" in line and "127.0.0.1:" in line
    assert "EPICS_CA_AUTO_ADDR_LIST=NO" in line
    (roots,) = [x for x in writer.log().splitlines() if "allowed roots:" in x]
    assert " WARNING " in roots and "--allow-root" in roots


@pytest.mark.parametrize("verbose", ["-v", "-vv"])
def test_connection_chatter_only_with_vv(net, detector, tmp_path, verbose):
    writer = _serve(net, tmp_path, "--source", "CON:image1:", verbose)
    try:
        wait_for(lambda: "allowed roots:" in writer.log(), 30, what="the start-up summary")
    finally:
        writer.stop()
    log = writer.log()
    per_pv = [line for line in log.splitlines() if "CON:image1:UniqueId_RBV connected" in line]
    caproto_chatter = "connection state changed" in log
    if verbose == "-v":
        assert not per_pv and not caproto_chatter, log
    else:
        assert per_pv and caproto_chatter, log
    assert "Traceback" not in log


def test_no_beacon_error_spam_without_a_repeater(net, tmp_path):
    """Beacons to a port nobody listens on (no repeater): one INFO line at -v, no ERROR."""
    env = net.server_env(1)
    env["EPICS_CAS_BEACON_PORT"] = str(free_port())
    writer = _serve(net, tmp_path, "--source", "", "-v", env=env)
    try:
        wait_for(lambda: "allowed roots:" in writer.log(), 30, what="the start-up summary")
        time.sleep(3.0)  # beacons at 0.02, 0.04, ... 2.56 s: eight refused ones
    finally:
        writer.stop()
    log = writer.log()
    assert "ERROR" not in log and "Traceback" not in log, log
    notes = [line for line in log.splitlines() if "no CA repeater listening" in line]
    assert len(notes) == 1 and " INFO ioc.beacons: " in notes[0], log


def test_sim_first_lines(detector):
    lines = [line for line in detector.log().splitlines() if line.strip()]
    assert all(TIMESTAMP.match(line) for line in lines), lines
    first = lines[0]
    assert " INFO ioc.tools.sim: simulated detector CON:cam1: + CON:image1:" in first
    assert "subscription backlog 200 frames per client" in first
    assert "reduced" not in detector.log()



def test_driver_started_after_the_writer(tmp_path):
    """--cam names a driver that is not up yet: one warning with the hint, then, when it
    answers, NDArrayPort is its PortName_RBV and the log says so."""
    from ioc_harness import Client

    env = CAEnvironment(2)
    writer = IOCProcess(["serve", "--prefix", "LATE:HDF1:", "--source", "LATE:image1:",
                         "--cam", "LATE:cam1:"], env.server_env(1), tmp_path / "serve.log")
    sim = None
    client = None
    try:
        wait_for(lambda: "cannot read LATE:cam1:PortName_RBV" in writer.log(), 40,
                 what="the driver warning")
        sim = IOCProcess(["sim", "--prefix", "LATE:"], env.server_env(0), tmp_path / "sim.log")
        wait_for(lambda: "driver LATE:cam1: answered: NDArrayPort SIM1" in writer.log(), 60,
                 what="the driver to answer")
        with mock.patch.dict(os.environ, env.client_env()):  # this test's network only
            client = Client()
            assert client.get("LATE:HDF1:NDArrayPort") == "SIM1"
    finally:
        if client is not None:
            client.close()
        writer.stop()
        if sim is not None:
            sim.stop()
        env.close()
    (warning,) = [line for line in writer.log().splitlines() if "PortName_RBV (" in line]
    assert " WARNING " in warning and "EPICS_CA_ADDR_LIST=" in warning
