"""The PV interface: every ADCore record (reference §1) with ADCore's type, enum strings
and element count, checked against a table written from the reference, over real CA."""

from __future__ import annotations

import pytest
from ioc_harness import wait_for
from system_setup import W

NO_YES = "No|Yes"
DIS_EN = "Disable|Enable"
DATA_TYPES = "Int8|UInt8|Int16|UInt16|Int32|UInt32|Int64|UInt64|Float32|Float64"
COLOR = "Mono|Bayer|RGB1|RGB2|RGB3|YUV444|YUV422|YUV421"
EXTRA = ["N", "X", "Y", "3", "4", "5", "6", "7", "8", "9"]


def _expected() -> dict[str, tuple[str, int, str]]:
    """suffix -> (CA type, element count, enum strings), from ndfilehdf5-behaviour.md §1."""
    t: dict[str, tuple[str, int, str]] = {}

    def pair(name, kind, n=1, enums="", rbv_enums=None):
        t[name] = (kind, n, enums)
        t[name + "_RBV"] = (kind, n, enums if rbv_enums is None else rbv_enums)

    def one(name, kind, n=1, enums=""):
        t[name] = (kind, n, enums)

    # §1.1 NDFile
    pair("FilePath", "CHAR", 256)
    one("FilePathExists_RBV", "ENUM", 1, NO_YES)
    pair("CreateDirectory", "LONG")
    pair("FileName", "CHAR", 256)
    pair("FileNumber", "LONG")
    pair("AutoIncrement", "ENUM", 1, NO_YES)
    pair("FileTemplate", "CHAR", 256)
    one("FullFileName_RBV", "CHAR", 512)
    pair("AutoSave", "ENUM", 1, NO_YES)
    pair("WriteFile", "ENUM", 1, "Done|Write", "Done|Writing")
    pair("ReadFile", "ENUM", 1, "Done|Read", "Done|Reading")
    pair("FileFormat", "ENUM", 1, "HDF5|Invalid", "HDF5|Undefined")
    pair("FileWriteMode", "ENUM", 1, "Single|Capture|Stream")
    pair("Capture", "ENUM", 1, "Done|Capture", "Done|Capturing")
    pair("NumCapture", "LONG")
    one("NumCaptured_RBV", "LONG")
    one("FreeCapture", "ENUM", 1, "Done|Free")
    pair("DeleteDriverFile", "ENUM", 1, NO_YES)
    one("WriteStatus", "ENUM", 1, "Write OK|Write error")
    one("WriteMessage", "CHAR", 256)
    pair("LazyOpen", "ENUM", 1, NO_YES)
    pair("TempSuffix", "STRING")
    # §1.2 NDPluginBase
    one("PluginType_RBV", "STRING")
    pair("NDArrayPort", "STRING")
    pair("NDArrayAddress", "LONG")
    pair("EnableCallbacks", "ENUM", 1, DIS_EN)
    pair("MinCallbackTime", "DOUBLE")
    pair("MaxArrayRate", "DOUBLE")
    one("MaxArrayRate_COUT", "DOUBLE")
    pair("MaxByteRate", "DOUBLE")
    one("ExecutionTime_RBV", "DOUBLE")
    one("ProcessPlugin", "ENUM", 1, "|")  # a bo without ZNAM/ONAM: two empty state names
    pair("BlockingCallbacks", "ENUM", 1, NO_YES)
    pair("DroppedArrays", "LONG")
    pair("QueueSize", "LONG")
    one("QueueFree", "LONG")
    for name in ("QueueFreeLow", "QueueUseHIGH", "QueueUseHIHI", "QueueUse", "SortFreeLow"):
        one(name, "DOUBLE")
    pair("NumThreads", "LONG")
    one("MaxThreads_RBV", "LONG")
    pair("SortMode", "ENUM", 1, "Unsorted|Sorted")
    pair("SortTime", "DOUBLE")
    pair("SortSize", "LONG")
    one("SortFree", "LONG")
    pair("DroppedOutputArrays", "LONG")
    pair("DisorderedArrays", "LONG")
    # §1.3 NDArrayBase
    for name in ("ADCoreVersion_RBV", "DriverVersion_RBV", "PortName_RBV", "Manufacturer_RBV",
                 "Model_RBV", "SerialNumber_RBV", "SDKVersion_RBV", "FirmwareVersion_RBV",
                 "Codec_RBV"):
        one(name, "STRING")
    pair("Acquire", "ENUM", 1, "Done|Acquire", "Done|Acquiring")
    one("WaitForPlugins", "ENUM", 1, NO_YES)
    one("AcquireBusy", "ENUM", 1, "Done|Acquiring")
    one("AcquireBusyCB", "ENUM", 1, "Done|Acquiring")
    one("SetAcquireBusy", "DOUBLE")
    one("ClearAcquireBusy", "DOUBLE")
    one("AsynIO", "STRING")  # an asyn record in ADCore; inert here
    for name in ("PoolPollStats", "EmptyFreeList"):  # bo records without state names
        one(name, "ENUM", 1, "|")
    one("PreAllocBuffers", "ENUM", 1, "Done|Allocate")  # a busy record
    pair("NDimensions", "LONG")
    pair("Dimensions", "LONG", 10)
    for i in range(10):
        for name in (f"Dim{i}SA", f"ArraySize{i}", f"Dim{i}SA_RBV", f"ArraySize{i}_RBV"):
            one(name, "LONG")
    for name in ("ArraySizeX_RBV", "ArraySizeY_RBV", "ArraySizeZ_RBV", "ArraySize_RBV",
                 "CompressedSize_RBV", "UniqueId_RBV", "EpicsTSSec_RBV", "EpicsTSNsec_RBV",
                 "PoolAllocBuffers", "PoolFreeBuffers", "NumQueuedArrays"):
        one(name, "LONG")
    one("BayerPattern_RBV", "ENUM", 1, "RGGB|GBRG|GRBG|BGGR")
    pair("DataType", "ENUM", 1, DATA_TYPES)
    pair("ColorMode", "ENUM", 1, COLOR)
    one("TimeStamp_RBV", "DOUBLE")
    pair("ArrayCounter", "LONG")
    one("ArrayRate_RBV", "DOUBLE")
    pair("ArrayCallbacks", "ENUM", 1, DIS_EN)
    one("NDAttributesFile", "CHAR", 2048)
    one("NDAttributesMacros", "CHAR", 256)
    one("NDAttributesStatus", "ENUM", 1,
        "Attributes file OK|File not found|XML syntax error|Macro substitution error")
    for name in ("PoolMaxMem", "PoolUsedMem", "PoolUsedBuffers"):
        one(name, "DOUBLE")
    pair("NumPreAllocBuffers", "LONG")
    # §1.4 NDFileHDF5
    pair("XMLFileName", "CHAR", 2048)
    one("XMLValid_RBV", "ENUM", 1, NO_YES)
    one("XMLErrorMsg_RBV", "CHAR", 256)
    for name in ("StoreAttr", "StorePerform", "DimAttDatasets", "ChunkSizeAuto"):
        pair(name, "ENUM", 1, NO_YES)
    pair("FillValue", "DOUBLE")
    for name in ("NumColChunks", "NumRowChunks", *(f"ChunkSize{i}" for i in range(2, 10)),
                 "NumFramesChunks", "NDAttributeChunk", "BoundaryAlign", "BoundaryThreshold",
                 "NumFramesFlush", "NumDataBits", "DataBitsOffset", "SZipNumPixels", "ZLevel",
                 "BloscLevel", "JPEGQuality", "NumExtraDims"):
        pair(name, "LONG")
    pair("Compression", "ENUM", 1, "None|N-bit|szip|zlib|Blosc|BSLZ4|LZ4|JPEG")
    pair("BloscShuffle", "ENUM", 1, "None|Byte|Bit")
    pair("BloscCompressor", "ENUM", 1, "BloscLZ|LZ4|LZ4HC|SNAPPY|ZLIB|ZSTD")
    one("RunTime", "DOUBLE")
    one("IOSpeed", "DOUBLE")
    one("SWMRSupported_RBV", "ENUM", 1, "Not Supported|Supported")
    pair("SWMRMode", "ENUM", 1, "Off|On")
    one("SWMRActive_RBV", "ENUM", 1, "Off|Active")
    one("SWMRCbCounter_RBV", "LONG")
    one("FlushNow", "ENUM", 1, "Done|Flush")
    for d in EXTRA:
        pair(f"ExtraDimSize{d}", "LONG")
        one(f"ExtraDimName{d}_RBV", "STRING")
        pair(f"PosNameDim{d}", "STRING")
        pair(f"PosIndexDim{d}", "STRING")
        if d != "N":
            pair(f"ExtraDimChunk{d}", "LONG")
    pair("PositionMode", "ENUM", 1, "Off|On")
    return t


EXPECTED = _expected()


def test_list_pvs_has_every_adcore_record(listing):
    assert len(EXPECTED) == 336  # 93 + 43 + 38 + 162 records in ADCore's four templates
    missing = sorted(set(EXPECTED) - set(listing))
    assert not missing, f"records of ADCore's templates not served: {missing}"
    wrong = {}
    for suffix, (kind, count, enums) in EXPECTED.items():
        served_kind, served_count, _access, served_enums = listing[suffix]
        if (served_kind, int(served_count), served_enums) != (kind, count, enums):
            wrong[suffix] = ((served_kind, served_count, served_enums), (kind, count, enums))
    assert not wrong, wrong


@pytest.mark.parametrize("suffix", ["FilePath", "FullFileName_RBV", "XMLFileName", "Capture",
                                    "Capture_RBV", "FileWriteMode", "Compression",
                                    "EnableCallbacks", "TempSuffix", "Dimensions_RBV",
                                    "FileNumber", "TimeStamp_RBV", "PluginType_RBV"])
def test_served_types_over_ca(iocs, suffix):
    from caproto import ChannelType

    kind, count, enums = EXPECTED[suffix]
    pv = iocs.client.pv(W + suffix)
    native = {ChannelType.CHAR: "CHAR", ChannelType.ENUM: "ENUM", ChannelType.LONG: "LONG",
              ChannelType.DOUBLE: "DOUBLE", ChannelType.STRING: "STRING"}[
        pv.channel.native_data_type]
    assert native == kind
    assert pv.channel.native_data_count == count
    if enums:
        strings = pv.read(data_type="control").metadata.enum_strings
        assert "|".join(s.decode() for s in strings) == enums


def test_readbacks_follow_setpoints(ready):
    for suffix, value in (("FileName", "abc"), ("NumCapture", 17), ("FileWriteMode", "Stream"),
                          ("LazyOpen", "Yes"), ("TempSuffix", ".part"), ("ZLevel", 3),
                          ("FillValue", 2.5), ("NDArrayPort", "SIM1"), ("SWMRMode", "On")):
        ready.put(suffix, value)
        assert ready.get(f"{suffix}_RBV") == value
    ready.put("FilePath", "/tmp")
    assert ready.get("FilePath_RBV") == "/tmp/"  # ADCore adds the trailing /


def test_plugin_identity_and_priming(ready):
    assert ready.get("PluginType_RBV").startswith("NDFileHDF5")
    assert ready.get("PortName_RBV") == "FileHDF1"
    assert ready.get("NDArrayPort_RBV") == "SIM1"  # the driver's PortName_RBV
    # The source holds a 64x48 frame that we never received (callbacks disabled);
    # connecting to it primes the readbacks: ophyd's stage() needs non-zero sizes.
    ready.put("EnableCallbacks", "Disable")
    ready.cam_put("SizeX", 64)
    ready.cam_put("SizeY", 48)
    ready.acquire(1, settle=False)
    ready.put("SourcePrefix", "NO:SUCH:")
    wait_for(lambda: ready.get("SourceConnected_RBV") == "Disconnected", 10)
    ready.put("SourcePrefix", "TST:image1:")
    wait_for(lambda: ready.get("ArraySize0_RBV") == 64, 15)
    assert ready.get("ArraySize1_RBV") == 48
    assert ready.get("ArraySize2_RBV") == 0  # mono: apstools compares with the cam's Z=0
    assert ready.get("DataType_RBV") == "UInt16"


def test_empty_string_writes(ready):
    """caproto 1.3 rejects "" on CHAR waveforms; ophyd and ophyd-async write it."""
    import epics

    for suffix in ("FileTemplate", "FileName", "XMLFileName", "NDAttributesFile",
                   "NDAttributesMacros"):
        ready.put(suffix, "something")
        ready.put(suffix, "")
        readback = suffix if suffix.startswith("NDAttributes") else f"{suffix}_RBV"
        assert ready.get(readback) == ""
        epics.caput(W + suffix, "again", wait=True)
        epics.caput(W + suffix, "", wait=True)  # libca sends one NUL byte
        assert ready.get(readback) == ""


def test_source_prefix_resubscribes(ready):
    ready.put("SourcePrefix", "NO:SUCH:")
    wait_for(lambda: ready.get("SourceConnected_RBV") == "Disconnected", 10)
    ready.put("SourcePrefix", "TST:image1:")
    wait_for(lambda: ready.get("SourceConnected_RBV") == "Connected", 20)
    uids = ready.acquire(2)
    assert ready.get("UniqueId_RBV") == uids[-1]
