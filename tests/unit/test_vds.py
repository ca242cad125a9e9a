"""Part files and the master file over them (virtual datasets), read back with h5py and
nexusformat: frames in UniqueId order, NDAttribute datasets, holes, crashes, SWMR."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import h5py
import numpy as np
import pytest
from helpers import TESTS, attr, make_frame
from test_layout import DEMO

from ioc.layout import default_layout, load_layout
from ioc.ndarray import NDAttrType
from ioc.writer import vds
from ioc.writer.nexus import WriterOptions
from ioc.writer.part import PartWriter, part_name
from ioc.writer.vds import MasterSource, Run, regular_runs, write_master

STREAM = WriterOptions(multi_frame=True, num_capture=0)


def frame(uid, **kw):
    return make_frame(uid, attrs=[attr("Temp", uid * 0.5), attr("Name", f"n{uid}", NDAttrType.String),
                                  attr("Counter", uid, NDAttrType.Int32)], **kw)


def distributed(uids, workers, block):
    """The distributor's schedule: blocks of ``block`` frames to each worker in turn."""
    first = min(uids)
    return [[u for u in uids if ((u - first) // block) % workers == w] for w in range(workers)]


def write_parts(directory, shares, layout=None, options=STREAM, make=frame):
    master = directory / "scan_001.h5"
    sources = []
    for k, uids in enumerate(shares):
        path = part_name(master, k)
        writer = PartWriter(path, layout or default_layout(), make(uids[0]), options,
                            file_name=str(path), worker=f"w{k}", part=k)
        for uid in uids:
            writer.write(make(uid))
        writer.close()
        sources.append(MasterSource(path.name, path, f"w{k} on here"))
    return master, sources


def test_part_name():
    assert str(part_name("/d/scan_001.h5", 2)) == "/d/scan_001_part2.h5"
    assert str(part_name("/d/scan.nxs", 0)) == "/d/scan_part0.nxs"
    assert str(part_name("/d/scan", 1)) == "/d/scan_part1"


@pytest.mark.parametrize(("workers", "block"), [(2, 1), (3, 5), (2, 4)])
def test_regular_runs_one_per_worker_on_a_steady_schedule(workers, block):
    uids = list(range(1, 101))
    for share in distributed(uids, workers, block):
        master_rows = np.asarray(share) - 1
        runs = regular_runs(master_rows, np.arange(len(share)))
        # one strided run, plus one for a last partial block
        assert len(runs) <= 2
        rebuilt = [r.master_start + b * r.stride + i for r in runs for b in range(r.count)
                   for i in range(r.block)]
        assert rebuilt == master_rows.tolist()


def test_regular_runs_break_where_the_schedule_changes():
    # worker 0 of 2 until frame 30, then alone (its partner gone)
    master = [m for m in range(30) if m % 2 == 0] + list(range(30, 50))
    runs = regular_runs(np.asarray(master), np.arange(len(master)))
    assert runs == [Run(0, 0, 1, 15, 2), Run(30, 15, 20, 1, 20)]
    assert regular_runs(np.zeros(0), np.zeros(0)) == []


def check_master(path, uids, missing=()):
    """The master's frames and NDAttribute datasets, through h5py."""
    expected = [u for u in range(min(uids), max(uids) + 1)]
    with h5py.File(path) as f:
        data = f["/entry/data/data"]
        assert data.is_virtual and data.shape == (len(expected), 4, 5)
        assert f["/entry/data/data"].id == f["/entry/instrument/detector/data"].id
        values = data[()]
        ids = f["/entry/instrument/NDAttributes/NDArrayUniqueId"][()]
        temps = f["/entry/instrument/NDAttributes/Temp"][()]
        names = f["/entry/instrument/NDAttributes/Name"][()]
        for row, uid in enumerate(expected):
            if uid in missing:
                assert not values[row].any() and ids[row] == 0 and names[row] == b""
            else:
                np.testing.assert_array_equal(values[row], frame(uid).data)
                assert ids[row] == uid and temps[row] == uid * 0.5 and names[row] == f"n{uid}".encode()
        group = f["/entry/writer_parts"]
        assert group["missing_unique_ids"][()].tolist() == sorted(missing)
        assert group.attrs["missing"] == len(missing)
        assert group.attrs["frames"] == len(expected)


@pytest.mark.parametrize(("workers", "block"), [(2, 1), (3, 5)])
def test_master_reads_every_frame_in_unique_id_order(tmp_path, workers, block):
    uids = list(range(101, 201))
    shares = distributed(uids, workers, block)
    master, sources = write_parts(tmp_path, shares)
    result = write_master(master, sources)
    assert (result.frames, result.written, result.missing.size) == (100, 100, 0)
    check_master(master, uids)
    with h5py.File(master) as f:
        for k, share in enumerate(shares):
            part = f[f"/entry/writer_parts/part{k}"]
            assert part["unique_ids"][()].tolist() == share
            assert part.attrs["file_name"] == f"scan_001_part{k}.h5".encode()
            assert part.attrs["state"] == b"closed"
        assert f["/entry/instrument/performance/timestamp"].shape == (100, 5)
        assert f.attrs["file_name"] == str(master).encode()
        assert f["/entry/data"].attrs["signal"] == b"data"  # the layout's tree
    # sources are named relative to the master: the set of files can move
    moved = tmp_path / "elsewhere"
    shutil.copytree(tmp_path, moved, ignore=shutil.ignore_patterns("elsewhere"))
    for p in tmp_path.glob("scan_*"):
        p.unlink()
    check_master(moved / "scan_001.h5", uids)


def test_nexusformat_reads_the_master(tmp_path):
    nexus = pytest.importorskip("nexusformat.nexus")
    uids = list(range(1, 61))
    master, sources = write_parts(tmp_path, distributed([u for u in uids if u != 17], 3, 2))
    write_master(master, sources, first_uid=1, last_uid=60)
    root = nexus.nxload(str(master))
    data = root["entry/data/data"]
    assert data.shape == (60, 4, 5)
    values = data.nxdata
    for row, uid in enumerate(uids):
        expected = np.zeros((4, 5)) if uid == 17 else frame(uid).data
        np.testing.assert_array_equal(values[row], expected)
    assert root["entry/instrument/NDAttributes/NDArrayUniqueId"].nxdata.tolist() == \
        [0 if u == 17 else u for u in uids]
    root.nxfile.close()


def test_frames_no_part_holds_read_as_fill_value_and_are_listed(tmp_path):
    uids = list(range(1, 41))
    lost = {5, 6, 21, 40}
    master, sources = write_parts(tmp_path, distributed([u for u in uids if u not in lost], 2, 1))
    result = write_master(master, sources, first_uid=1, last_uid=40)
    assert result.missing.tolist() == sorted(lost)
    check_master(master, uids, missing=lost)


def test_the_window_limits_the_master(tmp_path):
    master, sources = write_parts(tmp_path, distributed(list(range(1, 31)), 2, 3))
    result = write_master(master, sources, first_uid=4, last_uid=25)
    assert (result.first_uid, result.frames) == (4, 22)
    check_master(master, list(range(4, 26)))


def test_duplicates_keep_the_first_part_and_are_counted(tmp_path):
    master, sources = write_parts(tmp_path, [[1, 2, 3, 4], [3, 4, 5, 6]])
    result = write_master(master, sources)
    assert result.duplicates == 2
    check_master(master, list(range(1, 7)))


def test_long_captures_use_strided_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(vds, "PER_FRAME_MAPPINGS", 10)
    uids = [u for u in range(1, 201) if u not in (77, 78)]
    master, sources = write_parts(tmp_path, distributed(uids, 3, 4))
    result = write_master(master, sources, first_uid=1, last_uid=200)
    datasets = 8  # data, 6 NDAttribute datasets, performance
    assert result.mappings <= datasets * 3 * 4
    check_master(master, list(range(1, 201)), missing={77, 78})


def test_data_destinations_each_detector_dataset_in_unique_id_order(tmp_path):
    layout = load_layout(DEMO)

    def make(uid):
        dest = {0: "/entry/detector/data2", 1: "/entry/detector/data3"}.get(uid % 3)
        attrs = [attr("Temp", float(uid)), attr("AcquireTime", 0.1), attr("Counter", uid, NDAttrType.Int32),
                 attr("Model", "sim", NDAttrType.String)]
        if dest:
            attrs.append(attr("DataDestination", dest, NDAttrType.String))
        return make_frame(uid, attrs=attrs)

    uids = list(range(1, 31))
    master, sources = write_parts(tmp_path, distributed(uids, 2, 2), layout=layout, make=make)
    write_master(master, sources)
    with h5py.File(master) as f:
        for name, rest in (("data1", 2), ("data2", 0), ("data3", 1)):
            ds = f[f"/entry/detector/{name}"]
            mine = [u for u in uids if u % 3 == rest]
            if name == "data1":  # the default: holes for the frames that went elsewhere
                mine = uids
            assert ds.shape[0] == len(mine), name
            for row, uid in enumerate(mine):
                if name == "data1" and uid % 3 != 2:
                    assert not ds[row].any()
                else:
                    np.testing.assert_array_equal(ds[row], make(uid).data)
        assert f["/entry/attributes/written"][()].tolist() == uids
        # OnFileClose values come from the part holding the last frame
        assert f["/entry/attributes/final_temp"][()].tolist() == [30.0]
        assert f["/entry/detector/data1"].attrs["last_id"] == 30


KILLED_WRITER = textwrap.dedent("""
    import os, signal, sys, time
    sys.path.insert(0, {tests!r})
    from helpers import attr, make_frame
    from ioc.layout import default_layout
    from ioc.ndarray import NDAttrType
    from ioc.writer import part
    from ioc.writer.nexus import WriterOptions
    part.DURABLE_EVERY = 0.05
    swmr = {swmr!r}

    def frame(uid):
        return make_frame(uid, attrs=[attr("Temp", uid * 0.5), attr("Name", f"n{{uid}}", NDAttrType.String),
                                      attr("Counter", uid, NDAttrType.Int32)])

    w = part.PartWriter({path!r}, default_layout(), frame(1), WriterOptions(
        multi_frame=True, num_capture=0, swmr=swmr, flush_every=1000),
        file_name={path!r}, worker="w0", part=0)
    for uid in range(1, 1000, 2):
        w.write(frame(uid))
        time.sleep(0.002)
        if uid >= 301:
            break
    w.flush()
    print(w.durable, flush=True)
    for uid in range(303, 321, 2):  # written, never flushed: lost with the process
        w.write(frame(uid))
    os.kill(os.getpid(), signal.SIGKILL)
""")


@pytest.mark.parametrize("swmr", [False, True])
def test_a_killed_part_keeps_its_flushed_frames(tmp_path, swmr):
    from ioc.writer.part import clear_swmr_flag

    path = tmp_path / "scan_001_part0.h5"
    proc = subprocess.run([sys.executable, "-c", KILLED_WRITER.format(
        tests=str(TESTS), path=str(path), swmr=swmr)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    durable = int(proc.stdout.split()[0])
    assert durable == 151  # uids 1, 3, ... 301
    other = tmp_path / "scan_001_part1.h5"
    writer = PartWriter(other, default_layout(), frame(2), STREAM, file_name=str(other),
                        worker="w1", part=1)
    for uid in range(2, 401, 2):
        writer.write(frame(uid))
    writer.close()
    if swmr:  # marked "open for SWMR writing" by the dead process: as h5clear -s
        with pytest.raises(OSError):
            h5py.File(path, "r").close()
        clear_swmr_flag(path)
    master = tmp_path / "scan_001.h5"
    result = write_master(master, [MasterSource(path.name, path, "w0", state="lost"),
                                   MasterSource(other.name, other, "w1")], first_uid=1, last_uid=400)
    lost = set(range(303, 401, 2))
    assert result.missing.tolist() == sorted(lost)
    check_master(master, list(range(1, 401)), missing=lost)


SWMR_WRITER = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {tests!r})
    from helpers import make_frame
    from ioc.layout import default_layout
    from ioc.writer.nexus import WriterOptions
    from ioc.writer.part import PartWriter
    w = PartWriter({path!r}, default_layout(), make_frame(1), WriterOptions(
        multi_frame=True, num_capture=0, swmr=True, flush_every=5),
        file_name={path!r}, worker="w0", part=0)
    for uid in range(1, 81):
        w.write(make_frame(uid))
        if uid == 40:
            print("durable", w.durable, flush=True)
            sys.stdin.readline()
    w.close()
""")


def test_what_readers_see_while_parts_are_written(tmp_path):
    """A master over a SWMR part still open: a SWMR reader reads every mapped frame, a
    plain reader gets an error (HDF5 2 does not give fill values silently); after close,
    a plain reader reads it."""
    path = tmp_path / "scan_001_part0.h5"
    proc = subprocess.Popen([sys.executable, "-c", SWMR_WRITER.format(tests=str(TESTS), path=str(path))],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        durable = int(proc.stdout.readline().split()[1])
        assert 35 <= durable <= 40
        master = tmp_path / "scan_001.h5"
        result = write_master(master, [MasterSource(path.name, path, "w0", limit=durable, state="open")],
                              first_uid=1, last_uid=durable, swmr_read=True, libver="latest")
        assert result.missing.size == 0
        with h5py.File(master, "r", swmr=True) as f:
            data = f["/entry/data/data"]
            assert data.shape[0] == durable
            for row in range(durable):
                np.testing.assert_array_equal(data[row], make_frame(row + 1).data)
        with h5py.File(master, "r") as f, pytest.raises(OSError, match="open for write"):
            f["/entry/data/data"][0]
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.wait(30) == 0
    finally:
        proc.kill()
    result = write_master(master, [MasterSource(path.name, path, "w0")])
    with h5py.File(master) as f:
        assert f["/entry/data/data"].shape[0] == 80
        np.testing.assert_array_equal(f["/entry/data/data"][79], make_frame(80).data)


def test_a_part_that_cannot_be_read_is_reported(tmp_path):
    master, sources = write_parts(tmp_path, [[1, 3, 5], [2, 4, 6]])
    os.unlink(sources[1].path)
    result = write_master(master, sources, first_uid=1, last_uid=6)
    assert result.missing.tolist() == [2, 4, 6]
    assert "cannot be read" in result.warnings[0]
    with pytest.raises(Exception, match="no part file could be read"):
        write_master(tmp_path / "x.h5", [sources[1]])
    time.sleep(0)


def test_unique_ids_that_go_back_are_reported(tmp_path):
    master, sources = write_parts(tmp_path, [[10, 12, 2], [11, 13, 3]])  # a restart: 2, 3
    result = write_master(master, sources, first_uid=10)
    assert result.frames == 4 and result.before == 2
    with pytest.raises(Exception, match="detector restarted"):
        write_parts(tmp_path, [[1, 10**8]])
        write_master(tmp_path / "scan_001.h5", [MasterSource("scan_001_part0.h5",
                                                             tmp_path / "scan_001_part0.h5")])
