"""PositionMode through the file saver (the IOC's worker thread, queue and writer), fed
frames that carry their position NDAttributes, as NDPosPlugin's frames do.

Over CA frames carry no NDAttributes of the driver's, so this is where PositionMode is
tested until frames arrive over pvAccess; the PV rules are tested over CA
(``tests/system/test_scan_pvs.py``)."""

from __future__ import annotations

import random

import h5py
import numpy as np
from helpers import attr, make_frame
from saver_harness import SaverHarness
from test_extra_dims_writer import labelled, snake

from ioc.ndarray import NDAttrType

DATA = "/entry/instrument/detector/data"
ND = "/entry/instrument/NDAttributes"
GRID = dict(NumExtraDims=2, ExtraDimSizeN=2, ExtraDimSizeX=4, ExtraDimSizeY=3,
            PosNameDimN="d2", PosNameDimX="d1", PosNameDimY="d0", PositionMode=1)


def stream(harness: SaverHarness, frames) -> None:
    harness.command("capture", on=True)
    harness.feed(frames)


def test_stream_places_shuffled_frames_by_label(tmp_path):
    order = [(uid, *p) for uid, p in enumerate(snake(), start=1)]
    random.Random(7).shuffle(order)
    with SaverHarness(tmp_path, FileWriteMode=2, NumCapture=0, LazyOpen=1, DimAttDatasets=1,
                      PosIndexDimX="xpos", **GRID) as h:
        stream(h, [labelled(uid, y, x, n, [attr("xpos", 0.25 * x)]) for uid, y, x, n in order])
        assert h.params["NumCaptured_RBV"] == 24 and h.params["Capture_RBV"] == 1
        h.command("capture", on=False)
        assert h.params["WriteStatus"] == 0, h.params["WriteMessage"]
    with h5py.File(tmp_path / "scan_001.h5") as f:
        assert f[DATA].shape == (3, 4, 2, 4, 5)
        for uid, y, x, n in order:
            np.testing.assert_array_equal(f[DATA][y, x, n], make_frame(uid).data)
            assert f[ND]["NDArrayUniqueId"][y, x, n, 0, 0] == uid
        assert f[ND]["xpos"][()].tolist() == [0.0, 0.25, 0.5, 0.75]


def test_frame_without_its_label_stops_the_stream_and_keeps_the_file(tmp_path):
    points = snake()
    frames = [labelled(uid, *p) for uid, p in enumerate(points[:4], start=1)]
    frames.append(make_frame(5, attrs=[attr("d1", 0, NDAttrType.Int32)]))  # no d0, d2
    frames.append(labelled(6, *points[5]))
    with SaverHarness(tmp_path, FileWriteMode=2, NumCapture=0, LazyOpen=1, TempSuffix=".tmp",
                      **GRID) as h:
        stream(h, frames)
        assert h.params["WriteStatus"] == 1
        assert h.params["WriteMessage"] == (
            "Error writing file, frame 5 has no NDAttribute 'd2' (PosNameDimN) for its "
            "position; file closed with 4 frames")
        assert h.params["Capture"] == 0 and h.params["Capture_RBV"] == 0
        assert h.params["NumCaptured_RBV"] == 4
        assert sorted(p.name for p in tmp_path.iterdir()) == ["scan_001.h5"]  # renamed
    with h5py.File(tmp_path / "scan_001.h5") as f:
        assert f[DATA].shape == (1, 2, 2, 4, 5)  # frame 6 was not written: capture ended
        np.testing.assert_array_equal(f[DATA][0, 1, 1], make_frame(4).data)


def test_capture_buffer_with_an_unplaceable_frame(tmp_path):
    frames = [labelled(uid, *p) for uid, p in enumerate(snake()[:3], start=1)]
    frames.append(labelled(4, 3, 0, 0))  # d0 = 3 is outside ExtraDimSizeY = 3
    with SaverHarness(tmp_path, FileWriteMode=1, NumCapture=4, AutoSave=1, **GRID) as h:
        stream(h, frames)
        assert h.params["WriteStatus"] == 1
        assert h.params["WriteMessage"].startswith(
            "Error writing file, frame 4: NDAttribute 'd0' (PosNameDimY) = 3 is outside "
            "ExtraDimSizeY = 3; file closed with 3 frames")
    with h5py.File(tmp_path / "scan_001.h5") as f:
        assert f[DATA].shape == (1, 2, 2, 4, 5)


def test_single_mode_forces_num_extra_dims_to_zero(tmp_path):
    with SaverHarness(tmp_path, FileWriteMode=0, AutoSave=1, DimAttDatasets=1, **GRID) as h:
        h.feed([make_frame(1)])  # no labels: PositionMode means nothing in Single mode
        assert h.params["WriteStatus"] == 0, h.params["WriteMessage"]
        assert h.params["NumExtraDims"] == 0 and h.params["NumExtraDims_RBV"] == 0
    with h5py.File(tmp_path / "scan_001.h5") as f:
        assert f[DATA].shape == (4, 5)
        assert f[ND]["NDArrayUniqueId"].shape == (1, 1)
