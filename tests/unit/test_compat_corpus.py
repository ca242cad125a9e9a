"""Every real-world layout and NDAttributes file of the compatibility corpus: accepted as
ADCore accepts it (or refused, with the line, where ADCore refuses it too), and every
accepted layout writes a multi-frame file that reads back as the layout says.

The corpus is other projects' files: it is read where it lives, ``<repo>/../shared/
compat-corpus`` (or one level further up, for a worktree), never copied here.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from helpers import make_frame

from ioc.layout import When, load_layout
from ioc.layout.model import Layout, is_hdf5_name, parse_constant
from ioc.layout.ndattributes import AttributesError, AttributesStatus, AttrKind, load_attributes
from ioc.ndarray import NDAttribute, NDAttrSource, NDAttrType, file_attribute_list
from ioc.plugin.file_saver import layout_status
from ioc.writer.nexus import NexusWriter, WriterOptions

REPO = Path(__file__).resolve().parents[2]
CANDIDATES = [REPO.parent / "shared" / "compat-corpus",
              REPO.parent.parent / "shared" / "compat-corpus"]
CORPUS = next((c for c in CANDIDATES if (c / "layouts").is_dir()), None)
SKIP = f"compat corpus not found (looked in {', '.join(str(c) for c in CANDIDATES)})"

# The files ADCore cannot use either, and the line the error names.
REFUSED_LAYOUTS = {
    # <hdf5_layout> is never closed: the file ends inside it
    "BragJ_areaDetector_BL18_M03_ADnED_example_iocBoot_iocexample_ex.XML": 32,
    # </hdf5_layout> where the <group> of line 4 should close
    "areaDetector_ADRIXSCam_ADxcam_iocs_xcamCameraIOC_iocBoot_iocXcamCamera_hdf5_test.XML": 22,
}
REFUSED_ATTRIBUTES = {
    # a second XML declaration on line 2
    "APS-USAXS_AreaDetectorConfig_SAXS_config_nexus_plugin_nexus_attributes_pilatus.xml": 2,
    # type="INT" (a datatype value used as the attribute type): ADCore stops there
    "epics-modules_xspress3_iocs_example4Channel_example4ChannelApp_data_XSP3.xml": 14,
    "epics-modules_xspress3_iocs_xspress3IOC_iocBoot_iocxspress3-4Channel_XSP3.xml": 18,
}
FRAMES = 3
SHAPE = (6, 8)


def _files(kind: str):
    if CORPUS is None:
        return [pytest.param(None, marks=pytest.mark.skip(reason=SKIP), id=f"no-{kind}")]
    return [pytest.param(p, id=p.name) for p in sorted((CORPUS / kind).iterdir())]


def test_corpus_counts():
    if CORPUS is None:
        pytest.skip(SKIP)
    layouts = sorted(p.name for p in (CORPUS / "layouts").iterdir())
    attributes = sorted(p.name for p in (CORPUS / "attributes").iterdir())
    assert (len(layouts), len(attributes)) == (38, 52)
    assert set(REFUSED_LAYOUTS) <= set(layouts) and set(REFUSED_ATTRIBUTES) <= set(attributes)


# -- loading ------------------------------------------------------------------------------

@pytest.mark.parametrize("path", _files("layouts"))
def test_layout_status(path):
    """What XMLValid_RBV / XMLErrorMsg_RBV get for the file."""
    layout, message = layout_status(str(path))
    if path.name in REFUSED_LAYOUTS:
        assert layout is None
        assert f"{path}:{REFUSED_LAYOUTS[path.name]}: XML syntax error" in message
    else:
        assert layout is not None, message
        assert len(message) <= 255
        if layout.warnings:
            assert message.startswith(f"{len(layout.warnings)} warning")
            assert all(w.line for w in layout.warnings)


@pytest.mark.parametrize("path", _files("attributes"))
def test_attributes_status(path):
    if path.name in REFUSED_ATTRIBUTES:
        with pytest.raises(AttributesError) as info:
            load_attributes(path)
        assert info.value.status is AttributesStatus.XML_SYNTAX_ERROR
        assert info.value.line == REFUSED_ATTRIBUTES[path.name]
        assert f"{path}:{info.value.line}:" in str(info.value)
        return
    definitions = load_attributes(path)
    assert definitions, "an accepted file defines attributes"
    assert all(w.line for w in definitions.warnings)


# -- writing: layouts ----------------------------------------------------------------------

ROTATION = (NDAttrType.Float64, NDAttrType.Int32, NDAttrType.String, NDAttrType.Int16,
            NDAttrType.UInt8, NDAttrType.Float32)


def _value(dtype: NDAttrType, uid: int, name: str):
    if dtype is NDAttrType.String:
        return f"{name} #{uid}"
    return uid + 0.25 if dtype.numpy.kind == "f" else uid * 3


def _referenced(layout: Layout) -> set[str]:
    names = set()
    for group in layout.iter_groups():
        items = list(group.attributes)
        for dataset in group.datasets:
            items += dataset.attributes
            if dataset.source == "ndattribute" and dataset.ndattribute:
                names.add(dataset.ndattribute)
        names.update(a.ndattribute for a in items if a.source == "ndattribute")
    return names


def _layout_frames(layout: Layout):
    """Frames carrying every NDAttribute the layout names (types in rotation), two it
    does not name, and the detector_data_destination attribute routing frame 2 to the
    last detector dataset."""
    names = sorted(_referenced(layout) | {"ExtraValue", "Extra Name"})
    types = {n: ROTATION[i % len(ROTATION)] for i, n in enumerate(names)}
    detectors = sorted(d.path for d in layout.detector_datasets())
    frames = []
    for uid in range(1, FRAMES + 1):
        attrs = {n: NDAttribute(n, _value(t, uid, n), t, f"{n} value", f"P:{n}",
                                NDAttrSource.EPICS_PV) for n, t in types.items()}
        attrs["ColorMode"] = NDAttribute("ColorMode", 0, NDAttrType.Int32, "Color mode",
                                         "Driver", NDAttrSource.DRIVER)
        if layout.data_destination:
            route = detectors[-1] if uid == 2 else "/no/such/dataset"
            attrs[layout.data_destination] = NDAttribute(
                layout.data_destination, route, NDAttrType.String, "", "", NDAttrSource.CONST)
        frames.append(make_frame(uid, shape=SHAPE, attrs=attrs.values()))
    return frames


def _write(path: Path, layout: Layout, frames) -> NexusWriter:
    options = WriterOptions(multi_frame=True, num_capture=len(frames))
    writer = NexusWriter(path, layout, frames[0], options)
    for frame in frames:
        writer.write(frame)
    writer.close()
    return writer


def _expect_attribute(obj, attribute, frames) -> None:
    """A layout <attribute> on ``obj``: the constant, or the NDAttribute's value."""
    assert attribute.name in obj.attrs, f"{obj.name}@{attribute.name}"
    stored = obj.attrs[attribute.name]
    if attribute.source == "constant":
        expected = parse_constant(attribute.value, attribute.type)
    else:
        frame = frames[-1] if attribute.when is When.CLOSE else frames[0]
        expected = frame.attributes[attribute.ndattribute].value
    if isinstance(expected, str):
        tid = h5py.h5a.open(obj.id, attribute.name.encode()).get_type()
        assert tid.get_size() == len(expected.encode()) + 1  # NUL-terminated, as ADCore
        assert stored == expected.encode()
    else:
        np.testing.assert_allclose(stored, expected, err_msg=f"{obj.name}@{attribute.name}")


@pytest.mark.parametrize("path", [p for p in _files("layouts")
                                  if p.values[0] is None or p.values[0].name not in
                                  REFUSED_LAYOUTS])
def test_layout_writes_a_readable_multiframe_file(path, tmp_path):
    layout = load_layout(path)
    frames = _layout_frames(layout)
    out = tmp_path / "corpus.h5"
    writer = _write(out, layout, frames)
    assert writer.frames_written == FRAMES

    default = layout.default_detector().path
    detectors = {d.path for d in layout.detector_datasets()}
    routed: dict[str, list] = {p: [] for p in detectors}
    for frame in frames:
        destination = frame.attributes.get(layout.data_destination) if layout.data_destination \
            else None
        target = destination.value if destination and destination.value in detectors else default
        routed[target].append(frame.data)

    with h5py.File(out, "r") as f:
        # detector frames, routed as detector_data_destination says
        for ds_path, datas in routed.items():
            ds = f[ds_path]
            assert ds.dtype == np.dtype("<u2") and ds.shape[1:] == SHAPE, ds_path
            assert ds.shape[0] == len(datas), ds_path  # no fill-value frame when empty
            for i, data in enumerate(datas):
                np.testing.assert_array_equal(ds[i], data, err_msg=ds_path)
        assert sum(len(d) for d in routed.values()) == FRAMES

        # constant datasets and every layout attribute on what exists
        for group in layout.iter_groups():
            assert isinstance(f[group.path], h5py.Group), group.path
            for attribute in group.attributes:
                _expect_attribute(f[group.path], attribute, frames)
            for dataset in group.datasets:
                if dataset.source == "constant" and not layout.is_performance_dataset(dataset):
                    stored = f[dataset.path][()]
                    expected = parse_constant(dataset.value, dataset.type)
                    if isinstance(expected, str):
                        assert stored[0] == expected.encode(), dataset.path
                    else:
                        np.testing.assert_allclose(stored, expected, err_msg=dataset.path)
                if dataset.source in ("constant", "detector") and dataset.path in f:
                    for attribute in dataset.attributes:
                        _expect_attribute(f[dataset.path], attribute, frames)

        # NDAttribute datasets, placed by ADCore's rules
        values = [file_attribute_list(frame) for frame in frames]
        occupied = {d.path for d in layout.iter_datasets() if d.source in ("detector",
                                                                           "constant")}
        perf = layout.performance_location()
        if perf is not None:
            occupied.add(f"{perf[0].rstrip('/')}/{perf[1]}")
        placements = {n: layout.place_ndattribute(n) for n in values[0]}
        targets = [p.path for p in placements.values() if p is not None]
        checked = 0
        for name, placement in placements.items():
            if placement is None or placement.path in occupied or targets.count(placement.path) > 1:
                continue
            ds = f[placement.path]
            assert ds.attrs["NDAttrName"] == name.encode(), placement.path
            first = values[0][name]
            if placement.when is When.FRAME:
                expected = [v[name].value for v in values]
            else:
                expected = [(values[-1] if placement.when is When.CLOSE else values[0])[name].value]
            assert ds.shape == (len(expected),), placement.path
            if first.dtype is NDAttrType.String:
                assert ds.dtype == np.dtype("S256")
                assert [x.decode() for x in ds[()]] == expected, placement.path
            else:
                assert ds.dtype == np.dtype(first.dtype.numpy), placement.path
                np.testing.assert_allclose(ds[()], expected, err_msg=placement.path)
            if placement.dataset is not None:
                for attribute in placement.dataset.attributes:
                    _expect_attribute(ds, attribute, frames)
            checked += 1
        assert checked >= 4  # at least the four built-ins

        # performance data and hard links (made last, to whatever exists)
        if perf is not None:
            timestamp = f[perf[0]][perf[1]]
            if "NDAttrName" not in timestamp.attrs:  # not an NDAttribute's place
                assert timestamp.shape == (FRAMES, 5) and timestamp.dtype == np.dtype("<f8")
        for group in layout.iter_groups():
            for link in group.hardlinks:
                if link.target in f:
                    assert f[link.path].id == f[link.target].id, link.path
        assert f.attrs["file_name"] == str(out).encode()


# -- writing: attributes files --------------------------------------------------------------

def _definition_attributes(definitions, uid: int) -> list[NDAttribute]:
    """What the CA source gives for each definition: CONST its text, FUNCTION nothing,
    a PARAM of unknown datatype undefined, PVs a value of their type (native: double)."""
    out = []
    for d in definitions:
        if d.kind is AttrKind.CONST:
            out.append(d.constant())
        elif d.kind is AttrKind.FUNCTION:
            continue
        elif d.forced_type is NDAttrType.Undefined:
            out.append(d.undefined())
        else:
            dtype = d.forced_type or NDAttrType.Float64
            out.append(d.value(_value(dtype, uid, d.name), dtype))
    return out


@pytest.mark.parametrize("path", [p for p in _files("attributes")
                                  if p.values[0] is None or p.values[0].name not in
                                  REFUSED_ATTRIBUTES])
def test_attributes_file_writes_its_attributes(path, tmp_path):
    definitions = load_attributes(path)
    frames = [make_frame(uid, shape=SHAPE, attrs=_definition_attributes(definitions, uid))
              for uid in (1, 2)]
    layout = load_layout(REPO / "layouts" / "default.xml")
    _write(tmp_path / "attrs.h5", layout, frames)
    stored = 0
    with h5py.File(tmp_path / "attrs.h5", "r") as f:
        for name, attribute in frames[0].attributes.items():
            placement = layout.place_ndattribute(name)
            if not is_hdf5_name(name):
                assert placement is None
                continue
            ds = f[placement.path]
            assert ds.attrs["NDAttrName"] == name.encode()
            if attribute.dtype is NDAttrType.Undefined:  # ADCore: float32 NaN, never written
                assert ds.dtype == np.dtype("<f4") and ds.shape == (1,) and np.isnan(ds[0])
            elif attribute.dtype is NDAttrType.String:
                assert [x.decode() for x in ds[()]] == [str(fr.attributes[name].value)
                                                        for fr in frames]
            else:
                assert ds.dtype == np.dtype(attribute.dtype.numpy)
                np.testing.assert_allclose(ds[()], [fr.attributes[name].value for fr in frames])
            stored += 1
    assert stored == sum(1 for n in frames[0].attributes if is_hdf5_name(n))
