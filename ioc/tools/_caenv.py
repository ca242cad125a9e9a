"""A private Channel Access 'network' on loopback, for the demo, the benchmark and tests."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path


def free_port() -> int:
    """A port free for both TCP and UDP on 127.0.0.1."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = tcp.getsockname()[1]
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                udp.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port")


SEARCH_BACKOFF_VARIABLE = "CAPROTO_CLIENT_MAX_RETRY_SEARCHES_INTERVAL_SEC"
SEARCH_BACKOFF_S = 0.5


class CAEnvironment:
    """One private CA and pvAccess 'network' on loopback: each IOC gets its own server
    ports (CA: TCP+UDP; PVA: a TCP server port and a UDP search port) and every client
    searches all of them (two servers on one UDP port would steal each other's unicast
    searches).  Beacons go to 127.0.0.1 only; nothing is sent anywhere else."""

    def __init__(self, n_servers: int = 2):
        self.ports = [free_port() for _ in range(n_servers)]
        self.pva_ports = [free_port() for _ in range(n_servers)]  # TCP
        self.pva_udp = [free_port() for _ in range(n_servers)]  # searches
        self.pva_client_udp = free_port()  # clients' beacon port (no server binds it)
        # A real repeater on loopback: servers' beacons go there, and every client's
        # registration (caproto's, libca's) is confirmed over loopback.
        self._repeater = LoopbackRepeater()
        self.repeater = self._repeater.port

    def client_env(self) -> dict[str, str]:
        return {
            "EPICS_CA_ADDR_LIST": " ".join(f"127.0.0.1:{p}" for p in self.ports),
            "EPICS_CA_AUTO_ADDR_LIST": "NO",
            "EPICS_CA_REPEATER_PORT": str(self.repeater),
            "EPICS_CA_MAX_ARRAY_BYTES": str(64 * 1024 * 1024),
            "EPICS_CA_SERVER_PORT": str(self.ports[0]),
            "EPICS_CAS_INTF_ADDR_LIST": "127.0.0.1",
            "EPICS_CAS_BEACON_ADDR_LIST": "127.0.0.1",
            "EPICS_CAS_AUTO_BEACON_ADDR_LIST": "NO",
            "EPICS_CAS_BEACON_PORT": str(self.repeater),
            # caproto's clients search again for an unanswered name with a back-off up to
            # 5 s: on this private network an IOC started a moment after its client is
            # found within half a second instead (a few more datagrams on loopback)
            SEARCH_BACKOFF_VARIABLE: str(SEARCH_BACKOFF_S),
            **self.pva_client_env(),
        }

    def pva_client_env(self) -> dict[str, str]:
        return {
            "EPICS_PVA_ADDR_LIST": " ".join(f"127.0.0.1:{p}" for p in self.pva_udp),
            "EPICS_PVA_AUTO_ADDR_LIST": "NO",
            "EPICS_PVA_BROADCAST_PORT": str(self.pva_client_udp),
            "EPICS_PVA_SERVER_PORT": str(self.pva_ports[0]),
            "EPICS_PVAS_INTF_ADDR_LIST": "127.0.0.1",
            "EPICS_PVAS_BEACON_ADDR_LIST": f"127.0.0.1:{self.pva_client_udp}",
            "EPICS_PVAS_AUTO_BEACON_ADDR_LIST": "NO",
            "EPICS_PVAS_IGNORE_ADDR_LIST": "",
        }

    def server_env(self, index: int) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.client_env())
        env["EPICS_CAS_SERVER_PORT"] = str(self.ports[index])
        env["EPICS_CA_SERVER_PORT"] = str(self.ports[index])
        for name in ("EPICS_PVAS_SERVER_PORT", "EPICS_PVA_SERVER_PORT"):
            env[name] = str(self.pva_ports[index])
        for name in ("EPICS_PVAS_BROADCAST_PORT", "EPICS_PVA_BROADCAST_PORT"):
            env[name] = str(self.pva_udp[index])
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def apply_to_this_process(self) -> None:
        os.environ.update(self.client_env())
        # caproto read its back-off when it was imported (the threading client reads it
        # from this module at every retry)
        from caproto.client import common

        common.MAX_RETRY_SEARCHES_INTERVAL = SEARCH_BACKOFF_S

    def close(self) -> None:
        """Stop the repeater (the IOCs are stopped by their owners)."""
        self._repeater.stop()


class _Stopped(Exception):
    pass


class _ConfirmingSocket:
    """The repeater's socket as caproto's repeater loop sees it, plus one fix.

    libca (EPICS base's caget/caput/camonitor, pyepics) registers with zero-length
    datagrams (``caRepeaterRegistrationMessage``) and waits for REPEATER_CONFIRM;
    caproto's repeater records such a client but confirms only caproto's own
    register command.  Measured with strace (EPICS base 7.0.8 camonitor): unconfirmed,
    libca re-sends every second, alternately to 127.0.0.1 and to the host's interface
    address; confirmed on the first (loopback) attempt, it sends no more."""

    def __init__(self, sock: socket.socket, stop: threading.Event):
        self._sock = sock
        self._stop = stop
        import caproto

        self._confirm = bytes(caproto.RepeaterConfirmResponse("127.0.0.1"))
        self.zero_length: dict[tuple[str, int], int] = {}  # registrations seen per client

    def recvfrom(self, size: int):
        while True:
            if self._stop.is_set():
                raise _Stopped
            try:
                data, address = self._sock.recvfrom(size)
            except TimeoutError:
                continue
            if not data:
                self.zero_length[address] = self.zero_length.get(address, 0) + 1
                self._sock.sendto(self._confirm, address)
            return data, address

    def sendto(self, data: bytes, address) -> int:
        return self._sock.sendto(data, address)


class LoopbackRepeater:
    """caproto's CA repeater, bound to 127.0.0.1 only, in a daemon thread.

    (``caproto-repeater`` and EPICS base's ``caRepeater`` bind to 0.0.0.0.)  A port
    taken on 127.0.0.1 also keeps libca and caproto's command-line tools from
    spawning a repeater of their own: they find the port in use."""

    def __init__(self):
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._wrapped = _ConfirmingSocket(self._sock, self._stop)
        self._thread = threading.Thread(target=self._run, name=f"ca-repeater-{self.port}",
                                        daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from caproto.sync.repeater import _run_repeater

        while not self._stop.is_set():
            try:
                _run_repeater(self._wrapped, ("127.0.0.1", self.port))
            except _Stopped:
                break
            except OSError:  # a client gone before its confirmation: go on serving
                continue
        self._sock.close()

    @property
    def zero_length_registrations(self) -> dict[tuple[str, int], int]:
        """libca-style (zero-length) registrations received, per client address."""
        return dict(self._wrapped.zero_length)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2.0)


class IOCProcess:
    def __init__(self, args: list[str], env: dict[str, str], log: Path,
                 max_file_size: int | None = None, cwd: Path | None = None,
                 max_open_files: int | None = None):
        self.args = args
        self.log_path = log
        self._log = open(log, "ab")  # noqa: SIM115 - closed in stop()

        def limits() -> None:
            import resource

            # soft limits only: a test can lift them again ("space returns")
            if max_file_size is not None:
                resource.setrlimit(resource.RLIMIT_FSIZE,
                                   (max_file_size, resource.RLIM_INFINITY))
            if max_open_files is not None:
                hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
                resource.setrlimit(resource.RLIMIT_NOFILE, (max_open_files, hard))

        self.proc = subprocess.Popen([sys.executable, "-m", "ioc.cli", *args], env=env,
                                     stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True, preexec_fn=limits, cwd=cwd)

    def stop(self, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._log.close()
        return self.proc.returncode

    def wait_serving(self, timeout: float = 60.0) -> IOCProcess:
        """Wait for the server's "Channel Access: TCP port" line.  Start a detector before
        the IOCs that read it: a client whose first searches went unanswered searches
        again only after its back-off (seconds), longer than the start-up it waited for."""
        def serving() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{' '.join(self.args[:3])} exited "
                                   f"({self.proc.returncode}): {self.log()[-1500:]}")
            return "Channel Access: TCP port" in self.log()

        wait_for(serving, timeout, interval=0.02, what=f"{self.args[0]} to serve")
        return self

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05, what: str = ""):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise TimeoutError(f"timed out waiting for {what or predicate} (last: {last!r})")


def wait_until_quiet(progress, quiet: float = 1.0, timeout: float = 30.0) -> bool:
    """Wait until ``progress()`` has not changed for ``quiet`` seconds (frames in flight);
    False if it was still changing after ``timeout``."""
    deadline = time.monotonic() + timeout
    last, since = progress(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = progress()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return True
    return False


class Client:
    """A caproto threading client with convenience get/put by PV name."""

    def __init__(self):
        from caproto.threading.client import Context

        self.ctx = Context()
        self._pvs = {}

    def pv(self, name: str):
        if name not in self._pvs:
            (self._pvs[name],) = self.ctx.get_pvs(name, timeout=10.0)
            self._pvs[name].wait_for_connection(timeout=15.0)
        return self._pvs[name]

    def get(self, name: str, as_string: bool = True):
        pv = self.pv(name)
        response = pv.read(data_type="native", timeout=10.0)
        ch_type = pv.channel.native_data_type
        from caproto import ChannelType

        data = response.data
        if ch_type == ChannelType.ENUM and as_string:
            strings = pv.read(data_type="control", timeout=10.0).metadata.enum_strings
            return strings[data[0]].decode()
        if ch_type == ChannelType.CHAR and as_string:
            return bytes(data).split(b"\0")[0].decode()
        if ch_type == ChannelType.STRING:
            return data[0].decode()
        if len(data) == 1:
            return data[0].item() if hasattr(data[0], "item") else data[0]
        return data

    def put(self, name: str, value, wait: bool = True, timeout: float = 30.0):
        pv = self.pv(name)
        from caproto import ChannelType

        native = pv.channel.native_data_type
        if isinstance(value, str) and native == ChannelType.CHAR:
            value = list(value.encode()) + [0] if value else [0]
        elif isinstance(value, str) and native == ChannelType.ENUM:
            strings = pv.read(data_type="control", timeout=10.0).metadata.enum_strings
            value = [s.decode() for s in strings].index(value)
        elif isinstance(value, str) and native == ChannelType.STRING:
            value = [value.encode()]
        return pv.write(value, wait=wait, timeout=timeout)

    def start_capture(self, prefix: str, timeout: float = 15.0) -> None:
        """Capture=1 on the writer ``prefix``: a busy record, whose put completes when the
        capture ends.  Put without waiting for that; return once the writer is capturing
        (or has already finished a short capture)."""
        import threading

        ended = threading.Event()
        self.pv(prefix + "Capture").write([1], wait=False, callback=lambda *_: ended.set())
        try:
            wait_for(lambda: ended.is_set() or self.get(prefix + "Capture_RBV") == "Capturing",
                     timeout, what="capturing")
        except TimeoutError:
            raise TimeoutError("Capture=1 did not start capturing: "
                               f"{self.get(prefix + 'WriteMessage')!r}") from None

    def wait_value(self, name: str, expected, timeout: float = 15.0):
        return wait_for(lambda: self.get(name) == expected, timeout, what=f"{name} == {expected!r}")

    def close(self):
        with contextlib.suppress(Exception):
            self.ctx.disconnect()


def tree_memory(process) -> int:
    """Memory of a process and its children (the IOC's receiver process): the sum of
    their PSS, so that the shared-memory slots both map count once."""
    import psutil

    total = 0
    for p in (process, *process.children(recursive=True)):
        try:
            total += p.memory_full_info().pss
        except psutil.Error:
            pass
    return total


def tree_fds(process) -> int:
    """Open file descriptors of a process and its children."""
    import psutil

    total = 0
    for p in (process, *process.children(recursive=True)):
        try:
            total += p.num_fds()
        except psutil.Error:
            pass
    return total
