"""N writer workers share the simulator's stream through pvapy-mirror-server's
distributor; the coordinator IOC writes the master file (virtual datasets)."""

from __future__ import annotations

import time

import h5py
import numpy as np
import pytest
from cluster_setup import SIZE, check_master
from ioc_harness import wait_for

from ioc.tools.sim import expected_pixels

PERIOD = 0.004  # s: 250 frames/s from the simulator


@pytest.mark.parametrize("n_workers", [2, 3])
def test_stream_of_1000_frames(cluster, tmp_path, n_workers):
    s = cluster.ready(n_workers, tmp_path)
    s.start_capture("Stream", 1000)
    first = s.start_acquisition(1000, PERIOD)
    s.wait_acquired(1000, PERIOD)
    s.wait_done()
    uids = list(range(first, first + 1000))
    assert s.get("NumCaptured_RBV") == 1000
    assert (s.get("WriteStatus"), s.get("WriteMessage")) == ("Write OK", "")
    assert s.get("MissingFrames_RBV") == 0 and s.get("DroppedArrays_RBV") == 0
    shares = check_master(s.master(), uids)
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
    assert shares[lost] and max(shares[lost]) >= killed_at - 300
    # the frames lost with it: written after that flush, or in flight when it died ...
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
    s = two_workers
    n = 800
    s.start_capture("Stream", n)
    first = s.start_acquisition(n, 0.01)
    wait_for(lambda: s.get("NumCaptured_RBV") >= 100, 60, interval=0.01, what="100 frames")
    s.start_worker()  # subscribes a few seconds later, mid-stream
    s.wait_acquired(n, 0.01)
    s.wait_done()
    assert s.get("Workers_RBV") == 3
    with h5py.File(s.master()) as f:
        missing = set(f["/entry/writer_parts/missing_unique_ids"][()].tolist())
    # a subscription's first update is the frame the mirror already holds (skipped): a
    # frame handed to the newcomer as that first update is lost, and reported
    assert len(missing) <= 2 and s.get("MissingFrames_RBV") == len(missing)
    uids = list(range(first, first + n + len(missing)))
    shares = check_master(s.master(), uids, missing=missing, nexus=False)
    assert len(shares) == 3 and min(len(v) for v in shares.values()) > 50


def test_live_master_while_the_parts_are_written(two_workers, tmp_path):
    """SWMR: the master exists from the start, rewritten as the parts flush; a SWMR reader
    reads every frame it maps; a plain reader gets an error, not fill values; after the
    close every reader reads the whole stream."""
    s = two_workers
    s.put("SWMRMode", "On")
    s.put("NumFramesFlush", 10)
    n = 600
    s.start_capture("Stream", n)
    first = s.start_acquisition(n, 0.01)
    master = s.master()
    wait_for(lambda: master.exists() and s.get("NumCaptured_RBV") >= 200, 60,
             what="the live master file")
    time.sleep(1.2)
    with h5py.File(master, "r", swmr=True) as f:
        data = f["/entry/data/data"]
        live = data.shape[0]
        assert 0 < live < n
        for row in range(live):
            np.testing.assert_array_equal(data[row], expected_pixels(first + row, *SIZE))
    with h5py.File(master, "r") as f, pytest.raises(OSError, match="open for write"):
        f["/entry/data/data"][0]
    s.wait_acquired(n, 0.01)
    s.wait_done()
    check_master(master, list(range(first, first + n)))


def test_no_worker_no_capture(cluster, tmp_path):
    """No silent fallback to one file: without workers the coordinator refuses to capture."""
    s = cluster
    s.ensure_workers(0)
    s.reset(tmp_path)
    s.put_refused("Capture", 1)
    assert s.get("Capture_RBV") == "Done"
    assert "no writer worker" in s.get("WriteMessage")
    assert not list(tmp_path.iterdir())
