"""Operator screens: generated from the PV table, statically checked, rendered with PyDM."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest
from ioc_harness import IOCProcess, wait_for

from ioc.plugin.pvtable import BY_SUFFIX, Kind
from ioc.tools.screens import SCREENS

OPI = Path(__file__).resolve().parents[2] / "opi"
MACROS = {"P": "13SIM1:", "R": "HDF1:"}


def substitute(text: str) -> str:
    return re.sub(r"\$[({](\w+)[)}]", lambda m: MACROS[m.group(1)], text)


@pytest.mark.parametrize("name", sorted(SCREENS))
def test_committed_screens_are_generated(name):
    assert (OPI / name).read_text() == SCREENS[name](), \
        f"opi/{name} is stale: run python -m ioc.tools.screens"


def _bob_pvs(root):
    for widget in root.iter("widget"):
        for pv in widget.iter("pv_name"):
            yield widget, pv.text


def _ui_pvs(root):
    for widget in root.iter("widget"):
        for prop in widget.findall("property"):
            if prop.get("name") == "channel":
                yield widget, prop.find("string").text


@pytest.mark.parametrize("name", sorted(SCREENS))
def test_screen_pvs_exist_and_widgets_fit_types(name, listing):
    root = ET.parse(OPI / name).getroot()
    if name.endswith(".bob"):
        assert root.tag == "display" and root.get("version") == "2.0.0"
        pairs = list(_bob_pvs(root))
    else:
        assert root.tag == "ui" and root.get("version") == "4.0"
        pairs = list(_ui_pvs(root))
    assert len(pairs) > 100
    names = {f"13SIM1:HDF1:{suffix}" for suffix in listing}
    for widget, pv in pairs:
        full = substitute(pv.removeprefix("ca://"))
        assert full in names, f"{name}: {full} is not served"
        spec = BY_SUFFIX[full.removeprefix("13SIM1:HDF1:")]
        kind = widget.get("type") or widget.get("class")
        if spec.kind in (Kind.CHAR, Kind.STRING) and kind in ("textentry", "textupdate"):
            assert widget.find("format").text == "6", f"{full}: string PVs use string format"
        if spec.kind in (Kind.CHAR, Kind.STRING) and kind in ("caTextEntry", "caLineEdit"):
            fmt = next(p for p in widget.findall("property") if p.get("name") == "formatType")
            assert fmt.find("enum").text == "string"
        if spec.kind is Kind.ENUM and spec.writable and kind not in (
                "action_button", "caMessageButton", "PyDMPushButton"):
            assert kind in ("combo", "caMenu", "PyDMEnumComboBox"), f"{full} uses {kind}"


def test_pydm_renders_live_values(ca_env, tmp_path):
    os.environ["QT_QPA_PLATFORM"] = "offscreen"
    pytest.importorskip("pydm")
    writer = IOCProcess(["serve", "--prefix", "SCR:HDF1:", "--source", ""],
                        ca_env.server_env(1), tmp_path / "writer.log")
    try:
        from ioc_harness import Client

        client = Client()
        client.put("SCR:HDF1:FilePath", str(tmp_path))
        client.put("SCR:HDF1:FileName", "screen_test")
        from pydm import Display
        from pydm.widgets import PyDMLabel
        from qtpy.QtWidgets import QApplication

        app = QApplication.instance() or QApplication([])
        display = Display(ui_filename=str(OPI / "NDFileHDF5_pydm.ui"),
                          macros={"P": "SCR:", "R": "HDF1:"})
        display.resize(display.sizeHint().expandedTo(display.minimumSize()))
        display.setGeometry(0, 0, 1522, 1250)
        display.show()
        labels = {label.toolTip(): label for label in display.findChildren(PyDMLabel)}

        def shows(suffix, check):
            def ready():
                app.processEvents()
                return check(labels[suffix].text())
            return ready

        def connected():
            app.processEvents()
            return all(not label.text().startswith("ca://") for label in labels.values())

        wait_for(connected, 30, what="every PyDM label to connect")
        # live values: what caput wrote, and the IOC's own readbacks
        wait_for(shows("FilePath_RBV", lambda t: t == f"{tmp_path}/"), 10)
        wait_for(shows("FileName_RBV", lambda t: t == "screen_test"), 10)
        wait_for(shows("PluginType_RBV", lambda t: t.startswith("NDFileHDF5")), 10)
        wait_for(shows("FileWriteMode_RBV", lambda t: t == "Single"), 10)
        for _ in range(10):
            app.processEvents()
            time.sleep(0.05)
        png = tmp_path / "NDFileHDF5_pydm.png"
        assert display.grab().save(str(png))
        assert png.stat().st_size > 10_000
        if os.environ.get("SCREENSHOT_DIR"):  # how the README's screenshot is made
            display.grab().save(str(Path(os.environ["SCREENSHOT_DIR"]) / png.name))
        display.close()
        client.close()
    finally:
        writer.stop()
