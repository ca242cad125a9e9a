"""NeXus writer: every layout feature, read back with h5py."""

from __future__ import annotations

import logging

import h5py
import numpy as np
import pytest
from helpers import attr, make_frame
from test_layout import DEMO

from ioc.layout import LayoutError, default_layout, load_layout
from ioc.ndarray import NDAttrSource, NDAttrType
from ioc.writer.nexus import (
    Compression,
    CompressionUnavailable,
    FrameMismatch,
    NexusWriter,
    WriterOptions,
    write_single,
)
from ioc.writer.attribute_datasets import AttributeDataset

S = NDAttrType.String
F64 = NDAttrType.Float64
I32 = NDAttrType.Int32


def frames_with(n, extra=None):
    """n frames carrying AcquireTime, Temp (changing), Counter and Model."""
    out = []
    for i in range(1, n + 1):
        attrs = [attr("AcquireTime", 0.5 + i, F64), attr("Temp", 20.0 + i, F64),
                 attr("Counter", 100 + i, I32), attr("Model", "sim", S),
                 attr("ColorMode", 0, I32, NDAttrSource.DRIVER)]
        attrs += [attr(k, v, S) for k, v in (extra or {}).get(i, {}).items()]
        out.append(make_frame(i, attrs=attrs))
    return out


def write_multi(path, layout, frames, num_capture=0, **opts):
    writer = NexusWriter(path, layout, frames[0],
                         WriterOptions(multi_frame=True, num_capture=num_capture, **opts))
    for frame in frames:
        writer.write(frame)
    writer.close()
    return writer


def test_single_frame_default_layout(tmp_path):
    frame = frames_with(1)[0]
    write_single(tmp_path / "a.h5", default_layout(), frame)
    with h5py.File(tmp_path / "a.h5") as f:
        data = f["/entry/instrument/detector/data"]
        assert data.shape == (4, 5) and data.dtype == np.dtype("<u2")
        assert data.maxshape == (4, 5) and data.chunks == (4, 5)
        np.testing.assert_array_equal(data[()], frame.data)
        assert f["/entry/data/data"].id == data.id  # hard link
        assert f.attrs["default"] == b"entry"
        assert f["/entry"].attrs["default"] == b"data"
        assert f["/entry/data"].attrs["signal"] == b"data"
        nd = f["/entry/instrument/NDAttributes"]
        assert nd.attrs["hostname"]
        assert nd["NDArrayUniqueId"][()].tolist() == [1]
        assert nd["NDArrayUniqueId"].dtype == np.dtype("<i4")
        assert nd["NDArrayTimeStamp"][()].tolist() == [1001.0]
        assert nd["NDArrayEpicsTSSec"].dtype == np.dtype("<u4")
        assert nd["NDArrayEpicsTSnSec"][()].tolist() == [1000]
        assert nd["Model"][()].tolist() == [b"sim"]
        assert nd["Model"].dtype == np.dtype("S256")
        assert f["/entry/instrument/detector/NDAttributes/ColorMode"][()].tolist() == [0]
        perf = f["/entry/instrument/performance/timestamp"]
        assert perf.shape == (1, 5) and perf.dtype == np.dtype("<f8")
        for name in ("file_name", "file_time", "creator", "HDF5_Version", "h5py_version"):
            assert name in f.attrs
        assert f.attrs["creator"].startswith(b"nexus-writer-ioc ")
        assert b"T" in f.attrs["file_time"] and f.attrs["file_time"][-6] in b"+-"


def test_default_layout_is_valid_nexus(tmp_path):
    from nexusformat.nexus.validate import logger, validate_file

    logger.setLevel(logging.WARNING)
    path = tmp_path / "v.h5"
    write_single(path, default_layout(), frames_with(1)[0])
    warnings, errors = validate_file(str(path))
    assert errors == 0
    path2 = tmp_path / "v2.h5"
    write_multi(path2, default_layout(), frames_with(3))
    assert validate_file(str(path2))[1] == 0


def test_multi_frame_unlimited_attributes_line_up(tmp_path):
    frames = frames_with(5)
    write_multi(tmp_path / "m.h5", default_layout(), frames, num_capture=0)
    with h5py.File(tmp_path / "m.h5") as f:
        data = f["/entry/data/data"]
        assert data.shape == (5, 4, 5) and data.maxshape == (None, 4, 5)
        for i, frame in enumerate(frames):
            np.testing.assert_array_equal(data[i], frame.data)
        nd = f["/entry/instrument/NDAttributes"]
        assert nd["NDArrayUniqueId"][()].tolist() == [1, 2, 3, 4, 5]
        assert nd["Temp"][()].tolist() == [21.0, 22.0, 23.0, 24.0, 25.0]
        assert nd["Temp"].chunks == (2048,)  # NumCapture=0: 16 KiB of float64 values
        assert f["/entry/instrument/performance/timestamp"].shape == (5, 5)


def test_attribute_values_written_in_batches_line_up_and_flush(tmp_path):
    """Attribute values are kept and written in batches (BATCH frames): across batch
    boundaries every frame's value is in place, and flush() writes what is kept."""
    n = 2 * AttributeDataset.BATCH + 7
    frames = frames_with(n, extra={i: {"Note": f"n{i}"} for i in range(1, n + 1)})
    writer = NexusWriter(tmp_path / "b.h5", default_layout(), frames[0],
                         WriterOptions(multi_frame=True, num_capture=0))
    for frame in frames[:10]:
        writer.write(frame)
    writer.flush()
    nd = writer.file["/entry/instrument/NDAttributes"]
    assert nd["NDArrayUniqueId"].shape == (10,)  # visible in the file after flush()
    for frame in frames[10:]:
        writer.write(frame)
    writer.close()
    with h5py.File(tmp_path / "b.h5") as f:
        nd = f["/entry/instrument/NDAttributes"]
        assert nd["NDArrayUniqueId"][()].tolist() == list(range(1, n + 1))
        assert nd["Counter"].dtype == np.int32
        assert nd["Counter"][()].tolist() == [100 + i for i in range(1, n + 1)]
        assert nd["Temp"][()].tolist() == [20.0 + i for i in range(1, n + 1)]
        assert [v.decode() for v in nd["Note"][()]] == [f"n{i}" for i in range(1, n + 1)]
        assert f["/entry/data/data"].shape == (n, 4, 5)


def test_builtin_values_read_from_frames_and_a_frame_attribute_wins(tmp_path):
    """The four built-in values are read from each frame (not made as NDAttributes per
    frame); a frame's own NDAttribute of a built-in's name replaces it for that frame, as
    ADCore's copy into the plugin's list does; the writer keeps no frame after writing it
    (a receiver slot would stay taken until close)."""
    import gc
    import weakref

    frames = frames_with(5)
    frames[2].attributes["NDArrayUniqueId"] = attr("NDArrayUniqueId", 999, I32)
    writer = NexusWriter(tmp_path / "u.h5", default_layout(), frames[0],
                         WriterOptions(multi_frame=True, num_capture=0))
    for frame in frames:
        writer.write(frame)
    last = weakref.ref(frames[-1].data)
    del frames[-1], frame
    gc.collect()
    assert last() is None
    writer.close()
    with h5py.File(tmp_path / "u.h5") as f:
        nd = f["/entry/instrument/NDAttributes"]
        assert nd["NDArrayUniqueId"][()].tolist() == [1, 2, 999, 4, 5]
        assert nd["NDArrayTimeStamp"][()].tolist() == [1001.0 + i for i in range(5)]
        assert nd["NDArrayEpicsTSSec"][()].tolist() == [11 + i for i in range(5)]
        assert nd["NDArrayEpicsTSnSec"][()].tolist() == [1000 * (i + 1) for i in range(5)]
        assert nd["NDArrayEpicsTSSec"].dtype == np.dtype("<u4")


def test_multi_frame_bounded_maxshape_and_chunks(tmp_path):
    frames = frames_with(3)
    write_multi(tmp_path / "b.h5", default_layout(), frames, num_capture=3, frames_chunks=2)
    with h5py.File(tmp_path / "b.h5") as f:
        data = f["/entry/data/data"]
        assert data.maxshape == (3, 4, 5) and data.chunks == (2, 4, 5)
        assert f["/entry/instrument/NDAttributes/Temp"].chunks == (3,)


def test_demo_layout_destination_open_close_and_lists(tmp_path):
    routes = {2: {"DataDestination": "/entry/detector/data2"},
              3: {"DataDestination": "/entry/detector/data3"},
              4: {"DataDestination": "/nowhere"}}
    frames = frames_with(4, routes)
    write_multi(tmp_path / "d.h5", load_layout(DEMO), frames)
    with h5py.File(tmp_path / "d.h5") as f:
        det = f["/entry/detector"]
        # frames 1 and 4 (unknown destination) go to the default data1
        assert det["data1"].shape == (2, 4, 5)
        np.testing.assert_array_equal(det["data1"][1], frames[3].data)
        np.testing.assert_array_equal(det["data2"][0], frames[1].data)
        np.testing.assert_array_equal(det["data3"][0], frames[2].data)
        a = det["data1"].attrs
        assert a["counts"].tolist() == [1, 2, 3] and a["counts"].dtype == np.dtype("<i4")
        assert a["floats"].tolist() == [1.3, 2.9, 3.4] and a["floats"].dtype == np.dtype("<f8")
        assert a["model"] == b"sim"
        assert a["last_id"] == 4 and a["last_id"].dtype == np.dtype("<i4")  # OnFileClose
        assert a["untyped"] == b"hello"
        assert a["NDArrayNumDims"] == 2
        at = f["/entry/attributes"]
        assert at["exposure"][()].tolist() == [1.5]  # OnFileOpen: first frame's value
        assert at["final_temp"][()].tolist() == [24.0]  # OnFileClose: last frame's value
        assert at["written"][()].tolist() == [101, 102, 103, 104]  # OnFileWrite = per frame
        inst = f["/entry/instruments"]
        assert "Model" in inst and "NDArrayUniqueId" in inst and "timestamp" in inst
        assert inst["NDArrayUniqueId"].attrs["NDAttrSourceType"] == b"NDAttrSourceDriver"
        # DataDestination only exists on later frames: never a dataset (set frozen at open)
        assert "DataDestination" not in inst


LINKS = """<?xml version="1.0" standalone="no" ?>
<hdf5_layout>
  <group name="example">
    <dataset name="temperature" source="ndattribute" ndattribute="Temp">
      <attribute name="units" source="constant" value="C" type="string"/>
      <attribute name="model_at_open" source="ndattribute" ndattribute="Model"/>
    </dataset>
    <dataset name="int_list" source="constant" value="1,2,3" type="int"/>
    <dataset name="pi" source="constant" value="3.14" type="float"/>
    <dataset name="answer" source="constant" value="42" type="int"/>
    <dataset name="label" source="constant" value="just text" type="string"/>
    <dataset name="untyped" source="constant" value="kept as text"/>
    <group name="detector">
      <dataset name="data" source="detector"/>
    </group>
    <hardlink name="data_link_in_same_group" target="/example/temperature"/>
    <hardlink name="dangling" target="/example/not_there"/>
    <group name="other">
      <hardlink name="image" target="/example/detector/data"/>
      <hardlink name="counter" target="/metadata/Counter"/>
    </group>
  </group>
  <group name="metadata" ndattr_default="true"/>
</hdf5_layout>
"""


def test_links_constants_and_ndattribute_dataset_attributes(tmp_path):
    frames = frames_with(10)
    writer = write_multi(tmp_path / "l.h5", load_layout(LINKS), frames, num_capture=10)
    with h5py.File(tmp_path / "l.h5") as f:
        assert f["/example/detector/data"].shape == (10, 4, 5)
        temp = f["/example/temperature"]
        assert temp.shape == (10,)
        assert f["/example/data_link_in_same_group"].shape == (10,)
        assert f["/example/data_link_in_same_group"].id == temp.id
        assert temp.attrs["units"] == b"C" and temp.attrs["model_at_open"] == b"sim"
        assert temp.attrs["NDAttrName"] == b"Temp"
        assert f["/example/other/image"].id == f["/example/detector/data"].id
        assert f["/example/other/counter"][()].tolist() == list(range(101, 111))
        assert f["/example/int_list"][()].tolist() == [1, 2, 3]
        assert f["/example/int_list"].dtype == np.dtype("<i4")
        assert f["/example/pi"][()] == 3.14 and f["/example/pi"].shape == ()
        assert f["/example/answer"][()] == 42 and f["/example/answer"].dtype == np.dtype("<i4")
        assert f["/example/label"][()].tolist() == [b"just text"]
        assert f["/example/label"].dtype == np.dtype("S10")  # len + 1, as ADCore
        assert f["/example/untyped"][()].tolist() == [b"kept as text"]
        assert "dangling" not in f["/example"]
        assert "Temp" not in f["/metadata"]  # placed by the layout, not twice
    assert any("dangling" in w for w in writer.warnings)


def test_minimal_layout_puts_unplaced_attributes_in_root(tmp_path):
    # ADCore's hdf5_layout_minimal.xml style: a file without an XML declaration
    path = tmp_path / "minimal.xml"
    path.write_text('<hdf5_layout><group name="entry"><dataset name="data" '
                    'source="detector"/></group></hdf5_layout>')
    layout = load_layout(path)
    write_single(tmp_path / "r.h5", layout, frames_with(1)[0])
    with h5py.File(tmp_path / "r.h5") as f:
        assert "Temp" in f and "NDArrayUniqueId" in f and "timestamp" in f
        assert f["/entry/data"].shape == (4, 5)


def test_auto_ndattr_default_false_stores_no_unplaced(tmp_path):
    layout = load_layout('<?xml version="1.0"?><hdf5_layout auto_ndattr_default="false">'
                         '<group name="entry"><dataset name="data" source="detector"/>'
                         '<dataset name="t" source="ndattribute" ndattribute="Temp"/>'
                         '</group></hdf5_layout>')
    write_single(tmp_path / "n.h5", layout, frames_with(1)[0])
    with h5py.File(tmp_path / "n.h5") as f:
        assert sorted(f["/entry"]) == ["data", "t"]
        assert sorted(f) == ["entry"]


def test_store_attr_and_perform_off(tmp_path):
    write_single(tmp_path / "s.h5", default_layout(), frames_with(1)[0],
                 WriterOptions(store_attributes=False, store_performance=False))
    with h5py.File(tmp_path / "s.h5") as f:
        assert len(f["/entry/instrument/NDAttributes"]) == 0
        assert "timestamp" not in f["/entry/instrument/performance"]
        # our choice: group attributes (NX_class) are written whatever StoreAttr says
        assert f["/entry"].attrs["NX_class"] == b"NXentry"


def test_undefined_attribute_is_nan_float32(tmp_path):
    frame = make_frame(1, attrs=[attr("Dead", None, NDAttrType.Undefined,
                                      NDAttrSource.EPICS_PV)])
    write_single(tmp_path / "u.h5", default_layout(), frame)
    with h5py.File(tmp_path / "u.h5") as f:
        dead = f["/entry/instrument/NDAttributes/Dead"]
        assert dead.dtype == np.dtype("<f4") and dead.shape == (1,) and np.isnan(dead[0])


def test_rgb1_frame_and_one_dim_attributes(tmp_path):
    rgb = make_frame(7, shape=(3, 4, 3), dtype="u1")  # (Y, X, 3) = NDArray dims [3, X, Y]
    write_single(tmp_path / "rgb.h5", default_layout(), rgb)
    with h5py.File(tmp_path / "rgb.h5") as f:
        d = f["/entry/data/data"]
        assert d.shape == (3, 4, 3) and d.attrs["NDArrayNumDims"] == 3
        assert d.attrs["NDArrayDimOffset"].tolist() == [0, 0, 0]
    line = make_frame(8, shape=(6,), dtype="f8")
    write_single(tmp_path / "line.h5", default_layout(), line)
    with h5py.File(tmp_path / "line.h5") as f:
        d = f["/entry/data/data"]
        assert d.attrs["NDArrayDimBinning"].shape == () and d.attrs["NDArrayDimBinning"] == 1


def test_big_endian_frame_is_stored_little_endian(tmp_path):
    frame = make_frame(2)
    frame.data = frame.data.astype(">u2")
    write_single(tmp_path / "be.h5", default_layout(), frame)
    with h5py.File(tmp_path / "be.h5") as f:
        d = f["/entry/data/data"]
        assert d.dtype == np.dtype("<u2")
        np.testing.assert_array_equal(d[()], make_frame(2).data)


@pytest.mark.parametrize("compression", [Compression.ZLIB, Compression.BLOSC,
                                         Compression.BSLZ4, Compression.LZ4])
def test_compression_round_trip(tmp_path, compression):
    frames = frames_with(3)
    write_multi(tmp_path / "c.h5", default_layout(), frames, compression=compression)
    with h5py.File(tmp_path / "c.h5") as f:
        d = f["/entry/data/data"]
        assert d._filters, "a filter is set"
        for i, frame in enumerate(frames):
            np.testing.assert_array_equal(d[i], frame.data)


@pytest.mark.parametrize("compression", [Compression.NBIT, Compression.JPEG])
def test_unavailable_compression_refused(tmp_path, compression):
    with pytest.raises(CompressionUnavailable, match="not available"):
        NexusWriter(tmp_path / "x.h5", default_layout(), make_frame(1),
                    WriterOptions(compression=compression))
    assert not (tmp_path / "x.h5").exists()


def test_chunking_and_fill_value(tmp_path):
    frame = make_frame(1, shape=(8, 10))
    options = WriterOptions(multi_frame=True, num_capture=4, chunk_size_auto=False,
                            chunks=(5, 3), frames_chunks=2, fill_value=7)
    layout = load_layout('<?xml version="1.0"?><hdf5_layout><group name="e">'
                         '<dataset name="a" source="detector" det_default="true"/>'
                         '<dataset name="b" source="detector"/></group></hdf5_layout>')
    writer = NexusWriter(tmp_path / "k.h5", layout, frame, options)
    writer.write(frame)
    writer.close()
    with h5py.File(tmp_path / "k.h5") as f:
        assert f["/e/a"].chunks == (2, 3, 5)  # (frames, rows=dim1, cols=dim0)
        assert f["/e/b"].shape == (0, 8, 10)  # never routed to: no phantom frame
        assert f["/e/b"].fillvalue == 7


def test_frame_mismatch_rejected(tmp_path):
    writer = NexusWriter(tmp_path / "mm.h5", default_layout(), make_frame(1),
                         WriterOptions(multi_frame=True, num_capture=0))
    writer.write(make_frame(1))
    with pytest.raises(FrameMismatch):
        writer.write(make_frame(2, shape=(5, 5)))
    with pytest.raises(FrameMismatch):
        writer.write(make_frame(3, dtype="u1"))
    writer.close()
    with h5py.File(tmp_path / "mm.h5") as f:
        assert f["/entry/data/data"].shape == (1, 4, 5)


def test_no_detector_dataset_refused_and_nothing_written(tmp_path):
    layout = load_layout('<?xml version="1.0"?><hdf5_layout><group name="e"/></hdf5_layout>')
    with pytest.raises(LayoutError, match="No detector datasets"):
        NexusWriter(tmp_path / "none.h5", layout, make_frame(1))
    assert not (tmp_path / "none.h5").exists()


def test_open_close_without_frames_in_stream(tmp_path):
    writer = NexusWriter(tmp_path / "e.h5", default_layout(), frames_with(1)[0],
                         WriterOptions(multi_frame=True, num_capture=0))
    writer.close()
    with h5py.File(tmp_path / "e.h5") as f:
        # ADCore's initial extent is one frame of fill value; an empty stream holds none
        assert f["/entry/data/data"].shape == (0, 4, 5)
        assert f["/entry/instrument/NDAttributes/Temp"].shape == (0,)
