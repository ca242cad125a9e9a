"""Refused puts and bad paths over real Channel Access, against one writer IOC: one log line
per refusal, floods that do not stop other clients' reads, paths that would block,
absurd values, names (README "Failure behaviour")."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from pathlib import Path

import h5py
from caproto import ChannelType
from ioc_harness import wait_for
from system_setup import W

# -- 13.2 / 8. refused puts, floods ----------------------------------------------------------

FLOODER = r"""
import sys, time
from caproto.threading.client import Context
(pv,) = Context().get_pvs(sys.argv[1], timeout=10)
pv.wait_for_connection(timeout=30)
rate, seconds = float(sys.argv[2]), float(sys.argv[3])
sent, t0 = 0, time.monotonic()
while time.monotonic() - t0 < seconds:
    pv.write([-1], wait=False)
    sent += 1
    pause = t0 + sent / rate - time.monotonic()
    if pause > 0:
        time.sleep(pause)
print(sent, flush=True)
time.sleep(5)  # a client that stays connected (its replies are read)
"""


def test_refused_put_one_log_line_and_the_client_sees_why(ready):
    before = len(ready.writer.log())
    done = subprocess.run([str(Path(sys.executable).with_name("caproto-put")),
                           W + "NumCapture", "-1"], env=ready.env.server_env(0),
                          capture_output=True, text=True, timeout=60)
    assert "ECA_PUTFAIL" in done.stdout and "NumCapture must not be negative" in done.stdout
    time.sleep(0.5)
    new = ready.writer.log()[before:]
    lines = [line for line in new.splitlines() if "refused put" in line]
    assert len(lines) == 1, new
    assert lines[0].endswith(f"refused put {W}NumCapture = -1: NumCapture must not be negative")
    assert "Traceback" not in new
    assert ready.get("WriteMessage") == "NumCapture must not be negative"


def test_put_flood_while_another_client_reads(ready):
    """1000 refused puts/s for 10 s from one client; another client's reads are answered
    (the bench measures the latency on a quiet machine: within 1 s)."""
    before = len(ready.writer.log())
    flooder = subprocess.Popen([sys.executable, "-c", FLOODER, W + "NumCapture", "1000", "10"],
                               env=ready.env.server_env(0), stdout=subprocess.PIPE, text=True)
    try:
        pv = ready.client.pv(W + "ArrayCounter_RBV")
        latencies = []
        t_end = time.monotonic() + 13
        while time.monotonic() < t_end:
            t0 = time.monotonic()
            pv.read(timeout=30)
            latencies.append(time.monotonic() - t0)
            time.sleep(0.05)
        sent = int(flooder.communicate(timeout=60)[0].split()[0])
    finally:
        flooder.kill()
    assert sent > 3000  # the flood happened (the server may slow the client down)
    assert max(latencies) < 5.0, f"reads took up to {max(latencies):.2f} s"
    new = ready.writer.log()[before:]
    assert "Traceback" not in new
    logged = sum("refused put" in line for line in new.splitlines())
    assert 1 <= logged <= 60, logged  # rate-limited: 20 per 10 s, then a count
    assert ready.get("PluginType_RBV").startswith("NDFileHDF5")


# -- 9. a path that blocks -----------------------------------------------------------------

def test_fifo_as_layout_or_attributes_path(ready, tmp_path):
    fifo = tmp_path / "layout.xml"
    os.mkfifo(fifo)
    t0 = time.monotonic()
    ready.put("XMLFileName", str(fifo), timeout=30)
    assert ready.get("XMLValid_RBV") == "No"
    assert "not a regular file" in ready.get("XMLErrorMsg_RBV")
    ready.put("NDAttributesFile", str(fifo), timeout=30)
    assert "not a regular file" in ready.get("NDAttributesMessage_RBV")
    assert time.monotonic() - t0 < 15
    ready.put("FilePath", str(tmp_path), timeout=30)  # other puts still work
    ready.put("XMLFileName", "")
    ready.put("NDAttributesFile", "")
    ready.put("AutoSave", "Yes")
    ready.acquire(1)
    assert len(list(tmp_path.glob("*.h5"))) == 1


# -- 7 / 10. what a client may ask for -----------------------------------------------------

def test_absurd_values_refused_at_put_time(ready):
    for suffix, value, why in (
        ("FileTemplate", "%s%s_%99999999d.h5", "width or precision 99999999"),
        ("FileTemplate", "%s%s_%2147483648d.h5", "width or precision 2147483648"),
        ("NDAttributeChunk", 2147483647, "NDAttributeChunk must be at most"),
        ("NumFramesChunks", 2147483647, "NumFramesChunks must be at most"),
        ("QueueSize", 2147483647, "QueueSize must be"),
        ("MinCallbackTime", math.nan, "MinCallbackTime must be a finite number"),
        ("TempSuffix", "a/b", "TempSuffix must not contain '/'"),
    ):
        old = ready.get(suffix + "_RBV")
        t0 = time.monotonic()
        ready.put_refused(suffix, value)
        assert why in ready.get("WriteMessage"), suffix
        assert time.monotonic() - t0 < 5
        if not (isinstance(old, float) and math.isnan(old)):
            assert ready.get(suffix + "_RBV") == old, suffix
    for suffix in ("WaitForPlugins", "EmptyFreeList", "PoolPollStats", "PreAllocBuffers",
                   "AcquireBusy", "FileWriteMode"):
        pv = ready.client.pv(W + suffix)
        before = pv.read(timeout=10).data[0]
        pv.write([-32768], data_type=ChannelType.INT, wait=False)
        ready.get("WriteMessage")  # a round trip
        assert pv.read(timeout=10).data[0] == before, suffix  # every read still works
        assert "is not a state of this record" in ready.get("WriteMessage")
    ready.put("FileTemplate", "%s.h5")  # accepted, with a warning
    assert "leaves out FileName" in ready.get("WriteMessage")
    ready.put("FileTemplate", "%s%s_%3.3d.h5")


# -- 5. the attributes file of a Stream opened with the last frame -----------------------

def test_attributes_file_change_reaches_a_stream_opened_with_the_last_frame(ready, tmp_path):
    ready.acquire(1)  # the last frame, received before the attributes file
    ready.put("NDAttributesFile", '<Attributes><Attribute name="Where" type="CONST" '
              'source="hutch 2" description="place"/></Attributes>')
    assert ready.get("NDAttributesStatus") == "Attributes file OK"
    ready.put("FileWriteMode", "Stream")
    ready.put("NumCapture", 0)
    ready.put("Capture", 1, wait=False)
    wait_for(lambda: ready.get("Capture_RBV") == "Capturing", 10)
    ready.acquire(2)
    ready.put("Capture", 0)
    (path,) = tmp_path.glob("*.h5")
    with h5py.File(path) as f:
        assert f["/entry/instrument/NDAttributes/Where"][()].tolist() == [b"hutch 2"] * 2


# -- 14. names -----------------------------------------------------------------------------

def test_non_ascii_names(ready, tmp_path):
    directory = tmp_path / "données"
    directory.mkdir()
    ready.put("FilePath", str(directory))
    assert ready.get("FilePathExists_RBV") == "Yes"
    assert ready.get("FilePath_RBV") == f"{directory}/"
    ready.put("FileName", "café")
    ready.put("AutoSave", "Yes")
    ready.acquire(1)
    assert [p.name for p in directory.iterdir()] == ["café_001.h5"]
    assert ready.get("FullFileName_RBV") == f"{directory}/café_001.h5"
