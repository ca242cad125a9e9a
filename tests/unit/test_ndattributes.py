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
    ('<Attributes>\n<Attribute name="A" source="x">\n</Attributes>', 3, "syntax"),
    ('<Attributes>\n<Attribute name="A"/>\n</Attributes>', 2, "no source"),
    ('<Attributes>\n<Attribute source="x"/>\n</Attributes>', 2, "without a name"),
    ('<?xml version="1.0"?>\n<Attrs>\n<Attribute name="A" source="x"/>\n</Attrs>', 2,
     "expected <Attributes>"),
])
def test_refused_as_adcore_refuses(text, line, fragment):
    with pytest.raises(AttributesError) as info:
        load_attributes(text)
    assert info.value.line == line
    assert fragment in str(info.value)
    assert info.value.status is AttributesStatus.XML_SYNTAX_ERROR


def test_definitions_before_a_refused_element_stay_in_use():
    text = ('<Attributes>\n<Attribute name="A" source="x"/>\n<Attribute name="B" source="y"/>\n'
            '<Attribute name="C" type="INT" source="z"/>\n</Attributes>')
    with pytest.raises(AttributesError) as info:
        load_attributes(text)
    assert info.value.line == 4
    assert [d.name for d in info.value.definitions] == ["A", "B"]
    assert "2 attributes defined before it stay in use" in str(info.value)


def test_any_non_empty_name_is_accepted():
    names = ["det-sum", "8BitSelect", "ID RingCurrent", "mydetector-Temperature"]
    text = "<Attributes>\n" + "".join(f'<Attribute name="{n}" source="P:{i}"/>\n'
                                        for i, n in enumerate(names)) + "</Attributes>"
    defs = load_attributes(text)
    assert [d.name for d in defs] == names and defs.warnings == []


def test_names_that_cannot_be_stored_are_noted():
    defs = load_attributes('<Attributes>\n<Attribute name="" source="x"/>\n'
                           '<Attribute name="a/b" source="y"/>\n</Attributes>')
    assert [d.name for d in defs] == ["a/b"]
    assert [(w.line, w.message[:24]) for w in defs.warnings] == [
        (2, "attribute with an empty "), (3, "attribute 'a/b': not an ")]


def test_duplicate_name_last_definition_wins():
    defs = load_attributes('<Attributes>\n<Attribute name="A" source="first"/>\n'
                           '<Attribute name="B" source="b"/>\n'
                           '<Attribute name="A" source="second"/>\n</Attributes>')
    # ADCore's NDAttributeList::add removes the old entry and appends the new one
    assert [(d.name, d.source) for d in defs] == [("B", "b"), ("A", "second")]
    assert defs.warnings[0].line == 4
    assert "defined again (first on line 2)" in defs.warnings[0].message


@pytest.mark.parametrize("datatype", ["FLOAT", "string", "int"])
def test_param_datatype_adcore_does_not_know_leaves_the_value_undefined(datatype):
    defs = load_attributes(f'<Attributes>\n<Attribute name="A" type="PARAM" source="X" '
                           f'datatype="{datatype}"/>\n</Attributes>')
    assert defs[0].forced_type is NDAttrType.Undefined
    assert defs.warnings[0].line == 2 and "stays undefined" in defs.warnings[0].message


def test_other_elements_are_read_as_attributes_and_unknown_xml_attributes_noted():
    defs = load_attributes('<Attributes>\n<Attr name="A" source="x"/>\n'
                           '<Attribute name="B" source="y" when="OnFileWrite"/>\n</Attributes>')
    assert [d.name for d in defs] == ["A", "B"]
    assert [w.line for w in defs.warnings] == [2, 3]
    assert "read as an <Attribute>" in defs.warnings[0].message
    assert 'when="OnFileWrite" is not used' in defs.warnings[1].message


def test_addr_is_read_like_strtol():
    defs = load_attributes('<Attributes>\n'
                           '<Attribute name="A" type="PARAM" source="X" addr="0x10"/>\n'
                           '<Attribute name="B" type="PARAM" source="X" addr="3rd"/>\n'
                           '<Attribute name="C" type="PARAM" source="X" addr="junk"/>\n'
                           '</Attributes>')
    assert [d.addr for d in defs] == [16, 3, 0]
    assert [w.line for w in defs.warnings] == [3, 4]


def test_missing_file_status():
    with pytest.raises(AttributesError) as info:
        load_attributes("/nonexistent/attributes.xml")
    assert info.value.status is AttributesStatus.FILE_NOT_FOUND


def test_entities_refused():
    text = ('<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "y">]>'
            '<Attributes><Attribute name="A" source="&x;"/></Attributes>')
    with pytest.raises(AttributesError, match="DOCTYPE"):
        load_attributes(text)
