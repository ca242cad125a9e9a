"""Extra dimensions over real CA: ADCore's write rules for NumExtraDims, ExtraDimSize*,
ExtraDimChunk*, PositionMode and NumCapture, and scan-shaped files from the simulator."""

from __future__ import annotations

import h5py
import numpy as np
from ioc_harness import pyepics, wait_for
from system_setup import SIZE, W

from ioc.tools.sim import expected_pixels

SHAPE = (SIZE[1], SIZE[0])


def set_grid(ready, n, x, y, k=2):
    for suffix, value in (("ExtraDimSizeN", n), ("ExtraDimSizeX", x), ("ExtraDimSizeY", y),
                          ("NumExtraDims", k)):
        ready.put(suffix, value)


def test_ranges_refused_as_adcore(ready):
    """The issue's report: NumExtraDims=12, -3 and ExtraDimSize=0 were accepted."""
    for suffix, value, message in (
            ("NumExtraDims", 12, "NumExtraDims must be 0-9"),
            ("NumExtraDims", -3, "NumExtraDims must be 0-9"),
            ("ExtraDimSizeX", 0, "ExtraDimSizeX must be greater than 0"),
            ("ExtraDimSize9", -2, "ExtraDimSize9 must be greater than 0"),
            ("ExtraDimChunkY", -1, "ExtraDimChunkY must not be negative")):
        old = ready.get(suffix)
        ready.put_refused(suffix, value)
        assert ready.get("WriteMessage") == message
        assert ready.get(suffix) == old and ready.get(f"{suffix}_RBV") == old
    ready.put("NumExtraDims", 9)
    assert ready.get("NumExtraDims_RBV") == 9
    ready.put("ExtraDimSizeN", 70000)
    ready.put_refused("ExtraDimSizeX", 70000)  # NumCapture is an Int32: bounded
    assert ready.get("WriteMessage") == \
        "the extra dimensions would hold 4900000000 frames (at most 2147483647)"
    assert ready.get("ExtraDimSizeX_RBV") == 1
    assert [ready.get(f"ExtraDimName{d}_RBV") for d in "NXY"] == [
        "scan dimension 0", "scan dimension 1", "scan dimension 2"]


def test_num_capture_follows_the_sizes(ready):
    set_grid(ready, 2, 3, 2)
    assert ready.get("NumCapture_RBV") == 12  # the 2/3/2: NumCapture becomes 12
    ready.put("ExtraDimSizeY", 5)
    assert ready.get("NumCapture_RBV") == 30
    ready.put("NumCapture", 100)  # more than the extra dimensions hold: capped
    assert ready.get("NumCapture_RBV") == 30
    ready.put("NumCapture", 7)
    assert ready.get("NumCapture_RBV") == 7
    ready.put("NumCapture", 0)  # unlimited is not possible with extra dimensions...
    assert ready.get("NumExtraDims_RBV") == 0 and ready.get("NumCapture_RBV") == 0
    ready.put("PositionMode", "On")  # ... unless frames are placed by position
    ready.put("NumExtraDims", 2)
    assert ready.get("NumCapture_RBV") == 30
    ready.put("NumCapture", 0)
    assert ready.get("NumExtraDims_RBV") == 2 and ready.get("NumCapture_RBV") == 0
    ready.put("PositionMode", "Off")
    assert ready.get("NumExtraDims_RBV") == 0


def test_rules_with_pyepics(ready):
    """The extra-dimension rules through pyepics (libca, in a process of its own)."""
    got = pyepics(f"""
        W = {W!r}

        def get(suffix, **kw):
            return epics.caget(W + suffix, timeout=30, connection_timeout=30, **kw)

        for suffix, value in (("ExtraDimSizeN", 4), ("ExtraDimSizeX", 6), ("NumExtraDims", 1)):
            assert epics.caput(W + suffix, value, wait=True, timeout=30,
                               connection_timeout=30) == 1
        result = [get("NumCapture_RBV")]
        epics.caput(W + "ExtraDimSizeX", 0, wait=True, timeout=30)  # refused by the IOC
        result += [get("ExtraDimSizeX_RBV"), get("WriteMessage", as_string=True),
                   get("NumCapture_RBV")]
    """)
    assert got == [24, 6, "ExtraDimSizeX must be greater than 0", 24]


def check_grid_file(path, uids, grid):
    with h5py.File(path) as f:
        data = f["/entry/instrument/detector/data"]
        assert data.shape == data.maxshape == (*grid, *SHAPE)
        for i, uid in enumerate(uids):
            np.testing.assert_array_equal(data[np.unravel_index(i, grid)],
                                          expected_pixels(uid, *SIZE))
        ids = f["/entry/instrument/NDAttributes/NDArrayUniqueId"]
        assert ids.shape == (*grid, 1, 1)
        assert ids[..., 0, 0].ravel().tolist() == uids


def test_capture_with_extra_dims_from_the_simulator(ready, tmp_path):
    ready.put("FileWriteMode", "Capture")
    ready.put("AutoSave", "Yes")
    ready.put("DimAttDatasets", "Yes")
    set_grid(ready, 2, 3, 2)
    ready.put("Capture", 1)
    uids = ready.acquire(12)
    wait_for(lambda: ready.get("WriteFile_RBV") == "Done" and ready.get("Capture_RBV") == "Done",
             30, what="the capture buffer to be written")
    assert ready.get("WriteStatus") == "Write OK", ready.get("WriteMessage")
    check_grid_file(tmp_path / "test_001.h5", uids, (2, 3, 2))


def test_stream_with_extra_dims_closes_when_full(ready, tmp_path):
    ready.put("FileWriteMode", "Stream")
    ready.put("LazyOpen", "Yes")
    ready.put("DimAttDatasets", "Yes")
    ready.put("NumFramesChunks", 2)
    ready.put("ExtraDimChunkX", 2)
    set_grid(ready, 2, 2, 3)
    ready.put("Capture", 1)
    uids = ready.acquire(12)
    wait_for(lambda: ready.get("Capture_RBV") == "Done", 30, what="the stream to close")
    assert ready.get("WriteStatus") == "Write OK", ready.get("WriteMessage")
    assert ready.get("NumCaptured_RBV") == 12
    check_grid_file(tmp_path / "test_001.h5", uids, (3, 2, 2))
    with h5py.File(tmp_path / "test_001.h5") as f:
        assert f["/entry/instrument/detector/data"].chunks == (1, 2, 2, *SHAPE)
    ready.put("NumFramesChunks", 0)
    ready.put("ExtraDimChunkX", 0)


def test_locked_while_a_file_is_open(ready, tmp_path):
    ready.acquire(1)
    set_grid(ready, 2, 2, 1, k=1)
    ready.put("FileWriteMode", "Stream")
    ready.put("Capture", 1)
    assert ready.get("Capture_RBV") == "Capturing"
    for suffix, value, old in (("NumExtraDims", 0, 1), ("ExtraDimSizeX", 5, 2),
                               ("ExtraDimChunkX", 3, 0)):
        ready.put_refused(suffix, value)
        assert ready.get("WriteMessage") == f"{suffix} cannot be changed while a file is open"
        assert ready.get(f"{suffix}_RBV") == old
    ready.put("Capture", 0)
    ready.put("ExtraDimSizeX", 5)
    assert ready.get("NumCapture_RBV") == 10


def test_single_mode_forces_num_extra_dims_to_zero(ready, tmp_path):
    set_grid(ready, 2, 2, 2)
    ready.acquire(1)
    ready.put("WriteFile", 1)
    assert ready.get("WriteStatus") == "Write OK", ready.get("WriteMessage")
    assert ready.get("NumExtraDims_RBV") == 0
    with h5py.File(tmp_path / "test_001.h5") as f:
        assert f["/entry/instrument/detector/data"].shape == SHAPE
