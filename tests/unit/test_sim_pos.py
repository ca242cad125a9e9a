"""The simulator's NDPosPlugin stand-in: the position list and ``processCallbacks`` as in
ADCore's NDPosPlugin.cpp / NDPosPluginFileReader.cpp (the PVs are tested end to end in
``tests/system/test_position_scan.py``)."""

from __future__ import annotations

import pytest
from helpers import attr, make_frame

from ioc.ndarray import NDAttrSource, NDAttrType
from ioc.tools.sim_pos import (
    DISCARD,
    KEEP,
    PositionLabeller,
    PositionListError,
    labelled,
    read_position_list,
)

# PositionLabellerPart._make_xml's form
PYMALCOLM_XML = ('<?xml version="1.0" ?><pos_layout><dimensions><dimension name="d0" />'
                 '<dimension name="d1" /></dimensions><positions><position d0="0" d1="0" />'
                 '<position d0="0" d1="1" /><position d0="1" d1="1" /></positions></pos_layout>')


def labeller(positions, mode=DISCARD, **settings) -> PositionLabeller:
    lab = PositionLabeller()
    for name, value in settings.items():
        setattr(lab, name, value)
    lab.set_mode(mode)
    lab.append([{"x": float(p)} for p in positions])
    lab.start(True)
    return lab


def run(lab: PositionLabeller, uids) -> list[float | None]:
    """The x label each frame gets (None: not passed on)."""
    out = []
    for uid in uids:
        labels = lab.label(uid, {})
        out.append(None if labels is None else labels["x"])
    return out


def test_inline_list_as_pymalcolm_makes_it():
    assert read_position_list(PYMALCOLM_XML) == [
        {"d0": 0.0, "d1": 0.0}, {"d0": 0.0, "d1": 1.0}, {"d0": 1.0, "d1": 1.0}]


def test_file_list_and_the_reader_rules(tmp_path):
    path = tmp_path / "positions.xml"
    path.write_text(
        '<pos_layout><dimensions><dimension name="y"/><dimension name="x"/>'
        '<dimension nom="ignored"/></dimensions><positions>'
        '<position y="1" x="2"/>'
        '<position y="1"/>'                      # x missing: skipped
        '<position y="one" x="2"/>'              # not a number: skipped
        '<position y=" 2.5e1" x="3abc"/>'        # a leading number is taken, as C++ streams do
        '<position/>'                            # no attributes: skipped
        '</positions></pos_layout>')
    positions = read_position_list(str(path))
    assert positions == [{"x": 2.0, "y": 1.0}, {"x": 3.0, "y": 25.0}]
    assert list(positions[0]) == ["x", "y"]  # a std::map: sorted by name


@pytest.mark.parametrize("spec, message", [
    ("/nonexistent/positions.xml", "No such file"),
    ("<pos_layout><positions>", "XML syntax error"),
    ("", "(empty)"),
    ('<pos_layout xmlns="x"><positions/></pos_layout>', "No such file"),  # not inline for ADCore
])
def test_unreadable_lists_are_refused(spec, message):
    with pytest.raises(PositionListError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_position_list(spec)


def test_discard_mode_uses_each_position_once_then_stops():
    lab = labeller([10, 11, 12])
    assert run(lab, [1, 2]) == [10.0, 11.0]
    assert len(lab.positions) == 1 and lab.running and lab.expected_id == 3
    assert run(lab, [3]) == [12.0]
    assert not lab.running  # the last position went with frame 3, which is still passed on
    assert run(lab, [4]) == [None]


def test_keep_mode_advances_the_index_and_reset_rewinds():
    lab = labeller([10, 11], mode=KEEP)
    assert run(lab, [1, 2]) == [10.0, 11.0]
    assert len(lab.positions) == 2 and lab.index == 2
    assert lab.running  # ADCore notices the end at the next frame
    assert run(lab, [3]) == [None] and not lab.running
    lab.reset()
    lab.start(True)
    assert run(lab, [1, 2]) == [10.0, 11.0]


def test_missing_frames_skip_their_positions():
    lab = labeller([10, 11, 12, 13, 14])
    assert run(lab, [1, 4, 5]) == [10.0, 13.0, 14.0]
    assert lab.missing == 2 and lab.duplicate == 0


def test_missing_frames_in_keep_mode():
    lab = labeller([10, 11, 12, 13], mode=KEEP)
    assert run(lab, [1, 3]) == [10.0, 12.0]
    assert lab.index == 3 and lab.missing == 1


def test_a_gap_past_the_last_position_stops_without_passing_the_frame():
    lab = labeller([10, 11])
    assert run(lab, [1, 7]) == [10.0, None]
    assert not lab.running and lab.missing == 1


def test_duplicates_are_dropped_without_using_a_position():
    lab = labeller([10, 11])
    assert run(lab, [1, 1, 2]) == [10.0, None, 11.0]
    assert lab.duplicate == 1


def test_id_start_and_difference():
    lab = labeller([10, 11, 12], id_start=5, id_difference=2)
    assert run(lab, [3, 4, 5, 6, 7, 9]) == [None, None, 10.0, None, 11.0, 12.0]
    assert lab.duplicate == 3 and lab.expected_id == 11


def test_not_running_passes_nothing_and_running_rearms_the_expected_id():
    lab = labeller([10, 11, 12])
    lab.start(False)
    assert run(lab, [1]) == [None]
    lab.id_start = 7
    lab.start(True)
    assert lab.expected_id == 7
    assert run(lab, [7]) == [10.0]


def test_running_with_an_empty_list_stops_at_the_first_frame():
    lab = labeller([])
    assert lab.running
    assert run(lab, [1]) == [None] and not lab.running


def test_mode_change_and_delete_reset_the_index():
    lab = labeller([10, 11, 12], mode=KEEP)
    run(lab, [1, 2])
    lab.set_mode(KEEP)
    assert lab.index == 0
    lab.delete()
    assert len(lab.positions) == 0 and lab.current == ""


def test_id_name_reads_the_frame_attribute():
    lab = labeller([10, 11], id_name="count")
    assert lab.label(50, {"count": attr("count", 1, NDAttrType.Int32)}) == {"x": 10.0}
    assert lab.label(51, {"count": attr("count", 2.0)}) == {"x": 11.0}
    lab = labeller([10, 11], id_name="count")
    assert lab.label(1, {}) is None and not lab.running  # the attribute is missing


def test_position_text_and_attributes_as_ndposplugin_attaches_them():
    lab = PositionLabeller()
    lab.append(read_position_list(PYMALCOLM_XML))
    lab.start(True)
    labels = lab.label(1, {})
    labels = lab.label(2, {})
    assert lab.current == "[d0=0,d1=1]"
    frame = labelled(make_frame(2, attrs=[attr("d0", "old", NDAttrType.String)]), labels)
    d0 = frame.attributes["d0"]
    assert (d0.value, d0.dtype, d0.description, d0.source, d0.source_type) == (
        0.0, NDAttrType.Float64, "Position of NDArray", "NDPosPlugin", NDAttrSource.DRIVER)


def test_positions_held_are_bounded(monkeypatch):
    import ioc.tools.sim_pos as sim_pos

    monkeypatch.setattr(sim_pos, "MAX_POSITIONS", 3)
    lab = labeller([1, 2])
    with pytest.raises(PositionListError, match="more than 3 positions"):
        lab.append([{"x": 3.0}, {"x": 4.0}])
    assert len(lab.positions) == 2  # the refused load added nothing
