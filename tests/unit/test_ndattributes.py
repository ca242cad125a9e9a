"""NDAttributes XML model: kinds, types, macros, and errors with status and line."""

from __future__ import annotations

import pytest
from helpers import DATA

from ioc.layout.ndattributes import (
    AttributesError,
    AttributesStatus,
    AttrKind,
    load_attributes,
    parse_macros,
    substitute_macros,
)
from ioc.ndarray import NDAttrSource, NDAttrType

INLINE = """<Attributes>
  <Attribute name="AcquireTime" type="EPICS_PV" source="$(P)$(R)AcquireTime" dbrtype="DBR_NATIVE" description="exposure"/>
  <Attribute name="Temp" source="$(P)temp" dbrtype="DBR_DOUBLE"/>
  <Attribute name="Counter" type="PARAM" source="ARRAY_COUNTER" datatype="INT"/>
  <Attribute name="Model" type="PARAM" source="MODEL" datatype="STRING"/>
  <Attribute name="NoType" type="PARAM" source="MAX_SIZE_X"/>
  <Attribute name="Where" type="CONST" source="/entry/detector/data2" description="route"/>
  <Attribute name="F" type="FUNCTION" source="myAttrFunct1" param="x"/>
</Attributes>"""


def test_inline_attributes_with_macros():
    defs = {d.name: d for d in load_attributes(INLINE, "P=13SIM1:,R=cam1:")}
    assert defs["AcquireTime"].source == "13SIM1:cam1:AcquireTime"
    assert defs["AcquireTime"].kind is AttrKind.EPICS_PV
    assert defs["AcquireTime"].forced_type is None  # DBR_NATIVE: the PV decides
    assert defs["Temp"].kind is AttrKind.EPICS_PV  # type defaults to EPICS_PV
    assert defs["Temp"].forced_type is NDAttrType.Float64
    assert defs["Counter"].forced_type is NDAttrType.Int32
    assert defs["Model"].forced_type is NDAttrType.String
    assert defs["NoType"].forced_type is NDAttrType.Int32  # documented: default INT
    const = defs["Where"].constant()
    assert (const.value, const.dtype, const.source_type) == \
        ("/entry/detector/data2", NDAttrType.String, NDAttrSource.CONST)
    assert defs["F"].kind is AttrKind.FUNCTION and defs["F"].param == "x"


def test_manual_attributes_file():
    defs = load_attributes(DATA / "attributes.xml", "P=prj:")
    assert [d.name for d in defs] == ["AcquireTime", "ImageCounter", "calc1_val", "calc2_val",
                                      "MaxSizeX", "MaxSizeY", "CameraModel",
                                      "CameraManufacturer"]
    assert defs[2].source == "prj:userCalc1.VAL"


def test_empty_spec_means_no_attributes():
    assert load_attributes("") == []


def test_macros():
    assert parse_macros("A=1, B = two ,") == {"A": "1", "B": "two"}
    assert substitute_macros("$(A)-${B}-$(C=dflt)", {"A": "1", "B": "2"}) == "1-2-dflt"
    with pytest.raises(AttributesError) as info:
        substitute_macros("x\n$(MISSING)", {})
    assert info.value.status is AttributesStatus.MACRO_ERROR and info.value.line == 2
    with pytest.raises(AttributesError) as info:
        load_attributes(INLINE, "P=1,R")
    assert info.value.status is AttributesStatus.MACRO_ERROR


@pytest.mark.parametrize(("text", "line", "fragment"), [
    ('<Attributes>\n<Attribute name="A" type="BOGUS" source="x"/>\n</Attributes>', 2, "unknown type"),
    ('<Attributes>\n<Attribute name="A" source="x" dbrtype="DBR_FOO"/>\n</Attributes>', 2, "dbrtype"),
    ('<Attributes>\n<Attribute name="A" type="PARAM" source="x" datatype="int"/>\n</Attributes>', 2,
     "datatype"),
    ('<Attributes>\n<Attribute name="a/b" source="x"/>\n</Attributes>', 2, "cannot name"),
    ('<Attributes>\n<Attribute name="A" source="x"/>\n<Attribute name="A" source="y"/>\n'
     '</Attributes>', 3, "twice"),
    ('<Attributes>\n<Attribute name="A" source="x">\n</Attributes>', 3, "syntax"),
    ('<Attributes>\n<Attribute name="A"/>\n</Attributes>', 2, "no source"),
])
def test_bad_attributes(text, line, fragment):
    with pytest.raises(AttributesError) as info:
        load_attributes(text)
    assert info.value.line == line
    assert fragment in str(info.value)
    assert info.value.status is AttributesStatus.XML_SYNTAX_ERROR


def test_missing_file_status():
    with pytest.raises(AttributesError) as info:
        load_attributes("/nonexistent/attributes.xml")
    assert info.value.status is AttributesStatus.FILE_NOT_FOUND


def test_entities_refused():
    text = ('<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "y">]>'
            '<Attributes><Attribute name="A" source="&x;"/></Attributes>')
    with pytest.raises(AttributesError, match="DOCTYPE"):
        load_attributes(text)
