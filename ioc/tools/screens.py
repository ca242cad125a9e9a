"""Operator screens generated from the PV table: Phoebus (.bob), caQtDM (.ui), PyDM (.ui).

``python -m ioc.tools.screens [DIR]`` writes ``NDFileHDF5.bob``, ``NDFileHDF5.ui`` and
``NDFileHDF5_pydm.ui`` (default: ``opi/``).  Every widget's PV, type and format come
from ``ioc.plugin.pvtable``, so screens and IOC cannot drift (a test regenerates them and
compares with the committed files).  Macros: ``P`` and ``R`` (``$(P)$(R)`` for Phoebus
and caQtDM, ``${P}${R}`` for PyDM).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree as ET

from ..plugin.pvtable import BY_SUFFIX, EXTRA_DIMS, PV, Kind

# Long strings first, across the whole screen: paths and messages are what operators read
# most, and a real path (100+ characters) needs ~1000 px.  A "long" row is an entry with its
# readback below it (or a readback alone); a "pair" row holds two shorter strings.
LONG_ROWS: list[tuple] = [
    ("long", "File path", "FilePath"),
    ("pair", ("File name", "FileName"), ("Filename format", "FileTemplate")),
    ("long", "Last filename", "FullFileName_RBV"),
    ("long", "Layout XML", "XMLFileName"),
    ("long", "Attributes file", "NDAttributesFile"),
    ("pair", ("Attribute macros", "NDAttributesMacros"), ("Source prefix", "SourcePrefix")),
    ("long", "Write message", "WriteMessage"),
    ("long", "Layout message", "XMLErrorMsg_RBV"),
    ("long", "Attributes message", "NDAttributesMessage_RBV"),
    ("long", "Workers message", "WorkersMessage_RBV"),
    ("long", "Driver attr. message", "DriverAttributesMessage_RBV"),
]

# (title, rows); a row is (label, suffix): the widgets follow from the PV table.
SECTIONS: list[tuple[str, list[tuple[str, str]]]] = [
    ("File", [
        ("Path exists", "FilePathExists_RBV"), ("Create dir depth", "CreateDirectory"),
        ("Next file #", "FileNumber"), ("Auto increment", "AutoIncrement"),
        ("Temp suffix", "TempSuffix"),
    ]),
    ("Saving", [
        ("Write mode", "FileWriteMode"), ("Auto save", "AutoSave"), ("Save file", "WriteFile"),
        ("Capture", "Capture"), ("# Capture", "NumCapture"),
        ("# Captured", "NumCaptured_RBV"), ("Free buffer", "FreeCapture"),
        ("Lazy open", "LazyOpen"), ("Delete driver file", "DeleteDriverFile"),
        ("Write status", "WriteStatus"), ("Run time (s)", "RunTime"),
        ("I/O speed (Mbit/s)", "IOSpeed"),
    ]),
    ("Layout and attributes", [
        ("Layout valid", "XMLValid_RBV"), ("Attributes status", "NDAttributesStatus"),
        ("Store attributes", "StoreAttr"), ("Store performance", "StorePerform"),
    ]),
    ("Compression and chunking", [
        ("Compression", "Compression"), ("zlib level", "ZLevel"),
        ("Blosc compressor", "BloscCompressor"), ("Blosc shuffle", "BloscShuffle"),
        ("Blosc level", "BloscLevel"), ("SZip pixels", "SZipNumPixels"),
        ("N-bit precision", "NumDataBits"), ("N-bit offset", "DataBitsOffset"),
        ("Chunk size auto", "ChunkSizeAuto"), ("Chunk columns", "NumColChunks"),
        ("Chunk rows", "NumRowChunks"), ("Chunk size 2", "ChunkSize2"),
        ("Chunk frames", "NumFramesChunks"), ("Attribute chunk", "NDAttributeChunk"),
        ("Fill value", "FillValue"), ("Boundary align", "BoundaryAlign"),
        ("Boundary threshold", "BoundaryThreshold"), ("Flush every N frames", "NumFramesFlush"),
        ("SWMR supported", "SWMRSupported_RBV"), ("SWMR mode", "SWMRMode"),
        ("SWMR active", "SWMRActive_RBV"), ("SWMR flushes", "SWMRCbCounter_RBV"),
        ("Flush now", "FlushNow"),
    ]),
    ("Plugin", [
        ("Plugin type", "PluginType_RBV"), ("ADCore version", "ADCoreVersion_RBV"),
        ("Driver version", "DriverVersion_RBV"), ("Port", "PortName_RBV"),
        ("Array port", "NDArrayPort"), ("Array address", "NDArrayAddress"),
        ("Callbacks", "EnableCallbacks"), ("Min. time (s)", "MinCallbackTime"),
        ("Array callbacks", "ArrayCallbacks"), ("Array counter", "ArrayCounter"),
        ("Array rate (Hz)", "ArrayRate_RBV"), ("Queue size", "QueueSize"),
        ("Queue free", "QueueFree"), ("Dropped arrays", "DroppedArrays"),
        ("Execution (ms)", "ExecutionTime_RBV"), ("Process plugin", "ProcessPlugin"),
    ]),
    ("Last array", [
        ("# dimensions", "NDimensions_RBV"), ("Size 0", "ArraySize0_RBV"),
        ("Size 1", "ArraySize1_RBV"), ("Size 2", "ArraySize2_RBV"),
        ("Data type", "DataType_RBV"), ("Color mode", "ColorMode_RBV"),
        ("Unique ID", "UniqueId_RBV"), ("Time stamp", "TimeStamp_RBV"),
    ]),
    ("Source (nexus-writer-ioc)", [
        ("Connection", "SourceConnected_RBV"), ("Frames skipped", "SourceSkipped_RBV"),
        ("Duplicates", "SourceDuplicates_RBV"), ("Invalid frames", "InvalidFrames_RBV"),
        ("Writer workers", "Workers_RBV"),
        ("Missing frames", "MissingFrames_RBV"),
        ("Writer version", "WriterVersion_RBV"),
    ]),
]
# Momentary actions: a button that writes 1 (Capture gets Start and Stop).
ACTIONS = {"WriteFile": "Save", "FreeCapture": "Free", "FlushNow": "Flush",
           "ProcessPlugin": "Process"}
COLUMNS = [[0, 1, 2], [4, 5], [3, 6]]  # section indices per screen column

# The extra dimensions and positions (ADCore: NDFileHDF5_ExtraDims, NDFileHDF5_Positions):
# the settings in one row, then one row per dimension.
DIMENSION_SETTINGS = [("# extra dims", "NumExtraDims"), ("Dim. attr. datasets",
                                                         "DimAttDatasets"),
                      ("Position mode", "PositionMode")]
DIMENSION_COLUMNS = [("Size", "ExtraDimSize{}", 70), ("Chunk", "ExtraDimChunk{}", 70),
                     ("Name", "ExtraDimName{}_RBV", 140),
                     ("Index attribute", "PosNameDim{}", 150),
                     ("Index dataset", "PosIndexDim{}", 150)]
DIM_LABEL_W = 90

# Fonts the widths are made for: Qt screens set theirs (caQtDM: no font scaling);
# Phoebus uses its default font, Liberation Sans 14 px.
FONT_FAMILY, QT_POINT_SIZE, PHOEBUS_PIXEL_SIZE = "Liberation Sans", 10, 14

ROW_H, PITCH, GAP, TITLE_H = 20, 24, 6, 26
LABEL_W, SET_W, RBV_W = 175, 110, 124
COLUMN_W = LABEL_W + SET_W + RBV_W + 2 * GAP
MARGIN, COLUMN_GAP, HEADER_H = 10, 12, 40
WIDTH = 2 * MARGIN + 3 * COLUMN_W + 2 * COLUMN_GAP
LONG_W = WIDTH - 2 * MARGIN - LABEL_W - GAP  # a path or message: ~1100 px
HALF_W = (WIDTH - 2 * MARGIN - COLUMN_GAP) // 2
HALF_FIELD_W = (HALF_W - LABEL_W - 2 * GAP) // 2


@dataclass
class Widget:
    kind: str  # title | heading | label | entry | update | combo | button
    x: int
    y: int
    w: int
    h: int
    text: str = ""
    pv: PV | None = None
    value: int = 1


def widgets_for(suffix: str, x: int, y: int, set_w: int = SET_W,
                rbv_w: int = RBV_W) -> list[Widget]:
    """The setpoint and readback widgets of one row (a readback alone spans both)."""
    pv = BY_SUFFIX[suffix]
    out: list[Widget] = []
    set_x = x
    rbv_x = x + set_w + GAP
    rbv = BY_SUFFIX.get(f"{suffix}_RBV")
    if suffix == "Capture":
        half = (set_w - GAP) // 2
        out.append(Widget("button", set_x, y, half, ROW_H, "Start", pv, 1))
        out.append(Widget("button", set_x + half + GAP, y, half, ROW_H, "Stop", pv, 0))
    elif suffix in ACTIONS:
        out.append(Widget("button", set_x, y, set_w, ROW_H, ACTIONS[suffix], pv, 1))
    elif pv.writable:
        kind = "combo" if pv.kind is Kind.ENUM else "entry"
        out.append(Widget(kind, set_x, y, set_w, ROW_H, pv=pv))
        if rbv is None and pv.kind is not Kind.ENUM:
            rbv = pv  # one PV both ways (e.g. NDAttributesFile): its value as readback
    else:
        return [Widget("update", set_x, y, set_w + GAP + rbv_w, ROW_H, pv=pv)]
    if rbv is not None:
        out.append(Widget("update", rbv_x, y, rbv_w, ROW_H, pv=rbv))
    return out


def _long_rows(widgets: list[Widget], y: int) -> int:
    x_field = MARGIN + LABEL_W + GAP
    for row in LONG_ROWS:
        if row[0] == "pair":
            for half, (label, suffix) in enumerate(row[1:]):
                x = MARGIN + half * (HALF_W + COLUMN_GAP)
                widgets.append(Widget("label", x, y, LABEL_W, ROW_H, label))
                widgets.extend(widgets_for(suffix, x + LABEL_W + GAP, y, HALF_FIELD_W,
                                           HALF_FIELD_W))
            y += PITCH
            continue
        _, label, suffix = row
        pv = BY_SUFFIX[suffix]
        widgets.append(Widget("label", MARGIN, y, LABEL_W, ROW_H, label))
        if pv.writable:  # entry, then its readback below it (as ADCore's screens)
            widgets.append(Widget("entry", x_field, y, LONG_W, ROW_H, pv=pv))
            y += PITCH
            pv = BY_SUFFIX.get(f"{suffix}_RBV", pv)
        widgets.append(Widget("update", x_field, y, LONG_W, ROW_H, pv=pv))
        y += PITCH
    return y


def _dimension_rows(widgets: list[Widget], y: int) -> int:
    for column, (label, suffix) in enumerate(DIMENSION_SETTINGS):
        x = MARGIN + column * (COLUMN_W + COLUMN_GAP)
        widgets.append(Widget("label", x, y, LABEL_W, ROW_H, label))
        widgets.extend(widgets_for(suffix, x + LABEL_W + GAP, y))
    y += PITCH

    def spans():  # (title, pattern, field width, x, span) of each column
        x = MARGIN + DIM_LABEL_W + GAP
        for title, pattern, width in DIMENSION_COLUMNS:
            span = width if BY_SUFFIX[pattern.format("X")].writable is False \
                else 2 * width + GAP
            yield title, pattern, width, x, span
            x += span + GAP

    widgets.append(Widget("label", MARGIN, y, DIM_LABEL_W, ROW_H, "Dimension"))
    for title, _, _, x, span in spans():
        widgets.append(Widget("label", x, y, span, ROW_H, title))
    y += PITCH
    for dim in EXTRA_DIMS:
        widgets.append(Widget("label", MARGIN, y, DIM_LABEL_W, ROW_H, dim))
        for _, pattern, width, x, span in spans():
            suffix = pattern.format(dim)
            if suffix not in BY_SUFFIX:  # there is no ExtraDimChunkN (as in ADCore)
                continue
            if BY_SUFFIX[suffix].writable:
                widgets.extend(widgets_for(suffix, x, y, width, width))
            else:
                widgets.append(Widget("update", x, y, span, ROW_H, pv=BY_SUFFIX[suffix]))
        y += PITCH
    return y


def _heading(widgets: list[Widget], x: int, y: int, w: int, text: str) -> int:
    widgets.append(Widget("heading", x, y, w, TITLE_H - 4, text))
    return y + TITLE_H


def layout() -> tuple[list[Widget], int, int]:
    widgets: list[Widget] = [Widget("title", MARGIN, 8, WIDTH - 2 * MARGIN, 26,
                                    "NDFileHDF5 (nexus-writer-ioc)  $(P)$(R)")]
    full = WIDTH - 2 * MARGIN
    y = _heading(widgets, MARGIN, HEADER_H, full, "Files, layout and messages")
    y = _long_rows(widgets, y) + 12
    top, bottom = y, y
    for column, sections in enumerate(COLUMNS):
        x = MARGIN + column * (COLUMN_W + COLUMN_GAP)
        y = top
        for index in sections:
            title, rows = SECTIONS[index]
            y = _heading(widgets, x, y, COLUMN_W, title)
            for label, suffix in rows:
                widgets.append(Widget("label", x, y, LABEL_W, ROW_H, label))
                widgets.extend(widgets_for(suffix, x + LABEL_W + GAP, y))
                y += PITCH
            y += 12
        bottom = max(bottom, y)
    y = _heading(widgets, MARGIN, bottom, full, "Extra dimensions and positions")
    y = _dimension_rows(widgets, y)
    return widgets, WIDTH, y + MARGIN


def _sub(parent: ET.Element, tag: str, text: object = None, **attrib) -> ET.Element:
    element = ET.SubElement(parent, tag, attrib)
    if text is not None:
        element.text = str(text)
    return element


def _pretty(root: ET.Element) -> str:
    ET.indent(root, space="  ")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


# -- Phoebus display builder ---------------------------------------------------------

def phoebus() -> str:
    widgets, width, height = layout()
    root = ET.Element("display", version="2.0.0")
    _sub(root, "name", "NDFileHDF5 $(P)$(R)")
    _sub(root, "width", width)
    _sub(root, "height", height)
    for n, w in enumerate(widgets):
        kind = {"title": "label", "heading": "label", "label": "label", "entry": "textentry",
                "update": "textupdate", "combo": "combo", "button": "action_button"}[w.kind]
        version = "3.0.0" if kind in ("textentry", "action_button") else "2.0.0"
        element = _sub(root, "widget", type=kind, version=version)
        _sub(element, "name", f"{kind}_{n}")
        if w.kind in ("title", "heading", "label"):
            _sub(element, "text", w.text)
            if w.kind != "label":
                font = _sub(element, "font")
                _sub(font, "font", family="Liberation Sans", style="BOLD",
                     size="16" if w.kind == "title" else "14")
        for tag, value in (("x", w.x), ("y", w.y), ("width", w.w), ("height", w.h)):
            _sub(element, tag, value)
        if w.pv is None:
            continue
        name = f"$(P)$(R){w.pv.suffix}"
        if kind == "action_button":
            _sub(element, "text", w.text)
            actions = _sub(_sub(element, "actions"), "action", type="write_pv")
            _sub(actions, "pv_name", name)
            _sub(actions, "value", w.value)
            _sub(actions, "description", w.text)
            continue
        _sub(element, "pv_name", name)
        if kind in ("textentry", "textupdate"):
            _sub(element, "format", 6 if w.pv.kind in (Kind.CHAR, Kind.STRING) else 1)
            _sub(element, "show_units", "false")
        if kind == "textupdate":
            _sub(element, "border_alarm_sensitive", "true")
    return _pretty(root)


# -- caQtDM ----------------------------------------------------------------------------

def _geometry(parent: ET.Element, w: Widget) -> None:
    rect = _sub(_sub(parent, "property", name="geometry"), "rect")
    for tag, value in (("x", w.x), ("y", w.y), ("width", w.w), ("height", w.h)):
        _sub(rect, tag, value)


def _prop(parent: ET.Element, name: str, kind: str, value: object) -> None:
    _sub(_sub(parent, "property", name=name), kind, value)


def _qt_font(parent: ET.Element) -> None:
    """The font the widths are made for; children inherit it."""
    font = _sub(_sub(parent, "property", name="font"), "font")
    _sub(font, "family", FONT_FAMILY)
    _sub(font, "pointsize", QT_POINT_SIZE)


def caqtdm() -> str:
    widgets, width, height = layout()
    root = ET.Element("ui", version="4.0")
    _sub(root, "class", "MainWindow")
    window = _sub(root, "widget", **{"class": "QMainWindow", "name": "MainWindow"})
    _geometry(window, Widget("window", 0, 0, width, height))
    _prop(window, "windowTitle", "string", "NDFileHDF5 $(P)$(R)")
    _qt_font(window)
    central = _sub(window, "widget", **{"class": "QWidget", "name": "centralWidget"})
    for n, w in enumerate(widgets):
        cls = {"title": "caLabel", "heading": "caLabel", "label": "caLabel",
               "entry": "caTextEntry", "update": "caLineEdit", "combo": "caMenu",
               "button": "caMessageButton"}[w.kind]
        element = _sub(central, "widget", **{"class": cls, "name": f"{cls}_{n}"})
        _geometry(element, w)
        if w.kind in ("title", "heading", "label"):
            _prop(element, "text", "string", w.text)
            # caQtDM scales label fonts to their box by default: keep the font
            _prop(element, "fontScaleMode", "enum", "ESimpleLabel::None")
            continue
        _prop(element, "channel", "string", f"$(P)$(R){w.pv.suffix}")
        if cls == "caMessageButton":
            _prop(element, "label", "string", w.text)
            _prop(element, "pressMessage", "string", str(w.value))
        elif cls in ("caTextEntry", "caLineEdit"):
            string = w.pv.kind in (Kind.CHAR, Kind.STRING)
            _prop(element, "formatType", "enum", "string" if string else "decimal")
            _prop(element, "colorMode", "enum", "caLineEdit::Alarm" if cls == "caLineEdit"
                  else "caLineEdit::Static")
            # by default caQtDM shrinks the font until the text fits: a long path would
            # become unreadable; the widths are made for the font instead
            _prop(element, "fontScaleMode", "enum", "caLineEdit::None")
    return _pretty(root)


# -- PyDM --------------------------------------------------------------------------------

PYDM_WIDGETS = {"PyDMLabel": "pydm.widgets.label", "PyDMLineEdit": "pydm.widgets.line_edit",
                "PyDMEnumComboBox": "pydm.widgets.enum_combo_box",
                "PyDMPushButton": "pydm.widgets.pushbutton"}


def pydm() -> str:
    widgets, width, height = layout()
    root = ET.Element("ui", version="4.0")
    _sub(root, "class", "Form")
    form = _sub(root, "widget", **{"class": "QWidget", "name": "Form"})
    _geometry(form, Widget("window", 0, 0, width, height))
    _prop(form, "windowTitle", "string", "NDFileHDF5 ${P}${R}")
    _qt_font(form)
    for n, w in enumerate(widgets):
        cls = {"title": "QLabel", "heading": "QLabel", "label": "QLabel",
               "entry": "PyDMLineEdit", "update": "PyDMLabel", "combo": "PyDMEnumComboBox",
               "button": "PyDMPushButton"}[w.kind]
        element = _sub(form, "widget", **{"class": cls, "name": f"{cls}_{n}"})
        _geometry(element, w)
        if w.kind in ("title", "heading", "label"):
            text = w.text.replace("$(P)$(R)", "${P}${R}")
            _prop(element, "text", "string",
                  f"<b>{text}</b>" if w.kind != "label" else text)
            continue
        _prop(element, "channel", "string", f"ca://${{P}}${{R}}{w.pv.suffix}")
        _prop(element, "toolTip", "string", w.pv.suffix)
        if cls == "PyDMPushButton":
            _prop(element, "text", "string", w.text)
            _prop(element, "pressValue", "string", str(w.value))
        elif cls in ("PyDMLabel", "PyDMLineEdit") and w.pv.kind in (Kind.CHAR, Kind.STRING):
            _prop(element, "displayFormat", "enum", "PyDMLabel::String" if cls == "PyDMLabel"
                  else "PyDMLineEdit::String")
    custom = _sub(root, "customwidgets")
    for cls, header in PYDM_WIDGETS.items():
        entry = _sub(custom, "customwidget")
        _sub(entry, "class", cls)
        _sub(entry, "extends", "QLabel" if cls == "PyDMLabel" else "QWidget")
        _sub(entry, "header", header)
    return _pretty(root)


SCREENS = {"NDFileHDF5.bob": phoebus, "NDFileHDF5.ui": caqtdm, "NDFileHDF5_pydm.ui": pydm}


def write_screens(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, make in SCREENS.items():
        path = directory / name
        path.write_text(make())
        paths.append(path)
    return paths


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("opi")
    for written in write_screens(target):
        print(written)
