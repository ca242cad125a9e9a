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

# (title, rows); a row is (label, suffix): the widgets follow from the PV table.
SECTIONS: list[tuple[str, list[tuple[str, str]]]] = [
    ("File", [
        ("File path", "FilePath"), ("Path exists", "FilePathExists_RBV"),
        ("Create dir depth", "CreateDirectory"), ("File name", "FileName"),
        ("Next file #", "FileNumber"), ("Auto increment", "AutoIncrement"),
        ("Filename format", "FileTemplate"), ("Last filename", "FullFileName_RBV"),
        ("Temp suffix", "TempSuffix"),
    ]),
    ("Saving", [
        ("Write mode", "FileWriteMode"), ("Auto save", "AutoSave"), ("Save file", "WriteFile"),
        ("Capture", "Capture"), ("# Capture", "NumCapture"),
        ("# Captured", "NumCaptured_RBV"), ("Free buffer", "FreeCapture"),
        ("Lazy open", "LazyOpen"), ("Delete driver file", "DeleteDriverFile"),
        ("Write status", "WriteStatus"), ("Write message", "WriteMessage"),
        ("Run time (s)", "RunTime"), ("I/O speed (Mbit/s)", "IOSpeed"),
    ]),
    ("HDF5 layout and attributes", [
        ("Layout XML", "XMLFileName"), ("Layout valid", "XMLValid_RBV"),
        ("Layout message", "XMLErrorMsg_RBV"), ("Attributes file", "NDAttributesFile"),
        ("Attribute macros", "NDAttributesMacros"), ("Attributes status", "NDAttributesStatus"),
        ("Attributes message", "NDAttributesMessage_RBV"), ("Store attributes", "StoreAttr"),
        ("Store performance", "StorePerform"),
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
        ("Source prefix", "SourcePrefix"), ("Connection", "SourceConnected_RBV"),
        ("Frames skipped", "SourceSkipped_RBV"), ("Duplicates", "SourceDuplicates_RBV"),
        ("Invalid frames", "InvalidFrames_RBV"), ("Writer workers", "Workers_RBV"),
        ("Workers", "WorkersMessage_RBV"), ("Missing frames", "MissingFrames_RBV"),
        ("Driver attributes", "DriverAttributesMessage_RBV"),
        ("Writer version", "WriterVersion_RBV"),
    ]),
    # ADCore's NDFileHDF5_ExtraDims and NDFileHDF5_Positions screens
    ("Extra dimensions", [("# extra dims", "NumExtraDims"), ("Attr. datasets too", "DimAttDatasets")]
     + [(f"Size {d}", f"ExtraDimSize{d}") for d in EXTRA_DIMS]
     + [(f"Chunk {d}", f"ExtraDimChunk{d}") for d in EXTRA_DIMS[1:]]
     + [(f"Name {d}", f"ExtraDimName{d}_RBV") for d in EXTRA_DIMS]),
    ("Positions", [("Position mode", "PositionMode")]
     + [(f"Index attr. {d}", f"PosNameDim{d}") for d in EXTRA_DIMS]
     + [(f"Index dataset {d}", f"PosIndexDim{d}") for d in EXTRA_DIMS]),
]
# Momentary actions: a button that writes 1 (Capture gets Start and Stop).
ACTIONS = {"WriteFile": "Save", "FreeCapture": "Free", "FlushNow": "Flush",
           "ProcessPlugin": "Process"}
COLUMNS = [[0, 1, 6], [2, 3], [4, 5], [7], [8]]  # section indices per screen column

ROW_H, LABEL_W, SET_W, RBV_W, GAP = 22, 150, 150, 180, 6
TITLE_H = 26
COLUMN_W = LABEL_W + SET_W + RBV_W + 4 * GAP
HEADER_H = 40


@dataclass
class Widget:
    kind: str  # label | entry | update | combo | button
    x: int
    y: int
    w: int
    h: int
    text: str = ""
    pv: PV | None = None
    value: int = 1


def widgets_for(suffix: str, x: int, y: int) -> list[Widget]:
    """The setpoint and readback widgets of one row."""
    pv = BY_SUFFIX[suffix]
    out: list[Widget] = []
    set_x, rbv_x = x + LABEL_W + GAP, x + LABEL_W + SET_W + 2 * GAP
    rbv = BY_SUFFIX.get(f"{suffix}_RBV")
    if suffix == "Capture":
        out.append(Widget("button", set_x, y, SET_W // 2 - 2, ROW_H, "Start", pv, 1))
        out.append(Widget("button", set_x + SET_W // 2 + 2, y, SET_W // 2 - 2, ROW_H, "Stop",
                          pv, 0))
    elif suffix in ACTIONS:
        out.append(Widget("button", set_x, y, SET_W, ROW_H, ACTIONS[suffix], pv, 1))
    elif pv.writable:
        kind = "combo" if pv.kind is Kind.ENUM else "entry"
        if rbv is None and pv.kind is not Kind.ENUM:
            # one PV both ways (e.g. NDAttributesFile): entry, and its value as readback
            out.append(Widget(kind, set_x, y, SET_W, ROW_H, pv=pv))
            out.append(Widget("update", rbv_x, y, RBV_W, ROW_H, pv=pv))
            return out
        out.append(Widget(kind, set_x, y, SET_W, ROW_H, pv=pv))
    else:
        rbv = pv
    if rbv is not None:
        out.append(Widget("update", rbv_x, y, RBV_W, ROW_H, pv=rbv))
    return out


def layout() -> tuple[list[Widget], int, int]:
    widgets: list[Widget] = [Widget("title", 10, 8, 600, 24,
                                    "NDFileHDF5 (nexus-writer-ioc)  $(P)$(R)")]
    height = 0
    for column, sections in enumerate(COLUMNS):
        x = 10 + column * (COLUMN_W + 10)
        y = HEADER_H
        for index in sections:
            title, rows = SECTIONS[index]
            widgets.append(Widget("heading", x, y, COLUMN_W - 2 * GAP, TITLE_H - 4, title))
            y += TITLE_H
            for label, suffix in rows:
                widgets.append(Widget("label", x, y, LABEL_W, ROW_H, label))
                widgets.extend(widgets_for(suffix, x, y))
                y += ROW_H + 4
            y += 12
        height = max(height, y)
    return widgets, 10 + len(COLUMNS) * (COLUMN_W + 10), height + 10


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


def caqtdm() -> str:
    widgets, width, height = layout()
    root = ET.Element("ui", version="4.0")
    _sub(root, "class", "MainWindow")
    window = _sub(root, "widget", **{"class": "QMainWindow", "name": "MainWindow"})
    _geometry(window, Widget("window", 0, 0, width, height))
    _prop(window, "windowTitle", "string", "NDFileHDF5 $(P)$(R)")
    central = _sub(window, "widget", **{"class": "QWidget", "name": "centralWidget"})
    for n, w in enumerate(widgets):
        cls = {"title": "caLabel", "heading": "caLabel", "label": "caLabel",
               "entry": "caTextEntry", "update": "caLineEdit", "combo": "caMenu",
               "button": "caMessageButton"}[w.kind]
        element = _sub(central, "widget", **{"class": cls, "name": f"{cls}_{n}"})
        _geometry(element, w)
        if w.kind in ("title", "heading", "label"):
            _prop(element, "text", "string", w.text)
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
