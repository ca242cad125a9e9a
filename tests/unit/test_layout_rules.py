"""Layouts ADCore accepts are accepted, read by ADCore's rules, each oddity a warning with
its line (one case per rule; the real-world files are in test_compat_corpus.py)."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from helpers import attr, make_frame

from ioc.layout import LayoutError, When, load_layout, warnings_summary
from ioc.layout.model import parse_constant, parse_numbers, schema_errors
from ioc.writer.nexus import NexusWriter, WriterOptions

HEAD = '<?xml version="1.0"?>\n'  # line 1; the layout's lines follow


def load(*lines: str):
    """A layout whose line n+1 is lines[n] (line 1 is the XML declaration)."""
    return load_layout(HEAD + "\n".join(lines))


def warned(layout, line: int, fragment: str) -> None:
    texts = [str(w) for w in layout.warnings if w.line == line]
    assert any(fragment in t for t in texts), (line, fragment, [str(w) for w in layout.warnings])


def paths(layout) -> set[str]:
    out = set()
    for group in layout.iter_groups():
        out.add(group.path)
        out.update(d.path for d in group.datasets)
        out.update(h.path for h in group.hardlinks)
    return out


# -- the root element ------------------------------------------------------------

@pytest.mark.parametrize("root", ["xml", "hdf_layout", "layout"])
def test_root_element_name_is_ignored(root):
    layout = load(f"<{root}>",
                  '  <group name="entry"><dataset name="data" source="detector"/></group>',
                  f"</{root}>")
    assert paths(layout) == {"/", "/entry", "/entry/data"}
    warned(layout, 2, f"root element <{root}> is not <hdf5_layout>")


def test_bare_group_root_is_the_first_group():
    layout = load('<group name="entry">',
                  '  <attribute name="NX_class" source="constant" value="NXentry"/>',
                  '  <dataset name="data" source="detector"/>',
                  '</group>')
    assert paths(layout) == {"/", "/entry", "/entry/data"}
    assert layout.root.groups[0].attributes[0].value == "NXentry"
    assert layout.warnings == ()


def test_no_group_at_all_is_refused():
    with pytest.raises(LayoutError, match="no <group> element"):
        load("<hdf5_layout><global name='detector_data_destination' ndattribute='D'/>"
             "</hdf5_layout>")


# -- unknown elements, XML attributes, values ---------------------------------------

def test_unknown_element_is_transparent():
    layout = load("<hdf5_layout>",
                  '<group name="e">',
                  "  <notes>",
                  '    <dataset name="d" source="detector"/>',
                  "  </notes>",
                  "</group></hdf5_layout>")
    assert "/e/d" in paths(layout)
    warned(layout, 4, "unknown element <notes> ignored (its content is read)")


def test_unknown_xml_attribute_is_ignored():
    layout = load("<hdf5_layout>",
                  '<group name="e" colour="blue"><dataset name="d" source="detector"/></group>',
                  "</hdf5_layout>")
    warned(layout, 3, '<group> XML attribute colour="blue" is not used')


def test_unknown_dataset_source_is_not_created():
    layout = load("<hdf5_layout><group name='e'>",
                  "<dataset name='d' source='detector'/>",
                  "<dataset name='x' source='camera'/>",
                  "</group></hdf5_layout>")
    ds = next(d for d in layout.iter_datasets() if d.name == "x")
    assert ds.source is None
    warned(layout, 4, 'source="camera" is not detector, ndattribute or constant')


def test_attribute_with_unknown_source_is_skipped():
    layout = load("<hdf5_layout><group name='e'>",
                  "<attribute name='v' source='attributes' value='3'/>",
                  "<attribute name='NX_class' source='constant' value='NXentry'/>",
                  "<dataset name='d' source='detector'/>",
                  "</group></hdf5_layout>")
    assert [a.name for a in layout.root.groups[0].attributes] == ["NX_class"]
    warned(layout, 3, 'attribute /e@v: source="attributes" is not constant or ndattribute')


def test_ndattribute_attribute_without_ndattribute_is_skipped():
    layout = load("<hdf5_layout><group name='e'>",
                  "<dataset name='d' source='detector'>",
                  "  <attribute name='target' source='ndattribute'/>",
                  "</dataset></group></hdf5_layout>")
    assert layout.detector_datasets()[0].attributes == ()
    warned(layout, 4, 'attribute /e/d@target: source="ndattribute" without ndattribute=')


def test_when_values_fall_back_to_adcore_defaults():
    layout = load("<hdf5_layout><group name='e'>",
                  "<dataset name='d' source='detector'>",
                  "  <attribute name='a' source='ndattribute' ndattribute='A' when='OnFileWrite'/>",
                  "</dataset>",
                  "<dataset name='w' source='ndattribute' ndattribute='W' when='OnFileWrite'/>",
                  "<dataset name='s' source='ndattribute' ndattribute='S' when='Sometimes'/>",
                  "</group></hdf5_layout>")
    assert layout.detector_datasets()[0].attributes[0].when is When.OPEN
    warned(layout, 4, 'when="OnFileWrite" is not OnFileOpen or OnFileClose: written at open')
    assert layout.place_ndattribute("W").when is When.FRAME  # documented, no warning
    assert not [w for w in layout.warnings if w.line == 6]
    assert layout.place_ndattribute("S").when is When.FRAME
    warned(layout, 7, 'when="Sometimes" is not OnFileOpen or OnFileClose: written every frame')


def test_booleans_are_exactly_true_as_in_adcore():
    layout = load("<hdf5_layout auto_ndattr_default='0'><group name='e' ndattr_default='1'>",
                  "<dataset name='a' source='detector'/>",
                  "<dataset name='b' source='detector' det_default='yes'/>",
                  "</group></hdf5_layout>")
    assert layout.auto_ndattr_default is True
    assert layout.ndattr_default_group() is None
    assert layout.default_detector().path == "/e/a"  # alphabetical, det_default ignored
    warned(layout, 2, 'auto_ndattr_default="0" is neither "true" nor "false"')
    warned(layout, 2, 'ndattr_default="1" is not "true": ignored')
    warned(layout, 4, 'det_default="yes" is not "true": ignored')


def test_constant_numbers_are_read_as_adcore_reads_them():
    assert parse_numbers("1, 2 3,x", "int") == ([1, 2, 3], "x")
    assert parse_numbers("1.5e3,-.5", "float") == ([1500.0, -0.5], "")
    assert parse_numbers("3000000000", "int") == ([], "3000000000")  # int32 overflow
    assert parse_constant("7", "int") == 7 and parse_constant("x", None) == "x"
    layout = load("<hdf5_layout><group name='e'>",
                  "<dataset name='d' source='detector'/>",
                  "<dataset name='partial' source='constant' value='1,x' type='int'/>",
                  "<dataset name='none' source='constant' value='abc' type='float'/>",
                  "<attribute name='t' source='constant' value='2' type='double'/>",
                  "</group></hdf5_layout>")
    by_name = {d.name: d for d in layout.iter_datasets()}
    assert by_name["partial"].source == "constant"
    assert parse_constant(by_name["partial"].value, "int") == 1
    warned(layout, 4, '"x" is not a int list; only 1 is written')
    assert by_name["none"].source is None  # not created
    warned(layout, 5, 'value "abc" holds no float: not written')
    assert layout.root.groups[0].attributes[0].type == "string"
    warned(layout, 6, 'type="double" is not int, float or string: written as a string')


# -- names and nesting ADCore gets wrong ----------------------------------------------

DUPLICATES = ("<hdf5_layout><group name='entry'>",                             # 2
              "  <group name='inst'><dataset name='data' source='detector'/></group>",
              "  <group name='inst'>",                                         # 4
              "    <attribute name='NX_class' source='constant' value='NXinstrument'/>",
              "    <dataset name='extra' source='constant' value='1' type='int'/>",
              "    <dataset name='data' source='constant' value='2' type='int'/>",  # 7
              "  </group>",
              "  <dataset name='inst' source='constant' value='3' type='int'/>",  # 9
              "  <group name='after'/>",
              "</group></hdf5_layout>")


def test_repeated_group_is_merged_and_later_elements_stay_in_place():
    layout = load(*DUPLICATES)
    assert paths(layout) == {"/", "/entry", "/entry/inst", "/entry/inst/data",
                             "/entry/inst/extra", "/entry/after"}
    inst = layout.root.groups[0].groups[0]
    assert [a.name for a in inst.attributes] == ["NX_class"]
    assert next(d for d in inst.datasets if d.name == "data").source == "detector"
    warned(layout, 4, "group /entry/inst appears again (first on line 3): its content is merged")
    warned(layout, 7, "/entry/inst/data is a dataset already (line 3)")
    warned(layout, 9, "/entry/inst is a group already (line 3)")


def test_repeated_names_write_a_valid_file(tmp_path):
    layout = load(*DUPLICATES)
    frame = make_frame(1)
    with NexusWriter(tmp_path / "d.h5", layout, frame, WriterOptions()) as writer:
        writer.write(frame)
    with h5py.File(tmp_path / "d.h5") as f:
        assert f["/entry/inst"].attrs["NX_class"] == b"NXinstrument"
        np.testing.assert_array_equal(f["/entry/inst/data"][()], frame.data)
        assert f["/entry/inst/extra"][()] == 1
        assert isinstance(f["/entry/after"], h5py.Group)


def test_nameless_group_is_transparent():
    layout = load("<hdf5_layout><group name='e'>",
                  "  <group ndattr_default='true'>",
                  "    <dataset name='d' source='detector'/>",
                  "  </group>",
                  "  <dataset name='c' source='constant' value='x'/>",
                  "</group></hdf5_layout>")
    assert paths(layout) == {"/", "/e", "/e/d", "/e/c"}
    warned(layout, 3, "<group> without name: ignored")


def test_names_hdf5_cannot_hold_are_skipped():
    layout = load("<hdf5_layout><group name='e'>",
                  "  <group name='a/b'><dataset name='x' source='detector'/></group>",
                  "  <dataset name='..' source='detector'/>",
                  "  <dataset name='d' source='detector'/>",
                  "</group></hdf5_layout>")
    assert paths(layout) == {"/", "/e", "/e/d"}
    warned(layout, 3, "group name 'a/b' cannot be an HDF5 name")
    warned(layout, 4, "dataset name '..' cannot be an HDF5 name")


def test_elements_outside_groups_are_ignored_as_in_adcore():
    layout = load("<hdf5_layout>",
                  "  <dataset name='early' source='detector'/>",
                  "  <group name='e'><dataset name='d' source='detector'/></group>",
                  "  <dataset name='late' source='detector'/>",
                  "  <hardlink name='l' target='/e/d'/>",
                  "  <attribute name='default' source='constant' value='e'/>",
                  "</hdf5_layout>")
    assert paths(layout) == {"/", "/e", "/e/d"}
    warned(layout, 3, "dataset 'early' before the first <group>: ignored")
    warned(layout, 5, "dataset 'late' outside any group")
    warned(layout, 6, "hard link 'l' outside any group")
    assert [a.name for a in layout.root.attributes] == ["default"]  # our extension


def test_dataset_content_that_adcore_cannot_hold_is_skipped():
    layout = load("<hdf5_layout><group name='e'>",
                  "  <dataset name='d' source='detector'>",
                  "    <dataset name='inner' source='constant' value='1'/>",
                  "    <hardlink name='l' target='/e'/>",
                  "  </dataset>",
                  "</group></hdf5_layout>")
    assert paths(layout) == {"/", "/e", "/e/d"}
    warned(layout, 4, "dataset 'inner' inside dataset /e/d")
    warned(layout, 5, "hard link 'l' inside a dataset")


def test_hard_links():
    layout = load("<hdf5_layout><group name='e'>",
                  "  <dataset name='d' source='detector'/>",
                  "  <hardlink name='rel' target='e/d'/>",
                  "  <hardlink name='d' target='/e/d'/>",
                  "  <hardlink name='x' target='/e/d'/>",
                  "  <dataset name='x' source='constant' value='1'/>",
                  "</group></hdf5_layout>")
    links = {h.name: h.target for h in layout.root.groups[0].hardlinks}
    assert links == {"rel": "/e/d"}  # relative targets start at the root, as in ADCore
    warned(layout, 5, "hard link /e/d: the name is used already (line 3)")
    warned(layout, 7, "/e/x is also a hard link (line 6): the link is not created")


def test_no_detector_dataset_warns_at_load():
    layout = load("<hdf5_layout><group name='e'/></hdf5_layout>")
    warned(layout, 2, "no source=\"detector\" dataset")


# -- where the user looks ---------------------------------------------------------------

def test_warnings_summary_fits_a_status_pv():
    layout = load("<xml><group name='e' a='1' b='2' c='3' d='4' e='5'>",
                  "<dataset name='d' source='detector'/></group></xml>")
    text = warnings_summary(layout.warnings)
    assert text.startswith("6 warnings: line 2: root element <xml>")
    assert len(text) <= 255 and text.endswith("(all: check-layout or the log)")
    assert warnings_summary(()) == ""


def test_schema_errors_are_advice_with_lines():
    text = HEAD + "<xml>\n<group name='e'><dataset name='d' source='detector'/></group>\n</xml>"
    load_layout(text)  # accepted
    errors = schema_errors(text)
    assert errors and errors[0].line == 2 and "element <xml>" in errors[0].message


def test_hard_link_name_taken_by_an_ndattribute_dataset_is_skipped(tmp_path):
    layout = load("<hdf5_layout><group name='e' ndattr_default='true'>",
                  "  <dataset name='d' source='detector'/>",
                  "  <hardlink name='Temp' target='/e/d'/>",
                  "</group></hdf5_layout>")
    frame = make_frame(1, attrs=[attr("Temp", 21.5)])
    with NexusWriter(tmp_path / "l.h5", layout, frame, WriterOptions()) as writer:
        writer.write(frame)
    assert any("hard link /e/Temp: the name is taken" in w for w in writer.warnings)
    with h5py.File(tmp_path / "l.h5") as f:
        assert f["/e/Temp"][()].tolist() == [21.5]  # the NDAttribute (ADCore: link fails)
