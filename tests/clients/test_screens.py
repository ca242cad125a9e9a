"""Operator screens: generated from the PV table, statically checked, rendered with PyDM."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest
from ioc_harness import IOCProcess, wait_for

from ioc._resources import layout_file
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
    """The PyDM screen against a realistic IOC (13SIM1:HDF1: reading 13SIM1:image1:, a
    /data-like directory under a temporary root, files written): live values shown, no
    label or readback cut; a 120-character path fits too.  With SCREENSHOT_DIR set it saves
    the README's picture there."""
    os.environ["QT_QPA_PLATFORM"] = "offscreen"
    pytest.importorskip("pydm")
    root = Path(tempfile.mkdtemp(prefix="tmp"))  # a short, real temporary root
    data = root / "data" / "2026-11" / "13SIM1" / "scan_0042"
    data.mkdir(parents=True)
    layouts = root / "config"  # the shipped example layout, where a beamline keeps its own
    layouts.mkdir()
    for name in ("nexus_demo.xml", "demo_attributes.xml"):
        shutil.copy(layout_file(name), layouts / name)
    sim = IOCProcess(["sim", "--prefix", "13SIM1:"], ca_env.server_env(0), tmp_path / "sim.log").wait_serving()
    writer = IOCProcess(["serve", "--prefix", "13SIM1:HDF1:", "--source", "13SIM1:image1:",
                         "--cam", "13SIM1:cam1:", "--allow-root", str(root)],
                        ca_env.server_env(1), tmp_path / "writer.log")
    client = None
    try:
        from ioc_harness import Client

        client = Client()
        w = "13SIM1:HDF1:"
        wait_for(lambda: client.get(w + "SourceConnected_RBV") == "Connected", 30,
                 what="the writer to read the simulator")
        for suffix, value in (("FilePath", f"{data}/"), ("FileName", "mrinal"),
                              ("FileTemplate", "%s%s_%3.3d.h5"), ("FileNumber", 1),
                              ("AutoIncrement", "Yes"), ("FileWriteMode", "Single"),
                              ("AutoSave", "Yes"),
                              ("XMLFileName", str(layouts / "nexus_demo.xml")),
                              ("NDAttributesMacros", "P=13SIM1:"),
                              ("NDAttributesFile", str(layouts / "demo_attributes.xml")),
                              ("EnableCallbacks", "Enable")):
            client.put(w + suffix, value)
        client.put("13SIM1:cam1:ImageMode", "Multiple")
        client.put("13SIM1:cam1:NumImages", 3)
        client.put("13SIM1:cam1:Acquire", 1, timeout=60)
        last = f"{data}/mrinal_003.h5"
        wait_for(lambda: client.get(w + "FullFileName_RBV") == last, 30, what=last)
        assert (data / "mrinal_003.h5").is_file()

        from pydm import Display
        from pydm.widgets import PyDMLabel
        from qtpy.QtWidgets import QApplication, QLabel

        app = QApplication.instance() or QApplication([])
        display = Display(ui_filename=str(OPI / "NDFileHDF5_pydm.ui"),
                          macros={"P": "13SIM1:", "R": "HDF1:"})
        size = ET.parse(OPI / "NDFileHDF5_pydm.ui").getroot().find(
            "widget/property[@name='geometry']/rect")
        display.setGeometry(0, 0, int(size.findtext("width")), int(size.findtext("height")))
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
        wait_for(shows("FilePath_RBV", lambda t: t == f"{data}/"), 10)
        wait_for(shows("FullFileName_RBV", lambda t: t == last), 10)
        wait_for(shows("WriteStatus", lambda t: t == "Write OK"), 10)
        wait_for(shows("XMLValid_RBV", lambda t: t == "Yes"), 10)
        wait_for(shows("PluginType_RBV", lambda t: t.startswith("NDFileHDF5")), 10)
        wait_for(shows("SourceConnected_RBV", lambda t: t == "Connected"), 10)
        for _ in range(10):
            app.processEvents()
            time.sleep(0.05)

        def cut() -> list[str]:
            problems = []
            for label in display.findChildren(QLabel):
                text = label.text()
                if not text or text.startswith("<"):  # rich-text headings
                    continue
                needed = label.fontMetrics().horizontalAdvance(text)
                if needed > label.contentsRect().width():
                    problems.append(f"{label.toolTip() or text!r}: {needed} > "
                                    f"{label.contentsRect().width()}")
            return problems

        assert not cut(), cut()
        png = tmp_path / "NDFileHDF5_pydm.png"
        assert display.grab().save(str(png))
        assert png.stat().st_size > 10_000
        if os.environ.get("SCREENSHOT_DIR"):  # how the README's picture is made
            display.grab().save(str(Path(os.environ["SCREENSHOT_DIR"]) / png.name))
        # a 120-character path (that need not exist) is shown whole
        long_path = f"{data}/" + "proposal_31337_nexus_writer/sample_B7_holder_3/scan_"
        long_path = (long_path + "x" * 120)[:119] + "/"
        client.put(w + "FilePath", long_path)
        wait_for(shows("FilePath_RBV", lambda t: t == long_path), 10)
        app.processEvents()
        readback = labels["FilePath_RBV"]
        assert len(readback.text()) == 120
        assert readback.fontMetrics().horizontalAdvance(readback.text()) <= \
            readback.contentsRect().width()
        display.close()
    finally:
        if client is not None:
            client.close()
        writer.stop()
        sim.stop()
        shutil.rmtree(root, ignore_errors=True)
