"""Frames written with O_DIRECT (``ioc/writer/_direct_io.py``), their writes in flight, and
BoundaryAlign; files read back with h5py."""

from __future__ import annotations

import errno
import mmap

import h5py
import numpy as np
import pytest

from ioc.layout import default_layout
from ioc.ndarray import NDArray
from ioc.writer import _direct_io
from ioc.writer.nexus import NexusWriter, WriterError, WriterOptions
from ioc.writer.single_file import SingleFileWriter

SHAPE = (512, 512)  # 512 KiB of uint16: above MIN_BYTES
DATA = "/entry/data/data"
IDS = "/entry/instrument/NDAttributes/NDArrayUniqueId"


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


def test_a_failed_write_in_flight_takes_its_frames_out_of_the_file(local_dir, monkeypatch):
    """The disk refuses the 6th frame after write() has returned: that frame and those
    after it leave the file (data and NDAttribute values), and the error is said."""
    real = _direct_io.write_blocks
    calls = {"n": 0}

    def failing(fd, offset, chunk):
        calls["n"] += 1
        if calls["n"] >= 6:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, offset, chunk)

    monkeypatch.setattr(_direct_io, "write_blocks", failing)
    frames = [aligned_frame(uid) for uid in range(1, 13)]
    writer = NexusWriter(local_dir / "f.h5", default_layout(), frames[0],
                         WriterOptions(multi_frame=True, num_capture=0))
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


def test_single_mode_pipeline_says_a_frame_after_its_file(local_dir):
    """Single+AutoSave: files are written while the next frames are prepared; each
    frame's ArrayCounter_RBV is posted in order, once its file is complete."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from saver_harness import SaverHarness

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
    assert [n for n, _ in seen] == list(range(1, 31))
    assert all(exists for _, exists in seen)
    for frame in (frames[0], frames[17], frames[29]):
        with h5py.File(local_dir / f"scan_{frame.unique_id:03d}.h5") as f:
            np.testing.assert_array_equal(f[DATA][()], frame.data)
            assert f[IDS][()].tolist() == [frame.unique_id]
