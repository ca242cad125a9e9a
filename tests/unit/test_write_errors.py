"""Write-path failures end in a visible state, with frames kept where HDF5 allows
(issue: "no silent loss on write errors").  The file saver is driven directly, without
Channel Access; a real disk-full comes from a small tmpfs (root only; the system tests
use RLIMIT_FSIZE)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import h5py
import numpy as np
import pytest
from helpers import attr, make_frame

from ioc.layout import default_layout
from ioc.ndarray import NDAttrType
from ioc.plugin.file_saver import CAPTURE, SINGLE, STREAM, FileSaver, SaverError
from ioc.plugin.pvtable import BY_SUFFIX, PV_TABLE, to_param
from ioc.writer.nexus import NexusWriter, WriterOptions
from ioc.writer.single_file import SingleFileWriter

SHAPE = (100, 100)  # 20 kB frames


class Saver:
    """A FileSaver with the PV table's defaults; ``post`` updates the parameters as the
    PV layer does."""

    def __init__(self, directory: Path, name: str = "test", **kwargs):
        self.params = {pv.suffix: to_param(pv, pv.value) for pv in PV_TABLE}
        self.posts: list[dict] = []
        self.saver = FileSaver(self.params, self.post, **kwargs)
        self.set(FilePath=f"{directory}/", FileName=name, FileTemplate="%s%s_%3.3d.h5",
                 EnableCallbacks=1)
        self.saver.start()

    def post(self, **updates) -> None:
        for suffix, value in updates.items():
            if suffix in BY_SUFFIX:
                self.params[suffix] = to_param(BY_SUFFIX[suffix], value)
        self.posts.append(updates)

    def set(self, **values) -> None:
        self.params.update(values)

    def __getitem__(self, suffix):
        return self.params[suffix]

    def cmd(self, name: str, **args):
        return self.saver.submit(name, **args).result(30)

    def feed(self, *frames) -> None:
        """Queue the frames (waiting for room, never dropping), then wait for them."""
        for frame in frames:
            while not self.saver.enqueue(frame):
                self.cmd("sync")
        self.cmd("sync")

    def stream(self, num_capture: int = 0) -> None:
        self.set(FileWriteMode=STREAM, NumCapture=num_capture)
        self.cmd("capture", on=True)

    def close(self) -> None:
        self.saver.stop()


@pytest.fixture
def saver(tmp_path):
    s = Saver(tmp_path)
    s.saver.FLUSH_INTERVAL = 0.0  # flush after every frame: deterministic tests
    yield s
    s.close()


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs: a real "No space left on device"."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root; the RLIMIT_FSIZE system tests cover disk full")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path) -> Path:
    """Take every free byte of ``disk``."""
    filler = disk / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\xff" * 65536)
        except OSError:
            pass
    return filler


def frames(first: int, n: int, shape=SHAPE):
    return [make_frame(uid, shape=shape) for uid in range(first, first + n)]


def uids_in(path: Path) -> list[int]:
    with h5py.File(path) as f:
        data = f["/entry/data/data"][()]
        ids = f["/entry/instrument/NDAttributes/NDArrayUniqueId"][()].tolist()
    assert len(data) == len(ids)
    for frame, uid in zip(data, ids, strict=True):
        np.testing.assert_array_equal(frame, make_frame(uid, shape=frame.shape).data)
    return ids


# -- 1. disk full --------------------------------------------------------------------

def test_disk_full_at_stream_close_keeps_the_frames_and_completes(small_disk):
    s = Saver(small_disk)
    s.saver.FLUSH_INTERVAL = 0.0
    try:
        s.feed(make_frame(0, shape=SHAPE))
        s.stream()
        s.feed(*frames(1, 30))
        fill(small_disk)  # nothing left for what the close writes
        s.cmd("capture", on=False)  # completes
        assert s["Capture_RBV"] == 0 and s["WriteStatus"] == 1
        message = s["WriteMessage"]
        assert message.startswith("Error closing file: No space left on device"), message
        assert "\n" not in message
        assert "30 frames kept in" in message
        assert not list(small_disk.glob(".*.partial"))
        assert uids_in(small_disk / "test_001.h5") == list(range(1, 31))
    finally:
        s.close()


def test_disk_full_mid_stream_keeps_written_frames(small_disk):
    s = Saver(small_disk)
    s.saver.FLUSH_INTERVAL = 0.0
    try:
        s.feed(make_frame(0, shape=SHAPE))
        s.stream()
        s.feed(*frames(1, 200))  # 4 MB for a 2 MiB disk
        assert s["Capture_RBV"] == 0 and s["WriteStatus"] == 1
        assert s["WriteMessage"].startswith("Error writing file: No space left on device")
        (path,) = small_disk.glob("test_*.h5")
        kept = uids_in(path)
        assert kept == list(range(1, len(kept) + 1)) and len(kept) > 50
        assert not list(small_disk.glob(".*"))
    finally:
        s.close()


def test_disk_full_in_capture_mode_frees_the_disk_and_keeps_the_buffer(small_disk):
    s = Saver(small_disk)
    try:
        s.set(FileWriteMode=CAPTURE, NumCapture=150, AutoSave=1)
        s.cmd("capture", on=True)
        s.feed(*frames(1, 150))  # 3 MB: the write fails
        assert s["WriteStatus"] == 1
        message = s["WriteMessage"]
        assert message.startswith("Error "), message
        assert "No space left on device" in message[:60]
        assert "the 150 frames stay in the capture buffer" in message
        assert s["NumCaptured_RBV"] == 150 and s["WriteFile_RBV"] == 0
        assert not list(small_disk.glob(".*.partial"))  # nothing left filling the disk
        s.cmd("free_capture")
        assert s["NumCaptured_RBV"] == 0 and s.saver.buffer_bytes == 0
    finally:
        s.close()


def test_capture_write_retried_after_space_returns(small_disk):
    s = Saver(small_disk)
    try:
        filler = fill(small_disk)
        s.set(FileWriteMode=CAPTURE, NumCapture=20, AutoSave=1)
        s.cmd("capture", on=True)
        s.feed(*frames(1, 20))
        assert s["WriteStatus"] == 1 and "stay in the capture buffer" in s["WriteMessage"]
        filler.unlink()
        s.cmd("write_file")
        assert s["WriteStatus"] == 0, s["WriteMessage"]
        (path,) = sorted(small_disk.glob("test_*.h5"))
        assert uids_in(path) == list(range(1, 21))
        assert s["NumCaptured_RBV"] == 0 and not s.saver.buffer
    finally:
        s.close()


# -- 2. a temporary file is removed only by the writer that created it ------------------

def test_two_writers_on_one_name(tmp_path):
    first, second = Saver(tmp_path), Saver(tmp_path)
    try:
        for s in (first, second):
            s.feed(make_frame(0))
        first.stream()
        with pytest.raises(SaverError, match="exists already"):
            second.stream()
        assert second["WriteStatus"] == 1 and "test_001.h5" in second["WriteMessage"]
        assert (tmp_path / ".test_001.h5.partial").exists()  # the first one's, untouched
        first.feed(*[make_frame(uid) for uid in range(1, 51)])
        first.cmd("capture", on=False)
        assert first["WriteStatus"] == 0, first["WriteMessage"]
        assert uids_in(tmp_path / "test_001.h5") == list(range(1, 51))
    finally:
        first.close()
        second.close()


def test_unfinished_file_of_a_killed_writer_is_not_overwritten(saver, tmp_path):
    left = tmp_path / ".test_001.h5.partial"
    left.write_bytes(b"frames of a killed writer")
    saver.feed(make_frame(0))
    with pytest.raises(SaverError, match="exists already"):
        saver.stream()
    assert left.read_bytes() == b"frames of a killed writer"
    saver.set(AutoSave=1)
    saver.set(FileWriteMode=SINGLE)
    saver.feed(make_frame(1))  # Single mode: the next number is free
    assert left.read_bytes() == b"frames of a killed writer"
    # the failed open used number 1 (as ADCore); Single mode writes number 2
    assert saver["WriteStatus"] == 0 and (tmp_path / "test_002.h5").exists()


# -- 3. Capture mode writes what it buffered -------------------------------------------

def test_capture_file_opened_with_the_buffered_frames(saver, tmp_path):
    saver.set(FileWriteMode=CAPTURE, NumCapture=4, AutoSave=0)
    saver.cmd("capture", on=True)
    saver.feed(*[make_frame(uid) for uid in (1, 2)])
    saver.feed(make_frame(3, shape=(6, 7)))  # another size inside the buffer: refused
    saver.feed(*[make_frame(uid) for uid in (4, 5)])
    assert saver["InvalidFrames_RBV"] == 1 and saver["Capture_RBV"] == 0
    saver.feed(make_frame(6, shape=(8, 9)))  # a size change before WriteFile
    saver.cmd("write_file")
    assert saver["WriteStatus"] == 0, saver["WriteMessage"]
    assert uids_in(tmp_path / "test_001.h5") == [1, 2, 4, 5]


# -- 4. Single mode with many NDAttributes ----------------------------------------------

def test_single_mode_600_scalar_attributes(tmp_path):
    writer = SingleFileWriter()
    for uid in (1, 2, 3):
        attrs = [attr(f"A{i:03d}", uid * 1000 + i, NDAttrType.Float64) for i in range(600)]
        writer.write(tmp_path / f"{uid}.h5", default_layout(), make_frame(uid, attrs=attrs),
                     WriterOptions(), f"{uid}.h5")
    assert writer.fast_files == 2  # one writev per file, in batches of IOV_MAX buffers
    for uid in (1, 2, 3):
        with h5py.File(tmp_path / f"{uid}.h5") as f:
            nd = f["/entry/instrument/NDAttributes"]
            assert [nd[f"A{i:03d}"][0] for i in (0, 299, 599)] == \
                [uid * 1000, uid * 1000 + 299, uid * 1000 + 599]
            np.testing.assert_array_equal(f["/entry/data/data"][()], make_frame(uid).data)


# -- 6. a command whose put was cancelled does not kill the worker ----------------------

def test_cancelled_command_leaves_the_worker_alive(saver, tmp_path):
    saver.set(FileWriteMode=SINGLE, AutoSave=1)
    blocker = saver.saver.submit("sync")
    cancelled = saver.saver.submit("free_capture")
    assert cancelled.cancel()  # as asyncio.wrap_future does when the put is cancelled
    blocker.result(10)
    saver.feed(make_frame(1))
    assert (tmp_path / "test_001.h5").exists()
    assert saver.saver._thread.is_alive()


# -- 11. the Capture buffer is bounded ---------------------------------------------------

def test_capture_buffer_bounded_by_the_memory_limit(tmp_path):
    s = Saver(tmp_path, memory_limit=10 * 20_000 + 1)  # ten 20 kB frames
    try:
        s.set(FileWriteMode=CAPTURE, NumCapture=1000, AutoSave=0)
        s.feed(make_frame(0, shape=SHAPE))
        with pytest.raises(SaverError, match="more than the memory limit"):
            s.cmd("capture", on=True)
        s.saver.last_frame = None  # no frame known yet: the buffer stops at the limit
        s.cmd("capture", on=True)
        s.feed(*frames(1, 15))
        assert s["Capture_RBV"] == 0 and s["WriteStatus"] == 1
        assert s["WriteMessage"].startswith("Capture stopped: the buffer reached the memory")
        assert len(s.saver.buffer) == 10 and s.saver.memory_used() == 10 * 20_000
        s.cmd("free_capture")
        assert s.saver.memory_used() == 0
    finally:
        s.close()


# -- 12. attribute datasets sized by what they hold --------------------------------------

def test_attribute_datasets_sized_by_what_they_hold(tmp_path):
    attrs = [attr(f"S{i:03d}", f"value {i}", NDAttrType.String) for i in range(600)]
    path = tmp_path / "a.h5"
    writer = NexusWriter(path, default_layout(), make_frame(1, shape=(40, 30), attrs=attrs),
                         WriterOptions(multi_frame=True, num_capture=0))
    for uid in range(1, 85):
        writer.write(make_frame(uid, shape=(40, 30), attrs=attrs))
    writer.close()
    payload = 84 * 600 * 256
    assert path.stat().st_size < 2 * payload + 2e6  # ADCore's chunks: 2.5 GB
    one = tmp_path / "one.h5"
    writer = NexusWriter(one, default_layout(), make_frame(1, attrs=attrs[:1]),
                         WriterOptions(multi_frame=True, num_capture=1_000_000,
                                       ndattribute_chunk=2_000_000_000))
    writer.write(make_frame(1, attrs=attrs[:1]))
    writer.close()
    assert one.stat().st_size < 20e6  # a chunk of 2e9 values grew 3 frames to 51 GB
    with h5py.File(one) as f:
        assert f["/entry/instrument/NDAttributes/S000"].chunks[0] <= 65536


# -- 14/15/16. names ---------------------------------------------------------------------

def test_long_names_fit_with_their_temporary_name(saver, tmp_path):
    saver.set(FileWriteMode=SINGLE, AutoSave=1, FileTemplate="%s%s.h5")
    for length in (247, 252):
        name = "n" * length  # final name 250 and 255 bytes
        saver.set(FileName=name)
        saver.feed(make_frame(length))
        assert saver["WriteStatus"] == 0, saver["WriteMessage"]
        assert (tmp_path / f"{name}.h5").exists()
    saver.set(FileName="é" * 127)  # 254 bytes + ".h5": too long
    saver.feed(make_frame(1))
    assert saver["WriteStatus"] == 1
    assert saver["WriteMessage"].startswith("Error opening file: file name too long")
    assert not list(tmp_path.glob(".*"))


def test_non_ascii_names(saver, tmp_path):
    directory = tmp_path / "données"
    directory.mkdir()
    saver.set(FileWriteMode=SINGLE, AutoSave=1, FilePath=f"{directory}/", FileName="café")
    saver.feed(make_frame(1))
    assert saver["WriteStatus"] == 0, saver["WriteMessage"]
    assert [p.name for p in directory.iterdir()] == ["café_001.h5"]
    assert saver["FullFileName_RBV"] == f"{directory}/café_001.h5"


def test_file_number_does_not_wrap(saver, tmp_path):
    saver.set(FileWriteMode=SINGLE, AutoSave=1, FileNumber=2**31 - 2)
    saver.feed(make_frame(1))
    assert (tmp_path / f"test_{2**31 - 2}.h5").exists()
    assert saver["FileNumber"] == 2**31 - 1
    saver.feed(make_frame(2))
    assert saver["WriteStatus"] == 1
    assert saver["WriteMessage"].startswith("FileNumber 2147483647 is the largest")
    assert saver["FileNumber"] == 2**31 - 1
    assert not (tmp_path / f"test_{2**31 - 1}.h5").exists()


@pytest.mark.parametrize(("template", "suffix", "cause"), [
    ("%s%s_%c.h5", "", "'%c' of 1114112 gives byte 0x00"),
    ("%s%s_%3.3d.h5", "x/y", "TempSuffix 'x/y' must not contain '/'"),
    ("%s%s_%9999d.h5", "", "width or precision 9999 is larger than a file name can be"),
])
def test_bad_names_are_said_not_internal_errors(saver, tmp_path, template, suffix, cause):
    saver.set(FileWriteMode=SINGLE, AutoSave=1, FileTemplate=template, TempSuffix=suffix,
              FileNumber=0x110000)
    saver.feed(make_frame(1))
    assert saver["WriteStatus"] == 1
    message = saver["WriteMessage"]
    assert "Internal error" not in message and cause in message, message
    assert saver["FileNumber"] == 0x110000  # refused before a number was used
    assert not list(tmp_path.iterdir())


def test_relative_names_never_go_to_the_working_directory(saver, tmp_path, monkeypatch):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    saver.set(FileWriteMode=SINGLE, AutoSave=1)
    for path, template in (("", "%s%s_%3.3d.h5"), (f"{tmp_path}/", "fixed.h5")):
        saver.set(FilePath=path, FileTemplate=template)
        saver.feed(make_frame(1))
        assert saver["WriteStatus"] == 1
        assert "relative" in saver["WriteMessage"] and "working directory" in \
            saver["WriteMessage"]
    assert list(cwd.iterdir()) == []
    saver.set(FilePath=f"{tmp_path}/", FileTemplate="%s.h5")  # leaves out FileName: warned
    saver.feed(make_frame(2))
    assert saver["WriteStatus"] == 0
    assert "leaves out FileName" in saver["WriteMessage"]


def test_failed_open_uses_a_file_number_as_adcore(saver, tmp_path):
    """asynNDArrayDriver::createFileName increments FileNumber before the open is tried."""
    saver.set(FileWriteMode=SINGLE, AutoSave=1, XMLFileName=str(tmp_path / "missing.xml"))
    saver.feed(make_frame(1))
    assert saver["WriteStatus"] == 1 and saver["FileNumber"] == 2
    assert saver["FullFileName_RBV"] == f"{tmp_path}/test_001.h5"
    assert saver["WriteMessage"].startswith("Error opening file: ")


def test_empty_stream_holds_no_frame(saver, tmp_path):
    saver.feed(make_frame(1))
    saver.stream()
    saver.cmd("capture", on=False)
    assert saver["WriteStatus"] == 0
    with h5py.File(tmp_path / "test_001.h5") as f:
        assert f["/entry/data/data"].shape == (0, 4, 5)
        assert f["/entry/instrument/NDAttributes/NDArrayUniqueId"].shape == (0,)


def test_starting_empty_keeps_one_chunk_per_frame(tmp_path):
    """Frames still go to the file as whole chunks (H5Dwrite_chunk) with an initial extent
    of 0: the chunk is one frame, not the dataset's initial shape."""
    writer = NexusWriter(tmp_path / "d.h5", default_layout(), make_frame(1),
                         WriterOptions(multi_frame=True, num_capture=0))
    assert "/entry/instrument/detector/data" in writer._direct
    writer.write(make_frame(1))
    writer.close()
    with h5py.File(tmp_path / "d.h5") as f:
        assert f["/entry/data/data"].shape == (1, 4, 5)
