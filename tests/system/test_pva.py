"""End to end over pvAccess: the simulator's Pva1:Image (NTNDArray) -> writer IOC -> files."""

from __future__ import annotations

import struct
import subprocess
import sys
import time

import h5py
import hdf5plugin  # noqa: F401  (reads LZ4, bitshuffle, Blosc chunks)
import numpy as np
import pytest
from conftest_system import SIM_ARGS
from ioc_harness import IOCProcess, wait_for
from system_setup import SIZE, P

from ioc.tools.sim import EPICS_EPOCH, expected_pixels
from ioc.writer.codecs import encode

DRIVER_ATTRIBUTES = """<Attributes>
  <Attribute name="Counter" type="PARAM" source="ARRAY_COUNTER" datatype="INT"/>
  <Attribute name="Stamp" type="PARAM" source="TIME_STAMP" datatype="DOUBLE"/>
  <Attribute name="Exposure" type="PARAM" source="ACQ_TIME" datatype="DOUBLE"/>
  <Attribute name="Model" type="PARAM" source="MODEL" datatype="STRING"/>
  <Attribute name="CounterPV" type="EPICS_PV" source="$(P)cam1:ArrayCounter_RBV" dbrtype="DBR_NATIVE"/>
  <Attribute name="GainShort" type="EPICS_PV" source="$(P)cam1:Gain" dbrtype="DBR_SHORT" description="gain"/>
  <Attribute name="Where" type="CONST" source="beamline 99"/>
</Attributes>"""
# The writer's own file: a name the frame also has is replaced (ADCore: the plugin's last).
WRITER_ATTRIBUTES = """<Attributes>
  <Attribute name="Mine" type="CONST" source="writer"/>
  <Attribute name="Where" type="CONST" source="writer wins"/>
</Attributes>"""


def stream(setup, n: int, period: float = 0.02) -> list[int]:
    setup.put("FileWriteMode", "Stream")
    setup.put("NumCapture", 0)
    setup.put("LazyOpen", "Yes")
    setup.put("Capture", 1, wait=False)
    wait_for(lambda: setup.get("Capture_RBV") == "Capturing", 10, what="capturing")
    uids = setup.acquire(n, period)
    setup.put("Capture", 0)
    wait_for(lambda: setup.get("Capture_RBV") == "Done", 30, what="file closed")
    return uids


def only_file(directory):
    (path,) = sorted(directory.glob("test_*.h5"))
    return path


def test_pva_frames_carry_every_attribute_dimension_and_timestamp(pva_ready, tmp_path):
    s = pva_ready
    s.cam_put("NDAttributesMacros", f"P={P}")
    s.cam_put("NDAttributesFile", DRIVER_ATTRIBUTES)
    assert s.cam_get("NDAttributesStatus") == "Attributes file OK"
    s.put("NDAttributesFile", WRITER_ATTRIBUTES)
    for suffix, value in (("MinX", 2), ("MinY", 3), ("BinY", 2), ("ReverseX", "Yes")):
        s.cam_put(suffix, value)
    before = time.time() - EPICS_EPOCH
    uids = stream(s, 5)
    after = time.time() - EPICS_EPOCH
    assert s.get("Codec_RBV") == "" and s.get("CompressedSize_RBV") == SIZE[0] * SIZE[1] * 2
    with h5py.File(only_file(tmp_path)) as f:
        data = f["/entry/data/data"]
        assert data.shape == (5, SIZE[1], SIZE[0])
        for frame, uid in zip(data[()], uids, strict=True):
            np.testing.assert_array_equal(frame, expected_pixels(uid, *SIZE))
        assert data.attrs["NDArrayDimOffset"].tolist() == [2, 3]
        assert data.attrs["NDArrayDimBinning"].tolist() == [1, 2]
        assert data.attrs["NDArrayDimReverse"].tolist() == [1, 0]
        nd = f["/entry/instrument/NDAttributes"]
        assert nd["NDArrayUniqueId"][()].tolist() == uids
        checks = {  # name: (dtype, per-frame values, source type)
            "Counter": ("<i4", uids, b"NDAttrSourceParam"),
            "CounterPV": ("<i4", uids, b"NDAttrSourceEPICSPV"),
            "Exposure": ("<f8", [0.001] * 5, b"NDAttrSourceParam"),
            "GainShort": ("<i2", [1] * 5, b"NDAttrSourceEPICSPV"),
            "Model": ("S256", [b"Basic simulator"] * 5, b"NDAttrSourceParam"),
            "Where": ("S256", [b"writer wins"] * 5, b"NDAttrSourceConst"),
            "Mine": ("S256", [b"writer"] * 5, b"NDAttrSourceConst"),
        }
        for name, (dtype, values, source_type) in checks.items():
            assert nd[name].dtype == np.dtype(dtype), name
            assert nd[name][()].tolist() == values, name
            assert nd[name].attrs["NDAttrSourceType"] == source_type, name
        assert nd["GainShort"].attrs["NDAttrDescription"] == b"gain"
        assert nd["GainShort"].attrs["NDAttrSource"] == f"{P}cam1:Gain".encode()
        # both timestamps are the frame's own: the driver's TIME_STAMP, the EPICS stamp
        stamps = nd["NDArrayTimeStamp"][()]
        np.testing.assert_allclose(stamps, nd["Stamp"][()], rtol=0, atol=1e-6)
        epics = nd["NDArrayEpicsTSSec"][()] + nd["NDArrayEpicsTSnSec"][()] / 1e9
        np.testing.assert_allclose(stamps, epics, rtol=0, atol=1e-6)
        assert (stamps >= before - 1).all() and (stamps <= after + 1).all()
        assert np.all(np.diff(stamps) > 0)


def test_pva_gaps_and_duplicates_counted(pva_ready):
    s = pva_ready
    s.put("AutoSave", "No")
    skipped, duplicates = s.get("SourceSkipped_RBV"), s.get("SourceDuplicates_RBV")
    last = s.acquire(2)[-1]
    s.cam_put("ArrayCounter", last + 5)  # frames last+1 .. last+5 never made: a gap of 5
    s.acquire(1)
    wait_for(lambda: s.get("SourceSkipped_RBV") == skipped + 5, 10, what="gap counted")
    last = s.cam_get("ArrayCounter_RBV")
    s.cam_put("ArrayCounter", last - 1)  # the next frame repeats UniqueId `last`
    s.acquire(1, settle=False)
    wait_for(lambda: s.get("SourceDuplicates_RBV") == duplicates + 1, 10,
             what="duplicate counted")
    assert s.get("SourceSkipped_RBV") == skipped + 5


@pytest.mark.parametrize("codec, compression", [("lz4", "LZ4"), ("bslz4", "BSLZ4"),
                                                ("blosc", "Blosc")])
def test_pva_precompressed_written_unchanged_when_the_codec_matches(pva_ready, tmp_path, codec,
                                                                      compression):
    s = pva_ready
    s.client.put(P + "Codec1:Compressor", {"lz4": "LZ4", "bslz4": "BSLZ4", "blosc": "Blosc"}[codec])
    s.put("Compression", compression)
    s.put("BloscCompressor", "LZ4")
    s.put("BloscShuffle", "Byte")
    uids = stream(s, 3)
    payloads = [encode(expected_pixels(uid, *SIZE), codec).payload.tobytes() for uid in uids]
    assert s.get("Codec_RBV") == codec
    assert s.get("CompressedSize_RBV") == len(payloads[-1])
    nbytes = SIZE[0] * SIZE[1] * 2
    header = {"lz4": lambda p: struct.pack(">QII", nbytes, nbytes, len(p)),
              "bslz4": lambda p: struct.pack(">QI", nbytes, 8192),
              "blosc": lambda p: b""}[codec]
    with h5py.File(only_file(tmp_path)) as f:
        data = f["/entry/data/data"]
        assert data.chunks == (1, SIZE[1], SIZE[0])
        for i, (uid, payload) in enumerate(zip(uids, payloads, strict=True)):
            mask, chunk = data.id.read_direct_chunk((i, 0, 0))
            assert mask == 0 and chunk == header(payload) + payload  # the codec's bytes
            np.testing.assert_array_equal(data[i], expected_pixels(uid, *SIZE))


@pytest.mark.parametrize("compression", ["None", "zlib", "BSLZ4"])
def test_pva_precompressed_decompressed_when_the_codec_differs(pva_ready, tmp_path, compression):
    s = pva_ready
    s.client.put(P + "Codec1:Compressor", "LZ4")
    s.put("Compression", compression)
    uids = stream(s, 3)
    assert s.get("Codec_RBV") == "lz4"
    with h5py.File(only_file(tmp_path)) as f:
        data = f["/entry/data/data"]
        filters = data._filters
        if compression == "None":
            assert not filters
        elif compression == "zlib":
            assert "gzip" in filters
        else:
            assert "32008" in filters  # bitshuffle: recompressed as configured
        for i, uid in enumerate(uids):
            np.testing.assert_array_equal(data[i], expected_pixels(uid, *SIZE))


def test_pva_single_autosave_precompressed(pva_ready, tmp_path):
    s = pva_ready
    s.client.put(P + "Codec1:Compressor", "BSLZ4")
    s.put("AutoSave", "Yes")
    uids = s.acquire(2)
    s.put("Compression", "BSLZ4")
    uids += s.acquire(2)
    files = sorted(tmp_path.glob("test_*.h5"))
    assert len(files) == 4
    for path, uid in zip(files, uids, strict=True):
        with h5py.File(path) as f:
            np.testing.assert_array_equal(f["/entry/data/data"][()], expected_pixels(uid, *SIZE))
            assert f["/entry/instrument/NDAttributes/NDArrayUniqueId"][()].tolist() == [uid]


def test_pva_per_frame_values_under_cpu_load(pva_ready, tmp_path):
    """Values that belong to a frame come with it: with the CPU loaded on purpose, every
    frame's Counter and CounterPV are its own UniqueId."""
    s = pva_ready
    s.cam_put("NDAttributesMacros", f"P={P}")
    s.cam_put("NDAttributesFile", DRIVER_ATTRIBUTES)
    skipped, dropped = s.get("SourceSkipped_RBV"), s.get("DroppedArrays_RBV")
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(3)]
    try:
        uids = stream(s, 40, period=0.01)
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()
    s.settle_counts()
    with h5py.File(only_file(tmp_path)) as f:
        nd = f["/entry/instrument/NDAttributes"]
        ids = nd["NDArrayUniqueId"][()].tolist()
        # a frame the starved receiver could not take is counted, never written wrongly
        lost = (s.get("SourceSkipped_RBV") - skipped) + (s.get("DroppedArrays_RBV") - dropped)
        assert sorted(ids) == ids and set(ids) <= set(uids) and len(ids) + lost == len(uids)
        assert len(ids) >= len(uids) // 2
        assert nd["Counter"][()].tolist() == ids
        assert nd["CounterPV"][()].tolist() == ids
        stamps = nd["NDArrayTimeStamp"][()]
        np.testing.assert_allclose(stamps, nd["Stamp"][()], rtol=0, atol=1e-6)


def test_pva_reconnects_after_the_detector_restarts(pva_ready, tmp_path):
    """Runs last in this module: it replaces the simulator."""
    s = pva_ready
    s.put("AutoSave", "Yes")
    s.acquire(2)
    skipped = s.get("SourceSkipped_RBV")
    s.sim.stop()
    wait_for(lambda: s.get("SourceConnected_RBV") == "Disconnected", 20, what="disconnected")
    s.sim = IOCProcess(SIM_ARGS, s.env.server_env(0), s.logs / "sim-restarted.log").wait_serving()
    wait_for(lambda: s.get("SourceConnected_RBV") == "Connected", 30, what="reconnected")
    for f in tmp_path.glob("*.h5"):
        f.unlink()
    s.reset(tmp_path, "after")
    s.put("AutoSave", "Yes")
    uids = s.acquire(3)
    assert uids == [1, 2, 3]  # a restarted detector counts from 1: not a gap
    assert s.get("SourceSkipped_RBV") == skipped
    files = sorted(tmp_path.glob("after_*.h5"))
    assert len(files) == 3
    for path, uid in zip(files, uids, strict=True):
        with h5py.File(path) as f:
            np.testing.assert_array_equal(f["/entry/data/data"][()], expected_pixels(uid, *SIZE))
