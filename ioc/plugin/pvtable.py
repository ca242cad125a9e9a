"""The NDFileHDF5 PV table, declared once.

Every record of ADCore's NDArrayBase, NDPluginBase, NDFile and NDFileHDF5
templates (reference §1), with ADCore's suffix, CA type, enum strings and
element count, plus our extension PVs.  The IOC, ``--list-pvs``, the screens
and the README's PV documentation are all derived from this table.  Pure data.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace


class Kind(enum.Enum):
    ENUM = "ENUM"
    LONG = "LONG"
    DOUBLE = "DOUBLE"
    CHAR = "CHAR"  # CHAR waveform carrying a string ("long string")
    STRING = "STRING"  # DBR_STRING, 40 characters
    LONG_ARRAY = "LONG[]"


@dataclass(frozen=True)
class PV:
    suffix: str
    kind: Kind
    record: str  # the ADCore record type
    value: object = 0
    enum_strings: tuple[str, ...] = ()
    nelm: int = 1
    writable: bool = True
    section: str = ""
    doc: str = ""
    inert: bool = False  # exists for screens and clients; no effect here
    locked: bool = False  # refused while a file is open (ADCore)
    precision: int = 0
    units: str = ""

    @property
    def is_rbv(self) -> bool:
        return not self.writable


NO_YES = ("No", "Yes")
DISABLE_ENABLE = ("Disable", "Enable")
OFF_ON = ("Off", "On")
DATA_TYPES = ("Int8", "UInt8", "Int16", "UInt16", "Int32", "UInt32", "Int64", "UInt64",
              "Float32", "Float64")
COLOR_MODES = ("Mono", "Bayer", "RGB1", "RGB2", "RGB3", "YUV444", "YUV422", "YUV421")
WRITE_MODES = ("Single", "Capture", "Stream")
COMPRESSIONS = ("None", "N-bit", "szip", "zlib", "Blosc", "BSLZ4", "LZ4", "JPEG")
EXTRA_DIMS = ("N", "X", "Y", "3", "4", "5", "6", "7", "8", "9")
ATTRIBUTES_STATUS = ("Attributes file OK", "File not found", "XML syntax error",
                     "Macro substitution error")
# A bo record without ZNAM/ONAM: EPICS base serves two empty state strings.
NO_STATE_NAMES = ("", "")
# The ADCore release whose NDFileHDF5 behaviour is implemented.  ADCore's own plugins report
# it in both ADCoreVersion_RBV and DriverVersion_RBV (asynNDArrayDriver sets both), and
# clients gate on it (pymalcolm refuses an HDF5 plugin below 3.12).
ADCORE_VERSION = "3.14.0"

_section = ""


def _pv(suffix, kind, record, value=0, **kw) -> PV:
    return PV(suffix, kind, record, value, section=_section, **kw)


def ro(suffix, kind, record, value=0, **kw) -> list[PV]:
    return [_pv(suffix, kind, record, value, writable=False, **kw)]


def rw(suffix, kind, record, value=0, **kw) -> list[PV]:
    return [_pv(suffix, kind, record, value, **kw)]


_IN = {"bo": "bi", "mbbo": "mbbi", "longout": "longin", "ao": "ai", "stringout": "stringin",
       "waveform": "waveform", "busy": "bi"}


def pair(suffix, kind, record, value=0, rbv_strings=None, **kw) -> list[PV]:
    """A setpoint and its ``_RBV`` readback (ADCore's out/in record twins)."""
    setpoint = _pv(suffix, kind, record, value, **kw)
    rbv_kw = {k: v for k, v in kw.items() if k not in ("locked",)}
    if rbv_strings is not None:
        rbv_kw["enum_strings"] = rbv_strings
    readback = _pv(f"{suffix}_RBV", kind, _IN[record], value, writable=False, **rbv_kw)
    return [setpoint, readback]


def boolean(suffix, strings=NO_YES, value=0, **kw) -> list[PV]:
    return pair(suffix, Kind.ENUM, "bo", value, enum_strings=strings, **kw)


def long(suffix, value=0, **kw) -> list[PV]:
    return pair(suffix, Kind.LONG, "longout", value, **kw)


def double(suffix, value=0.0, **kw) -> list[PV]:
    return pair(suffix, Kind.DOUBLE, "ao", value, **kw)


def text(suffix, nelm=256, value="", **kw) -> list[PV]:
    return pair(suffix, Kind.CHAR, "waveform", value, nelm=nelm, **kw)


def menu(suffix, strings, value=0, **kw) -> list[PV]:
    return pair(suffix, Kind.ENUM, "mbbo", value, enum_strings=strings, **kw)


def _ndarray_base() -> list[PV]:
    global _section
    _section = "NDArrayBase"
    t: list[PV] = []
    t += ro("ADCoreVersion_RBV", Kind.STRING, "stringin", ADCORE_VERSION,
            doc="the ADCore release whose NDFileHDF5 behaviour this IOC implements")
    t += ro("DriverVersion_RBV", Kind.STRING, "stringin", ADCORE_VERSION,
            doc="as for ADCore's own plugins, the ADCore version (ours: WriterVersion_RBV)")
    for suffix in ("PortName_RBV", "Manufacturer_RBV", "Model_RBV", "SerialNumber_RBV",
                   "SDKVersion_RBV", "FirmwareVersion_RBV"):
        t += ro(suffix, Kind.STRING, "stringin", "")
    t += boolean("Acquire", ("Done", "Acquire"), rbv_strings=("Done", "Acquiring"),
                 inert=True, doc="driver record; meaningless on a plugin")
    t += rw("AcquireBusy", Kind.ENUM, "busy", 0, enum_strings=("Done", "Acquiring"),
            inert=True)
    t += ro("AcquireBusyCB", Kind.ENUM, "bi", 0, enum_strings=("Done", "Acquiring"), inert=True)
    t += rw("SetAcquireBusy", Kind.DOUBLE, "calcout", 0.0, inert=True)
    t += rw("ClearAcquireBusy", Kind.DOUBLE, "calcout", 0.0, inert=True)
    t += rw("WaitForPlugins", Kind.ENUM, "bo", 0, enum_strings=NO_YES, inert=True)
    t += long("NDimensions", doc="number of dimensions of the last frame")
    t += pair("Dimensions", Kind.LONG_ARRAY, "waveform", (0,) * 10, nelm=10)
    for i in range(10):
        t += ro(f"Dim{i}SA", Kind.LONG, "subArray", 0, inert=True)
        t += ro(f"ArraySize{i}", Kind.LONG, "longin", 0,
                doc=f"size of dimension {i} of the last frame (mirror of ArraySize{i}_RBV)")
    for i in range(10):
        t += ro(f"Dim{i}SA_RBV", Kind.LONG, "subArray", 0)
        t += ro(f"ArraySize{i}_RBV", Kind.LONG, "longin", 0,
                doc=f"size of dimension {i} of the last frame")
    for suffix in ("ArraySizeX_RBV", "ArraySizeY_RBV", "ArraySizeZ_RBV", "ArraySize_RBV"):
        t += ro(suffix, Kind.LONG, "longin", 0, doc="stays 0 on a file plugin, as in ADCore")
    t += ro("BayerPattern_RBV", Kind.ENUM, "mbbi", 0, enum_strings=("RGGB", "GBRG", "GRBG", "BGGR"))
    t += ro("Codec_RBV", Kind.STRING, "stringin", "")
    t += ro("CompressedSize_RBV", Kind.LONG, "longin", 0)
    t += menu("DataType", DATA_TYPES, 1)
    t += menu("ColorMode", COLOR_MODES, 0)
    t += ro("UniqueId_RBV", Kind.LONG, "longin", 0)
    t += ro("TimeStamp_RBV", Kind.DOUBLE, "ai", 0.0, precision=3)
    t += ro("EpicsTSSec_RBV", Kind.LONG, "longin", 0)
    t += ro("EpicsTSNsec_RBV", Kind.LONG, "longin", 0)
    t += long("ArrayCounter", doc="frames handed to the writer (written or not) or captured; writable")
    t += ro("ArrayRate_RBV", Kind.DOUBLE, "calc", 0.0, precision=1, units="Hz")
    t += boolean("ArrayCallbacks", DISABLE_ENABLE, 0, inert=True,
                 doc="a file plugin makes no output callbacks")
    t += rw("NDAttributesFile", Kind.CHAR, "waveform", "", nelm=2048,
            doc="the plugin's own NDAttributes file (path or inline XML)")
    t += rw("NDAttributesMacros", Kind.CHAR, "waveform", "", nelm=256)
    t += ro("NDAttributesStatus", Kind.ENUM, "mbbi", 0, enum_strings=ATTRIBUTES_STATUS)
    t += ro("PoolMaxMem", Kind.DOUBLE, "ai", 0.0, units="MB",
            doc="memory limit for the frames held (queue and Capture buffer): serve --max-memory")
    t += ro("PoolUsedMem", Kind.DOUBLE, "ai", 0.0, units="MB",
            doc="memory held by queued and buffered frames")
    t += ro("PoolAllocBuffers", Kind.LONG, "longin", 0)
    t += ro("PoolFreeBuffers", Kind.LONG, "longin", 0, inert=True)
    t += ro("PoolMaxBuffers", Kind.LONG, "longin", 0, inert=True)
    t += ro("PoolUsedBuffers", Kind.DOUBLE, "calc", 0.0)
    t += rw("PoolPollStats", Kind.ENUM, "bo", 0, enum_strings=NO_STATE_NAMES, inert=True)
    t += rw("EmptyFreeList", Kind.ENUM, "bo", 0, enum_strings=NO_STATE_NAMES, inert=True)
    t += rw("PreAllocBuffers", Kind.ENUM, "busy", 0, enum_strings=("Done", "Allocate"),
            inert=True)
    t += long("NumPreAllocBuffers", 100, inert=True)
    t += ro("NumQueuedArrays", Kind.LONG, "longin", 0)
    return t


def _plugin_base() -> list[PV]:
    global _section
    _section = "NDPluginBase"
    t: list[PV] = []
    t += ro("PluginType_RBV", Kind.STRING, "stringin", "NDFileHDF5")
    t += pair("NDArrayPort", Kind.STRING, "stringout", "",
              doc="port of the array source (defaults to the driver's PortName_RBV)")
    t += long("NDArrayAddress", inert=True)
    t += boolean("EnableCallbacks", DISABLE_ENABLE, 0, doc="frames are ignored unless Enable")
    t += double("MinCallbackTime", precision=3, units="s")
    t += rw("MaxArrayRate", Kind.DOUBLE, "ao", 0.0, precision=1, units="Hz")
    t += rw("MaxArrayRate_COUT", Kind.DOUBLE, "calcout", 0.0, inert=True)
    t += ro("MaxArrayRate_RBV", Kind.DOUBLE, "calc", 0.0, precision=1, units="Hz")
    t += double("MaxByteRate", inert=True)
    t += ro("ExecutionTime_RBV", Kind.DOUBLE, "ai", 0.0, precision=3, units="ms")
    t += rw("ProcessPlugin", Kind.ENUM, "bo", 0, enum_strings=NO_STATE_NAMES,
            doc="write 1: process the last frame again")
    t += boolean("BlockingCallbacks", NO_YES, 0, inert=True,
                 doc="frames always go through the queue here")
    t += long("DroppedArrays", doc="frames dropped because the queue was full; writable")
    t += long("QueueSize", 20, doc="input queue depth")
    t += ro("QueueFree", Kind.LONG, "longin", 20)
    t += rw("QueueFreeLow", Kind.DOUBLE, "calcout", 0.0, inert=True)
    t += rw("QueueUseHIGH", Kind.DOUBLE, "calcout", 0.0, inert=True)
    t += rw("QueueUseHIHI", Kind.DOUBLE, "calcout", 0.0, inert=True)
    t += ro("QueueUse", Kind.DOUBLE, "calc", 0.0)
    t += long("NumThreads", 1, inert=True)
    t += ro("MaxThreads_RBV", Kind.LONG, "longin", 1)
    t += menu("SortMode", ("Unsorted", "Sorted"), 0, inert=True)
    t += double("SortTime", 0.1, inert=True)
    t += long("SortSize", 20, inert=True)
    t += ro("SortFree", Kind.LONG, "longin", 20, inert=True)
    t += rw("SortFreeLow", Kind.DOUBLE, "calcout", 0.0, inert=True)
    t += long("DroppedOutputArrays", inert=True)
    t += long("DisorderedArrays", inert=True)
    t += rw("AsynIO", Kind.STRING, "asyn", "", inert=True)
    return t


def _ndfile() -> list[PV]:
    global _section
    _section = "NDFile"
    t: list[PV] = []
    t += text("FilePath", doc="directory; a trailing / is added")
    t += ro("FilePathExists_RBV", Kind.ENUM, "bi", 0, enum_strings=NO_YES)
    t += long("CreateDirectory", doc="0 never; -n: at most n missing dirs; n: create below level n")
    t += text("FileName")
    t += long("FileNumber", 1)
    t += boolean("AutoIncrement", NO_YES, 1)
    t += text("FileTemplate", value="%s%s_%3.3d.h5")
    t += ro("FullFileName_RBV", Kind.CHAR, "waveform", "", nelm=512)
    t += boolean("AutoSave", NO_YES, 0)
    t += pair("WriteFile", Kind.ENUM, "busy", 0, enum_strings=("Done", "Write"),
              rbv_strings=("Done", "Writing"))
    t += pair("ReadFile", Kind.ENUM, "busy", 0, enum_strings=("Done", "Read"),
              rbv_strings=("Done", "Reading"), doc="not supported by HDF5 (as ADCore)")
    t += menu("FileFormat", ("HDF5", "Invalid"), 0, rbv_strings=("HDF5", "Undefined"), inert=True)
    t += menu("FileWriteMode", WRITE_MODES, 0)
    t += pair("Capture", Kind.ENUM, "busy", 0, enum_strings=("Done", "Capture"),
              rbv_strings=("Done", "Capturing"))
    t += long("NumCapture", 1)
    t += ro("NumCaptured_RBV", Kind.LONG, "longin", 0)
    t += rw("FreeCapture", Kind.ENUM, "bo", 0, enum_strings=("Done", "Free"))
    t += boolean("DeleteDriverFile", NO_YES, 0, inert=True)
    t += ro("WriteStatus", Kind.ENUM, "bi", 0, enum_strings=("Write OK", "Write error"))
    t += ro("WriteMessage", Kind.CHAR, "waveform", "", nelm=256)
    t += boolean("LazyOpen", NO_YES, 0)
    t += pair("TempSuffix", Kind.STRING, "stringout", "")
    return t


def _hdf5() -> list[PV]:
    global _section
    _section = "NDFileHDF5"
    t: list[PV] = []
    t += text("XMLFileName", nelm=2048, doc="layout file path or inline XML; empty = default")
    t += ro("XMLValid_RBV", Kind.ENUM, "bi", 1, enum_strings=NO_YES)
    t += ro("XMLErrorMsg_RBV", Kind.CHAR, "waveform", "", nelm=256)
    t += boolean("StoreAttr", NO_YES, 1, locked=True)
    t += boolean("StorePerform", NO_YES, 1, locked=True)
    t += boolean("DimAttDatasets", NO_YES, 0,
                 doc="NDAttribute datasets get the extra dimensions (plus ADCore's two 1s)")
    t += double("FillValue")
    t += boolean("ChunkSizeAuto", NO_YES, 1, locked=True)
    t += long("NumColChunks", locked=True)
    t += long("NumRowChunks", locked=True)
    for i in range(2, 10):
        t += long(f"ChunkSize{i}", locked=True)
    t += long("NumFramesChunks", locked=True)
    t += long("NDAttributeChunk", locked=True)
    t += long("BoundaryAlign", units="bytes",
              doc="H5Pset_alignment of the next file: objects of at least BoundaryThreshold "
                  "bytes start on a multiple of this; 0: HDF5's placement")
    t += long("BoundaryThreshold", 65536, units="bytes",
              doc="objects this large or larger are aligned (when BoundaryAlign > 0)")
    t += long("NumFramesFlush")
    t += menu("Compression", COMPRESSIONS, 0, locked=True)
    t += long("NumDataBits", 8)
    t += long("DataBitsOffset", 0)
    t += long("SZipNumPixels", 16)
    t += long("ZLevel", 6)
    t += menu("BloscShuffle", ("None", "Byte", "Bit"), 1)
    t += menu("BloscCompressor", ("BloscLZ", "LZ4", "LZ4HC", "SNAPPY", "ZLIB", "ZSTD"), 0)
    t += long("BloscLevel", 5)
    t += long("JPEGQuality", 90, inert=True)
    t += ro("RunTime", Kind.DOUBLE, "ai", 0.0, precision=3, units="s")
    t += ro("IOSpeed", Kind.DOUBLE, "ai", 0.0, precision=1, units="Mbit/s")
    t += ro("SWMRSupported_RBV", Kind.ENUM, "bi", 1, enum_strings=("Not Supported", "Supported"))
    t += boolean("SWMRMode", OFF_ON, 0)
    t += ro("SWMRActive_RBV", Kind.ENUM, "bi", 0, enum_strings=("Off", "Active"))
    t += ro("SWMRCbCounter_RBV", Kind.LONG, "longin", 0)
    t += rw("FlushNow", Kind.ENUM, "busy", 0, enum_strings=("Done", "Flush"))
    _section = "NDFileHDF5 extra dimensions"
    t += long("NumExtraDims", locked=True,
              doc="extra dimensions 0-9: leading axes [dim k .. Y, X, N] before the frame's")
    for d in EXTRA_DIMS:
        t += long(f"ExtraDimSize{d}", 1, locked=True,
                  doc=f"size of extra dimension {d} (> 0); NumCapture = product of the sizes")
    for i, d in enumerate(EXTRA_DIMS):
        t += ro(f"ExtraDimName{d}_RBV", Kind.STRING, "stringin", f"scan dimension {i}")
    for d in EXTRA_DIMS[1:]:
        t += long(f"ExtraDimChunk{d}", locked=True, doc=f"chunk along extra dimension {d}")
    _section = "NDFileHDF5 positions"
    t += boolean("PositionMode", OFF_ON, 0,
                 doc="place each frame at the indices in its PosNameDim* NDAttributes")
    for d in EXTRA_DIMS:
        t += pair(f"PosNameDim{d}", Kind.STRING, "stringout", "",
                  doc=f"NDAttribute holding the frame's index along dimension {d}")
    for d in EXTRA_DIMS:
        t += pair(f"PosIndexDim{d}", Kind.STRING, "stringout", "",
                  doc=f"NDAttribute stored as a 1-D dataset indexed by dimension {d}")
    return t


def _extension() -> list[PV]:
    global _section
    _section = "extension"
    t: list[PV] = []
    t += text("SourcePrefix", doc="where frames come from: an NDStdArrays plugin's prefix "
              "(13SIM1:image1: or ca://13SIM1:image1:) or an NDPluginPva PV "
              "(pva://13SIM1:Pva1:Image); writing it re-subscribes")
    t += ro("SourceConnected_RBV", Kind.ENUM, "bi", 0, enum_strings=("Disconnected", "Connected"),
            doc="Connected when ArrayData and the size/type PVs of the source are connected")
    t += ro("SourceSkipped_RBV", Kind.LONG, "longin", 0,
            doc="frames the source produced that never reached us (UniqueId gaps)")
    t += ro("SourceDuplicates_RBV", Kind.LONG, "longin", 0,
            doc="frames received twice (same UniqueId) and ignored")
    t += ro("InvalidFrames_RBV", Kind.LONG, "longin", 0,
            doc="frames refused: too few elements, or shape/type differing from the open file")
    t += ro("NDAttributesMessage_RBV", Kind.CHAR, "waveform", "", nelm=256,
            doc="why NDAttributesStatus is not OK, or which attributes cannot be evaluated")
    t += ro("DriverAttributesMessage_RBV", Kind.CHAR, "waveform", "", nelm=256,
            doc="the driver's NDAttributesFile (under --cam), evaluated here for CA sources: "
            "how many attributes, or why none")
    t += ro("WriterVersion_RBV", Kind.STRING, "stringin", "",
            doc="version of nexus-writer-ioc (DriverVersion_RBV reports the ADCore version)")
    t += ro("Workers_RBV", Kind.LONG, "longin", 0,
            doc="writer workers connected (serve --workers-listen); 0 when this IOC writes "
            "the frames itself")
    t += ro("WorkersMessage_RBV", Kind.CHAR, "waveform", "", nelm=256,
            doc="the writer workers and what each wrote in the current capture")
    t += ro("MissingFrames_RBV", Kind.LONG, "longin", 0,
            doc="frames of the last capture's UniqueId range that no worker wrote (read as "
            "the fill value in the master file, listed in it)")
    return t


def build_table() -> tuple[PV, ...]:
    table = _ndarray_base() + _plugin_base() + _ndfile() + _hdf5() + _extension()
    seen: set[str] = set()
    for pv in table:
        if pv.suffix in seen:
            raise AssertionError(f"duplicate PV suffix {pv.suffix}")
        seen.add(pv.suffix)
    return tuple(table)


PV_TABLE = build_table()
BY_SUFFIX = {pv.suffix: pv for pv in PV_TABLE}


def with_defaults(**values) -> tuple[PV, ...]:
    """The table with some initial values replaced (e.g. QueueSize from the command line)."""
    return tuple(replace(pv, value=values[pv.suffix]) if pv.suffix in values else pv
                 for pv in PV_TABLE)


# -- values: PV form (enum labels) <-> parameter form (indices) --------------------

def fit_utf8(text: str, nbytes: int) -> str:
    """``text`` cut to at most ``nbytes`` of UTF-8 (a CHAR waveform's room), on a
    character boundary."""
    data = text.encode("utf-8", "surrogateescape")
    if len(data) <= nbytes:
        return text
    return data[:nbytes].decode("utf-8", "ignore")


def to_param(pv: PV, value: object) -> object:
    """A PV value as the saver wants it: enum labels -> index."""
    if pv.kind is Kind.ENUM:
        if isinstance(value, str):
            return pv.enum_strings.index(value)
        return int(value)
    if pv.kind is Kind.LONG:
        return int(value)
    if pv.kind is Kind.DOUBLE:
        return float(value)
    if pv.kind is Kind.LONG_ARRAY:
        return tuple(int(v) for v in value)
    return value


def to_pv(pv: PV, value: object) -> object:
    if pv.kind is Kind.ENUM and not isinstance(value, str):
        return pv.enum_strings[int(value)]
    if pv.kind is Kind.CHAR and isinstance(value, str):
        return fit_utf8(value, pv.nelm - 1)
    if pv.kind is Kind.LONG_ARRAY:
        return list(value)
    return value
