"""pymalcolm's ADCore HDF writer and position labeller, as issued by pymalcolm 6.3.

pymalcolm itself does not run here: ``malcolm`` 6.3 (the PyPI wheel) installs only
without its pinned dependencies (h5py 2.9, p4p 3.5.5 do not build on Python 3.11), and then
fails to import on Python 3.11 (``annotypes`` 0.21 uses ``inspect.ArgSpec``, removed in
3.11; patched past that, its YAML block loader fails on 3.11's ``typing``).  So the exact
sequence is reproduced from its source (malcolm 6.3):

* ``malcolm/modules/ADCore/parts/hdfwriterpart.py``, ``HDFWriterPart.on_configure``:
  ``positionMode=True`` first; then, all at once, ``enableCallbacks=True,
  fileWriteMode="Stream", swmrMode=True, storeAttr=True, dimAttDatasets=True,
  lazyOpen=True, arrayCounter=0, filePath=<dir>/, fileName=<formatName>,
  fileTemplate="%s" + "%s.h5"`` together with ``set_dimensions`` (``numExtraDims =
  len(generator.dimensions) - 1``; ``posNameDim<N,X,Y,...>`` = ``d<i>`` fastest dimension
  first, ``extraDimSize<...>`` = the dimension sizes, unused ones "" and 1); then
  ``xmlLayout`` (``make_layout_xml`` written to ``make_xml_filename(dir, mri, "layout")``),
  ``flushDataPerNFrames=steps_to_do``, ``flushAttrPerNFrames=0``; then ``numCapture=0``;
  then ``start`` (Capture=1 with put-callback, status ``WriteStatus`` must be "Write OK");
  ``_check_xml_is_valid`` reads ``xmlLayoutValid``.  ``on_run`` waits for
  ``arrayCounterReadback > 0`` and ``numCapturedReadback == steps_to_do``, putting
  ``flushNow`` every second; ``on_reset``/``on_abort`` put ``stop`` (Capture=0) and
  ``xmlLayout=""``.  ``create_dataset_infos`` declares ``/entry/detector/detector`` of rank
  detector rank + generator rank and NDAttribute datasets (uniqueid
  ``/entry/NDAttributes/NDArrayUniqueId``) of the generator's rank.
* ``malcolm/modules/ADCore/blocks/hdf_writer_block.yaml``: the attribute -> PV map.
* ``malcolm/modules/ADCore/parts/positionlabellerpart.py``, ``_make_xml``: NDPosPlugin's
  position list, ``<dimension name="d<i>"/>`` per generator dimension and one
  ``<position d0=.. d1=.. d2=../>`` per point (``point.indexes``); NDPosPlugin puts those
  values on each frame as Int32 NDAttributes named d0, d1, d2.
* ``malcolm/modules/ADCore/util.py``: ``check_driver_version`` (HDF writer requires 3.12).

The scan: a 3 x 4 snake grid with 2 frames per point (3 generator dimensions).  Over CA
the frames carry no NDAttributes of the driver's, so with PositionMode the first frame
stops the file (ADCore's behaviour); the file shapes pymalcolm expects are checked with
frames labelled as NDPosPlugin labels them, through the IOC's file saver.  The same scan
over pvAccess, with the simulator's NDPosPlugin stand-in, follows with the PVA source.
"""

from __future__ import annotations

import random
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from xml.etree import ElementTree as ET

import h5py
import numpy as np
import pytest
from ioc_harness import wait_for
from system_setup import SIZE, W

from ioc.ndarray import NDArray, NDAttribute, NDAttrType
from ioc.tools.sim import expected_pixels

MRI = "TST-ML-DET-01:HDF5"
FORMAT_NAME = "det"
# scanpointgenerator: Line("y", "mm", 0, 1, 3) * Line("x", "mm", 0, 3, 4, alternate=True)
# * a 2-point dimension without axes (2 frames per point); slowest first.
DIMENSIONS = [("y", 3, [0.0, 0.5, 1.0]), ("x", 4, [0.0, 1.0, 2.0, 3.0]), (None, 2, None)]
STEPS = 3 * 4 * 2
SUFFIXES = "NXY3456789"


def point_indexes() -> list[tuple[int, int, int]]:
    """``generator.get_point(i).indexes`` of the snake grid, in scan order."""
    out = []
    for y in range(3):
        for x in (range(4) if y % 2 == 0 else range(3, -1, -1)):
            out.extend((y, x, n) for n in range(2))
    return out


def layout_xml() -> str:
    """``make_layout_xml(generator, part_info={}, write_all_nd_attributes=True)``."""
    root = ET.Element("hdf5_layout")
    entry = ET.SubElement(root, "group", name="entry")
    ET.SubElement(entry, "attribute", name="NX_class", source="constant", value="NXentry",
                  type="string")
    data = ET.SubElement(entry, "group", name="detector")
    ET.SubElement(data, "attribute", name="signal", source="constant", value="detector",
                  type="string")
    pad = [f"{axis}_set" if axis else "." for axis, _, _ in DIMENSIONS] + ["."] * 2
    ET.SubElement(data, "attribute", name="axes", source="constant", value=",".join(pad),
                  type="string")
    ET.SubElement(data, "attribute", name="NX_class", source="constant", value="NXdata",
                  type="string")
    for i, (axis, _, positions) in enumerate(DIMENSIONS):
        if axis is None:
            continue
        ET.SubElement(data, "attribute", name=f"{axis}_set_indices", source="constant",
                      value=str(i), type="string")
        axis_el = ET.SubElement(data, "dataset", name=f"{axis}_set", source="constant",
                                type="float", value=",".join(f"{p:.12g}" for p in positions))
        ET.SubElement(axis_el, "attribute", name="units", source="constant", value="mm",
                      type="string")
    det = ET.SubElement(data, "dataset", name="detector", source="detector", det_default="true")
    ET.SubElement(det, "attribute", name="NX_class", source="constant", value="SDS",
                  type="string")
    nd = ET.SubElement(entry, "group", name="NDAttributes", ndattr_default="true")
    ET.SubElement(nd, "attribute", name="NX_class", source="constant", value="NXcollection",
                  type="string")
    for name in ("NDArrayUniqueId", "NDArrayTimeStamp"):
        ET.SubElement(nd, "dataset", name=name, source="ndattribute", ndattribute=name)
    return '<?xml version="1.0" ?>' + ET.tostring(root, encoding="unicode")


def position_xml() -> str:
    """``PositionLabellerPart._make_xml(0)``: what NDPosPlugin is loaded with."""
    xml = '<?xml version="1.0" ?><pos_layout><dimensions>'
    xml += "".join(f'<dimension name="d{i}" />' for i in range(len(DIMENSIONS)))
    xml += "</dimensions><positions>"
    for indexes in point_indexes():
        xml += "<position" + "".join(f' d{j}="{v}"' for j, v in enumerate(indexes)) + " />"
    return xml + "</positions></pos_layout>"


def configure_puts(file_dir: Path, layout_file: Path) -> list[list[tuple[str, object]]]:
    """The puts of ``on_configure``, in its batches (each batch is issued at once)."""
    dimensions = {"numExtraDims": ("NumExtraDims", len(DIMENSIONS) - 1)}
    batch = [("EnableCallbacks", 1), ("FileWriteMode", "Stream"), ("SWMRMode", 1),
             ("StoreAttr", 1), ("DimAttDatasets", 1), ("LazyOpen", 1), ("ArrayCounter", 0),
             ("FilePath", f"{file_dir}/"), ("FileName", FORMAT_NAME),
             ("FileTemplate", "%s" + "%s.h5"), dimensions["numExtraDims"]]
    for i in range(10):  # set_dimensions: fastest-moving dimension first
        forward = len(DIMENSIONS) - i - 1
        in_use = i < len(DIMENSIONS)
        batch.append((f"PosNameDim{SUFFIXES[i]}", f"d{forward}" if in_use else ""))
        batch.append((f"ExtraDimSize{SUFFIXES[i]}", DIMENSIONS[forward][1] if in_use else 1))
    return [[("PositionMode", 1)], batch,
            [("XMLFileName", str(layout_file)), ("NumFramesFlush", STEPS),
             ("NDAttributeChunk", 0)],
            [("NumCapture", 0)]]


def write_layout(file_dir: Path) -> Path:
    path = file_dir / f"{MRI.replace(':', '_')}-layout.xml"  # make_xml_filename
    path.write_text(layout_xml())
    return path


def put_batch(client, batch) -> None:
    """Put every value of a batch at once, each with a put-callback, and wait for all of
    them (pymalcolm's ``put_attribute_values_async`` + ``wait_all_futures``)."""
    with ThreadPoolExecutor(len(batch)) as pool:
        for done in [pool.submit(client.put, W + suffix, value) for suffix, value in batch]:
            done.result(timeout=30)


def test_driver_version_meets_pymalcolm(ready):
    from packaging.version import Version

    driver = Version(ready.get("DriverVersion_RBV"))
    if driver.major != 3 or driver.minor < 12:  # check_driver_version(driver, "3.12")
        pytest.skip(f"DriverVersion_RBV {driver}: pymalcolm's HDFWriterPart requires 3.12 "
                    "(DriverVersion_RBV reporting the ADCore level is a separate change)")


def test_configure_sequence_then_unlabelled_frames_stop_the_file(ready, tmp_path):
    layout_file = write_layout(tmp_path)
    for batch in configure_puts(tmp_path, layout_file):
        put_batch(ready.client, batch)
    assert ready.get("XMLValid_RBV") == "Yes", ready.get("XMLErrorMsg_RBV")
    expected = {"PositionMode_RBV": "On", "NumExtraDims_RBV": 2, "ExtraDimSizeN_RBV": 2,
                "ExtraDimSizeX_RBV": 4, "ExtraDimSizeY_RBV": 3, "ExtraDimSize3_RBV": 1,
                "PosNameDimN_RBV": "d2", "PosNameDimX_RBV": "d1", "PosNameDimY_RBV": "d0",
                "PosNameDim3_RBV": "", "NumCapture_RBV": 0, "DimAttDatasets_RBV": "Yes",
                "SWMRMode_RBV": "On", "FileWriteMode_RBV": "Stream", "LazyOpen_RBV": "Yes",
                "FileTemplate_RBV": "%s%s.h5", "NumFramesFlush_RBV": STEPS}
    assert {k: ready.get(k) for k in expected} == expected
    ready.put("Capture", 1)  # start: put-callback, then WriteStatus must read "Write OK"
    assert ready.get("WriteStatus") == "Write OK"
    assert ready.get("Capture_RBV") == "Capturing"
    uids = ready.acquire(2)
    wait_for(lambda: ready.get("Capture_RBV") == "Done", 20, what="the file to be stopped")
    assert ready.get("WriteStatus") == "Write error"
    assert ready.get("WriteMessage") == (
        f"Error writing file, frame {uids[0]} has no NDAttribute 'd2' (PosNameDimN) for its "
        "position; file closed with 0 frames")
    with h5py.File(tmp_path / "det.h5") as f:  # opened (lazily) then closed: valid, empty
        assert f["/entry/detector/detector"].shape == (0, 0, 0, SIZE[1], SIZE[0])  # no fill frame
    ready.put("Capture", 0)  # on_reset: stop, then the layout file goes
    layout_file.unlink()
    ready.put("XMLFileName", "")
    assert ready.get("XMLErrorMsg_RBV") == "Default layout selected"


def labelled_frames() -> list[NDArray]:
    """The scan's frames as NDPosPlugin hands them on: uid 1.. in scan order, each with
    the d0/d1/d2 Int32 attributes of its position from the position list."""
    positions = ET.fromstring(position_xml()).find("positions")
    frames = []
    for uid, element in enumerate(positions, start=1):
        attributes = {name: NDAttribute(name, int(value), NDAttrType.Int32, "position index")
                      for name, value in element.attrib.items()}
        frames.append(NDArray(data=expected_pixels(uid, *SIZE), unique_id=uid,
                              timestamp=time.time(), attributes=attributes))
    return frames


def test_scan_file_shapes_with_position_labels(tmp_path):
    from saver_harness import SaverHarness

    layout_file = write_layout(tmp_path)
    params = dict(kv for batch in configure_puts(tmp_path, layout_file) for kv in batch)
    frames = labelled_frames()
    arrival = frames[:]
    random.Random(3).shuffle(arrival)  # out of order: each must land at its labels
    with SaverHarness(tmp_path, **params) as saver:
        saver.command("capture", on=True)
        saver.feed(arrival)
        assert saver.params["NumCaptured_RBV"] == STEPS
        saver.command("flush")  # on_run's flushNow
        saver.command("capture", on=False)  # on_reset: stop
        assert saver.params["WriteStatus"] == 0, saver.params["WriteMessage"]
    with h5py.File(tmp_path / "det.h5", "r", swmr=True) as f:
        data = f["/entry/detector/detector"]  # rank: detector 2 + generator 3
        assert data.shape == data.maxshape == (3, 4, 2, SIZE[1], SIZE[0])
        uid_at = {}
        for frame in frames:
            y, x, n = (int(frame.attributes[f"d{i}"].value) for i in range(3))
            np.testing.assert_array_equal(data[y, x, n], frame.data)
            uid_at[y, x, n] = frame.unique_id
        nd = f["/entry/NDAttributes"]
        # The generator's rank (3), and ADCore's two trailing 1s (DimAttDatasets).
        for name in ("NDArrayUniqueId", "NDArrayTimeStamp", "d0", "d1", "d2"):
            assert nd[name].shape == (3, 4, 2, 1, 1), name
        ids = nd["NDArrayUniqueId"][..., 0, 0]
        assert all(ids[pos] == uid for pos, uid in uid_at.items())
        assert f["/entry/detector/y_set"][()].tolist() == [0.0, 0.5, 1.0]
        assert f["/entry/detector/x_set"].attrs["units"] == b"mm"
        assert f["/entry/detector"].attrs["axes"] == b"y_set,x_set,.,.,."
        assert f["/entry/detector/detector"].attrs["NX_class"] == b"SDS"
