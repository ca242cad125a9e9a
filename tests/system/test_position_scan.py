"""Position-labelled scans end to end over pvAccess: the simulator's NDPosPlugin stand-in
(``Pos1:``) labels each frame with its scan indices, the labels travel with the frame on
``Pva1:Image``, and the writer places it with PositionMode.

The scan is a 3 x 4 snake grid with 2 frames per point (labels d0 = y, d1 = x, d2 = the
frame at the point), as pymalcolm's PositionLabellerPart lists it."""

from __future__ import annotations

import random
import time
from concurrent.futures import ThreadPoolExecutor

import h5py
import numpy as np
import pytest
from ioc_harness import wait_for
from system_setup import SIZE, P

from ioc.tools.sim import expected_pixels
from ioc.tools.sim_attributes import frame_statistics

POS = P + "Pos1:"
DATA = "/entry/instrument/detector/data"
ND = "/entry/instrument/NDAttributes"
SHAPE = (3, 4, 2)
GRID = (("PositionMode", "On"), ("NumExtraDims", 2), ("ExtraDimSizeN", 2),
        ("ExtraDimSizeX", 4), ("ExtraDimSizeY", 3), ("PosNameDimN", "d2"),
        ("PosNameDimX", "d1"), ("PosNameDimY", "d0"), ("DimAttDatasets", "Yes"))
STATS_ATTRIBUTES = ('<Attributes><Attribute name="Total" type="PARAM" source="TOTAL" '
                    'datatype="DOUBLE"/></Attributes>')


def snake() -> list[tuple[int, int, int]]:
    """The grid's points in scan order, slowest index first (y, x, frame)."""
    return [(y, x, n) for y in range(3) for x in (range(4) if y % 2 == 0 else range(3, -1, -1))
            for n in range(2)]


def position_xml(points) -> str:
    """NDPosPlugin's position list, in PositionLabellerPart._make_xml's form."""
    return ('<?xml version="1.0" ?><pos_layout><dimensions><dimension name="d0" />'
            '<dimension name="d1" /><dimension name="d2" /></dimensions><positions>'
            + "".join(f'<position d0="{y}" d1="{x}" d2="{n}" />' for y, x, n in points)
            + "</positions></pos_layout>")


class Pos:
    """Puts and gets on the simulator's Pos1: plugin."""

    def __init__(self, setup):
        self.client = setup.client
        self.pool = ThreadPoolExecutor(2)

    def put(self, suffix, value, **kw):
        return self.client.put(POS + suffix, value, **kw)

    def get(self, suffix):
        return self.client.get(POS + suffix)

    def load(self, points, mode="Discard", id_start=1, id_difference=1):
        """Delete, settings, the list, then Running (a busy record: its put completes when
        the positions run out).  Returns that put's future."""
        for suffix, value in (("EnableCallbacks", "Enable"), ("Delete", 1), ("Mode", mode),
                              ("IDStart", id_start), ("IDDifference", id_difference),
                              ("ArrayCounter", 0), ("Missing", 0), ("Duplicate", 0)):
            self.put(suffix, value)
        self.put("Filename", position_xml(points))
        assert self.get("FileValid_RBV") == "Yes"
        assert self.get("Qty_RBV") == len(points)
        running = self.pool.submit(self.put, "Running", 1, timeout=120)
        wait_for(lambda: self.get("Running_RBV") == "Running", 10, what="Pos1 running")
        assert not running.done()  # busy until the positions run out
        return running

    def idle(self):
        self.put("Running", 0)
        self.put("EnableCallbacks", "Disable")
        self.put("Delete", 1)


@pytest.fixture
def scan(pva_ready, tmp_path):
    """The writer set for the grid (Stream, LazyOpen, PositionMode), Pos1 enabled."""
    s = pva_ready
    for suffix, value in GRID + (("FileWriteMode", "Stream"), ("NumCapture", 0),
                                 ("LazyOpen", "Yes"), ("PosIndexDimX", ""),
                                 ("PosIndexDimY", "")):
        s.put(suffix, value)
    s.cam_put("ArrayCounter", 0)  # the scan's frames are 1, 2, ... (pymalcolm's driver part)
    pos = Pos(s)
    try:
        yield s, pos
    finally:
        pos.idle()
        pos.pool.shutdown()
        s.client.put(P + "Stats1:NDAttributesFile", "")


def capture(s, n: int, period: float = 0.02) -> None:
    s.put("Capture", 1, wait=False)
    wait_for(lambda: s.get("Capture_RBV") == "Capturing", 10, what="capturing")
    s.acquire(n, period, settle=False)


def finish(s, captured: int) -> None:
    wait_for(lambda: s.get("NumCaptured_RBV") == captured, 30,
             what=f"{captured} frames captured")
    s.put("Capture", 0)
    wait_for(lambda: s.get("Capture_RBV") == "Done", 30, what="file closed")
    assert s.get("WriteStatus") == "Write OK", s.get("WriteMessage")


def only_file(directory):
    (path,) = sorted(directory.glob("test_*.h5"))
    return path


def check_frames(f, placed: dict[tuple[int, int, int], int]) -> None:
    """Every placed frame's pixels and UniqueId at its position; holes elsewhere."""
    data, ids = f[DATA], f[ND]["NDArrayUniqueId"]
    assert data.shape == data.maxshape == (*SHAPE, SIZE[1], SIZE[0])
    assert ids.shape == (*SHAPE, 1, 1)
    for point in np.ndindex(*SHAPE):
        uid = placed.get(point)
        if uid is None:
            assert ids[point][0, 0] == 0 and not data[point].any(), point
        else:
            np.testing.assert_array_equal(data[point], expected_pixels(uid, *SIZE))
            assert ids[point][0, 0] == uid, point


def test_snake_grid_through_position_mode(scan, tmp_path):
    s, pos = scan
    s.client.put(P + "Stats1:NDAttributesFile", STATS_ATTRIBUTES)
    s.put("PosIndexDimX", "d1")
    s.put("PosIndexDimY", "d0")
    points = snake()
    running = pos.load(points)
    capture(s, 24)
    running.result(timeout=30)  # the busy put completed: positions used up
    assert pos.get("Running_RBV") == "Idle" and pos.get("Qty_RBV") == 0
    assert pos.get("ArrayCounter_RBV") == 24 and pos.get("UniqueId_RBV") == 24
    assert pos.get("Position_RBV") == "[d0=2,d1=3,d2=1]"
    assert (pos.get("Missing_RBV"), pos.get("Duplicate_RBV")) == (0, 0)
    assert pos.get("ExpectedID_RBV") == 25
    finish(s, 24)
    with h5py.File(only_file(tmp_path)) as f:
        check_frames(f, {point: uid for uid, point in enumerate(points, start=1)})
        nd = f[ND]
        d2 = nd["d2"]  # NDPosPlugin's labels: Float64, described as it describes them
        assert d2.shape == (*SHAPE, 1, 1) and d2.dtype == np.dtype("<f8")
        assert d2[..., 0, 0].tolist() == [[[0.0, 1.0]] * 4] * 3
        assert d2.attrs["NDAttrDescription"] == b"Position of NDArray"
        assert d2.attrs["NDAttrSource"] == b"NDPosPlugin"
        assert d2.attrs["NDAttrSourceType"] == b"NDAttrSourceDriver"
        # PosIndexDim: the labels of X and Y as 1-D index datasets
        assert nd["d1"].shape == (4,) and nd["d1"][()].tolist() == [0.0, 1.0, 2.0, 3.0]
        assert nd["d0"].shape == (3,) and nd["d0"][()].tolist() == [0.0, 1.0, 2.0]
        # an upstream plugin's attribute travels with the label
        total = nd["Total"]
        assert total.shape == (*SHAPE, 1, 1)
        for uid, point in enumerate(points, start=1):
            assert total[point][0, 0] == frame_statistics(expected_pixels(uid, *SIZE))["TOTAL"]


def test_position_list_out_of_order(scan, tmp_path):
    """The frames arrive in UniqueId order but the list sends them all over the grid."""
    s, pos = scan
    points = snake()
    random.Random(15).shuffle(points)
    pos.load(points)
    capture(s, 24)
    finish(s, 24)
    with h5py.File(only_file(tmp_path)) as f:
        check_frames(f, {point: uid for uid, point in enumerate(points, start=1)})


def test_frames_lost_before_the_plugin_skip_their_positions(scan, tmp_path):
    """The detector never sends frames 11 and 12: NDPosPlugin counts them missing and
    drops their positions, so every later frame still lands at its own point."""
    s, pos = scan
    points = snake()
    pos.load(points)
    capture(s, 10)
    s.cam_put("ArrayCounter", 12)
    s.acquire(12, settle=False)
    wait_for(lambda: pos.get("Running_RBV") == "Idle", 10, what="Pos1 done")
    assert pos.get("Missing_RBV") == 2
    finish(s, 22)
    placed = {point: uid for uid, point in enumerate(points, start=1) if uid not in (11, 12)}
    with h5py.File(only_file(tmp_path)) as f:
        check_frames(f, placed)


def test_id_start_and_difference_choose_the_labelled_frames(scan, tmp_path):
    """IDStart 3, IDDifference 2: frames 3, 5, 7, ... get the positions; the others are
    behind the expected id and dropped as duplicates."""
    s, pos = scan
    points = snake()
    pos.load(points, id_start=3, id_difference=2)
    capture(s, 49, period=0.01)
    wait_for(lambda: pos.get("Running_RBV") == "Idle", 10, what="Pos1 done")
    assert pos.get("Duplicate_RBV") == 25 and pos.get("ExpectedID_RBV") == 51
    finish(s, 24)
    with h5py.File(only_file(tmp_path)) as f:
        check_frames(f, {point: 3 + 2 * k for k, point in enumerate(points)})


def test_keep_mode_and_reset_replay_the_list(scan, tmp_path):
    """Keep mode: the list stays; Reset rewinds it for a second file, whose frames are
    found from IDStart."""
    s, pos = scan
    points = snake()[:8]  # the first row
    s.put("ExtraDimSizeY", 1)
    pos.load(points, mode="Keep")
    capture(s, 8)
    finish(s, 8)
    assert pos.get("Index_RBV") == 8 and pos.get("Qty_RBV") == 8
    pos.put("Reset", 1)
    assert pos.get("Index_RBV") == 0
    pos.put("IDStart", 9)  # the next frames are 9.. (pymalcolm's on_seek does the same)
    pos.put("Running", 1, wait=False)
    s.put("FileName", "again")
    capture(s, 8)
    finish(s, 8)
    for name, first in (("test", 1), ("again", 9)):
        (path,) = tmp_path.glob(f"{name}_*.h5")
        with h5py.File(path) as f:
            assert f[DATA].shape == (1, 4, 2, SIZE[1], SIZE[0])
            for k, (_, x, n) in enumerate(points):
                np.testing.assert_array_equal(f[DATA][0, x, n], expected_pixels(first + k, *SIZE))


def test_unlabelled_frame_stops_the_file(scan, tmp_path):
    """Frames stop passing through Pos1 (disabled mid-scan): the first frame without its
    labels ends the file, which keeps the frames placed so far.  ArrayCounter counts that
    frame too, as NDPluginFile counts every frame it hands to the writer."""
    s, pos = scan
    points = snake()
    pos.load(points)
    capture(s, 5)
    pos.put("EnableCallbacks", "Disable")
    s.acquire(2, settle=False)
    wait_for(lambda: s.get("Capture_RBV") == "Done", 20, what="the file to be stopped")
    assert s.get("WriteStatus") == "Write error"
    assert s.get("WriteMessage") == (
        "Error writing file, frame 6 has no NDAttribute 'd2' (PosNameDimN) for its "
        "position; file closed with 5 frames")
    wait_for(lambda: s.get("UniqueId_RBV") == 7, 10, what="frame 7 seen")
    time.sleep(0.3)
    assert s.get("NumCaptured_RBV") == 5 and s.get("ArrayCounter_RBV") == 6
    with h5py.File(only_file(tmp_path)) as f:
        assert f[DATA].shape == (1, 3, 2, SIZE[1], SIZE[0])  # grown to the frames placed
        for uid, point in enumerate(points[:5], start=1):
            np.testing.assert_array_equal(f[DATA][point], expected_pixels(uid, *SIZE))


def test_position_list_file_and_refusals(scan, tmp_path):
    """A list from a file appends to what is held; an unreadable one is refused
    (FileValid_RBV No) and changes nothing."""
    _, pos = scan
    pos.put("Delete", 1)
    path = tmp_path / "positions.xml"
    path.write_text(position_xml(snake()[:5]))
    pos.put("Filename", str(path))
    assert pos.get("FileValid_RBV") == "Yes" and pos.get("Qty_RBV") == 5
    assert pos.get("Filename_RBV") == str(path)
    pos.put("Filename", str(path))  # NDPosPlugin appends
    assert pos.get("Qty_RBV") == 10
    for bad in (str(tmp_path / "missing.xml"), "<pos_layout><positions>"):
        pos.put("Filename", bad)
        assert pos.get("FileValid_RBV") == "No" and pos.get("Qty_RBV") == 10
