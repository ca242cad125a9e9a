"""The frame that travels down the data path: an NDArray and its NDAttributes.

Pure data, no EPICS and no h5py, so that sources, the plugin state machine and
the file writer can all share it (and it can cross a process boundary).
Mirrors ADCore's ``NDArray`` / ``NDAttribute`` (``ADApp/ADSrc/NDAttribute.h``).
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np


class NDDataType(enum.IntEnum):
    """ADCore NDDataType_t; the values are the DataType PV's enum indices."""

    Int8 = 0
    UInt8 = 1
    Int16 = 2
    UInt16 = 3
    Int32 = 4
    UInt32 = 5
    Int64 = 6
    UInt64 = 7
    Float32 = 8
    Float64 = 9

    @property
    def numpy(self) -> np.dtype:
        return _DTYPES[self]  # built once: this is on every frame's path

    @classmethod
    def from_numpy(cls, dtype: np.dtype) -> NDDataType:
        kind = np.dtype(dtype).str[1:]  # (byte order aside: "<u2", ">u2" -> "u2")
        member = _OF_KIND.get(kind)
        if member is None:
            raise ValueError(f"no NDDataType for numpy dtype {dtype}")
        return member


_NUMPY_OF = {
    NDDataType.Int8: "i1",
    NDDataType.UInt8: "u1",
    NDDataType.Int16: "i2",
    NDDataType.UInt16: "u2",
    NDDataType.Int32: "i4",
    NDDataType.UInt32: "u4",
    NDDataType.Int64: "i8",
    NDDataType.UInt64: "u8",
    NDDataType.Float32: "f4",
    NDDataType.Float64: "f8",
}
_OF_KIND = {np.dtype(name).str[1:]: member for member, name in _NUMPY_OF.items()}
_DTYPES = {member: np.dtype(name).newbyteorder("<") for member, name in _NUMPY_OF.items()}


class NDAttrType(enum.IntEnum):
    """ADCore NDAttrDataType_t: the numeric types, then String and Undefined."""

    Int8 = 0
    UInt8 = 1
    Int16 = 2
    UInt16 = 3
    Int32 = 4
    UInt32 = 5
    Int64 = 6
    UInt64 = 7
    Float32 = 8
    Float64 = 9
    String = 10
    Undefined = 11

    @property
    def numpy(self) -> np.dtype | None:
        """Little-endian numpy dtype of a numeric type; None for String/Undefined."""
        return _ATTR_DTYPES.get(self)


_ATTR_DTYPES = {t: _DTYPES[NDDataType(int(t))] for t in NDAttrType if t < NDAttrType.String}


class NDAttrSource(enum.Enum):
    """Where an NDAttribute came from; the value is ADCore's NDAttrSourceType text."""

    DRIVER = "NDAttrSourceDriver"
    PARAM = "NDAttrSourceParam"
    EPICS_PV = "NDAttrSourceEPICSPV"
    FUNCT = "NDAttrSourceFunct"
    CONST = "NDAttrSourceConst"


# NDAttribute string values are stored as fixed 256-byte C strings (ADCore's
# MAX_ATTRIBUTE_STRING_SIZE); longer values are truncated, keeping the NUL.
ATTRIBUTE_STRING_SIZE = 256


@dataclass(frozen=True, slots=True)
class NDAttribute:
    """One named value attached to a frame."""

    name: str
    value: int | float | str | None
    dtype: NDAttrType
    description: str = ""
    source: str = ""
    source_type: NDAttrSource = NDAttrSource.DRIVER

    @property
    def defined(self) -> bool:
        return self.dtype is not NDAttrType.Undefined and self.value is not None


@dataclass(frozen=True, slots=True)
class Codec:
    """How a pre-compressed frame's pixels are stored (NDPluginCodec, ADCore R3-15).

    ``name`` is NDPluginCodec's codec name ("lz4", "bslz4", "blosc"); ``payload`` the
    compressed bytes exactly as the codec made them (uint8, 1-D): a raw LZ4 block, the
    bitshuffle/LZ4 blocks without the HDF5 filter's 12-byte header, a Blosc frame."""

    name: str
    payload: np.ndarray

    @property
    def compressed_size(self) -> int:
        return int(self.payload.size)


def placeholder(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """A read-only array of ``shape`` and ``dtype`` holding no pixels (every element views
    one zero): what a compressed frame's ``data`` is, so that its dimensions and type read
    as for any frame, without decompressing it."""
    base = np.zeros(1, dtype=dtype)
    view = np.lib.stride_tricks.as_strided(base, shape=tuple(shape), strides=(0,) * len(shape),
                                           writeable=False)
    return view


@dataclass(slots=True)
class NDArray:
    """One detector frame.

    ``data`` has the numpy (C-order) shape, i.e. the *reverse* of the NDArray
    dimension order: NDArray dim 0 (fastest, X for a mono image) is the last
    numpy axis.  ``offset``, ``binning`` and ``reverse`` are per NDArray
    dimension, in NDArray order, as ADCore stores them in the file.

    A pre-compressed frame (``codec`` set) has no pixels in ``data``: it is a
    ``placeholder`` with the uncompressed shape and type, and the pixels are in
    ``codec.payload`` (``ioc.writer.codecs.decoded`` decompresses them).
    """

    data: np.ndarray
    unique_id: int
    timestamp: float = 0.0
    epics_ts_sec: int = 0
    epics_ts_nsec: int = 0
    attributes: Mapping[str, NDAttribute] = field(default_factory=dict)
    offset: tuple[int, ...] | None = None
    binning: tuple[int, ...] | None = None
    reverse: tuple[int, ...] | None = None
    codec: Codec | None = None

    @property
    def dims(self) -> tuple[int, ...]:
        """NDArray dimensions, fastest first (ADCore's ``dims[i].size``)."""
        return tuple(reversed(self.data.shape))

    @property
    def data_type(self) -> NDDataType:
        return NDDataType.from_numpy(self.data.dtype)

    @property
    def nbytes(self) -> int:
        """Bytes of the uncompressed pixels."""
        return int(self.data.size) * self.data.dtype.itemsize

    @property
    def compressed_size(self) -> int:
        """Bytes as received: the compressed size, or the pixels' (ADCore's compressedSize)."""
        return self.codec.compressed_size if self.codec is not None else self.nbytes

    @property
    def codec_name(self) -> str:
        return self.codec.name if self.codec is not None else ""

    def detached(self) -> NDArray:
        """This frame with pixels in memory of its own: for frames kept for long (Capture
        buffers), whose data may view a receiver's shared-memory slot."""
        if self.codec is not None:
            payload = self.codec.payload
            if payload.base is None:
                return self
            return dataclasses.replace(self, codec=Codec(self.codec.name, payload.copy()))
        base = self.data
        while isinstance(base, np.ndarray) and not base.flags.owndata:
            base = base.base
        if isinstance(base, np.ndarray):
            return self
        return dataclasses.replace(self, data=self.data.copy())

    def dim_offsets(self) -> tuple[int, ...]:
        return self.offset or (0,) * self.data.ndim

    def dim_binnings(self) -> tuple[int, ...]:
        return self.binning or (1,) * self.data.ndim

    def dim_reverses(self) -> tuple[int, ...]:
        return self.reverse or (0,) * self.data.ndim


BUILTIN_DESCRIPTIONS = {
    "NDArrayUniqueId": "The unique ID of the NDArray",
    "NDArrayTimeStamp": "The timestamp of the NDArray as float64",
    "NDArrayEpicsTSSec": "The NDArray EPICS timestamp seconds past epoch",
    "NDArrayEpicsTSnSec": "The NDArray EPICS timestamp nanoseconds",
}
BUILTIN_NAMES = tuple(BUILTIN_DESCRIPTIONS)


# Each built-in's value read from a frame (a plain number) and its type: the writer reads
# them per frame without making the NDAttributes (``writer._frames``).
BUILTIN_VALUES = {
    "NDArrayUniqueId": (lambda frame: int(frame.unique_id), NDAttrType.Int32),
    "NDArrayTimeStamp": (lambda frame: float(frame.timestamp), NDAttrType.Float64),
    "NDArrayEpicsTSSec": (lambda frame: int(frame.epics_ts_sec), NDAttrType.UInt32),
    "NDArrayEpicsTSnSec": (lambda frame: int(frame.epics_ts_nsec), NDAttrType.UInt32),
}


def builtin_attributes(frame: NDArray) -> list[NDAttribute]:
    """The four values NDFileHDF5 adds to every frame (``addDefaultAttributes``)."""
    return [NDAttribute(name, value(frame), dtype, BUILTIN_DESCRIPTIONS[name], "Driver")
            for name, (value, dtype) in BUILTIN_VALUES.items()]


def file_attribute_list(frame: NDArray) -> dict[str, NDAttribute]:
    """The attribute list NDFileHDF5 writes for a frame (reference §3.3).

    Built-ins first, then the frame's own attributes; on a name clash the
    frame's value wins, as ADCore's ``copy`` into the plugin list does.
    """
    merged = {a.name: a for a in builtin_attributes(frame)}
    merged.update(frame.attributes)
    return merged


def attribute_dict(attrs: Iterable[NDAttribute]) -> dict[str, NDAttribute]:
    return {a.name: a for a in attrs}
