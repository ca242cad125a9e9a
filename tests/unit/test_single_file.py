"""The template (fast) path of one-file-per-image writes the same files as the h5py path."""

from __future__ import annotations

import numpy as np
import pytest
from h5tree import tree
from helpers import DATA, attr, make_frame

from ioc._resources import layout_file
from ioc.layout import default_layout, load_layout
from ioc.ndarray import NDAttrSource, NDAttrType
from ioc.writer.nexus import Compression, NexusWriter, WriterOptions
from ioc.writer.single_file import SingleFileWriter

VOLATILE_ROOT = {"file_name", "file_time"}


def frames(n, shape=(30, 40)):
    out = []
    for uid in range(1, n + 1):
        attrs = [attr("AcquireTime", 0.1 * uid, NDAttrType.Float64, NDAttrSource.EPICS_PV),
                 attr("ImageCounter", uid, NDAttrType.Int32),
                 attr("CameraModel", f"model {uid}" * (uid % 3), NDAttrType.String),
                 attr("MaxSizeX", 2000, NDAttrType.Int32),
                 attr("Temp", -uid, NDAttrType.Int16),
                 attr("Dead", None, NDAttrType.Undefined),
                 attr("ColorMode", 0, NDAttrType.Int32, NDAttrSource.DRIVER)]
        out.append(make_frame(uid, shape=shape, attrs=attrs))
    return out


def assert_same_file(fast, slow):
    a, b = tree(fast), tree(slow)
    assert sorted(a) == sorted(b)
    for path in a:
        x, y = a[path], b[path]
        assert x.kind == y.kind, path
        ax = {k: v for k, v in x.attrs.items() if not (path == "/" and k in VOLATILE_ROOT)}
        ay = {k: v for k, v in y.attrs.items() if not (path == "/" and k in VOLATILE_ROOT)}
        assert ax == ay, path
        assert (x.attrs.keys() == y.attrs.keys()), path
        if x.kind == "dataset":
            assert (x.shape, x.dtype, x.maxshape, x.chunks) == \
                (y.shape, y.dtype, y.maxshape, y.chunks), path
            np.testing.assert_array_equal(x.fillvalue, y.fillvalue, err_msg=path)
            if path.endswith("timestamp"):
                continue  # timings
            np.testing.assert_array_equal(np.asarray(x.value), np.asarray(y.value), err_msg=path)
    for name in VOLATILE_ROOT:
        assert a["/"].attrs[name][0] == b["/"].attrs[name][0]  # same type and size


@pytest.mark.parametrize("layout", [
    pytest.param(lambda: default_layout(), id="default"),
    pytest.param(lambda: load_layout(DATA / "layout.xml"), id="nexus-manual"),
    pytest.param(lambda: load_layout(layout_file("nexus_demo.xml")), id="demo"),
])
def test_fast_files_equal_slow_files(tmp_path, layout):
    layout = layout()
    writer = SingleFileWriter()
    options = WriterOptions()
    for frame in frames(4):
        name = f"{tmp_path}/fast_{frame.unique_id:03d}.h5"
        writer.write(tmp_path / f"fast_{frame.unique_id:03d}.h5", layout, frame, options, name)
        slow = tmp_path / f"slow_{frame.unique_id:03d}.h5"

        w = NexusWriter(slow, layout, frame, options, file_name=name)
        w.write(frame)
        w.close()
        assert_same_file(tmp_path / f"fast_{frame.unique_id:03d}.h5", slow)
    assert (writer.slow_files, writer.fast_files) == (1, 3)


def test_structure_change_rebuilds_the_template(tmp_path):
    writer = SingleFileWriter()
    layout, options = default_layout(), WriterOptions()
    small, big = frames(1)[0], frames(2, shape=(8, 8))[1]
    for i, frame in enumerate([small, small, big, big, small]):
        path = tmp_path / f"f{i}.h5"
        writer.write(path, layout, frame, options, str(path))
    assert (writer.slow_files, writer.fast_files) == (3, 2)


def test_compressed_files_take_the_h5py_path(tmp_path):
    writer = SingleFileWriter()
    options = WriterOptions(compression=Compression.ZLIB)
    for i, frame in enumerate(frames(3)):
        writer.write(tmp_path / f"z{i}.h5", default_layout(), frame, options, "z.h5")
    assert writer.fast_files == 0
