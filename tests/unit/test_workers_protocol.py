"""The coordinator and its writer workers without a detector: real coordinator, real
worker sessions over TCP on loopback, frames handed to the workers directly (as the
distributor would).  The capture ledger and the protocol's bounds."""

from __future__ import annotations

import json
import socket
import threading
import time

import h5py
import numpy as np
import pytest
from helpers import make_frame

from ioc.plugin.file_saver import SaverError
from ioc.plugin.naming import PathPolicy
from ioc.plugin.pvtable import BY_SUFFIX, PV_TABLE, to_param
from ioc.plugin.workers import ledger as ledger_module
from ioc.plugin.workers import protocol
from ioc.plugin.workers.coordinator import Coordinator
from ioc.plugin.workers.ledger import Ledger
from ioc.sources.worker import Worker

# -- the ledger ------------------------------------------------------------------------


def test_begin_is_the_highest_unique_id_seen_before_the_start():
    ledger = Ledger(1, "stream", 0)
    for worker, seen in enumerate((17, None, 19)):
        ledger.add_part(worker, f"w{worker}").seen = seen
    assert ledger.begin() == 19
    assert ledger.window() == (20, None)


def test_numcapture_cuts_at_the_settled_frontier():
    ledger = Ledger(1, "stream", 10)
    for worker in range(2):
        ledger.add_part(worker, f"w{worker}")
    ledger.after = 0
    ledger.record(0, [1, 3, 5, 7, 9, 11, 13])  # a fast worker
    ledger.record(1, [2, 4, 6])  # a slow one: 8 and 10 may still be in its queue
    assert ledger.captured() == 10
    assert ledger.decide_cutoff() is None  # 7 settled frames only: 1..6 and ... up to 6
    ledger.record(1, [8, 10])
    assert ledger.decide_cutoff() == 10
    assert ledger.captured() == 10 and ledger.window() == (1, 10)


def test_an_idle_worker_does_not_hold_the_frontier(monkeypatch):
    ledger = Ledger(1, "stream", 4)
    for worker in range(2):
        ledger.add_part(worker, f"w{worker}")
    ledger.record(0, [1, 3])
    ledger.record(1, [2, 4])  # the stream ended exactly here: worker 0 gets nothing more
    now = time.monotonic()
    ledger.parts[0].updated = now - 5
    assert ledger.frontier(now) == 4
    assert ledger.decide_cutoff(now) == 4


def test_live_window_stops_at_the_flushed_frontier():
    ledger = Ledger(1, "stream", 0)
    for worker in range(2):
        ledger.add_part(worker, f"w{worker}")
    ledger.after = 0
    ledger.record(0, [1, 3, 5, 7], durable=2)  # 1, 3 flushed
    ledger.record(1, [2, 4, 6, 8], durable=3)  # 2, 4, 6 flushed
    assert ledger.live_window() == (1, 3)


# -- the protocol ------------------------------------------------------------------------


def test_messages_are_bounded_json_lines():
    assert protocol.decode(protocol.encode({"type": "x", "n": 1})) == {"type": "x", "n": 1}
    for bad in (b"not json", b"[1, 2]", b'{"no": "type"}', b"\xff\xfe"):
        with pytest.raises(protocol.ProtocolError):
            protocol.decode(bad)
    with pytest.raises(protocol.ProtocolError):
        protocol.decode(b"x" * (protocol.MAX_LINE + 1))


def test_addresses():
    assert protocol.parse_address("host:5000") == ("host", 5000)
    assert protocol.parse_address(":5000") == ("127.0.0.1", 5000)
    assert protocol.parse_address("[::1]:5000") == ("::1", 5000)
    for bad in ("host", "host:0", "host:x", "host:70000"):
        with pytest.raises(ValueError):
            protocol.parse_address(bad)


# -- coordinator and workers, in this process ---------------------------------------------

class PVs:
    """The PV layer's parameter mapping and ``post`` (values the coordinator publishes)."""

    def __init__(self, **values):
        self.params = {pv.suffix: to_param(pv, pv.value) for pv in PV_TABLE}
        self.lock = threading.Lock()
        self.post(**values)

    def post(self, **updates):
        with self.lock:
            for suffix, value in updates.items():
                if suffix in BY_SUFFIX:
                    self.params[suffix] = to_param(BY_SUFFIX[suffix], value)

    def wait(self, suffix, value, timeout=20.0):
        deadline = time.monotonic() + timeout
        while self.params[suffix] != value:
            assert time.monotonic() < deadline, f"{suffix} = {self.params[suffix]!r}, not {value!r}"
            time.sleep(0.02)


class SourcelessWorker(Worker):
    """A real worker session whose frames come from the test instead of the distributor."""

    def _join(self, config: dict) -> None:
        self.config = config

    def join_group(self) -> None:
        pass

    def leave_group(self) -> None:
        self.left = True


@pytest.fixture
def cluster(tmp_path):
    pvs = PVs(FilePath=str(tmp_path) + "/", FileName="scan", FileTemplate="%s%s_%3.3d.h5",
              FileNumber=1, FileWriteMode="Stream", NumCapture=0, AutoSave="Yes")
    coordinator = Coordinator(pvs.params, pvs.post, 20, listen=("127.0.0.1", 0),
                              source={"channel": "X:Pva1:Image", "options": {}})
    coordinator.start()
    workers, threads = [], []

    def add(name="", policy=None):
        worker = SourcelessWorker(coordinator.address, name=name or f"w{len(workers)}",
                                  policy=policy or PathPolicy(), receiver="thread")
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        workers.append(worker)
        threads.append(thread)
        pvs.wait("Workers_RBV", len([w for w in workers if not w._stopping.is_set()]))
        return worker

    yield pvs, coordinator, add
    for worker in workers:
        worker.stop()
    for thread in threads:
        thread.join(10)
    coordinator.stop()


def feed(workers, uids, first_delay=0.0):
    for uid in uids:
        assert workers[uid % len(workers)].saver.enqueue(make_frame(uid))
    time.sleep(first_delay)


def test_stream_over_two_workers(cluster, tmp_path):
    pvs, coordinator, add = cluster
    workers = [add(), add()]
    pvs.post(NumCapture=12)
    coordinator.submit("capture", on=True).result(10)
    assert pvs.params["Capture_RBV"] == 1
    feed(workers, range(1, 15))
    pvs.wait("Capture_RBV", 0)
    master = tmp_path / "scan_001.h5"
    with h5py.File(master) as f:
        data = f["/entry/data/data"]
        assert data.shape == (12, 4, 5)
        for row, uid in enumerate(range(1, 13)):
            np.testing.assert_array_equal(data[row], make_frame(uid).data)
        assert f["/entry/writer_parts/part0/unique_ids"][()].tolist() in ([2, 4, 6, 8, 10, 12, 14],
                                                                          [1, 3, 5, 7, 9, 11, 13])
    assert pvs.params["NumCaptured_RBV"] == 12 and pvs.params["WriteStatus"] == 0
    assert pvs.params["FullFileName_RBV"] == str(master) and pvs.params["FileNumber"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scan_001.h5", "scan_001_part0.h5",
                                                          "scan_001_part1.h5"]


def test_capture_mode_then_writefile(cluster, tmp_path):
    pvs, coordinator, add = cluster
    workers = [add(), add(), add()]
    pvs.post(FileWriteMode="Capture", NumCapture=9, AutoSave="No")
    coordinator.submit("capture", on=True).result(10)
    feed(workers, range(1, 12))
    pvs.wait("Capture_RBV", 0)
    assert pvs.params["NumCaptured_RBV"] == 9
    assert not list(tmp_path.glob("*.h5"))  # buffered in the workers' memory
    coordinator.submit("write_file").result(30)
    with h5py.File(tmp_path / "scan_001.h5") as f:
        assert f["/entry/instrument/NDAttributes/NDArrayUniqueId"][()].tolist() == list(range(1, 10))
    assert pvs.params["NumCaptured_RBV"] == 0 and pvs.params["WriteFile_RBV"] == 0
    with pytest.raises(SaverError, match="no capture buffer"):
        coordinator.submit("write_file").result(10)


def test_refusals_say_why(cluster, tmp_path):
    pvs, coordinator, add = cluster
    with pytest.raises(SaverError, match="no writer worker is connected"):
        coordinator.submit("capture", on=True).result(10)
    add()
    pvs.post(FileWriteMode="Single")
    with pytest.raises(SaverError, match="Single mode is not available"):
        coordinator.submit("capture", on=True).result(10)
    pvs.post(FileWriteMode="Stream")
    with pytest.raises(SaverError, match="WriteFile is not used in Stream"):
        coordinator.submit("write_file").result(10)
    pvs.post(PositionMode="On")
    with pytest.raises(SaverError, match="PositionMode is not available with writer workers"):
        coordinator.submit("capture", on=True).result(10)
    pvs.post(PositionMode="Off", XMLFileName="/no/such/layout.xml")
    with pytest.raises(SaverError, match="file not found"):
        coordinator.submit("capture", on=True).result(10)
    assert pvs.params["Capture_RBV"] == 0 and not list(tmp_path.iterdir())


def test_a_worker_that_cannot_write_leaves_the_group(cluster, tmp_path):
    pvs, coordinator, add = cluster
    good = add()
    bad = add(policy=PathPolicy.from_dirs([str(tmp_path / "elsewhere")]))
    coordinator.submit("capture", on=True).result(10)
    feed([good, bad], range(1, 9))
    pvs.wait("WriteStatus", 1)
    assert "outside the allowed directories" in pvs.params["WriteMessage"]
    assert getattr(bad, "left", False)  # the distributor gives its share to the others
    feed([good], range(9, 13))
    time.sleep(0.5)
    coordinator.submit("capture", on=False).result(30)
    with h5py.File(tmp_path / "scan_001.h5") as f:
        ids = f["/entry/instrument/NDAttributes/NDArrayUniqueId"][()].tolist()
        missing = f["/entry/writer_parts/missing_unique_ids"][()].tolist()
    assert missing == [u for u in range(1, 9) if u % 2] and ids[-4:] == [9, 10, 11, 12]
    assert pvs.params["MissingFrames_RBV"] == 4 and pvs.params["WriteStatus"] == 1


def test_bad_peers_are_dropped_and_silent_workers_lost(cluster, monkeypatch):
    pvs, coordinator, add = cluster
    add()
    for line in (b"garbage\n", protocol.encode({"type": "hello", "protocol": 999})):
        with socket.create_connection(coordinator.address, timeout=5) as sock:
            sock.sendall(line)
            reply = sock.makefile().readline()
        assert reply == "" or json.loads(reply)["type"] == "refused"
    assert pvs.params["Workers_RBV"] == 1
    monkeypatch.setattr("ioc.plugin.workers.links.LOST_AFTER", 1.0)
    with socket.create_connection(coordinator.address, timeout=5) as sock:
        sock.sendall(protocol.encode({"type": "hello", "protocol": protocol.PROTOCOL,
                                      "name": "mute"}))
        pvs.wait("Workers_RBV", 2)
        pvs.wait("Workers_RBV", 1, timeout=10)  # said nothing for LOST_AFTER: lost
    assert ledger_module.IDLE > 0


def test_losing_the_coordinator_closes_the_parts(cluster, tmp_path):
    import asyncio

    pvs, coordinator, add = cluster
    workers = [add(), add()]
    coordinator.submit("capture", on=True).result(10)
    feed(workers, range(1, 11))
    pvs.wait("NumCaptured_RBV", 10)
    # the coordinator's side of every connection goes away (as when it is killed)
    coordinator.CLOSE_TIMEOUT = 1.0  # its own shutdown then does not wait for them
    asyncio.run_coroutine_threadsafe(coordinator.links.close(), coordinator._loop).result(10)
    deadline = time.monotonic() + 20
    while len(list(tmp_path.glob("scan_001_part*.h5"))) < 2:
        assert time.monotonic() < deadline, list(tmp_path.iterdir())
        time.sleep(0.05)
    for worker in workers:
        assert getattr(worker, "left", False)  # out of the distributor group
    for path in sorted(tmp_path.glob("scan_001_part*.h5")):
        with h5py.File(path) as f:  # closed under its final name, frames kept
            assert len(f["/entry/writer_part/unique_ids"]) == 5
