"""Layouts and attributes files ADCore accepts, through the real IOC: accepted, their
oddities shown where the operator looks (XMLErrorMsg_RBV, NDAttributesMessage_RBV, the
log), and the file written as ADCore writes it."""

from __future__ import annotations

import h5py
import numpy as np
from system_setup import CAM

LAYOUT = """<?xml version="1.0"?>
<xml>
  <group name="entry">
    <attribute name="NX_class" source="constant" value="NXentry"/>
    <attribute name="version" source="attributes" value="3"/>
    <group name="data">
      <dataset name="data" source="detector"/>
    </group>
    <group name="meta" ndattr_default="true"/>
  </group>
</xml>
"""

ATTRIBUTES = f"""<Attributes>
  <Attribute name="ID RingCurrent" type="EPICS_PV" source="{CAM}AcquireTime" dbrtype="DBR_DOUBLE"/>
  <Attribute name="det-sum" type="PARAM" source="TOTAL" datatype="FLOAT"/>
  <Attribute name="X" type="CONST" source="first"/>
  <Attribute name="X" type="CONST" source="second"/>
</Attributes>
"""


def test_odd_but_valid_files_are_used_and_reported(ready, tmp_path):
    layout = tmp_path / "layout.xml"
    layout.write_text(LAYOUT)
    attributes = tmp_path / "attributes.xml"
    attributes.write_text(ATTRIBUTES)
    ready.put("XMLFileName", str(layout))
    assert ready.get("XMLValid_RBV") == "Yes"
    message = ready.get("XMLErrorMsg_RBV")
    assert message.startswith("2 warnings: line 2: root element <xml> is not <hdf5_layout>")
    assert 'line 5: attribute /entry@version: source="attributes"' in message

    ready.put("NDAttributesFile", str(attributes))
    assert ready.get("NDAttributesStatus") == "Attributes file OK"
    notes = ready.get("NDAttributesMessage_RBV")
    assert "line 3: attribute 'det-sum': datatype 'FLOAT'" in notes
    assert "line 5: attribute 'X' is defined again (first on line 4)" in notes

    ready.put("AutoSave", "Yes")
    ready.acquire(1)
    (path,) = tmp_path.glob("*.h5")
    acquire_time = ready.cam_get("AcquireTime_RBV")
    with h5py.File(path) as f:
        assert f["/entry/data/data"].shape[::-1] == tuple(ready.cam_get(s) for s in
                                                          ("SizeX_RBV", "SizeY_RBV"))
        assert f["/entry"].attrs["NX_class"] == b"NXentry"
        assert f["/entry"].attrs.get_id("NX_class").get_type().get_size() == len("NXentry") + 1
        assert "version" not in f["/entry"].attrs
        np.testing.assert_allclose(f["/entry/meta/ID RingCurrent"][()], [acquire_time])
        det_sum = f["/entry/meta/det-sum"]  # ADCore: undefined -> float32 NaN, never written
        assert det_sum.dtype == np.dtype("<f4") and np.isnan(det_sum[()]).all()
        assert f["/entry/meta/X"][0] == b"second"
    log = (ready.logs / "writer.log").read_text()
    assert "root element <xml> is not <hdf5_layout>" in log
    assert "attribute 'det-sum': datatype 'FLOAT'" in log


def test_refused_attributes_file_keeps_what_came_before(ready, tmp_path):
    attributes = tmp_path / "attributes.xml"
    attributes.write_text('<Attributes>\n<Attribute name="Kept" type="CONST" source="yes"/>\n'
                          '<Attribute name="Bad" type="INT" source="X"/>\n</Attributes>\n')
    ready.put("NDAttributesFile", str(attributes))
    assert ready.get("NDAttributesStatus") == "XML syntax error"
    message = ready.get("NDAttributesMessage_RBV")
    assert f"{attributes}:3: attribute 'Bad': unknown type 'INT'" in message
    assert "1 attribute defined before it stays in use" in message
    ready.put("AutoSave", "Yes")
    ready.acquire(1)
    (path,) = tmp_path.glob("*.h5")
    with h5py.File(path) as f:
        assert f["/entry/instrument/NDAttributes/Kept"][0] == b"yes"
        assert "Bad" not in f["/entry/instrument/NDAttributes"]
