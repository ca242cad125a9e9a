"""Layout model: parsing, ADCore's search rules, and refusing bad input with line numbers."""

from __future__ import annotations

import pytest
from helpers import DATA

from ioc.layout import LayoutError, When, default_layout, load_layout
from ioc.layout._xml import MAX_XML_BYTES, MAX_XML_DEPTH

DEMO = """<?xml version="1.0" standalone="no" ?>
<hdf5_layout>
  <global name="detector_data_destination" ndattribute="DataDestination"/>
  <group name="entry">
    <attribute name="NX_class" source="constant" value="NXentry" type="string"/>
    <group name="detector">
      <dataset name="data2" source="detector"/>
      <dataset name="data1" source="detector" det_default="true">
        <attribute name="counts" source="constant" value="1,2,3" type="int"/>
        <attribute name="floats" source="constant" value="1.3,2.9,3.4" type="float"/>
        <attribute name="model" source="ndattribute" ndattribute="Model"/>
        <attribute name="last_id" source="ndattribute" ndattribute="NDArrayUniqueId" when="OnFileClose"/>
        <attribute name="untyped" source="constant" value="hello"/>
      </dataset>
      <dataset name="data3" source="detector"/>
    </group>
    <group name="attributes">
      <dataset name="exposure" source="ndattribute" ndattribute="AcquireTime" when="OnFileOpen"/>
      <dataset name="final_temp" source="ndattribute" ndattribute="Temp" when="OnFileClose"/>
      <dataset name="written" source="ndattribute" ndattribute="Counter" when="OnFileWrite"/>
    </group>
    <group name="instruments" ndattr_default="true"/>
  </group>
</hdf5_layout>
"""


def test_parse_demo_layout():
    layout = load_layout(DEMO)
    assert layout.source == "<inline>"
    assert layout.data_destination == "DataDestination"
    assert [d.path for d in layout.detector_datasets()] == [
        "/entry/detector/data1", "/entry/detector/data2", "/entry/detector/data3"]
    assert layout.default_detector().path == "/entry/detector/data1"
    assert layout.ndattr_default_group().path == "/entry/instruments"
    data1 = next(d for d in layout.iter_datasets() if d.name == "data1")
    by_name = {a.name: a for a in data1.attributes}
    assert by_name["last_id"].when is When.CLOSE
    assert by_name["model"].when is When.OPEN
    assert by_name["untyped"].type is None and by_name["untyped"].value == "hello"
    placements = layout.place_ndattributes(["AcquireTime", "Temp", "Counter", "Other"])
    assert placements["AcquireTime"].path == "/entry/attributes/exposure"
    assert placements["AcquireTime"].when is When.OPEN
    assert placements["Temp"].when is When.CLOSE
    assert placements["Counter"].when is When.FRAME  # OnFileWrite = every frame
    assert placements["Other"].path == "/entry/instruments/Other"
    assert layout.performance_location() == ("/entry/instruments", "timestamp")


def test_default_detector_without_det_default_is_alphabetical_first():
    layout = load_layout('<?xml version="1.0"?><hdf5_layout><group name="g">'
                         '<dataset name="zeta" source="detector"/>'
                         '<group name="a"><dataset name="b" source="detector"/></group>'
                         '</group></hdf5_layout>')
    assert layout.default_detector().path == "/g/a/b"


def test_minimal_layout_without_declaration_from_file(tmp_path):
    path = tmp_path / "minimal.xml"
    path.write_text('<hdf5_layout><group name="entry">'
                    '<dataset name="data" source="detector"/></group></hdf5_layout>')
    layout = load_layout(path)
    assert layout.ndattr_default_group() is None
    assert layout.place_ndattribute("X").path == "/X"  # unplaced -> root
    assert layout.performance_location() == ("/", "timestamp")


def test_auto_ndattr_default_false_drops_unplaced():
    layout = load_layout('<?xml version="1.0"?><hdf5_layout auto_ndattr_default="false">'
                         '<group name="e"><dataset name="d" source="detector"/></group>'
                         '</hdf5_layout>')
    assert layout.auto_ndattr_default is False
    assert layout.place_ndattribute("X") is None
    assert layout.performance_location() is None


def test_ndattribute_named_twice_first_in_search_order_wins():
    layout = load_layout('<?xml version="1.0"?><hdf5_layout><group name="e">'
                         '<dataset name="d" source="detector"/>'
                         '<group name="z"><dataset name="a" source="ndattribute" ndattribute="M"/></group>'
                         '<dataset name="model" source="ndattribute" ndattribute="M"/>'
                         '<dataset name="description" source="ndattribute" ndattribute="M"/>'
                         '</group></hdf5_layout>')
    # a group's own datasets alphabetically, before its subgroups
    assert layout.place_ndattribute("M").path == "/e/description"


def test_root_attributes_extension():
    layout = load_layout('<?xml version="1.0"?><hdf5_layout>'
                         '<attribute name="default" source="constant" value="entry"/>'
                         '<group name="entry"><dataset name="d" source="detector"/></group>'
                         '</hdf5_layout>')
    assert [a.name for a in layout.root.attributes] == ["default"]


def test_default_layout_paths():
    layout = default_layout()
    assert layout.default_detector().path == "/entry/instrument/detector/data"
    assert layout.ndattr_default_group().path == "/entry/instrument/NDAttributes"
    assert layout.place_ndattribute("ColorMode").path == \
        "/entry/instrument/detector/NDAttributes/ColorMode"
    assert layout.performance_location() == ("/entry/instrument/performance", "timestamp")


def test_manual_layout_performance_goes_to_default_group():
    layout = load_layout(DATA / "layout.xml")
    assert layout.performance_location() == ("/entry/instrument/NDAttributes", "timestamp")


@pytest.mark.parametrize(("text", "line", "fragment"), [
    ('<?xml version="1.0"?>\n<hdf5_layout>\n<group name="e">\n<dataset name="d" source="detector">'
     '\n</group></hdf5_layout>', 5, "syntax"),  # ADCore issue #459: <dataset> not closed
    ('<?xml version="1.0"?>\n<hdf5_layout>\n  <dataset name="d" source="detector"/>\n'
     '</hdf5_layout>', 2, "no <group> element"),  # ADCore: "Unable to create the Root tree"
])
def test_refused_layouts_raise_layout_error_with_line(text, line, fragment):
    """Refused only where ADCore refuses too: malformed XML, no tree."""
    with pytest.raises(LayoutError) as info:
        load_layout(text)
    assert info.value.line == line
    assert fragment in str(info.value)
    assert f"<inline>:{line}:" in str(info.value)


def test_entity_declarations_refused():
    text = ('<?xml version="1.0"?>\n<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 '
            '"&lol;&lol;&lol;&lol;">]>\n<hdf5_layout><group name="&lol2;"/></hdf5_layout>')
    with pytest.raises(LayoutError, match="DOCTYPE|entity"):
        load_layout(text)


def test_external_entity_refused(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret")
    text = (f'<?xml version="1.0"?>\n<!DOCTYPE x [<!ENTITY s SYSTEM "file://{secret}">]>\n'
            '<hdf5_layout><group name="e"><attribute name="a" source="constant" value="&s;"/>'
            '</group></hdf5_layout>')
    with pytest.raises(LayoutError, match="DOCTYPE|entity"):
        load_layout(text)


def test_oversize_refused(tmp_path):
    path = tmp_path / "big.xml"
    path.write_text('<?xml version="1.0"?><hdf5_layout>' + " " * MAX_XML_BYTES + "</hdf5_layout>")
    with pytest.raises(LayoutError, match="larger than"):
        load_layout(path)


def test_absurd_depth_refused():
    depth = MAX_XML_DEPTH + 5
    text = ('<?xml version="1.0"?><hdf5_layout>' + '<group name="g">' * depth
            + "</group>" * depth + "</hdf5_layout>")
    with pytest.raises(LayoutError, match="nested deeper"):
        load_layout(text)


def test_missing_file():
    with pytest.raises(LayoutError, match="file not found"):
        load_layout("/nonexistent/layout.xml")


def test_duplicate_attribute_keeps_first_with_warning():
    layout = load_layout('<?xml version="1.0"?>\n<hdf5_layout><group name="e">\n'
                         '<attribute name="a" source="constant" value="1"/>\n'
                         '<attribute name="a" source="constant" value="2"/>\n'
                         '<dataset name="d" source="detector"/></group></hdf5_layout>')
    group = layout.root.groups[0]
    assert [(a.name, a.value) for a in group.attributes] == [("a", "1")]
    assert [w.line for w in layout.warnings] == [4]
    assert "line 4: attribute /e@a appears again (first on line 3)" in str(layout.warnings[0])
