"""pvAccess source: the NTNDArray of an areaDetector NDPluginPva plugin (``Pva1:Image``).

One update carries a whole NDArray: pixels (or NDPluginCodec's compressed bytes), every
NDAttribute with its type, the dimensions with offset/binning/reverse, the UniqueId and
both timestamps, so nothing has to be paired up as over Channel Access.  p4p's client
(pvxs) receives it; here it is turned into an ``NDArray`` with one copy of the pixels into
the buffer ``allocate`` gives (a receiver slot), the way ADCore's
``NTNDArrayConverter::toArray`` does.

The monitor asks the server for a deeper queue (``record[queueSize=N]``) so that a
receiver that lags for a moment does not lose frames; frames the server still dropped
show as UniqueId gaps (SourceSkipped_RBV), as over CA.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable

import numpy as np

from ..ndarray import (
    Codec,
    NDArray,
    NDAttribute,
    NDAttrSource,
    NDAttrType,
    NDDataType,
    placeholder,
)
from .frames import UniqueIdTracker

log = logging.getLogger(__name__)

POSIX_TIME_AT_EPICS_EPOCH = 631152000
DEFAULT_QUEUE = 32  # updates the server keeps for us while we lag (pvRequest queueSize)

# NDAttrSource_t order (ADCore NDAttribute.h): Driver, Param, EPICSPV, Funct, Const.
_SOURCE_TYPES = (NDAttrSource.DRIVER, NDAttrSource.PARAM, NDAttrSource.EPICS_PV,
                 NDAttrSource.FUNCT, NDAttrSource.CONST)
# pvxs type names of a variant's scalar -> NDAttrDataType (NTNDArrayConverter::toAttributes)
_ATTR_TYPES = {
    "int8_t": NDAttrType.Int8, "uint8_t": NDAttrType.UInt8, "int16_t": NDAttrType.Int16,
    "uint16_t": NDAttrType.UInt16, "int32_t": NDAttrType.Int32, "uint32_t": NDAttrType.UInt32,
    "int64_t": NDAttrType.Int64, "uint64_t": NDAttrType.UInt64, "float": NDAttrType.Float32,
    "double": NDAttrType.Float64, "string": NDAttrType.String, "null": NDAttrType.Undefined,
}
_ANY_VALUE = re.compile(r"any value (\w+)")
# NDAttrDataType -> p4p type code, for the simulator's server side
ATTR_CODES = {
    NDAttrType.Int8: "b", NDAttrType.UInt8: "B", NDAttrType.Int16: "h", NDAttrType.UInt16: "H",
    NDAttrType.Int32: "i", NDAttrType.UInt32: "I", NDAttrType.Int64: "l", NDAttrType.UInt64: "L",
    NDAttrType.Float32: "f", NDAttrType.Float64: "d", NDAttrType.String: "s",
}
# numpy dtype char -> NTNDArray value union member
VALUE_FIELDS = {"b": "byteValue", "B": "ubyteValue", "h": "shortValue", "H": "ushortValue",
                "i": "intValue", "I": "uintValue", "l": "longValue", "L": "ulongValue",
                "q": "longValue", "Q": "ulongValue", "f": "floatValue", "d": "doubleValue"}


class FrameError(ValueError):
    """An NTNDArray that is not a usable frame (the message says why)."""


class AttributeTypes:
    """The NDAttrDataType of each attribute's value.  p4p gives a variant's value as a
    Python int/float/str without its width, which only the Value's text shows (~70 us an
    attribute, too slow for 20 attributes at hundreds of frames/s); so it is read once per
    (name, Python type) and again whenever a value does not fit the type known, and every
    ``RECHECK`` frames."""

    RECHECK = 256

    def __init__(self):
        self._known: dict[tuple[str, type], NDAttrType | None] = {}
        self._frames = 0

    def frame_done(self) -> None:
        self._frames += 1
        if self._frames >= self.RECHECK:
            self.clear()

    def clear(self) -> None:
        self._known.clear()
        self._frames = 0

    def of(self, element, name: str, value) -> NDAttrType | None:
        key = (name, type(value))
        dtype = self._known.get(key, False)
        if dtype is False or (isinstance(value, int) and dtype is not None
                              and dtype.numpy is not None and not _fits(value, dtype)):
            kind = _ANY_VALUE.search(element.tostr())
            dtype = _ATTR_TYPES.get(kind.group(1)) if kind else None
            self._known[key] = dtype
        return dtype


def _fits(value: int, dtype: NDAttrType) -> bool:
    info = np.iinfo(dtype.numpy) if dtype.numpy.kind in "iu" else None
    return info is None or info.min <= value <= info.max


def _attribute(element, types: AttributeTypes | None = None) -> NDAttribute | None:
    name = element["name"]
    value = element["value"]
    if types is not None:
        dtype = types.of(element, name, value)
    else:
        kind = _ANY_VALUE.search(element.tostr())
        dtype = _ATTR_TYPES.get(kind.group(1)) if kind else None
    if dtype is None:  # bool and arrays: ADCore ignores them too
        return None
    source_type = element["sourceType"]
    source = _SOURCE_TYPES[source_type] if 0 <= source_type < len(_SOURCE_TYPES) \
        else NDAttrSource.DRIVER
    if dtype is NDAttrType.Undefined:
        value = None
    return NDAttribute(name, value, dtype, element["descriptor"], element["source"], source)


def ntndarray_frame(value, allocate: Callable[[int], np.ndarray | None] | None = None,
                    types: AttributeTypes | None = None) -> NDArray | None:
    """An NDArray from an NTNDArray ``Value`` (p4p, unwrapped); None for an update without
    data (a plugin that has not had a frame yet).  Raises FrameError."""
    pixels = value["value"]
    if pixels is None:
        return None
    dims = value["dimension"]
    sizes = [int(d["size"]) for d in dims]
    if not 1 <= len(sizes) <= 10 or any(s <= 0 for s in sizes):
        raise FrameError(f"invalid dimensions {sizes}")
    shape = tuple(reversed(sizes))
    count = int(np.prod(sizes))
    codec_name = value["codec.name"]
    if codec_name:
        try:
            dtype = NDDataType(int(value["codec.parameters"])).numpy
        except (TypeError, ValueError):
            raise FrameError(f"codec {codec_name!r} without the uncompressed data type in "
                             "codec.parameters") from None
        raw = np.ascontiguousarray(pixels).view(np.uint8).reshape(-1)
        compressed = int(value["compressedSize"]) or raw.size
        raw = raw[:min(compressed, raw.size)]
        out = allocate(raw.size) if allocate is not None else None
        if out is None:
            payload = raw.copy()
        else:
            np.copyto(out, raw)
            payload = out
        data, codec = placeholder(shape, dtype), Codec(codec_name, payload)
    else:
        if pixels.size < count:
            raise FrameError(f"value holds {pixels.size} elements, its dimensions {sizes} "
                             f"need {count}")
        dtype = pixels.dtype.newbyteorder("<")
        if dtype.kind not in "iuf":
            raise FrameError(f"unsupported value type {pixels.dtype}")
        out = allocate(count * dtype.itemsize) if allocate is not None else None
        if out is None:
            data = np.array(pixels[:count], dtype=dtype)
        else:
            data = out.view(dtype)
            np.copyto(data, pixels[:count])
        data, codec = data.reshape(shape), None
    attributes = {}
    for element in value["attribute"]:
        attribute = _attribute(element, types)
        if attribute is not None:
            attributes[attribute.name] = attribute
    if types is not None:
        types.frame_done()
    stamp = value["dataTimeStamp"]
    epics = value["timeStamp"]
    return NDArray(
        data=data, unique_id=int(value["uniqueId"]),
        timestamp=stamp["secondsPastEpoch"] - POSIX_TIME_AT_EPICS_EPOCH + stamp["nanoseconds"] / 1e9,
        epics_ts_sec=max(int(epics["secondsPastEpoch"]) - POSIX_TIME_AT_EPICS_EPOCH, 0),
        epics_ts_nsec=int(epics["nanoseconds"]), attributes=attributes,
        offset=tuple(int(d["offset"]) for d in dims),
        binning=tuple(int(d["binning"]) or 1 for d in dims),
        reverse=tuple(int(bool(d["reverse"])) for d in dims), codec=codec)


def plugin_request(options: dict, queue_size: int):
    """A pvRequest naming server plugins (``field(_[name=value])``) and the queue size,
    as the structure a parsed request string would be."""
    from p4p import Type, Value

    strings = {str(k): str(v) for k, v in options.items()}
    request_type = Type([
        ("field", ("S", None, [("_", ("S", None, [("_options", ("S", None, [
            (name, "s") for name in strings]))]))])),
        ("record", ("S", None, [("_options", ("S", None, [("queueSize", "s")]))])),
    ])
    return Value(request_type, {"field": {"_": {"_options": strings}},
                                "record": {"_options": {"queueSize": str(queue_size)}}})


class PVAImageSource:
    """Rebuilds NDArrays from an NTNDArray PV (NDPluginPva); the interface of
    ``CAImageSource``."""

    def __init__(self, prefix: str, on_frame: Callable[[NDArray | int], None], *,
                 accepting: Callable[[], bool] = lambda: True,
                 on_status: Callable[[dict], None] = lambda status: None,
                 on_error: Callable[[str], None] = lambda message: None,
                 attributes=None, context=None,
                 allocate: Callable[[int], np.ndarray | None] | None = None,
                 queue_size: int = DEFAULT_QUEUE, request_options: dict | None = None):
        self.prefix = prefix  # the PV name (the name SourcePrefix holds, less "pva://")
        self.on_frame = on_frame
        self.accepting = accepting
        self.on_status = on_status
        self.on_error = on_error
        self.attributes = attributes  # the writer's own NDAttributes (thread receiver)
        self.allocate = allocate
        self.queue_size = max(int(queue_size), 1)
        # pvRequest options for the server's plugins, e.g. {"pydistributor": "group:w;..."}
        # (sent as a structure: p4p's request parser refuses the "_[...]" syntax)
        self.request_options = dict(request_options or {})
        self.tracker = UniqueIdTracker(on_status, gaps=not self.request_options)
        self.types = AttributeTypes()
        self.latest_seen: int | None = None
        self._context = context
        self._own_context = context is None
        self._sub = None
        self._connected = False
        self._skip_current = True
        self._lock = threading.Lock()

    @property
    def skipped(self) -> int:
        return self.tracker.skipped

    @property
    def duplicates(self) -> int:
        return self.tracker.duplicates

    @property
    def connected(self) -> bool:
        return bool(self.prefix) and self._connected

    def _ctx(self):
        if self._context is None:
            from p4p.client.thread import Context

            self._context = Context("pva", nt=False)
        return self._context

    # -- lifecycle ---------------------------------------------------------------
    def start(self) -> None:
        self._subscribe()

    def stop(self) -> None:
        self._unsubscribe()
        if self._own_context and self._context is not None:
            self._context.close()
            self._context = None

    def set_prefix(self, prefix: str) -> None:
        self._unsubscribe()
        self.prefix = prefix
        self.tracker.reset()
        self._subscribe()

    def _subscribe(self) -> None:
        self._connected = False
        if not self.prefix:
            self.on_status({"connected": False})
            return
        self._skip_current = True  # a new subscription first sends the frame held now
        self.types.clear()
        request = f"field()record[queueSize={self.queue_size}]"
        if self.request_options:
            request = plugin_request(self.request_options, self.queue_size)
        self._sub = self._ctx().monitor(self.prefix, self._on_update, request=request,
                                        notify_disconnect=True)

    def _unsubscribe(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            sub.close()
        if self._connected:
            self._connected = False
            self.on_status({"connected": False})

    # -- updates (p4p's callback thread) ----------------------------------------------
    def _on_update(self, update) -> None:
        if isinstance(update, Exception):
            from p4p.client.thread import Disconnected

            if isinstance(update, Disconnected):
                if self._connected:
                    log.info("%s disconnected", self.prefix)
                self._connected = False
                self.types.clear()  # the server may come back with other types
                self.on_status({"connected": False})
            else:
                log.warning("%s: %s", self.prefix, update)
            return
        if not self._connected:
            log.info("%s connected", self.prefix)
            self._connected = True
            self.on_status({"connected": True})
        with self._lock:
            self._frame(update)

    def _frame(self, value) -> None:
        if self._skip_current:
            self._skip_current = False
            log.info("%s: skipping the frame held at connection", self.prefix)
            return
        uid = int(value["uniqueId"])
        if uid == 0 or value["value"] is None:
            return  # what a plugin holds before its first frame
        self.latest_seen = uid
        if not self.accepting():
            if self.tracker.track(uid):
                self.on_frame(uid)
            return
        try:
            frame = ntndarray_frame(value, self.allocate, self.types)
        except FrameError as exc:
            self.on_error(f"frame {uid}: {exc}; frame rejected")
            return
        if frame is None:
            return
        if self.attributes is not None:
            frame.attributes.update(self.attributes.sample())
        if self.tracker.track(uid):
            self.on_frame(frame)

    # -- requests ------------------------------------------------------------------
    def read_current(self, timeout: float = 2.0) -> NDArray | None:
        """The frame the source holds now (to prime the readbacks at connect)."""
        try:
            value = self._ctx().get(self.prefix, timeout=timeout)
            frame = ntndarray_frame(value)
        except Exception as exc:  # noqa: BLE001 - not connected, or no frame yet
            log.warning("cannot read the source's current frame: %s", exc)
            return None
        if frame is not None and self.attributes is not None:
            frame.attributes.update(self.attributes.sample())
        return frame

    def latest_unique_id(self, timeout: float = 2.0) -> int | None:
        """The UniqueId of the latest frame the source has produced (the channel's
        current value, asked of the server now); None when it cannot be learned."""
        if not self.prefix:
            return None
        try:
            value = self._ctx().get(self.prefix, request="field(uniqueId)", timeout=timeout)
            return int(value["uniqueId"])
        except Exception as exc:  # noqa: BLE001 - disconnected or timed out
            log.info("cannot read %s's uniqueId: %s", self.prefix, exc)
            return None
