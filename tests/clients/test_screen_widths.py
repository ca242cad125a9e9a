"""Screens show what operators read whole: widths measured from the generated files.

Each format's widgets are read from opi/ (geometry, PV, text) and measured with Qt's font
metrics in the font the screen is made for (Liberation Sans: Qt screens set it, Phoebus
uses it by default; where it is missing Qt measures a wider fallback, DejaVu Sans).  A
120-character path and a 100-character message fit their widgets, labels and enum
strings fit theirs."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest

from ioc.plugin.pvtable import BY_SUFFIX, Kind
from ioc.tools.screens import FONT_FAMILY, PHOEBUS_PIXEL_SIZE, QT_POINT_SIZE, SCREENS

OPI = Path(__file__).resolve().parents[2] / "opi"
PATH_120 = ("/data/2026-11/13SIM1/proposal_31337_nexus_writer/sample_B7_holder_3/"
            "scan_0042_temperature_series_300K/mrinal_00000042.h5")
MESSAGE_100 = ("Error opening file /data/2026-11/13SIM1/proposal_31337/scan_0042/"
               "mrinal_000042.h5: Permission denied")
PATHS = {"FilePath", "FilePath_RBV", "FullFileName_RBV", "XMLFileName", "XMLFileName_RBV",
         "NDAttributesFile"}
MESSAGES = {"WriteMessage", "XMLErrorMsg_RBV", "NDAttributesMessage_RBV"}
MACROS = {"P": "13SIM1:", "R": "HDF1:"}
PAD = {"update": 8, "entry": 12, "combo": 28, "label": 4}  # frames, margins, a combo's arrow


def test_the_samples_are_as_long_as_the_issue_says():
    assert len(PATH_120) == 120 and len(MESSAGE_100) == 100


@dataclass
class Shown:
    kind: str  # label | update | entry | combo | button
    width: int
    text: str = ""
    suffix: str = ""
    bold: bool = False
    pixel_size: int | None = None


def _substitute(text: str) -> str:
    return re.sub(r"\$[({](\w+)[)}]", lambda m: MACROS[m.group(1)], text)


def _bob(root) -> list[Shown]:
    kinds = {"label": "label", "textupdate": "update", "textentry": "entry", "combo": "combo",
             "action_button": "button"}
    shown = []
    for widget in root.iter("widget"):
        kind = kinds[widget.get("type")]
        font = widget.find("font/font")
        pv = widget.findtext("pv_name") or widget.findtext("actions/action/pv_name") or ""
        shown.append(Shown(kind, int(widget.findtext("width")),
                           _substitute(widget.findtext("text") or ""),
                           pv.replace("$(P)$(R)", ""),
                           bold=font is not None and font.get("style") == "BOLD",
                           pixel_size=int(float(font.get("size"))) if font is not None
                           else PHOEBUS_PIXEL_SIZE))
    return shown


def _ui(root) -> list[Shown]:
    kinds = {"caLabel": "label", "QLabel": "label", "caLineEdit": "update",
             "PyDMLabel": "update", "caTextEntry": "entry", "PyDMLineEdit": "entry",
             "caMenu": "combo", "PyDMEnumComboBox": "combo", "caMessageButton": "button",
             "PyDMPushButton": "button"}
    shown = []
    for widget in root.iter("widget"):
        kind = kinds.get(widget.get("class"))
        if kind is None:
            continue
        props = {p.get("name"): p for p in widget.findall("property")}
        text = props["text"].findtext("string") if "text" in props else ""
        bold = text.startswith("<b>")
        text = re.sub(r"</?b>", "", _substitute(text))
        channel = props["channel"].findtext("string") if "channel" in props else ""
        suffix = re.sub(r"^(ca://)?\$[({]P[)}]\$[({]R[)}]", "", channel)
        shown.append(Shown(kind, int(props["geometry"].findtext("rect/width")), text,
                           suffix, bold=bold))
    return shown


@pytest.fixture(scope="module")
def qt():
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    widgets = pytest.importorskip("PyQt5.QtWidgets")
    return widgets.QApplication.instance() or widgets.QApplication([])


def _metrics(shown: Shown, screen: str):
    from PyQt5.QtGui import QFont, QFontMetrics

    font = QFont(FONT_FAMILY)
    if screen.endswith(".bob"):
        font.setPixelSize(shown.pixel_size or PHOEBUS_PIXEL_SIZE)
    else:
        font.setPointSize(QT_POINT_SIZE + (2 if shown.bold else 0))
    font.setBold(shown.bold)
    return QFontMetrics(font)


def _screen(name: str) -> list[Shown]:
    root = ET.parse(OPI / name).getroot()
    return _bob(root) if name.endswith(".bob") else _ui(root)


@pytest.mark.parametrize("name", sorted(SCREENS))
def test_paths_and_messages_are_not_cut(qt, name):
    shown = _screen(name)
    checked = set()
    for widget in shown:
        if widget.suffix in PATHS | MESSAGES and widget.kind in ("update", "entry"):
            sample = PATH_120 if widget.suffix in PATHS else MESSAGE_100
            needed = _metrics(widget, name).horizontalAdvance(sample) + PAD[widget.kind]
            assert widget.width >= max(needed, 450), \
                f"{name}: {widget.suffix} is {widget.width} px, needs {needed}"
            checked.add(widget.suffix)
    assert checked == PATHS | MESSAGES, f"{name}: not shown: {PATHS | MESSAGES - checked}"


@pytest.mark.parametrize("name", sorted(SCREENS))
def test_labels_and_enum_strings_are_not_cut(qt, name):
    problems = []
    for widget in _screen(name):
        metrics = _metrics(widget, name)
        if widget.kind in ("label", "button") and widget.text:
            needed = metrics.horizontalAdvance(widget.text) + PAD["label"]
            if widget.width < needed:
                problems.append(f"{widget.text!r}: {widget.width} < {needed}")
        spec = BY_SUFFIX.get(widget.suffix)
        if spec is not None and spec.kind is Kind.ENUM and widget.kind in ("update", "combo"):
            needed = max(metrics.horizontalAdvance(s) for s in spec.enum_strings) + \
                PAD[widget.kind]
            if widget.width < needed:
                problems.append(f"{widget.suffix} {spec.enum_strings}: {widget.width} < "
                                f"{needed}")
    assert not problems, f"{name}: " + "; ".join(problems)


def test_qt_screens_keep_their_font():
    """caQtDM scales fonts to the widget unless told not to; both Qt screens set the
    font the widths are made for."""
    for name in ("NDFileHDF5.ui", "NDFileHDF5_pydm.ui"):
        root = ET.parse(OPI / name).getroot()
        top = root.find("widget")
        font = top.find("property[@name='font']/font")
        assert font.findtext("family") == FONT_FAMILY
        assert int(font.findtext("pointsize")) == QT_POINT_SIZE
    root = ET.parse(OPI / "NDFileHDF5.ui").getroot()
    for widget in root.iter("widget"):
        if widget.get("class") in ("caLabel", "caLineEdit", "caTextEntry"):
            mode = widget.find("property[@name='fontScaleMode']/enum")
            assert mode is not None and mode.text.endswith("::None"), widget.get("name")


def test_extra_dimension_and_position_fields_are_shown():
    names = {w.suffix for w in _screen("NDFileHDF5.bob")}
    for dim in ("N", "X", "Y", "3", "9"):
        assert {f"ExtraDimSize{dim}", f"ExtraDimSize{dim}_RBV", f"ExtraDimName{dim}_RBV",
                f"PosNameDim{dim}", f"PosNameDim{dim}_RBV", f"PosIndexDim{dim}",
                f"PosIndexDim{dim}_RBV"} <= names
    assert {"NumExtraDims", "DimAttDatasets", "PositionMode", "ExtraDimChunkX",
            "ExtraDimChunk9_RBV"} <= names
