"""Frames written with O_DIRECT (``ioc/writer/_direct_io.py``), their writes in flight (through
Linux AIO, ``_aio.py``, or a thread, ``_io_thread.py``) and the file extended ahead of them,
and BoundaryAlign; files read back with h5py."""

from __future__ import annotations

import errno
import mmap
import os
import shutil

import h5py
import numpy as np
import pytest

from ioc.layout import default_layout
from ioc.ndarray import NDArray
from ioc.writer import _aio, _direct_io
from ioc.writer.nexus import NexusWriter, WriterError, WriterOptions
from ioc.writer.single_file import SingleFileWriter

SHAPE = (512, 512)  # 512 KiB of uint16: above MIN_BYTES
DATA = "/entry/data/data"
IDS = "/entry/instrument/NDAttributes/NDArrayUniqueId"
BLOCK = _direct_io.BLOCK


@pytest.fixture
def local_dir(tmp_path):
    if not _direct_io.wanted(tmp_path / "x.h5", _direct_io.MIN_BYTES):
        pytest.skip(f"the temporary directory's file system "
                    f"({_direct_io.file_system_type(str(tmp_path))}) is not one O_DIRECT is used on")
    return tmp_path


def aligned_frame(uid: int, shape=SHAPE) -> NDArray:
    """A frame in page-aligned memory of its own, as a receiver slot is."""
    buffer = mmap.mmap(-1, int(np.prod(shape)) * 2)
    data = np.frombuffer(buffer, dtype="<u2").reshape(shape)
    data[...] = (np.arange(data.size, dtype="<u2").reshape(shape) + uid)
    return NDArray(data=data, unique_id=uid, timestamp=1000.0 + uid)


def stream(path, frames, **options) -> NexusWriter:
    writer = NexusWriter(path, default_layout(), frames[0],
                         WriterOptions(multi_frame=True, num_capture=0, **options))
    for frame in frames:
        writer.write(frame)
    return writer


def test_file_system_type_of_a_known_directory():
    assert _direct_io.file_system_type("/proc") == "proc"
    assert not _direct_io.wanted("/proc/x.h5", 2**30)  # not a local block device


def test_small_frames_go_through_the_page_cache(local_dir):
    assert not _direct_io.wanted(local_dir / "x.h5", _direct_io.MIN_BYTES - 1)


def test_stream_frames_go_direct_and_read_back(local_dir):
    frames = [aligned_frame(uid) for uid in range(1, 21)]
    writer = stream(local_dir / "s.h5", frames)
    io = writer._direct_io
    writer.close()
    assert io.direct_bytes == 20 * frames[0].nbytes  # every frame, none through the cache
    with h5py.File(local_dir / "s.h5") as f:
        ds = f[DATA]
        assert ds.shape == (20, *SHAPE) and ds.dtype == np.dtype("<u2")
        for i in (0, 7, 19):
            np.testing.assert_array_equal(ds[i], frames[i].data)
        assert f[IDS][()].tolist() == list(range(1, 21))
        offsets = [ds.id.get_chunk_info(i).byte_offset for i in range(ds.id.get_num_chunks())]
        assert all(offset % _direct_io.BLOCK == 0 for offset in offsets)
        # allocated as ADCore's are (incrementally), not early
        assert ds.id.get_create_plist().get_alloc_time() == h5py.h5d.ALLOC_TIME_INCR


def test_unaligned_frames_are_written_through_the_page_cache(local_dir):
    def unaligned(uid):  # pixels 2 bytes past a page boundary
        buffer = mmap.mmap(-1, int(np.prod(SHAPE)) * 2 + 4096)
        data = np.frombuffer(buffer, dtype="<u2", offset=2, count=int(np.prod(SHAPE)))
        data[...] = np.arange(data.size, dtype="<u2") + uid
        return NDArray(data=data.reshape(SHAPE), unique_id=uid)

    frames = [unaligned(uid) for uid in (1, 2, 3)]
    writer = stream(local_dir / "u.h5", frames)
    io = writer._direct_io
    writer.close()
    assert io.direct_bytes == 0 and io.buffered_bytes >= 3 * frames[0].nbytes
    with h5py.File(local_dir / "u.h5") as f:
        np.testing.assert_array_equal(f[DATA][2], frames[2].data)


def test_single_files_write_their_image_direct(local_dir):
    writer = SingleFileWriter()
    frames = [aligned_frame(uid) for uid in (1, 2, 3)]
    for frame in frames:
        path = local_dir / f"{frame.unique_id}.h5"
        writer.write(path, default_layout(), frame, WriterOptions(), path.name)
    assert writer.fast_files == 2 and writer.direct_files == 2
    for frame in frames:
        with h5py.File(local_dir / f"{frame.unique_id}.h5") as f:
            np.testing.assert_array_equal(f[DATA][()], frame.data)
            assert f[IDS][()].tolist() == [frame.unique_id]


def test_boundary_align_places_large_objects_on_its_multiples(tmp_path):
    """BoundaryAlign/BoundaryThreshold: H5Pset_alignment, as ADCore applies them."""
    frames = [NDArray(data=np.full((64, 64), uid, "<u2"), unique_id=uid) for uid in (1, 2, 3)]
    writer = stream(tmp_path / "a.h5", frames, boundary_align=65536, boundary_threshold=4096)
    writer.close()
    with h5py.File(tmp_path / "a.h5") as f:
        ds = f[DATA]
        offsets = [ds.id.get_chunk_info(i).byte_offset for i in range(3)]
        assert all(offset % 65536 == 0 for offset in offsets), offsets
        assert ds[2, 0, 0] == 3


@pytest.mark.parametrize("how", ["aio", "threads"])
def test_single_mode_pipeline_says_a_frame_after_its_file(local_dir, monkeypatch, how):
    """Single+AutoSave: files are written while the next frames are prepared (their images
    left to the kernel's AIO, or written on two threads where there is none); each
    frame's ArrayCounter_RBV is posted in order, once its file is complete."""
    from saver_harness import SaverHarness

    if how == "threads":
        monkeypatch.setattr(_aio.Context, "open", classmethod(lambda cls, depth: None))
    elif _aio.Context.open(1) is None:
        pytest.skip("no Linux AIO here")
    seen: list[tuple[int, bool]] = []

    class Checking(SaverHarness):
        def post(self, **updates):
            if "ArrayCounter_RBV" in updates:
                name = local_dir / f"scan_{updates['ArrayCounter_RBV']:03d}.h5"
                seen.append((updates["ArrayCounter_RBV"], name.exists()))
            super().post(**updates)

    frames = [aligned_frame(uid) for uid in range(1, 31)]
    with Checking(local_dir, FileWriteMode=0, AutoSave=1, FileNumber=1,
                  AutoIncrement=1) as harness:
        harness.feed(frames)
        assert harness.saver.single.direct_files >= 25  # the template path, O_DIRECT
        pipeline = harness.saver.pipeline
        assert (pipeline._aio is not None, pipeline._writers is None) == \
            ((True, True) if how == "aio" else (False, False))
    assert [n for n, _ in seen] == list(range(1, 31))
    assert all(exists for _, exists in seen)
    for frame in (frames[0], frames[17], frames[29]):
        with h5py.File(local_dir / f"scan_{frame.unique_id:03d}.h5") as f:
            np.testing.assert_array_equal(f[DATA][()], frame.data)
            assert f[IDS][()].tolist() == [frame.unique_id]


# -- writes in flight ----------------------------------------------------------------

@pytest.fixture
def aio_file(local_dir):
    """A DirectFile whose writes in flight go through AIO (skipped where the kernel gives
    no AIO context)."""
    io = _direct_io.DirectFile(local_dir / "f.bin")
    try:
        if not isinstance(io._in_flight(), _aio.AsyncWrites):
            pytest.skip("no Linux AIO here (the writes in flight use a thread)")
        yield io
    finally:
        io.close()


def blocks(n: int, value: int) -> memoryview:
    buffer = mmap.mmap(-1, n * BLOCK)
    buffer.write(bytes([value]) * n * BLOCK)
    return memoryview(buffer)


class Owner:
    """Stands for the frame that owns a write's memory."""


def test_writes_in_flight_reach_the_file_and_the_file_is_extended_ahead(aio_file):
    io = aio_file
    views = [blocks(64, i) for i in range(10)]  # 256 KiB each
    offsets = [BLOCK + i * 64 * BLOCK for i in range(10)]
    seqs = []
    for offset, view in zip(offsets, views):
        io.seek(offset)
        io.keep = Owner()
        io.write(view)
        io.keep = None
        seqs.append(io.last_seq)
    assert seqs == list(range(10))
    end = offsets[-1] + 64 * BLOCK
    # HDF5 sees the logical size; the disk has room reserved beyond it
    assert io.seek(0, os.SEEK_END) == end
    assert os.fstat(io.fd).st_size == _direct_io.DirectFile.PREALLOCATE > end
    io.wait()
    assert io.failed is None and io.done_seq == 9
    assert io.direct_bytes == 10 * 64 * BLOCK
    io.truncate(end)  # (what HDF5 does at a flush and at the close)
    assert os.fstat(io.fd).st_size == end
    with open(io.path, "rb") as f:
        for i, offset in enumerate(offsets):
            f.seek(offset)
            assert f.read(64 * BLOCK) == bytes([i]) * 64 * BLOCK


def test_done_counts_in_order_and_the_first_failure_is_kept(aio_file):
    writes = aio_file._in_flight()
    rewritten = []
    writes._write_sync = lambda offset, view: rewritten.append((offset, view.nbytes))
    view = blocks(4, 1)
    writes._next = 5
    for seq in range(5):
        writes._flight[seq] = (seq, seq * 4 * BLOCK, view, Owner())

    def finish(seq, result):
        writes._finish(*writes._flight.pop(seq)[:3], result)

    finish(1, view.nbytes)  # done out of order: not counted past seq 0
    assert writes.done == -1
    finish(0, view.nbytes)
    assert writes.done == 1
    finish(2, view.nbytes - BLOCK)  # short: the rest written synchronously
    assert rewritten == [(2 * 4 * BLOCK + 3 * BLOCK, BLOCK)] and writes.done == 2
    finish(3, -errno.EINVAL)  # refused by the file system: all of it again
    assert rewritten[-1] == (3 * 4 * BLOCK, 4 * BLOCK) and writes.done == 3
    finish(4, -errno.EIO)
    assert writes._failed[0] == 4 and writes._failed[1].errno == errno.EIO
    assert writes.done == 3 and not writes._flight


@pytest.mark.parametrize("how", ["aio", "thread"])
def test_a_failed_write_in_flight_takes_its_frames_out_of_the_file(local_dir, monkeypatch, how):
    """The disk refuses the 6th frame after write() has returned: that frame and those
    after it leave the file (data and NDAttribute values), and the error is said.  AIO
    finds the disk full when it extends the file ahead of the write; the thread at the
    write itself."""
    calls = {"n": 0}
    if how == "aio":
        real = _aio.fallocate

        def failing(fd, offset, length):
            calls["n"] += 1
            if calls["n"] >= 6:
                raise OSError(errno.ENOSPC, "No space left on device")
            real(fd, offset, length)

        monkeypatch.setattr(_direct_io, "fallocate", failing)
        monkeypatch.setattr(_direct_io.DirectFile, "PREALLOCATE", 0)  # one call a frame
    else:
        monkeypatch.setattr(_aio.AsyncWrites, "start", classmethod(lambda cls, *args: None))
        real = _direct_io.write_blocks

        def failing(fd, offset, chunk):
            calls["n"] += 1
            if calls["n"] >= 6:
                raise OSError(errno.ENOSPC, "No space left on device")
            return real(fd, offset, chunk)

        monkeypatch.setattr(_direct_io, "write_blocks", failing)
    frames = [aligned_frame(uid) for uid in range(1, 13)]
    writer = NexusWriter(local_dir / "f.h5", default_layout(), frames[0],
                         WriterOptions(multi_frame=True, num_capture=0))
    in_flight = writer._direct_io._in_flight()
    if how == "aio" and not isinstance(in_flight, _aio.AsyncWrites):
        pytest.skip("no Linux AIO here")
    with pytest.raises(WriterError, match="No space left on device") as raised:
        for frame in frames:
            writer.write(frame)
        writer.close()
    assert "did not reach" in str(raised.value)
    with pytest.raises(WriterError, match="did not reach"):  # closed, and said again
        writer.close()
    assert writer.frames_written == 5
    with h5py.File(local_dir / "f.h5") as f:
        assert f[DATA].shape[0] == 5
        assert f[IDS][()].tolist() == [1, 2, 3, 4, 5]
        np.testing.assert_array_equal(f[DATA][4], frames[4].data)


def test_a_stopped_writer_leaves_a_readable_file_with_the_flushed_frames(local_dir):
    """The file extended ahead is longer than HDF5's end of allocation until the close:
    a copy taken mid-stream (as a killed writer leaves it) opens with the frames of the
    last flush."""
    frames = [aligned_frame(uid) for uid in range(1, 9)]
    writer = NexusWriter(local_dir / "k.h5", default_layout(), frames[0],
                         WriterOptions(multi_frame=True, num_capture=0))
    through_aio = isinstance(writer._direct_io._in_flight(), _aio.AsyncWrites)
    try:
        for frame in frames[:5]:
            writer.write(frame)
        writer.flush()
        for frame in frames[5:]:
            writer.write(frame)
        writer._direct_io.wait()
        shutil.copyfile(local_dir / "k.h5", local_dir / "copy.h5")
    finally:
        writer.close()
    with h5py.File(local_dir / "copy.h5") as f:
        assert f[IDS][()].tolist() == [1, 2, 3, 4, 5]
        np.testing.assert_array_equal(f[DATA][4], frames[4].data)
    with h5py.File(local_dir / "k.h5") as f:  # closed: all, and cut to its end
        assert f[IDS][()].tolist() == list(range(1, 9))
        assert f[DATA].shape == (8, *SHAPE)
    if through_aio:  # the copy had the room reserved ahead; the closed file has not
        assert os.path.getsize(local_dir / "k.h5") < os.path.getsize(local_dir / "copy.h5")


def test_a_single_file_whose_image_the_disk_refuses_is_removed_and_said(local_dir, monkeypatch):
    """AIO: the 4th file's image write fails when the kernel completes it (an I/O error):
    that file is removed, WriteMessage says so with its name, and the files after it are
    written."""
    from saver_harness import SaverHarness

    if _aio.Context.open(1) is None:
        pytest.skip("no Linux AIO here")
    real = _aio.Context.reap
    keys = []

    def reap(self, wait=False):
        done = real(self, wait)
        return [(key, -errno.EIO if keys[3:4] == [key] else result) for key, result in done]

    real_submit = _aio.Context.submit

    def submit(self, fd, offset, view):
        key = real_submit(self, fd, offset, view)
        keys.append(key)
        return key

    monkeypatch.setattr(_aio.Context, "reap", reap)
    monkeypatch.setattr(_aio.Context, "submit", submit)
    messages = []

    class Watching(SaverHarness):
        def post(self, **updates):
            if updates.get("WriteMessage"):
                messages.append(updates["WriteMessage"])
            super().post(**updates)

    frames = [aligned_frame(uid) for uid in range(1, 11)]
    with Watching(local_dir, FileWriteMode=0, AutoSave=1, FileNumber=1,
                  AutoIncrement=1) as harness:
        harness.feed(frames)
    # the first file makes the template (h5py): the AIO files are 2..10, the 4th is #5
    broken = local_dir / "scan_005.h5"
    assert not broken.exists()
    assert any(m.startswith("Error writing file") and "Input/output error" in m and
               "scan_005.h5" in m for m in messages), messages
    for uid in (4, 6, 10):
        with h5py.File(local_dir / f"scan_{uid:03d}.h5") as f:
            np.testing.assert_array_equal(f[DATA][()], frames[uid - 1].data)
