"""The NeXus manual's example written by us equals mrinal_001.h5 (a real NDFileHDF5 file),
object for object, except the differences the README documents."""

from __future__ import annotations

import re

import h5py
import numpy as np
from h5tree import tree
from helpers import DATA

from ioc.layout import load_layout
from ioc.layout.ndattributes import load_attributes
from ioc.ndarray import NDArray, NDAttribute, NDAttrSource, NDAttrType
from ioc.writer.nexus import write_single

# Documented differences (README, "Differences from NDFileHDF5"):
ROOT_ATTRIBUTES_WE_ADD = {"file_name", "file_time", "creator", "HDF5_Version", "h5py_version"}
# current ADCore stores string NDAttributes as (1,) fixed 256-byte C strings; mrinal's
# pre-R2-5 writer used int8 (1, 256) arrays.
STRING_NDATTRIBUTES = {"CameraManufacturer", "CameraModel", "calc1_val", "calc2_val"}
# mrinal's calc*_val were written from a PARAM definition although the published
# attributes.xml declares them EPICS_PV; we follow the attributes.xml.
SOURCE_TYPE_FROM_ATTRIBUTES_XML = {"calc1_val", "calc2_val"}
PERFORMANCE = "/entry/instrument/NDAttributes/timestamp"  # timings; chunked, as current ADCore


def with_nul(attrs: dict[str, tuple[str, object]]) -> dict[str, tuple[str, object]]:
    """mrinal's (pre-R3-11) writer sized string attributes to the text; ADCore >= R3-11
    stores the NUL too (STRSIZE = length + 1), as we do.  Same values otherwise."""
    out = {}
    for name, (kind, value) in attrs.items():
        match = re.fullmatch(r"S(\d+)-nullterm\(\)", kind)
        out[name] = (f"S{int(match.group(1)) + 1}-nullterm()", value) if match else (kind, value)
    return out
HOSTNAME = "/entry/instrument/NDAttributes"  # @hostname is this machine's name


def golden_frame() -> NDArray:
    with h5py.File(DATA / "mrinal_001.h5") as f:
        image = f["/entry/data/data"][()]
    defs = {d.name: d for d in load_attributes(DATA / "attributes.xml", "P=prj:")}
    values = {
        "AcquireTime": (0.1, NDAttrType.Float64),
        "ImageCounter": (26, NDAttrType.Int32),
        "calc1_val": ("", NDAttrType.String),
        "calc2_val": ("", NDAttrType.String),
        "MaxSizeX": (2000, NDAttrType.Int32),
        "MaxSizeY": (1500, NDAttrType.Int32),
        "CameraModel": ("Basic simulator", NDAttrType.String),
        "CameraManufacturer": ("Simulated detector", NDAttrType.String),
    }
    attrs = {n: defs[n].value(v, t) for n, (v, t) in values.items()}
    attrs["ColorMode"] = NDAttribute("ColorMode", 0, NDAttrType.Int32, "Color mode", "Driver",
                                     NDAttrSource.DRIVER)
    return NDArray(data=image, unique_id=26, timestamp=881534674.8165946,
                   epics_ts_sec=881534674, epics_ts_nsec=924131323, attributes=attrs,
                   binning=(50, 50))


def test_manual_example_matches_mrinal(tmp_path):
    out = tmp_path / "mrinal_001.h5"
    write_single(out, load_layout(DATA / "layout.xml"), golden_frame())
    ours, gold = tree(out), tree(DATA / "mrinal_001.h5")

    assert sorted(ours) == sorted(gold), "same set of paths"
    # hard links: the same objects share an address in both files
    assert ours["/entry/data/data"].token == ours["/entry/instrument/detector/data"].token
    for path, g in gold.items():
        o = ours[path]
        assert o.kind == g.kind, path
        name = path.rsplit("/", 1)[-1]
        expected_attrs = with_nul(g.attrs)
        actual_attrs = dict(o.attrs)
        if path == "/":
            assert set(actual_attrs) == ROOT_ATTRIBUTES_WE_ADD
            continue
        if path == HOSTNAME:
            assert actual_attrs.pop("hostname")[0].startswith("S")
            expected_attrs.pop("hostname")
        if name in SOURCE_TYPE_FROM_ATTRIBUTES_XML:
            assert actual_attrs.pop("NDAttrSourceType") == ("S20-nullterm()", "NDAttrSourceEPICSPV")
            assert expected_attrs.pop("NDAttrSourceType")[1] == "NDAttrSourceParam"
        assert actual_attrs == expected_attrs, path
        if o.kind == "group":
            continue
        if path == PERFORMANCE:
            assert (o.shape, o.dtype, g.shape, g.dtype) == ((1, 5), "<f8", (1, 5), "<f8")
            assert o.maxshape == (None, None)
            assert np.all(o.value[0, :3] >= 0)
            continue
        if name in STRING_NDATTRIBUTES:
            assert (o.shape, o.dtype, o.maxshape, o.chunks) == ((1,), "S256-nullterm", (None,), (1,))
            expected = bytes(np.asarray(g.value[0], dtype="i1").tobytes()).split(b"\0")[0]
            assert o.value[0] == expected, path
            continue
        assert (o.shape, o.dtype, o.maxshape, o.chunks, o.compression) == \
            (g.shape, g.dtype, g.maxshape, g.chunks, g.compression), path
        assert o.fillvalue == g.fillvalue, path
        np.testing.assert_array_equal(o.value, g.value, err_msg=path)
