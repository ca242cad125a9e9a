"""Write-behind: files are advised to disk and let go; HDF5 files stay openable."""

from __future__ import annotations

import os

import h5py
import pytest
from helpers import make_frame

from ioc.layout import default_layout
from ioc.writer import _write_behind
from ioc.writer.nexus import NexusWriter, WriterOptions
from ioc.writer.single_file import SingleFileWriter


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture(autouse=True)
def clean():
    _write_behind.drop_all()
    _write_behind.set_enabled(True)
    yield
    _write_behind.drop_all()
    _write_behind.set_enabled(True)


def test_at_most_keep_files_held_and_all_let_go_when_idle(tmp_path):
    before = open_fds()
    writer, layout = SingleFileWriter(), default_layout()
    for uid in range(1, _write_behind.KEEP + 10):
        path = tmp_path / f"f_{uid}.h5"
        writer.write(path, layout, make_frame(uid), WriterOptions(), str(path))
    assert writer.fast_files > 0  # the template path was exercised too
    assert open_fds() - before == _write_behind.KEEP
    _write_behind.drop_all()
    assert open_fds() == before
    with h5py.File(tmp_path / f"f_{_write_behind.KEEP + 9}.h5") as f:
        assert f["/entry/data/data"].shape == (4, 5)


def test_hdf5_files_are_not_kept_locked(tmp_path):
    """HDF5 flock()s the file it writes; holding a duplicate of its descriptor would keep
    the lock after close and readers would get 'unable to lock file'."""
    frames = [make_frame(uid) for uid in range(1, 4)]
    writer = NexusWriter(tmp_path / "s.h5", default_layout(), frames[0],
                         WriterOptions(multi_frame=True, num_capture=0))
    for frame in frames:
        writer.write(frame)
    writer.close()
    with h5py.File(tmp_path / "s.h5", "r+") as f:  # a writer's lock: refused if still held
        assert f["/entry/data/data"].shape == (3, 4, 5)


def test_disabled_holds_nothing(tmp_path):
    _write_behind.set_enabled(False)
    before = open_fds()
    writer = SingleFileWriter()
    for uid in range(1, 5):
        path = tmp_path / f"f_{uid}.h5"
        writer.write(path, default_layout(), make_frame(uid), WriterOptions(), str(path))
    assert open_fds() == before
