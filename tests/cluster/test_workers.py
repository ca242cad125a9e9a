"""N writer workers share the simulator's stream through pvapy-mirror-server's
distributor; the coordinator IOC writes the master file (virtual datasets); unmodified
ophyd-async (prepare / kickoff / complete / collect) is told about the master file."""

from __future__ import annotations

import asyncio
import threading
import time
from urllib.parse import urlparse

import h5py
import numpy as np
import pytest
from cluster_setup import MIRROR, SIZE, check_master, expected_stack
from ioc_harness import wait_for
from system_setup import P, W

from ioc.tools.sim import expected_pixels

PERIOD = 0.004  # s: 250 frames/s from the simulator


@pytest.mark.parametrize(("n_workers", "swmr"), [(2, True), (3, False)])
def test_stream_of_1000_frames(cluster, tmp_path, n_workers, swmr):
    """With SWMR, the master exists from the start and is rewritten as the parts flush: a
    SWMR reader reads every frame it maps while the stream runs; a plain reader gets an
    error, never fill values for frames that exist.  Without, it appears at the end."""
    s = cluster.ready(n_workers, tmp_path)
    s.put("SWMRMode", "On" if swmr else "Off")
    s.put("NumFramesFlush", 10)
    s.start_capture("Stream", 1000)
    first = s.start_acquisition(1000, PERIOD)
    master = s.master()
    if swmr:
        wait_for(lambda: master.exists() and s.get("NumCaptured_RBV") >= 200, 60,
                 what="the live master file")
        with h5py.File(master, "r", swmr=True) as f:
            data = f["/entry/data/data"]
            live = data.shape[0]
            assert 0 < live < 1000
            np.testing.assert_array_equal(data[()], expected_stack(range(first, first + live)))
        with h5py.File(master, "r") as f, pytest.raises(OSError, match="open for write"):
            f["/entry/data/data"][0]
    else:
        wait_for(lambda: s.get("NumCaptured_RBV") >= 200, 60, what="200 frames")
        assert not master.exists()  # written at the end, complete
    s.wait_acquired(1000, PERIOD)
    s.wait_done()
    uids = list(range(first, first + 1000))
    assert s.get("NumCaptured_RBV") == 1000
    assert (s.get("WriteStatus"), s.get("WriteMessage")) == ("Write OK", "")
    assert s.get("MissingFrames_RBV") == 0 and s.get("DroppedArrays_RBV") == 0
    shares = check_master(master, uids)
    assert len(shares) == n_workers
    assert sorted(u for share in shares.values() for u in share) == uids
    for share in shares.values():  # the distributor's round robin: an even share each
        assert abs(len(share) - 1000 / n_workers) <= 10


@pytest.mark.parametrize("n_workers", [2, 3])
def test_capture_of_100_frames(cluster, tmp_path, n_workers):
    s = cluster.ready(n_workers, tmp_path)
    s.start_capture("Capture", 100)
    first = s.start_acquisition(130, PERIOD)
    s.wait_acquired(130, PERIOD)
    s.wait_done()  # AutoSave: written once 100 are buffered
    assert s.get("WriteStatus") == "Write OK", s.get("WriteMessage")
    shares = check_master(s.master(), list(range(first, first + 100)))
    assert len(shares) == n_workers
    assert sorted(u for share in shares.values() for u in share) == list(range(first, first + 100))
    assert s.get("NumCaptured_RBV") == 0  # the buffer written, as NDFileHDF5


def test_a_worker_killed_mid_stream(three_workers, tmp_path):
    """Its frames so far stay readable, the rest of the stream goes to the others, the
    frames lost with it are counted and located."""
    s = three_workers
    n = 1000
    s.start_capture("Stream", 0)
    first = s.start_acquisition(n, PERIOD)
    victim = sorted(s.workers)[1]
    wait_for(lambda: s.get("NumCaptured_RBV") >= 300, 60, interval=0.01, what="300 frames")
    s.kill_worker(victim)
    killed_at = s.cam_get("ArrayCounter_RBV")
    s.wait_acquired(n, PERIOD)
    time.sleep(1.5)  # the last frames reach the survivors
    s.put("Capture", 0)
    s.wait_done()
    uids = list(range(first, first + n))
    with h5py.File(s.master()) as f:
        missing = set(f["/entry/writer_parts/missing_unique_ids"][()].tolist())
        states = {f[f"/entry/writer_parts/{k}"].attrs["worker"].decode():
                  f[f"/entry/writer_parts/{k}"].attrs["state"].decode()
                  for k in f["/entry/writer_parts"] if k.startswith("part")}
    shares = check_master(s.master(), uids, missing=missing)
    lost = next(label for label in shares if label.startswith(victim))
    assert states[lost] == "lost" and all(v == "closed" for k, v in states.items() if k != lost)
    # its frames up to its last flush (at most a second before the kill) stay readable
    assert shares[lost]
    # the frames lost with it: received after that flush (written, queued or in flight) ...
    assert missing and min(missing) > max(shares[lost])
    assert max(missing) <= killed_at + 100  # ... the distributor soon gave its share away
    # every frame after that went to the survivors
    survivors = {u for k, share in shares.items() if k != lost for u in share}
    assert {u for u in uids if u > max(missing)} <= survivors
    # counted and located, where the operator looks
    assert s.get("MissingFrames_RBV") == len(missing)
    assert s.get("WriteStatus") == "Write error"
    message = s.get("WriteMessage")
    assert f"{len(missing)} frames missing (UniqueIds {min(missing)}" in message, message
    assert s.get("Workers_RBV") == 2


def test_a_worker_joining_late_writes_a_part(two_workers, tmp_path):
    """A worker started mid-stream joins the capture: its share goes to its own part."""
    s = two_workers
    s.start_capture("Stream", 0)
    s.cam_put("ImageMode", "Continuous")
    first = s.start_acquisition(0, 0.01)
    wait_for(lambda: s.get("NumCaptured_RBV") >= 100, 60, interval=0.01, what="100 frames")
    name = s.start_worker()
    wait_for(lambda: s.get("Workers_RBV") == 3, 60, what="the third worker")

    def newcomer_frames() -> int:
        line = s.get("WorkersMessage_RBV")
        part = line.split(f"{name} (", 1)[-1].split(",")[0]
        return int(part.split()[1]) if "frames" in part else 0

    wait_for(lambda: newcomer_frames() >= 60, 90, interval=0.2, what="the newcomer's frames")
    s.cam_put("Acquire", 0)
    time.sleep(1.5)  # the last frames reach the workers
    s.put("Capture", 0)
    s.wait_done()
    last = s.cam_get("ArrayCounter_RBV")
    with h5py.File(s.master()) as f:
        missing = set(f["/entry/writer_parts/missing_unique_ids"][()].tolist())
        window = f["/entry/data/data"].shape[0]
    # a subscription's first update is the frame the mirror already holds (skipped): a
    # frame handed to the newcomer as that first update is lost, and reported
    assert len(missing) <= 2 and s.get("MissingFrames_RBV") == len(missing)
    uids = list(range(first, first + window))
    assert uids[-1] <= last
    shares = check_master(s.master(), uids, missing=missing, nexus=False)
    assert len(shares) == 3
    late = next(v for k, v in shares.items() if k.startswith(name))
    assert len(late) >= 60 and min(late) > first + 100


async def _fly(directory, n: int):
    from ophyd_async.core import StaticFilenameProvider, StaticPathProvider, TriggerInfo
    from ophyd_async.epics.adcore import ADWriterFactory
    from ophyd_async.epics.adsimdetector import SimDetector

    provider = StaticPathProvider(StaticFilenameProvider("flyscan"), directory)
    det = SimDetector(P, ADWriterFactory.hdf(provider), name="det")
    await det.connect(timeout=20)
    await det.stage()
    await det.prepare(TriggerInfo(number_of_events=n, livetime=0.001, deadtime=0.009))
    first = await det.driver.array_counter.get_value() + 1
    await det.kickoff()
    await asyncio.wait_for(det.complete(), timeout=90)
    docs = [doc async for doc in det.collect_asset_docs()]
    await det.unstage()
    from aioca import purge_channel_caches

    purge_channel_caches()  # aioca's channels outlive this event loop
    return docs, first


def test_ophyd_async_flyscan_reads_the_master_file(two_workers, tmp_path):
    pytest.importorskip("ophyd_async")
    n = 200
    docs, first = asyncio.run(_fly(tmp_path, n))
    resources = [doc for name, doc in docs if name == "stream_resource"]
    data = next(r for r in resources if r["parameters"]["dataset"] == "/entry/data/data")
    path = urlparse(data["uri"]).path
    datums = [doc for name, doc in docs if name == "stream_datum"]
    assert datums and datums[-1]["indices"]["stop"] == n
    assert two_workers.get("Capture_RBV") == "Done"
    assert str(two_workers.master()) == path  # the file it was told about is the master
    uids = list(range(first, first + n))
    shares = check_master(path, uids)
    assert len(shares) == 2 and all(len(v) >= n // 2 - 5 for v in shares.values())
    with h5py.File(path) as f:
        for resource in resources:  # every dataset ophyd-async declared, one value per frame
            assert f[resource["parameters"]["dataset"]].shape[0] == n
        np.testing.assert_array_equal(f["/entry/data/data"][n - 1], expected_pixels(uids[-1], *SIZE))


def test_no_worker_no_capture(cluster, tmp_path):
    """No silent fallback to one file: without workers the coordinator refuses to capture."""
    s = cluster
    s.ensure_workers(0)
    s.reset(tmp_path)
    s.put_refused("Capture", 1)
    assert s.get("Capture_RBV") == "Done"
    assert "no writer worker" in s.get("WriteMessage")
    assert not list(tmp_path.iterdir())


def _master_frames(path) -> int | str:
    """Frames in the master file, or why it cannot be read (now)."""
    try:
        with h5py.File(path, "r") as f:
            return f["/entry/data/data"].shape[0]
    except (OSError, KeyError) as exc:
        return str(exc)


def test_capture_put_completes_when_the_files_are_done(two_workers, tmp_path):
    """Capture is a busy record here too: a Capture=1 put completes when the coordinated
    capture ends -- NumCapture buffered and AutoSave's master file written (Capture mode),
    or the master file written after a Capture=0 from another client (Stream)."""
    import epics

    s = two_workers
    master = tmp_path / "test_001.h5"  # the name AutoSave gives it (FileNumber 1)
    at_completion = {}
    done = threading.Event()

    def completed(*_):  # the caproto client's thread, as the put completes
        at_completion["frames"] = _master_frames(master)
        done.set()

    s.put("FileWriteMode", "Capture")
    s.put("NumCapture", 100)
    s.client.pv(W + "Capture").write([1], wait=False, callback=completed)
    wait_for(lambda: s.get("Capture_RBV") == "Capturing", 15, what="capturing")
    first = s.start_acquisition(130, PERIOD)
    wait_for(lambda: s.get("NumCaptured_RBV") >= 30, 60, interval=0.01, what="30 frames")
    assert not done.is_set() and not master.exists()  # busy while the buffers fill
    assert done.wait(60), "the Capture=1 put never completed"
    assert at_completion["frames"] == 100  # the master file was whole when it completed
    assert s.get("Capture_RBV") == "Done" and s.get("WriteFile_RBV") == "Done"
    assert s.get("NumCaptured_RBV") == 0  # counted down as the buffers were written
    assert s.get("WriteStatus") == "Write OK", s.get("WriteMessage")
    check_master(master, list(range(first, first + 100)), nexus=False)
    s.wait_acquired(130, PERIOD)

    # Stream, no NumCapture: a pyepics put-callback, completed by another client's Capture=0
    master = tmp_path / "test_002.h5"
    s.put("FileWriteMode", "Stream")
    s.put("NumCapture", 0)
    capture = epics.get_pv(W + "Capture", connect=True, timeout=30)
    streamed = threading.Event()

    def stream_completed(**_):
        at_completion["stream"] = _master_frames(master)
        streamed.set()

    capture.put(1, use_complete=True, callback=stream_completed)
    wait_for(lambda: s.get("Capture_RBV") == "Capturing", 15, what="streaming")
    first = s.start_acquisition(60, PERIOD)
    s.wait_acquired(60, PERIOD)
    wait_for(lambda: s.get("NumCaptured_RBV") == 60, 30, what="60 frames written")
    assert not streamed.is_set() and not capture.put_complete
    s.put("Capture", 0)  # caproto's client: another client than pyepics
    assert streamed.wait(30), "the Capture=1 put never completed"
    assert at_completion["stream"] == 60
    assert s.get("NumCaptured_RBV") == 60
    assert (s.get("WriteStatus"), s.get("WriteMessage")) == ("Write OK", "")
    check_master(master, list(range(first, first + 60)), nexus=False)
    # the same start-up summary as without workers, its source line about the workers
    summary = (s.logs / "coordinator.log").read_text()
    assert f"serving {W} (" in summary and "allowed roots: any" in summary
    assert f"source: pva://{MIRROR} (NDPluginPva NTNDArray over pvAccess, read by the " \
           f"writer workers" in summary and f"workers connect to 127.0.0.1:{s.port}" in summary
