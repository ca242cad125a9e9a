"""Failures and abuse end in a visible state, over real Channel Access: disk full at close,
signals, put floods, paths that block, absurd values, names (README "Failure behaviour";
the write path's own cases are in tests/unit/test_write_errors.py)."""

from __future__ import annotations

import os
import resource
import signal
import time
from pathlib import Path

import h5py
import pytest
from ioc_harness import CAEnvironment, Client, IOCProcess, tree_memory, wait_for
from system_setup import CAM, SIZE, P, Setup, W
from test_reliability import final_files, stream

from ioc.tools.sim import expected_pixels


def writer_args(*extra) -> list[str]:
    return ["serve", "--prefix", W, "--source", P + "image1:", "--cam", CAM, "-v", *extra]


class Fresh:
    """A new simulator + writer for one test (killed, signalled, restarted here)."""

    def __init__(self, env, tmp: Path, writer_args_=()):
        self.env, self.tmp = env, tmp
        self.logs = tmp / "logs"
        self.logs.mkdir(exist_ok=True)
        self.sim = IOCProcess(["sim", "--prefix", P, "--size", str(SIZE[0]), str(SIZE[1])],
                              env.server_env(0), self.logs / "sim.log").wait_serving()
        self.writer = self.start_writer(*writer_args_)
        self.client = Client()
        self.setup = Setup(self.client, env, self.sim, self.writer, self.logs)
        self.wait_connected()
        self.data = tmp / "data"
        self.data.mkdir(exist_ok=True)
        self.setup.reset(self.data)

    def start_writer(self, *extra) -> IOCProcess:
        return IOCProcess(writer_args(*extra), self.env.server_env(1),
                          self.logs / f"writer-{time.monotonic_ns()}.log")

    def wait_connected(self, timeout: float = 120.0) -> None:
        """Start-up takes long on a loaded machine: wait, not one 15 s connection try."""
        def connected() -> bool:
            try:
                return self.setup.get("SourceConnected_RBV") == "Connected"
            except Exception:  # noqa: BLE001 - not up yet
                return False

        wait_for(connected, timeout, what="the writer connected to the simulator")

    def close(self) -> None:
        self.client.close()
        self.writer.stop()
        self.sim.stop()


@pytest.fixture
def fresh(ca_env, tmp_path, request):
    marker = request.node.get_closest_marker("writer")
    f = Fresh(ca_env, tmp_path, marker.kwargs.get("writer_args", ()) if marker else ())
    yield f
    f.close()


def uids_in(path: Path) -> list[int]:
    with h5py.File(path) as f:
        data = f["/entry/data/data"][()]
        ids = f["/entry/instrument/NDAttributes/NDArrayUniqueId"][()].tolist()
    for frame, uid in zip(data, ids, strict=True):
        assert (frame == expected_pixels(uid, frame.shape[1], frame.shape[0])).all()
    return ids


# -- 1. disk full at close ------------------------------------------------------------------

def test_disk_full_at_stream_close(fresh):
    """Tested with RLIMIT_FSIZE at the open file's size: what the close writes fails
    (tests/unit/test_write_errors.py does it with a full tmpfs)."""
    s = fresh.setup
    s.acquire(1)
    stream(s)
    uids = s.acquire(5)
    time.sleep(3.0)  # the idle open file is flushed (FileSaver.FLUSH_INTERVAL)
    (partial,) = fresh.data.glob(".*.partial")
    pid = fresh.writer.proc.pid
    resource.prlimit(pid, resource.RLIMIT_FSIZE,
                     (partial.stat().st_size, resource.RLIM_INFINITY))
    try:
        s.put("Capture", 0, timeout=30)  # completes
        assert s.get("Capture_RBV") == "Done"
        assert s.get("WriteStatus") == "Write error"
        message = s.get("WriteMessage")
        assert message.startswith("Error closing file: File too large"), message
        assert "5 frames kept in test_001.h5" in message
    finally:
        resource.prlimit(pid, resource.RLIMIT_FSIZE,
                         (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    assert not list(fresh.data.glob(".*"))
    assert uids_in(fresh.data / "test_001.h5") == uids
    stream(s)  # space returns: the next capture writes normally
    more = s.acquire(2)
    s.put("Capture", 0)
    assert s.get("WriteStatus") == "Write OK"
    assert uids_in(fresh.data / "test_002.h5") == more


# -- 6. signals, and what a killed IOC left ------------------------------------------------

def test_sighup_closes_the_stream_file_and_exits(fresh):
    s = fresh.setup
    s.acquire(1)
    stream(s)
    uids = s.acquire(3)
    t0 = time.monotonic()
    fresh.writer.proc.send_signal(signal.SIGHUP)
    assert fresh.writer.proc.wait(15) == 0
    assert time.monotonic() - t0 < 10
    assert uids_in(fresh.data / "test_001.h5") == uids
    assert not list(fresh.data.glob(".*"))


def test_unfinished_file_of_a_killed_ioc_is_reported_not_overwritten(fresh):
    s = fresh.setup
    s.acquire(1)
    stream(s)
    s.acquire(3)
    os.killpg(fresh.writer.proc.pid, signal.SIGKILL)
    fresh.writer.proc.wait(10)
    (partial,) = fresh.data.glob(".*.partial")
    size = partial.stat().st_size
    fresh.writer = fresh.start_writer()
    fresh.wait_connected()
    s.put("FilePath", str(fresh.data))
    message = s.get("WriteMessage")
    assert "1 unfinished files" in message and partial.name in message, message
    assert "unfinished files" in fresh.writer.log()
    s.put("EnableCallbacks", "Enable")
    s.put("FileName", "test")
    s.put("FileNumber", 1)
    s.put("FileWriteMode", "Stream")
    s.acquire(1)
    s.put_refused("Capture", 1)
    assert "exists already" in s.get("WriteMessage")
    assert partial.stat().st_size == size  # never overwritten, never deleted


def test_sigterm_while_writing_a_capture_buffer(fresh):
    """A put in flight at shutdown (WriteFile) is cancelled without killing the file
    saver; the file is closed with what was written, within a few seconds."""
    s = fresh.setup
    s.put("Compression", "zlib")
    s.put("ZLevel", 9)  # a slow write
    s.cam_put("SizeX", 512)
    s.cam_put("SizeY", 512)
    s.put("QueueSize", 200)
    s.acquire(1)
    s.put("FileWriteMode", "Capture")
    s.put("NumCapture", 150)
    s.put("Capture", 1, wait=False)
    wait_for(lambda: s.get("Capture_RBV") == "Capturing", 10)
    s.acquire(150, period=0.01, settle=False)
    wait_for(lambda: s.get("NumCaptured_RBV") == 150, 60)
    s.put("WriteFile", 1, wait=False)
    wait_for(lambda: s.get("WriteFile_RBV") == "Writing", 10)
    t0 = time.monotonic()
    fresh.writer.proc.send_signal(signal.SIGTERM)
    assert fresh.writer.proc.wait(20) == 0
    assert time.monotonic() - t0 < 10
    log = fresh.writer.log()
    assert "InvalidStateError" not in log
    assert not list(fresh.data.glob(".*"))
    written = final_files(fresh.data)[-1]
    with h5py.File(written) as f:  # closed with the frames written before the signal
        assert 0 < f["/entry/data/data"].shape[0] <= 150


def test_sigterm_while_buffering_says_what_is_lost(fresh):
    s = fresh.setup
    s.acquire(1)
    s.put("FileWriteMode", "Capture")
    s.put("NumCapture", 100)
    s.put("Capture", 1, wait=False)
    wait_for(lambda: s.get("Capture_RBV") == "Capturing", 10)
    s.acquire(5)
    fresh.writer.proc.send_signal(signal.SIGTERM)
    assert fresh.writer.proc.wait(15) == 0
    assert "shutdown: 5 frames in the Capture buffer" in fresh.writer.log()


# -- 11. the Capture buffer is bounded ------------------------------------------------------

@pytest.mark.writer(writer_args=("--max-memory", "20"))
def test_capture_buffer_bounded_and_freed(fresh):
    import psutil

    s = fresh.setup
    assert s.get("PoolMaxMem") == pytest.approx(20.0)
    s.cam_put("SizeX", 512)
    s.cam_put("SizeY", 512)  # 0.5 MB frames
    s.acquire(1)
    s.put("FileWriteMode", "Capture")
    for count in (1_000_000, 100):  # 500 GB, 50 MB
        s.put("NumCapture", count)
        s.put_refused("Capture", 1)
        assert "more than the memory limit 20 MB" in s.get("WriteMessage")
        assert s.get("Capture_RBV") == "Done"
    s.acquire(30)  # not capturing: the receiver's frame slots are all made now
    process = psutil.Process(fresh.writer.proc.pid)
    base = tree_memory(process)
    s.put("NumCapture", 30)  # 15.7 MB
    s.put("Capture", 1, wait=False)
    wait_for(lambda: s.get("Capture_RBV") == "Capturing", 10)
    s.acquire(30)
    wait_for(lambda: s.get("NumCaptured_RBV") == 30, 30)
    wait_for(lambda: abs(s.get("PoolUsedMem") - 15.7) < 1.0, 10, what="PoolUsedMem")
    held = tree_memory(process) - base
    assert held > 10e6
    s.put("FreeCapture", 1)
    wait_for(lambda: s.get("PoolUsedMem") == 0, 10)
    time.sleep(1.0)
    assert tree_memory(process) - base < 6e6, f"held {held / 1e6:.1f} MB, then " \
        f"{(tree_memory(process) - base) / 1e6:.1f} MB after FreeCapture"


# -- 16. an attribute PV that disconnects ---------------------------------------------------

def test_disconnected_attribute_pv_is_said(tmp_path, monkeypatch):
    env = CAEnvironment(3)  # the simulator, the writer, and another IOC for the attribute
    for key, value in env.client_env().items():
        monkeypatch.setenv(key, value)
    other = IOCProcess(["sim", "--prefix", "OTH:", "--size", "8", "8"], env.server_env(2),
                       tmp_path / "other.log").wait_serving()
    f = Fresh(env, tmp_path)
    s = f.setup
    assert SIZE
    try:
        wait_for(lambda: s.client.get("OTH:cam1:AcquireTime") is not None, 30)
        s.put("NDAttributesFile", '<Attributes><Attribute name="Other" type="EPICS_PV" '
              'source="OTH:cam1:AcquireTime" dbrtype="DBR_NATIVE"/></Attributes>')
        assert s.get("NDAttributesStatus") == "Attributes file OK"
        assert s.get("NDAttributesMessage_RBV") == ""
        os.killpg(other.proc.pid, signal.SIGKILL)
        other.proc.wait(10)
        wait_for(lambda: "disconnected (last value recorded): OTH:cam1:AcquireTime"
                 in s.get("NDAttributesMessage_RBV"), 30)
        assert "attribute PV OTH:cam1:AcquireTime disconnected" in f.writer.log()
        other = IOCProcess(["sim", "--prefix", "OTH:", "--size", "8", "8"], env.server_env(2),
                           tmp_path / "other2.log").wait_serving()
        wait_for(lambda: s.get("NDAttributesMessage_RBV") == "", 60, what="reconnected")
    finally:
        f.close()
        other.stop()
