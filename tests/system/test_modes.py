"""End to end over real CA: simulator -> writer IOC -> files read back with h5py."""

from __future__ import annotations

import time

import h5py
import numpy as np
from ioc_harness import pyepics, wait_for
from system_setup import SIZE, W

from ioc.tools.sim import expected_pixels

ATTRIBUTES = """<Attributes>
  <Attribute name="AcquireTime" type="EPICS_PV" source="$(P)cam1:AcquireTime" dbrtype="DBR_NATIVE" description="exposure"/>
  <Attribute name="Gain" type="EPICS_PV" source="$(P)cam1:Gain_RBV" dbrtype="DBR_FLOAT"/>
  <Attribute name="Counter" type="PARAM" source="ARRAY_COUNTER" datatype="INT"/>
  <Attribute name="Model" type="PARAM" source="MODEL" datatype="STRING"/>
  <Attribute name="Where" type="CONST" source="beamline 99"/>
  <Attribute name="Missing" type="EPICS_PV" source="NO:SUCH:PV"/>
</Attributes>"""


def check_pixels(data, uids):
    for frame, uid in zip(data, uids, strict=True):
        np.testing.assert_array_equal(frame, expected_pixels(uid, *SIZE))


def test_single_autosave_one_file_per_image(ready, tmp_path):
    ready.put("NDAttributesMacros", "P=TST:")
    ready.put("NDAttributesFile", ATTRIBUTES)
    assert ready.get("NDAttributesStatus") == "Attributes file OK"
    ready.put("AutoSave", "Yes")
    uids = ready.acquire(4)
    files = sorted(tmp_path.glob("test_*.h5"))
    assert [f.name for f in files] == ["test_001.h5", "test_002.h5", "test_003.h5", "test_004.h5"]
    assert ready.get("FileNumber_RBV") == 5
    assert ready.get("FullFileName_RBV") == str(tmp_path / "test_004.h5")
    assert ready.get("WriteStatus") == "Write OK"
    assert ready.get("ArrayCounter_RBV") == 4
    assert ready.get("NumCaptured_RBV") == 1
    for path, uid in zip(files, uids, strict=True):
        with h5py.File(path) as f:
            data = f["/entry/data/data"]
            assert data.shape == (SIZE[1], SIZE[0]) and data.dtype == np.dtype("<u2")
            check_pixels([data[()]], [uid])
            nd = f["/entry/instrument/NDAttributes"]
            assert nd["NDArrayUniqueId"][()].tolist() == [uid]
            assert nd["AcquireTime"][()].tolist() == [0.001]
            assert nd["AcquireTime"].dtype == np.dtype("<f8")  # DBR_NATIVE of a DOUBLE PV
            assert nd["Gain"].dtype == np.dtype("<f4")  # dbrtype forces Float32
            assert nd["Counter"][()].tolist() == [uid]
            assert nd["Counter"].attrs["NDAttrSourceType"] == b"NDAttrSourceParam"
            assert nd["Model"][()].tolist() == [b"Basic simulator"]
            assert nd["Where"][()].tolist() == [b"beamline 99"]
            assert nd["Where"].attrs["NDAttrSourceType"] == b"NDAttrSourceConst"
            missing = nd["Missing"]  # never connected: ADCore's undefined value
            assert missing.dtype == np.dtype("<f4") and np.isnan(missing[0])
            assert f["/entry/instrument/detector/NDAttributes/ColorMode"][()].tolist() == [0]


def test_single_with_pyepics_client(ready, tmp_path):
    """pyepics (libca) writes and reads the IOC's PVs (in a process of its own)."""
    got = pyepics(f"""
        W = {W!r}
        assert epics.caput(W + "FileName", "libca", wait=True, connection_timeout=30) == 1
        assert epics.caput(W + "AutoSave", 1, wait=True, connection_timeout=30) == 1
        result = [epics.caget(W + s, as_string=True)
                  for s in ("FileName_RBV", "AutoSave_RBV", "FilePath_RBV")]
    """)
    assert got == ["libca", "Yes", f"{tmp_path}/"]
    uids = ready.acquire(2)
    files = sorted(tmp_path.glob("libca_*.h5"))
    assert len(files) == 2
    with h5py.File(files[-1]) as f:
        check_pixels([f["/entry/data/data"][()]], [uids[-1]])
    assert pyepics(f"result = epics.caget({W!r} + 'ArrayCounter_RBV', connection_timeout=30)") == 2


def test_single_writefile_saves_last_frame(ready, tmp_path):
    uids = ready.acquire(3)
    assert list(tmp_path.glob("*.h5")) == []
    ready.put("WriteFile", 1)
    (path,) = tmp_path.glob("*.h5")
    with h5py.File(path) as f:
        check_pixels([f["/entry/data/data"][()]], [uids[-1]])
    assert ready.get("WriteFile_RBV") == "Done"


def test_capture_mode_autosave(ready, tmp_path):
    ready.put("FileWriteMode", "Capture")
    ready.put("NumCapture", 5)
    ready.put("AutoSave", "Yes")
    ready.put("Capture", 1)
    assert ready.get("Capture_RBV") == "Capturing"
    uids = ready.acquire(7)
    assert ready.get("Capture_RBV") == "Done"
    (path,) = tmp_path.glob("*.h5")
    with h5py.File(path) as f:
        data = f["/entry/data/data"]
        assert data.shape == (5, SIZE[1], SIZE[0]) and data.maxshape[0] == 5
        check_pixels(data[()], uids[:5])
        ids = f["/entry/instrument/NDAttributes/NDArrayUniqueId"][()].tolist()
        assert ids == uids[:5]


def test_capture_then_writefile(ready, tmp_path):
    ready.put("FileWriteMode", "Capture")
    ready.put("NumCapture", 3)
    ready.put_refused("WriteFile", 1)  # empty buffer: refused with ADCore's message
    assert ready.get("WriteMessage") == "ERROR, no capture buffer present"
    ready.put("Capture", 1)
    uids = ready.acquire(3)
    assert ready.get("NumCaptured_RBV") == 3
    assert list(tmp_path.glob("*.h5")) == []
    ready.put("WriteFile", 1)
    (path,) = tmp_path.glob("*.h5")
    with h5py.File(path) as f:
        check_pixels(f["/entry/data/data"][()], uids)
    assert ready.get("NumCaptured_RBV") == 0


def test_capture_refused_in_single_mode(ready):
    ready.put_refused("Capture", 1)
    assert ready.get("Capture_RBV") == "Done"
    assert ready.get("Capture") == "Done"
    assert ready.get("WriteMessage") == "ERROR: capture not supported in Single mode"


def test_stream_n_frames(ready, tmp_path):
    ready.acquire(1)  # the array Stream opens with (ADCore needs one)
    ready.put("FileWriteMode", "Stream")
    ready.put("NumCapture", 6)
    ready.put("Capture", 1)
    assert ready.get("Capture_RBV") == "Capturing"
    assert ready.get("WriteFile_RBV") == "Writing"
    assert ready.get("FileNumber_RBV") == 2  # incremented when the name was built, at open
    uids = ready.acquire(8)
    wait_for(lambda: ready.get("Capture_RBV") == "Done", 10)
    (path,) = tmp_path.glob("*.h5")
    with h5py.File(path) as f:
        data = f["/entry/data/data"]
        assert data.shape == (6, SIZE[1], SIZE[0]) and data.maxshape == (6, SIZE[1], SIZE[0])
        check_pixels(data[()], uids[:6])
        assert f["/entry/instrument/NDAttributes/NDArrayUniqueId"][()].tolist() == uids[:6]
    assert ready.get("NumCaptured_RBV") == 6


def test_stream_unlimited_until_capture_0(ready, tmp_path):
    ready.acquire(1)
    ready.put("FileWriteMode", "Stream")
    ready.put("NumCapture", 0)
    ready.put("Capture", 1)
    uids = ready.acquire(5)
    uids += ready.acquire(4)
    assert ready.get("Capture_RBV") == "Capturing"
    ready.put("Capture", 0)
    assert ready.get("Capture_RBV") == "Done"
    (path,) = tmp_path.glob("*.h5")
    with h5py.File(path) as f:
        data = f["/entry/data/data"]
        assert data.shape[0] == 9 and data.maxshape[0] is None
        check_pixels(data[()], uids)


def test_lazy_open_and_temp_suffix(ready, tmp_path):
    ready.put("FileWriteMode", "Stream")
    ready.put("NumCapture", 0)
    ready.put("LazyOpen", "Yes")
    ready.put("TempSuffix", ".tmp")
    ready.put("Capture", 1)
    assert ready.get("WriteMessage") == "Lazy Open..."
    assert list(tmp_path.iterdir()) == []  # nothing opened before the first new frame
    uids = ready.acquire(3)
    assert [p.name for p in tmp_path.iterdir()] == ["test_001.h5.tmp"]
    ready.put("Capture", 0)
    assert [p.name for p in tmp_path.iterdir()] == ["test_001.h5"]
    with h5py.File(tmp_path / "test_001.h5") as f:
        check_pixels(f["/entry/data/data"][()], uids)  # opened from the first new frame


def test_auto_increment_off_and_templates(ready, tmp_path):
    ready.put("AutoSave", "Yes")
    ready.put("AutoIncrement", "No")
    ready.put("FileNumber", 42)
    ready.put("FileTemplate", "%s%s_%6.6d.h5")
    ready.acquire(2)
    assert [p.name for p in tmp_path.glob("*.h5")] == ["test_000042.h5"]  # overwritten
    assert ready.get("FileNumber_RBV") == 42
    ready.put("FileTemplate", "%s%s.h5")  # ophyd-async's: the number is a surplus argument
    ready.acquire(1)
    assert (tmp_path / "test.h5").exists()


def test_create_directory(ready, tmp_path):
    deep = tmp_path / "a" / "b" / "c"
    ready.put("CreateDirectory", -2)
    ready.put("FilePath", str(deep))
    assert ready.get("FilePathExists_RBV") == "No"  # three missing, only two allowed
    ready.put("CreateDirectory", -3)
    ready.put("FilePath", str(deep))
    assert ready.get("FilePathExists_RBV") == "Yes"
    assert ready.get("FilePath_RBV") == f"{deep}/"
    ready.put("AutoSave", "Yes")
    ready.acquire(1)
    assert len(list(deep.glob("*.h5"))) == 1


def test_bad_layout_then_good(ready, tmp_path):
    ready.put("XMLFileName", '<?xml version="1.0"?><hdf5_layout><group name="e">')
    assert ready.get("XMLValid_RBV") == "No"
    assert "syntax" in ready.get("XMLErrorMsg_RBV")
    ready.put("AutoSave", "Yes")
    ready.acquire(1)
    assert list(tmp_path.glob("*.h5")) == []
    assert ready.get("WriteStatus") == "Write error"
    assert "Error opening file" in ready.get("WriteMessage")
    ready.put("XMLFileName", str(tmp_path / "missing.xml"))
    assert ready.get("XMLValid_RBV") == "No"
    assert "file not found" in ready.get("XMLErrorMsg_RBV")
    ready.put("XMLFileName", "")
    assert ready.get("XMLValid_RBV") == "Yes"
    assert ready.get("XMLErrorMsg_RBV") == "Default layout selected"
    uids = ready.acquire(1)
    (path,) = tmp_path.glob("*.h5")
    with h5py.File(path) as f:
        check_pixels([f["/entry/data/data"][()]], uids)
    assert ready.get("WriteStatus") == "Write OK"


def test_bad_attributes_status(ready, tmp_path):
    ready.put("NDAttributesFile", str(tmp_path / "none.xml"))
    assert ready.get("NDAttributesStatus") == "File not found"
    ready.put("NDAttributesFile", "<Attributes><Attribute name='A' source='x'></Attributes>")
    assert ready.get("NDAttributesStatus") == "XML syntax error"
    assert ready.get("NDAttributesMessage_RBV").startswith("<inline>:1")
    ready.put("NDAttributesFile", "<Attributes><Attribute name='A' source='$(NOPE)x'/></Attributes>")
    ready.put("NDAttributesMacros", "P=1")
    assert ready.get("NDAttributesStatus") == "Macro substitution error"
    ready.put("NDAttributesFile", '<Attributes><Attribute name="F" type="FUNCTION" '
              'source="myFunct"/></Attributes>')
    assert ready.get("NDAttributesStatus") == "Attributes file OK"
    assert "FUNCTION" in ready.get("NDAttributesMessage_RBV")
    ready.put("AutoSave", "Yes")
    ready.acquire(1)
    assert len(list(tmp_path.glob("*.h5"))) == 1  # FUNCTION never fails the file


def test_locked_while_open_and_empty_strings(ready, tmp_path):
    ready.acquire(1)
    ready.put("FileWriteMode", "Stream")
    ready.put("NumCapture", 0)
    ready.put("Capture", 1)
    for suffix, value, old in (("Compression", "zlib", "None"), ("StoreAttr", "No", "Yes"),
                               ("NumRowChunks", 5, 0), ("FileWriteMode", "Single", "Stream")):
        ready.put_refused(suffix, value)
        assert ready.get(suffix) == old
        # chunk readbacks show the open file's effective chunking (the whole frame height)
        assert ready.get(f"{suffix}_RBV") == (SIZE[1] if suffix == "NumRowChunks" else old)
    ready.put("Capture", 0)
    ready.put("Compression", "zlib")
    assert ready.get("Compression_RBV") == "zlib"
    for suffix in ("FileTemplate", "FileName", "XMLFileName", "NDAttributesFile", "TempSuffix"):
        ready.put(suffix, "x")
        ready.put(suffix, "")
        assert ready.get(f"{suffix}_RBV" if suffix != "NDAttributesFile" else suffix) == ""


def test_dropped_arrays_exact(ready, tmp_path):
    ready.slow_writer(queue_size=2)
    skipped_before = ready.get("SourceSkipped_RBV")
    uids = ready.acquire(60, period=0.002, settle=False)
    ready.settle_counts()
    written = len(list(tmp_path.glob("*.h5")))
    dropped = ready.get("DroppedArrays_RBV")
    received = len(uids) - (ready.get("SourceSkipped_RBV") - skipped_before)
    assert dropped > 0, "the writer was meant to fall behind"
    assert dropped == received - written
    assert ready.get("ArrayCounter_RBV") == written


def test_disable_callbacks_ignores_frames(ready, tmp_path):
    ready.put("AutoSave", "Yes")
    ready.put("EnableCallbacks", "Disable")
    ready.acquire(2, settle=False)
    time.sleep(0.5)
    assert list(tmp_path.glob("*.h5")) == []
    assert ready.get("DroppedArrays_RBV") == 0
