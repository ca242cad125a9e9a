"""Failure behaviour: each row of the README's "Failure behaviour" table is a test here."""

from __future__ import annotations

import os
import random
import resource
import signal
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from ioc_harness import Client, IOCProcess, tree_fds, tree_memory, wait_for
from system_setup import CAM, SIZE, P, Setup, W

from ioc.layout._xml import MAX_XML_BYTES, MAX_XML_DEPTH
from ioc.tools.sim import expected_pixels


class Fresh:
    """A new simulator + writer for one test (they get killed and restarted here)."""

    def __init__(self, env, tmp: Path, writer_args=(), max_file_size=None, cwd=None,
                 max_open_files=None):
        self.env, self.tmp = env, tmp
        self.logs = tmp / "logs"
        self.logs.mkdir(exist_ok=True)
        self.sim = self.start_sim()
        self.writer = IOCProcess(["serve", "--prefix", W, "--source", P + "image1:", "--cam", CAM,
                                  "-v", *writer_args], env.server_env(1), self.logs / "writer.log",
                                 max_file_size=max_file_size, cwd=cwd,
                                 max_open_files=max_open_files)
        self.client = Client()
        self.setup = Setup(self.client, env, self.sim, self.writer, self.logs)
        try:
            wait_for(lambda: self.setup.get("SourceConnected_RBV") == "Connected", 30)
            self.data = tmp / "data"
            self.data.mkdir(exist_ok=True)
            self.setup.reset(self.data)
        except BaseException:
            self.close()  # a failed start must not leave both IOCs running
            raise

    def start_sim(self):
        return IOCProcess(["sim", "--prefix", P, "--size", str(SIZE[0]), str(SIZE[1])],
                          self.env.server_env(0), self.logs / "sim.log").wait_serving()

    def close(self):
        self.client.close()
        self.writer.stop()
        self.sim.stop()


@pytest.fixture
def fresh(ca_env, tmp_path, request):
    marker = request.node.get_closest_marker("writer")
    kwargs = marker.kwargs if marker else {}
    f = Fresh(ca_env, tmp_path, **kwargs)
    yield f
    f.close()


def receivers(fresh: Fresh) -> list:
    """The IOC's image receiver process(es)."""
    import psutil

    return [p for p in psutil.Process(fresh.writer.proc.pid).children(recursive=True)
            if "spawn_main" in " ".join(p.cmdline()) and "resource_tracker" not in
            " ".join(p.cmdline())]


def assert_one_stream_file(fresh: Fresh, uids: list[int]) -> None:
    """Exactly one file, holding these frames in order, with the simulator's pixels."""
    (path,) = final_files(fresh.data)
    with h5py.File(path) as f:
        data = f["/entry/data/data"][()]
        ids = f["/entry/instrument/NDAttributes/NDArrayUniqueId"][()].tolist()
    assert ids == uids
    for frame, uid in zip(data, uids, strict=True):
        np.testing.assert_array_equal(frame, expected_pixels(uid, *SIZE))


def final_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.glob("*.h5"))


def stream(s: Setup, num_capture: int = 0) -> None:
    s.put("FileWriteMode", "Stream")
    s.put("NumCapture", num_capture)
    s.put("Capture", 1)
    assert s.get("Capture_RBV") == "Capturing"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_closes_the_open_file_and_exits_0(fresh, signum):
    s = fresh.setup
    s.acquire(1)
    stream(s)
    uids = s.acquire(3)
    # while open: only a hidden temporary name, never a half-written final name
    assert final_files(fresh.data) == []
    assert [p.name for p in fresh.data.iterdir()] == [".test_001.h5.partial"]
    (receiver,) = receivers(fresh)
    fresh.writer.proc.send_signal(signum)
    assert fresh.writer.proc.wait(15) == 0
    receiver.wait(5)  # the receiver process ends with the IOC
    (path,) = final_files(fresh.data)
    assert not list(fresh.data.glob(".*"))
    with h5py.File(path) as f:
        data = f["/entry/data/data"][()]
    for frame, uid in zip(data, uids, strict=True):
        np.testing.assert_array_equal(frame, expected_pixels(uid, *SIZE))


@pytest.mark.writer(writer_args=())
def test_path_policy(ca_env, tmp_path):
    allowed = tmp_path / "allowed"
    (allowed / "data").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (allowed / "escape").symlink_to(outside)
    layout = outside / "layout.xml"
    layout.write_text('<?xml version="1.0"?><hdf5_layout><group name="e">'
                      '<dataset name="d" source="detector"/></group></hdf5_layout>')
    f = Fresh(ca_env, allowed, writer_args=("--allow-root", str(allowed)))
    s = f.setup
    try:
        s.put("FilePath", str(allowed / "data"))
        assert s.get("FilePathExists_RBV") == "Yes"
        for bad in (str(outside), str(allowed / "escape"), str(allowed / ".." / "outside")):
            s.put_refused("FilePath", bad)
            assert s.get("FilePath_RBV") == f"{allowed / 'data'}/"
            assert s.get("FilePathExists_RBV") == "No"
            assert "outside the allowed directories" in s.get("WriteMessage")
        s.put("FilePath", str(allowed / "data"))
        s.put_refused("FileName", "../../outside/x")
        assert s.get("FileName_RBV") == "test"
        assert "not inside FilePath" in s.get("WriteMessage")
        s.put_refused("FileTemplate", "%s../../outside/%s_%d.h5")
        assert s.get("FileTemplate_RBV") == "%s%s_%3.3d.h5"
        s.put("XMLFileName", str(layout))
        assert s.get("XMLValid_RBV") == "No"
        assert "outside the allowed directories" in s.get("XMLErrorMsg_RBV")
        s.put("XMLFileName", "")
        s.put("AutoSave", "Yes")
        s.acquire(1)
        assert len(final_files(allowed / "data")) == 1
        assert list(outside.iterdir()) == [layout]
    finally:
        f.close()


def test_xml_attacks_refused_and_the_ioc_keeps_serving(fresh, tmp_path):
    s = fresh.setup
    laughs = ('<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa">'
              '<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;">]>'
              '<hdf5_layout><group name="&c;"><dataset name="d" source="detector"/></group>'
              '</hdf5_layout>')
    s.put("XMLFileName", laughs)
    assert s.get("XMLValid_RBV") == "No"
    assert "DOCTYPE" in s.get("XMLErrorMsg_RBV")
    secret = tmp_path / "secret"
    secret.write_text("secret")
    external = tmp_path / "external.xml"
    external.write_text(f'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY s SYSTEM "file://{secret}">]>'
                        '<Attributes><Attribute name="A" type="CONST" source="&s;"/></Attributes>')
    s.put("NDAttributesFile", str(external))
    assert s.get("NDAttributesStatus") == "XML syntax error"
    big = tmp_path / "big.xml"
    big.write_text('<?xml version="1.0"?><hdf5_layout>' + " " * MAX_XML_BYTES + "</hdf5_layout>")
    s.put("XMLFileName", str(big))
    assert "larger than" in s.get("XMLErrorMsg_RBV")
    deep = tmp_path / "deep.xml"
    n = MAX_XML_DEPTH + 10
    deep.write_text('<?xml version="1.0"?><hdf5_layout>' + '<group name="g">' * n
                    + "</group>" * n + "</hdf5_layout>")
    s.put("XMLFileName", str(deep))
    assert "nested deeper" in s.get("XMLErrorMsg_RBV")
    # ADCore issue #459: a malformed layout crashed the IOC at boot and on write
    s.put("XMLFileName", '<?xml version="1.0"?><hdf5_layout><group name="e"><dataset name="d" '
          'source="detector"><dataset></group></hdf5_layout>')
    assert s.get("XMLValid_RBV") == "No"
    s.put("XMLFileName", "")
    s.put("NDAttributesFile", "")
    s.put("AutoSave", "Yes")
    s.acquire(1)
    assert len(final_files(fresh.data)) == 1


def test_detector_restart_mid_stream(fresh):
    s = fresh.setup
    s.acquire(1)
    stream(s)
    first = s.acquire(3)
    os.killpg(fresh.sim.proc.pid, signal.SIGKILL)
    fresh.sim.proc.wait(5)
    wait_for(lambda: s.get("SourceConnected_RBV") == "Disconnected", 30)
    assert s.get("Capture_RBV") == "Capturing"  # the file stays open
    fresh.sim = fresh.start_sim()
    wait_for(lambda: s.get("SourceConnected_RBV") == "Connected", 60)
    s.cam_put("SizeX", SIZE[0])
    s.cam_put("SizeY", SIZE[1])
    s.cam_put("ImageMode", "Multiple")
    second = s.acquire(3)
    assert second == [1, 2, 3]  # the restarted detector counts from 1 again
    s.put("Capture", 0)
    assert_one_stream_file(fresh, first + second)


def test_receiver_process_killed_is_restarted(fresh):
    s = fresh.setup
    s.acquire(1)
    stream(s)
    first = s.acquire(3)
    (receiver,) = receivers(fresh)
    receiver.kill()
    wait_for(lambda: "receiver process ended" in s.get("WriteMessage"), 15)
    assert s.get("Capture_RBV") == "Capturing"  # the file stays open
    wait_for(lambda: s.get("SourceConnected_RBV") == "Connected", 30)
    (new,) = receivers(fresh)
    assert new.pid != receiver.pid
    second = s.acquire(3)
    s.put("Capture", 0)
    assert_one_stream_file(fresh, first + second)


@pytest.mark.writer(writer_args=("--receiver", "thread"))
def test_in_process_receiver_writes_the_same_frames(fresh):
    """``serve --receiver thread``: no child process, the same files."""
    assert receivers(fresh) == []
    s = fresh.setup
    s.acquire(1)
    stream(s)
    uids = s.acquire(4)
    s.put("Capture", 0)
    (path,) = final_files(fresh.data)
    with h5py.File(path) as f:
        data = f["/entry/data/data"][()]
        assert f["/entry/instrument/NDAttributes/NDArrayUniqueId"][()].tolist() == uids
    for frame, uid in zip(data, uids, strict=True):
        np.testing.assert_array_equal(frame, expected_pixels(uid, *SIZE))


def test_ioc_killed_leaves_no_receiver_behind(fresh):
    (receiver,) = receivers(fresh)
    fresh.writer.proc.kill()
    fresh.writer.proc.wait(5)
    receiver.wait(10)  # it sees the pipe close and exits
    assert not receiver.is_running()


@pytest.mark.writer(max_file_size=400_000)
def test_disk_full_mid_file_then_recovers(fresh):
    s = fresh.setup
    s.cam_put("SizeX", 256)
    s.cam_put("SizeY", 256)  # 128 KiB frames: the 4th frame exceeds the 400 kB limit
    s.acquire(1)
    stream(s)
    s.acquire(6)
    wait_for(lambda: s.get("Capture_RBV") == "Done", 15, what="capture stopped by the error")
    assert s.get("WriteStatus") == "Write error"
    assert "Error" in s.get("WriteMessage")
    assert list(fresh.data.iterdir()) == []  # no partial file, under any name
    # space returns
    resource.prlimit(fresh.writer.proc.pid, resource.RLIMIT_FSIZE,
                     (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    stream(s)
    uids = s.acquire(6)
    s.put("Capture", 0)
    assert s.get("WriteStatus") == "Write OK"
    (path,) = final_files(fresh.data)
    with h5py.File(path) as f:
        assert f["/entry/instrument/NDAttributes/NDArrayUniqueId"][()].tolist() == uids


def test_frame_size_change_mid_stream(fresh):
    s = fresh.setup
    s.acquire(1)
    stream(s)
    good = s.acquire(2)
    s.cam_put("SizeX", SIZE[0] + 10)
    s.acquire(2)
    assert s.get("InvalidFrames_RBV") == 2
    assert s.get("WriteMessage") == "Invalid frame. Ignoring."
    s.cam_put("DataType", "UInt8")
    s.cam_put("SizeX", SIZE[0])
    s.acquire(1)
    assert s.get("InvalidFrames_RBV") == 3  # same shape, other type
    s.cam_put("DataType", "UInt16")
    good += s.acquire(1)
    s.put("Capture", 0)
    (path,) = final_files(fresh.data)
    with h5py.File(path) as f:
        assert f["/entry/instrument/NDAttributes/NDArrayUniqueId"][()].tolist() == good


def test_overload_drops_exactly_memory_bounded_and_recovers(fresh):
    import psutil

    s = fresh.setup
    queue = 3
    s.slow_writer(queue)
    s.acquire(1, settle=False)
    process = psutil.Process(fresh.writer.proc.pid)
    rss_before = tree_memory(process)  # the IOC and its receiver process
    # 200 frames/s of 512x512: CA keeps up, the zlib-9 writer does not
    uids = s.acquire(80, period=0.005, settle=False)
    peak = tree_memory(process)
    s.settle_counts()
    written = len(final_files(fresh.data)) - 1
    dropped = s.get("DroppedArrays_RBV")
    received = len(uids) - s.get("SourceSkipped_RBV")
    assert dropped > 0
    assert dropped == received - written
    frame_bytes = 512 * 512 * 2
    assert peak - rss_before < queue * frame_bytes + 64 * 2**20
    # the writer recovers when the rate drops: nothing more is dropped
    more = s.acquire(3, period=0.3)
    assert s.get("DroppedArrays_RBV") == dropped
    assert s.get("UniqueId_RBV") == more[-1]
    assert len(final_files(fresh.data)) == written + 1 + 3


@pytest.mark.writer(max_open_files=128)
def test_deep_queue_needs_no_file_descriptor_per_frame(fresh):
    """Frame buffers are shared memory mapped without holding a descriptor: a queue
    deeper than the open-file limit (128 here; 1024 is a common default) loses nothing."""
    import psutil

    s = fresh.setup
    s.slow_writer(400)
    s.acquire(1)
    process = psutil.Process(fresh.writer.proc.pid)
    fds_before = tree_fds(process)
    # 125 frames/s of 512x512: the zlib-9 writer falls behind and the queue fills.  How
    # fast it falls behind depends on the machine: acquire until the queue is deeper than
    # the open-file limit, then stop and let the writer catch up.
    first = s.cam_get("ArrayCounter_RBV") + 1
    s.cam_put("AcquirePeriod", 0.008)
    s.cam_put("NumImages", 5000)
    s.cam_put("Acquire", 1, wait=False)
    deepest, most_fds, acquiring = 0, fds_before, True
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        deepest = max(deepest, s.get("NumQueuedArrays"))
        most_fds = max(most_fds, tree_fds(process))
        if acquiring and deepest > 160:
            s.cam_put("Acquire", 0)
            acquiring = False
        if not acquiring and s.cam_get("Acquire_RBV") == "Done" and \
                s.get("NumQueuedArrays") == 0:
            break
        time.sleep(0.05)
    n = s.cam_get("ArrayCounter_RBV") - first + 1
    s.settle_counts()
    # more frames in memory than the process may open files
    assert deepest > 128, f"the queue held at most {deepest} frames: the writer kept up"
    assert most_fds - fds_before < 40  # files being written, sockets: not one per frame
    assert s.get("DroppedArrays_RBV") == 0  # the queue took every frame it was given
    # every frame written or counted: a loaded machine may not get every frame across CA
    # (SourceSkipped_RBV), which is not what this test is about
    skipped = s.get("SourceSkipped_RBV")
    assert skipped < n // 4
    assert s.get("WriteStatus") == "Write OK"
    paths = final_files(fresh.data)
    assert len(paths) == 1 + n - skipped
    for path in (paths[1], paths[n // 2], paths[-1]):
        with h5py.File(path) as f:
            uid = int(f["/entry/instrument/NDAttributes/NDArrayUniqueId"][0])
            np.testing.assert_array_equal(f["/entry/data/data"][()],
                                          expected_pixels(uid, 512, 512))


def _abuse_values(kind: str, count: int, enums: str):
    if kind == "ENUM":
        return [0, 1, len(enums.split("|")) + 5, -1, 65535, "bogus"]
    if kind == "LONG":
        return [-1, 0, 2**31 - 1, -(2**31), "abc", 1.5]
    if kind == "DOUBLE":
        return [float("nan"), float("inf"), -1e300, 0.0, "x"]
    if kind == "CHAR":
        return ["x" * (count + 100), "", "../../../etc/passwd", "%s%s%s%d%n%p", "\u00e9\u00e8"]
    return ["y" * 60, "", "%n"]


def test_pv_abuse_while_streaming(ca_env, tmp_path, listing):
    root = tmp_path / "root"
    root.mkdir()
    f = Fresh(ca_env, root, writer_args=("--allow-root", str(root)), cwd=root)
    s = f.setup
    rng = random.Random(1234)
    try:
        s.acquire(1)
        stream(s)
        s.acquire(2, settle=False)
        writable = [(suffix, info) for suffix, info in listing.items() if info[2] == "rw"]
        rng.shuffle(writable)
        for suffix, (kind, count, _access, enums) in writable:
            for value in _abuse_values(kind, int(count), enums):
                try:
                    pv = s.client.pv(W + suffix)
                    if isinstance(value, str) and kind in ("CHAR",):
                        pv.write(list(value.encode()[:int(count) + 100]) + [0], wait=False)
                    elif isinstance(value, str):
                        pv.write([value.encode()[:39]], data_type=0, wait=False)  # as STRING
                    else:
                        pv.write([value], wait=False)
                except Exception:  # noqa: BLE001 - the client may refuse to encode it
                    pass
        for _ in range(20):  # rapid Capture toggling
            s.client.pv(W + "Capture").write([rng.choice([0, 1])], wait=False)
        s.acquire(3, settle=False)
        time.sleep(1.0)
        assert f.writer.proc.poll() is None, "the IOC must stay up"
        assert s.get("PluginType_RBV").startswith("NDFileHDF5")
        s.put("Capture", 0)
        assert f.writer.stop() == 0
        for path in root.rglob("*.h5"):
            if path.name.startswith("."):
                continue
            with h5py.File(path) as h5:  # every finished file is valid
                assert h5.visit(lambda name: None) is None
        assert not [p for p in root.rglob(".*.partial")], "no half-written files left"
        assert not list(tmp_path.parent.glob("etc")), "nothing written outside the root"
    finally:
        f.close()
