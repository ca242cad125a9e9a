"""Cluster tests: the simulator, a pvapy-mirror-server distributing its Pva1:Image, the
coordinator IOC (serve --workers-listen) and writer workers, as subprocesses."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "system"))

from cluster_setup import MIRROR, Cluster, MirrorProcess, mirror_server  # noqa: E402
from conftest_system import SIM_ARGS  # noqa: E402
from ioc_harness import Client, IOCProcess, free_port, wait_for  # noqa: E402
from system_setup import CAM, W  # noqa: E402


@pytest.fixture(scope="module")
def cluster(ca_env, tmp_path_factory) -> Cluster:
    if mirror_server() is None:
        pytest.skip("pvapy-mirror-server not installed (pip install pvapy): the distributor "
                    "stand-in these tests need")
    logs = tmp_path_factory.mktemp("logs")
    sim = IOCProcess(SIM_ARGS, ca_env.server_env(0), logs / "sim.log").wait_serving()
    mirror = MirrorProcess(ca_env.server_env(2), logs / "mirror.log")
    port = free_port()
    coordinator = IOCProcess(
        ["serve", "--prefix", W, "--workers-listen", f"127.0.0.1:{port}", "--pva-channel",
         MIRROR, "--cam", CAM, "-v"], ca_env.server_env(1), logs / "coordinator.log")
    client = Client()
    setup = Cluster(client, ca_env, sim, coordinator, logs, mirror=mirror, port=port)
    try:
        wait_for(lambda: setup.get("Workers_RBV") == 0, 30, what="the coordinator")
        yield setup
    finally:
        client.close()
        for worker in setup.workers.values():
            worker.stop()
        coordinator.stop()
        mirror.stop()
        sim.stop()


@pytest.fixture
def two_workers(cluster, tmp_path) -> Cluster:
    return cluster.ready(2, tmp_path)


@pytest.fixture
def three_workers(cluster, tmp_path) -> Cluster:
    return cluster.ready(3, tmp_path)
