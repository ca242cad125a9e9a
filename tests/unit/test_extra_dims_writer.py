"""Extra dimensions, PositionMode and DimAttDatasets in the writer, read back with h5py.

ADCore's own cases (``ADApp/pluginTests/test_NDFileHDF5ExtraDimensions.cpp``,
``test_NDFileHDF5AttributeDataset.cpp``) are ported where they test behaviour a file shows.
"""

from __future__ import annotations

import random
import re

import h5py
import numpy as np
import pytest
from helpers import attr, make_frame

from ioc.layout import default_layout
from ioc.ndarray import NDAttrSource, NDAttrType
from ioc.writer.extra_dims import ExtraDims, Placer, PositionError, num_capture_for
from ioc.writer.nexus import NexusWriter, WriterOptions
from ioc.writer.single_file import SingleFileWriter

I32 = NDAttrType.Int32
S = NDAttrType.String
DATA = "/entry/instrument/detector/data"
ND = "/entry/instrument/NDAttributes"


def dims(k, n=1, x=1, y=1, *more, **kw) -> ExtraDims:
    sizes = (n, x, y, *more) + (1,) * (10 - 3 - len(more))
    return ExtraDims(num_extra_dims=k, sizes=sizes, **kw)


def labelled(uid, y, x, n, extra=()):
    """A frame labelled the way NDPosPlugin labels it for pymalcolm (d0 slowest)."""
    return make_frame(uid, attrs=[attr("d0", y, I32), attr("d1", x, I32), attr("d2", n, I32),
                                  *extra])


def snake(ny=3, nx=4, nn=2):
    """(y, x, n) of a snake grid, in acquisition order."""
    out = []
    for y in range(ny):
        for x in (range(nx) if y % 2 == 0 else range(nx - 1, -1, -1)):
            out.extend((y, x, n) for n in range(nn))
    return out


POSITION = dict(position_mode=True, pos_names=("d2", "d1", "d0") + ("",) * 7)


def write(path, frames, extra_dims, num_capture=0, **opts):
    options = WriterOptions(multi_frame=True, num_capture=num_capture, extra_dims=extra_dims,
                            **opts)
    writer = NexusWriter(path, default_layout(), frames[0], options)
    for frame in frames:
        writer.write(frame)
    writer.close()
    return writer


# -- ADCore's extendDataSet, ported -------------------------------------------------------

def _adcore_offsets(dim, offsets, sizes):
    if dim >= 0:
        offsets[dim] += 1
        if offsets[dim] == sizes[dim]:
            offsets[dim] = 0
            _adcore_offsets(dim - 1, offsets, sizes)


def _adcore_dims(frame, dim, current, sizes):
    current[dim] = min(current[dim] + 1, sizes[dim])
    if dim > 0:
        nextindex = frame // sizes[dim]
        if nextindex >= current[dim - 1]:
            _adcore_dims(nextindex, dim - 1, current, sizes)


@pytest.mark.parametrize("sizes", [(2, 3, 4), (2, 3, 4, 2, 3, 4, 2, 3, 4, 2)],
                         ids=["test_ExtraDatasetDimensions", "test_TenExtraDimensions"])
def test_sequential_placement_matches_adcore(sizes):
    """Offsets and dataset extent after every frame, as ADCore's unit tests expect them
    (sizes outermost first; the last axis is N)."""
    k = len(sizes) - 1
    extra = ExtraDims(num_extra_dims=k, sizes=tuple(reversed(sizes)) + (1,) * (9 - k))
    placer = Placer(extra.plan(num_capture=0, frames_chunk=1))
    # ADCore opens with an extent of 1 on every axis (a fill-value frame in an empty file);
    # here 0, and the first frame makes it 1: from then on the same extents as ADCore
    assert placer.extent == [0] * len(sizes)
    assert placer.take(placer.next_sequential(0)) is True
    assert placer.extent == [1] * len(sizes)
    offsets, current = [0] * len(sizes), [1] * len(sizes)
    for writes in range(1, num_capture_for(k, extra.sizes)):
        _adcore_offsets(k, offsets, sizes)
        _adcore_dims(writes, k, current, sizes)
        position = placer.next_sequential(writes)
        assert list(position) == offsets
        placer.take(position)
        assert placer.extent == current
    # ADCore wraps to (0, ..., 0) and overwrites the first frame: refused here.
    with pytest.raises(PositionError, match="hold"):
        placer.next_sequential(99)


def test_num_capture_is_the_product_of_the_sizes():
    """test_PluginExtraDimensions: (n)4x6 -> 24, 5x7x9 -> 315, 2x3x4x5 -> 120."""
    assert num_capture_for(1, (4, 6) + (1,) * 8) == 24
    assert num_capture_for(2, (5, 7, 9) + (1,) * 7) == 315
    assert num_capture_for(3, (2, 3, 4, 5) + (1,) * 6) == 120
    assert num_capture_for(9, tuple(range(1, 11))) == 3628800


def test_capture_with_extra_dims_shapes_chunks_and_order(tmp_path):
    extra = dims(2, 2, 3, 2, chunks=(0, 2, 5) + (0,) * 7)
    frames = [make_frame(uid) for uid in range(1, 13)]
    write(tmp_path / "a.h5", frames, extra, num_capture=12, frames_chunks=4)
    with h5py.File(tmp_path / "a.h5") as f:
        data = f[DATA]
        assert data.shape == data.maxshape == (2, 3, 2, 4, 5)
        # Y chunk 5 clipped to 2, X chunk 2, N chunk = NumFramesChunks 4 clipped to 2
        assert data.chunks == (2, 2, 2, 4, 5)
        for i, frame in enumerate(frames):
            y, x, n = np.unravel_index(i, (2, 3, 2))
            np.testing.assert_array_equal(data[y, x, n], frame.data)
        # Without DimAttDatasets the NDAttribute datasets stay 1-D, one value per frame.
        assert f[ND]["NDArrayUniqueId"][()].tolist() == list(range(1, 13))


def test_partial_capture_grows_to_the_bounding_box(tmp_path):
    extra = dims(2, 2, 3, 2)
    write(tmp_path / "a.h5", [make_frame(uid) for uid in range(1, 4)], extra, num_capture=12)
    with h5py.File(tmp_path / "a.h5") as f:
        assert f[DATA].shape == (1, 2, 2, 4, 5)  # frames at (0,0,0) (0,0,1) (0,1,0)
        assert f[DATA].maxshape == (2, 3, 2, 4, 5)
        assert (f[DATA][0, 1, 1] == 0).all()  # never written: fill value


def test_no_extra_dims_keeps_the_frame_axis(tmp_path):
    write(tmp_path / "a.h5", [make_frame(u) for u in (1, 2, 3)], ExtraDims(), num_capture=0,
          frames_chunks=2)
    with h5py.File(tmp_path / "a.h5") as f:
        assert f[DATA].shape == (3, 4, 5) and f[DATA].maxshape == (None, 4, 5)
        assert f[DATA].chunks == (2, 4, 5)


def test_position_mode_places_out_of_order_frames(tmp_path):
    """3 x 4 snake, 2 frames per point, frames arriving shuffled: each lands at its label,
    NDAttribute datasets (3, 4, 2) (+ ADCore's two 1s), PosIndexDim datasets 1-D."""
    extra = dims(2, 2, 4, 3, dim_att_datasets=True,
                 pos_index=("", "xpos", "ypos") + ("",) * 7, **POSITION)
    order = [(uid, *p) for uid, p in enumerate(snake(), start=1)]
    random.Random(15).shuffle(order)
    frames = [labelled(uid, y, x, n, [attr("xpos", 0.5 * x), attr("ypos", 10.0 * y),
                                      attr("Model", f"m{uid}", S)])
              for uid, y, x, n in order]
    writer = write(tmp_path / "p.h5", frames, extra)
    assert writer.warnings == []
    with h5py.File(tmp_path / "p.h5") as f:
        data = f[DATA]
        assert data.shape == data.maxshape == (3, 4, 2, 4, 5)
        for uid, y, x, n in order:
            np.testing.assert_array_equal(data[y, x, n], make_frame(uid).data)
        nd = f[ND]
        uid_of = {(y, x, n): uid for uid, y, x, n in order}
        ids = nd["NDArrayUniqueId"]
        assert ids.shape == (3, 4, 2, 1, 1) and ids.maxshape == (None, None, None, 1, 1)
        assert ids.chunks == (32, 32, 32, 1, 1)  # NumCapture 0: ADCore's 32 per axis
        for (y, x, n), uid in uid_of.items():
            assert ids[y, x, n, 0, 0] == uid
            assert nd["d1"][y, x, n, 0, 0] == x
            assert nd["Model"][y, x, n, 0, 0] == f"m{uid}".encode()
        assert nd["Model"].dtype == np.dtype("S256")
        assert nd["xpos"].shape == (4,) and nd["xpos"][()].tolist() == [0.0, 0.5, 1.0, 1.5]
        assert nd["ypos"].shape == (3,) and nd["ypos"][()].tolist() == [0.0, 10.0, 20.0]
        assert nd["xpos"].attrs["NDAttrName"] == b"xpos"


def test_position_mode_duplicate_label_overwrites(tmp_path):
    """A rewound scan sends a position again: the last frame wins (ADCore overwrites)."""
    extra = dims(1, 1, 2, **POSITION)
    frames = [make_frame(uid, attrs=[attr("d2", 0, I32), attr("d1", x, I32)])
              for uid, x in ((1, 0), (2, 1), (3, 0))]
    write(tmp_path / "r.h5", frames, extra)
    with h5py.File(tmp_path / "r.h5") as f:
        assert f[DATA].shape == (2, 1, 4, 5)
        np.testing.assert_array_equal(f[DATA][0, 0], make_frame(3).data)


@pytest.mark.parametrize("label, message", [
    (None, "has no NDAttribute 'd1' (PosNameDimX)"),
    (attr("d1", -1, I32), "is not a position index"),
    (attr("d1", "2", S), "is not a position index"),
    (attr("d1", 4, I32), "outside ExtraDimSizeX = 4"),
])
def test_frame_that_cannot_be_placed_raises_before_writing(tmp_path, label, message):
    extra = dims(1, 1, 4, **POSITION)
    good = make_frame(1, attrs=[attr("d2", 0, I32), attr("d1", 0, I32)])
    bad = make_frame(2, attrs=[attr("d2", 0, I32)] + ([label] if label else []))
    options = WriterOptions(multi_frame=True, num_capture=0, extra_dims=extra)
    writer = NexusWriter(tmp_path / "x.h5", default_layout(), good, options)
    writer.write(good)
    with pytest.raises(PositionError, match=re.escape(message)):
        writer.write(bad)
    writer.close()
    assert writer.frames_written == 1
    with h5py.File(tmp_path / "x.h5") as f:
        assert f[DATA].shape == (1, 1, 4, 5)
        assert f[ND]["NDArrayUniqueId"][()].tolist() == [1]


def test_float_labels_are_truncated_like_adcore(tmp_path):
    extra = dims(1, 1, 4, **POSITION)
    frame = make_frame(1, attrs=[attr("d2", 0.0), attr("d1", 2.7)])
    write(tmp_path / "f.h5", [frame], extra)
    with h5py.File(tmp_path / "f.h5") as f:
        assert f[DATA].shape == (3, 1, 4, 5)
        np.testing.assert_array_equal(f[DATA][2, 0], frame.data)


def test_position_mode_without_extra_dims_uses_dim_n(tmp_path):
    extra = ExtraDims(sizes=(4,) + (1,) * 9, position_mode=True,
                      pos_names=("n",) + ("",) * 9)
    frames = [make_frame(uid, attrs=[attr("n", i, I32)]) for uid, i in ((1, 3), (2, 0))]
    write(tmp_path / "n.h5", frames, extra, num_capture=10)
    with h5py.File(tmp_path / "n.h5") as f:
        assert f[DATA].shape == (4, 4, 5) and f[DATA].maxshape == (10, 4, 5)
    with pytest.raises(PositionError, match="ExtraDimSizeN = 4"):
        write(tmp_path / "m.h5", [make_frame(1, attrs=[attr("n", 4, I32)])], extra, 10)


def test_dim_att_datasets_sequential_and_once_only(tmp_path):
    """DimAttDatasets without PositionMode: values follow the frames' N-fastest order;
    OnFileOpen values are (1, 1, 1, 1, 1) (test_AttributeDimensionalDataset)."""
    from ioc.layout import load_layout

    layout = load_layout("""<?xml version="1.0"?>
<hdf5_layout><group name="entry"><attribute name="NX_class" source="constant" value="NXentry"/>
  <dataset name="data" source="detector"/>
  <dataset name="first_temp" source="ndattribute" ndattribute="Temp" when="OnFileOpen"/>
  <group name="NDAttributes" ndattr_default="true"><attribute name="NX_class" source="constant" value="NXcollection"/></group>
</group></hdf5_layout>""")
    extra = dims(2, 2, 3, 2, dim_att_datasets=True)
    frames = [make_frame(uid, attrs=[attr("Temp", 20.0 + uid)]) for uid in range(1, 13)]
    options = WriterOptions(multi_frame=True, num_capture=12, extra_dims=extra,
                            ndattribute_chunk=5)
    writer = NexusWriter(tmp_path / "d.h5", layout, frames[0], options)
    for frame in frames:
        writer.write(frame)
    writer.close()
    with h5py.File(tmp_path / "d.h5") as f:
        ids = f["/entry/NDAttributes/NDArrayUniqueId"]
        assert ids.shape == (2, 3, 2, 1, 1) and ids.chunks == (5, 5, 5, 1, 1)
        assert ids[:, :, :, 0, 0].ravel().tolist() == list(range(1, 13))
        assert f["/entry/first_temp"].shape == (1, 1, 1, 1, 1)
        assert f["/entry/first_temp"][()].ravel().tolist() == [21.0]


def test_dim_att_datasets_chunks_follow_the_sizes(tmp_path):
    extra = dims(1, 3, 5, dim_att_datasets=True)
    write(tmp_path / "c.h5", [make_frame(1)], extra, num_capture=15)
    with h5py.File(tmp_path / "c.h5") as f:
        assert f[ND]["NDArrayUniqueId"].chunks == (5, 3, 1, 1)  # ExtraDimSize per axis


def test_dim_att_datasets_without_extra_dims(tmp_path):
    extra = ExtraDims(dim_att_datasets=True)
    write(tmp_path / "z.h5", [make_frame(u) for u in (1, 2, 3)], extra, num_capture=3)
    with h5py.File(tmp_path / "z.h5") as f:
        assert f[ND]["NDArrayUniqueId"].shape == (3, 1, 1)
        assert f[ND]["NDArrayUniqueId"][:, 0, 0].tolist() == [1, 2, 3]


def test_routed_frames_keep_arrival_order_and_skip_dim_att(tmp_path):
    """detector_data_destination: PositionMode places only the default dataset's frames;
    with DimAttDatasets, values are recorded only for those (ADCore)."""
    from ioc.layout import load_layout

    layout = load_layout("""<?xml version="1.0"?>
<hdf5_layout><global name="detector_data_destination" ndattribute="Dest"/>
<group name="entry"><attribute name="NX_class" source="constant" value="NXentry"/>
  <dataset name="data" source="detector" det_default="true"/>
  <dataset name="dark" source="detector"/>
  <group name="NDAttributes" ndattr_default="true"><attribute name="NX_class" source="constant" value="NXcollection"/></group>
</group></hdf5_layout>""")
    extra = dims(1, 1, 3, dim_att_datasets=True, **POSITION)
    dest = [attr("Dest", "/entry/data", S)]
    dark = [attr("Dest", "/entry/dark", S)]
    frames = [make_frame(1, attrs=[attr("d2", 0, I32), attr("d1", 2, I32), *dest]),
              make_frame(2, attrs=dark), make_frame(3, attrs=dark)]
    options = WriterOptions(multi_frame=True, num_capture=0, extra_dims=extra)
    writer = NexusWriter(tmp_path / "r.h5", layout, frames[0], options)
    for frame in frames:
        writer.write(frame)
    writer.close()
    with h5py.File(tmp_path / "r.h5") as f:
        assert f["/entry/data"].shape == (3, 1, 4, 5)
        assert f["/entry/dark"].shape == (2, 1, 4, 5)
        np.testing.assert_array_equal(f["/entry/dark"][1, 0], make_frame(3).data)
        ids = f["/entry/NDAttributes/NDArrayUniqueId"]
        assert ids[:, 0, 0, 0].tolist() == [0, 0, 1]


def test_unused_pos_index_dim_warns(tmp_path):
    extra = dims(1, 1, 2, dim_att_datasets=True, pos_index=("",) * 5 + ("t",) + ("",) * 4,
                 **POSITION)
    frame = make_frame(1, attrs=[attr("d2", 0, I32), attr("d1", 0, I32), attr("t", 1.0)])
    writer = write(tmp_path / "w.h5", [frame], extra)
    assert writer.warnings == ["PosIndexDim5='t' is beyond NumExtraDims 1: no index dataset"]
    with h5py.File(tmp_path / "w.h5") as f:
        assert f[ND]["t"].shape == (1, 1, 1, 1)  # an ordinary DimAttDatasets dataset


def test_single_mode_dim_att_datasets_fast_path(tmp_path):
    """Single mode has no extra axes; DimAttDatasets gives ADCore's (1, 1) datasets, and
    the template (fast) files are identical in shape and carry each frame's values."""
    options = WriterOptions(extra_dims=ExtraDims(dim_att_datasets=True))
    writer = SingleFileWriter()
    for uid in (1, 2, 3):
        frame = make_frame(uid, attrs=[attr("Temp", 20.0 + uid),
                                       attr("ColorMode", 0, I32, NDAttrSource.DRIVER)])
        writer.write(tmp_path / f"s{uid}.h5", default_layout(), frame, options, "s.h5")
    assert (writer.slow_files, writer.fast_files) == (1, 2)
    for uid in (1, 2, 3):
        with h5py.File(tmp_path / f"s{uid}.h5") as f:
            assert f[DATA].shape == (4, 5)
            np.testing.assert_array_equal(f[DATA][()], make_frame(uid).data)
            temp = f[ND]["Temp"]
            assert temp.shape == temp.maxshape == (1, 1) and temp[0, 0] == 20.0 + uid
            assert f[ND]["NDArrayUniqueId"][()].tolist() == [[uid]]


def test_extra_dims_range():
    with pytest.raises(ValueError, match="0-9"):
        ExtraDims(num_extra_dims=10)


def test_dim_att_chunks_are_capped():
    """ADCore's 32 per axis (NumCapture 0) or a whole scan per chunk can exceed what a chunk
    should hold, or HDF5's 2**32 values: capped at 1 MiB, outer axes shrunk first."""
    from ioc.writer.extra_dims import ATTRIBUTE_CHUNK_BYTES

    assert dims(2, 2, 4, 3).attribute_chunks(0, 0) == (32, 32, 32)  # 256 KiB of float64
    assert dims(2, 2, 4, 3).attribute_chunks(0, 0, itemsize=256) == (4, 32, 32)
    ten = ExtraDims(num_extra_dims=9, sizes=(1000,) * 10)
    for num_capture in (0, 10):
        chunks = ten.attribute_chunks(num_capture, 0)
        assert int(np.prod(chunks)) * 8 <= ATTRIBUTE_CHUNK_BYTES and min(chunks) >= 1
