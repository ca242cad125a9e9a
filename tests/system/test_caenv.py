"""The private loopback CA network of the tests, demo and bench: a real repeater on
127.0.0.1 that confirms every registration (caproto's and libca's) and forwards
beacons, so no client retries registering, alternately to the host's own address."""

from __future__ import annotations

import os
import socket
import subprocess
import time

import caproto
from epics_base import require_epics_base
from ioc_harness import CAEnvironment, IOCProcess, wait_for

CONFIRM = caproto.RepeaterConfirmResponse.ID  # 17


def _udp() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5.0)
    return sock


def _commands(data: bytes) -> list[int]:
    ids = []
    while len(data) >= 16:
        ids.append(int.from_bytes(data[:2], "big"))
        size = int.from_bytes(data[2:4], "big")
        data = data[16 + size:]
    return ids


def test_repeater_is_bound_to_loopback_and_confirms_both_kinds_of_registration():
    env = CAEnvironment(1)
    try:
        assert env._repeater._sock.getsockname() == ("127.0.0.1", env.repeater)
        libca_style, caproto_style = _udp(), _udp()
        libca_style.sendto(b"", ("127.0.0.1", env.repeater))  # libca: zero-length
        data, sender = libca_style.recvfrom(1024)
        assert sender == ("127.0.0.1", env.repeater) and _commands(data) == [CONFIRM]
        register = caproto.Broadcaster(caproto.CLIENT)
        caproto_style.sendto(register.send(register.register("127.0.0.1")),
                             ("127.0.0.1", env.repeater))
        data, _ = caproto_style.recvfrom(1024)
        assert _commands(data) == [CONFIRM]
        # a server's beacon reaches every registered client
        beacon = bytes(caproto.Beacon(13, 5064, 1, "127.0.0.1"))
        _udp().sendto(beacon, ("127.0.0.1", env.repeater))
        for client in (libca_style, caproto_style):
            data = b""
            while not data:  # a new client's registration reaches the others as b""
                data, _ = client.recvfrom(1024)
            assert caproto.Beacon.ID in _commands(data)
        assert env._repeater.zero_length_registrations == {libca_style.getsockname(): 1}
    finally:
        env.close()


def test_libca_registers_once_over_loopback(tmp_path):
    """EPICS base's camonitor registers 10 s after it starts.  Unconfirmed it would
    re-send every second (loopback, then the host's address, ...); confirmed on the
    first attempt it stops.  (libca has already scheduled one more attempt by then, to
    the host's own address, which this loopback-only repeater does not see.)"""
    bin_dir = require_epics_base()
    env = CAEnvironment(1)
    sim = IOCProcess(["sim", "--prefix", "REP:"], env.server_env(0), tmp_path / "sim.log")
    monitor = None
    try:
        client_env = dict(os.environ, **env.client_env())
        monitor = subprocess.Popen([str(bin_dir / "camonitor"), "REP:cam1:Acquire"],
                                   env=client_env, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True)
        # registration at ~10 s; unconfirmed, the next loopback attempt would come at ~12 s
        time.sleep(14.5)
        registrations = env._repeater.zero_length_registrations
        assert list(registrations.values()) == [1], registrations
    finally:
        if monitor is not None:
            monitor.terminate()
            output = monitor.communicate(timeout=10)[0]
            assert "REP:cam1:Acquire" in output
            assert "CA.Client.Exception" not in output, output
        sim.stop()
        env.close()


def test_servers_beacons_reach_libca_through_the_repeater(tmp_path):
    """casw (EPICS base) listens to beacons through the repeater: it sees the IOC."""
    bin_dir = require_epics_base()
    env = CAEnvironment(1)
    casw = subprocess.Popen([str(bin_dir / "casw"), "-i", "1"],
                            env=dict(os.environ, **env.client_env()),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sim = None
    try:
        time.sleep(1.0)
        sim = IOCProcess(["sim", "--prefix", "BCN:"], env.server_env(0), tmp_path / "sim.log")
        wait_for(lambda: "Channel Access: TCP port" in sim.log(), 30,
                 what="the simulator to start")
        time.sleep(3.0)
    finally:
        casw.terminate()
        output = casw.communicate(timeout=10)[0]
        if sim is not None:
            sim.stop()
        env.close()
    # casw names the server by host name (localhost), then its port
    assert f":{env.ports[0]} " in output, output
