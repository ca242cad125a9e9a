"""pymalcolm's scan over pvAccess: ``PositionLabellerPart`` on the simulator's NDPosPlugin
stand-in (``Pos1:``), ``HDFWriterPart`` on this IOC reading ``Pva1:Image``, each PV
sequence as pymalcolm 6.3 issues it (see ``test_pymalcolm.py`` for why it is reproduced
rather than run), and the file checked as pymalcolm's dataset infos describe it.

From ``malcolm/modules/ADCore/parts/positionlabellerpart.py`` and
``blocks/position_labeller_block.yaml`` (PVs ``<prefix>:Delete``, ``:Filename``,
``:IDStart``, ``:Qty_RBV``, ``:Running``, ``:Running_RBV`` and NDPluginBase's):

* ``setup_plugin`` (on_configure): ``delete`` (Delete=1) together with ``enableCallbacks=True,
  idStart=1, arrayCounter=0``; then ``xml`` (Filename = the ``<pos_layout>`` text, waited
  on); then ``start`` (Running=1 with put-callback: the busy record completes when the
  positions run out).
* ``on_run``: ``qty`` (Qty_RBV) subscribed to load more positions (a scan this size has
  them all), then waits for ``arrayCounterReadback`` (ArrayCounter_RBV) to reach the
  scan's steps.  ``on_abort`` (and on_reset): ``stop`` (Running=0, no wait).

``HDFWriterPart.on_run`` waits for its ArrayCounter_RBV > 0, then for NumCaptured_RBV to
reach the steps, putting FlushNow every second.  The detector driver part sets the
driver's ArrayCounter to the completed steps (0) and NumImages to the steps, then
acquires.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from ioc_harness import wait_for
from system_setup import P
from test_pymalcolm import (
    STEPS,
    check_scan_file,
    configure_puts,
    point_indexes,
    position_xml,
    put_batch,
    write_layout,
)

POS = P + "Pos1:"


def test_scan_with_position_labeller_over_pva(pva_ready, tmp_path):
    s = pva_ready
    pool = ThreadPoolExecutor(4)
    try:
        # PositionLabellerPart.setup_plugin
        with ThreadPoolExecutor(4) as batch:
            for done in [batch.submit(s.client.put, POS + suffix, value) for suffix, value in
                         (("Delete", 1), ("EnableCallbacks", 1), ("IDStart", 1),
                          ("ArrayCounter", 0))]:
                done.result(timeout=30)
        s.client.put(POS + "Filename", position_xml())
        pos_start = pool.submit(s.client.put, POS + "Running", 1, timeout=120)
        wait_for(lambda: s.client.get(POS + "Running_RBV") == "Running", 10,
                 what="the position plugin running")
        assert s.client.get(POS + "Qty_RBV") == STEPS
        # HDFWriterPart.on_configure
        layout_file = write_layout(tmp_path)
        for puts in configure_puts(tmp_path, layout_file):
            put_batch(s.client, puts)
        hdf_start = pool.submit(s.put, "Capture", 1, timeout=120)
        wait_for(lambda: s.get("Capture_RBV") == "Capturing", 10, what="capturing")
        assert s.get("XMLValid_RBV") == "Yes", s.get("XMLErrorMsg_RBV")
        # the detector driver part
        s.cam_put("ArrayCounter", 0)
        s.cam_put("ImageMode", "Multiple")
        s.cam_put("NumImages", STEPS)
        s.cam_put("AcquirePeriod", 0.05)
        acquiring = pool.submit(s.cam_put, "Acquire", 1, timeout=120)

        # on_run: the HDF writer part, then the position labeller part
        wait_for(lambda: s.get("ArrayCounter_RBV") > 0, 30, what="the first array")
        deadline = time.monotonic() + 60
        while s.get("NumCaptured_RBV") != STEPS:
            assert time.monotonic() < deadline, f"writing stalled at {s.get('NumCaptured_RBV')}"
            if hdf_start.done():
                hdf_start.result()
                assert s.get("WriteStatus") == "Write OK", s.get("WriteMessage")
            else:
                s.put("FlushNow", 1)
            time.sleep(1)
        wait_for(lambda: s.client.get(POS + "ArrayCounter_RBV") == STEPS, 10,
                 what="the position plugin to count every frame")
        pos_start.result(timeout=10)  # Running's put completed: the positions are used up
        acquiring.result(timeout=30)
        assert s.client.get(POS + "Running_RBV") == "Idle"
        assert s.client.get(POS + "Qty_RBV") == 0

        # on_post_run_ready: one last flush; the file is complete while still open
        if not hdf_start.done():
            s.put("FlushNow", 1)
        uid_at = {point: uid for uid, point in enumerate(point_indexes(), start=1)}
        check_scan_file(tmp_path / "det.h5", uid_at)
        assert s.get("SourceSkipped_RBV") == 0

        # on_reset: stop both, then the layout file goes
        s.put("Capture", 0)
        s.client.put(POS + "Running", 0, wait=False)
        wait_for(lambda: s.get("Capture_RBV") == "Done", 30, what="the file closed")
        hdf_start.result(timeout=30)
        assert s.get("WriteStatus") == "Write OK", s.get("WriteMessage")
        layout_file.unlink()
        s.put("XMLFileName", "")
        check_scan_file(tmp_path / "det.h5", uid_at)
    finally:
        s.client.put(POS + "Running", 0)
        s.client.put(POS + "EnableCallbacks", "Disable")
        s.client.put(POS + "Delete", 1)
        pool.shutdown(wait=False, cancel_futures=True)
