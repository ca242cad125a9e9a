"""Channel Access sources: the areaDetector image plugin, and NDAttribute PVs.

Uses caproto's threading client (the better-tested one; callbacks for one
context run in order on one thread).  Nothing here blocks on the frame path:
each image update is turned into an ``NDArray`` and handed to ``on_frame``,
which only enqueues.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from caproto import ChannelType

from ..layout.ndattributes import AttributeDef, AttrKind
from ..ndarray import NDArray, NDAttribute, NDAttrSource, NDAttrType, NDDataType

log = logging.getLogger(__name__)

# ADCore driver parameters (asyn drvInfo) -> the driver PV under --cam that shows them.
PARAM_PVS: dict[str, str] = {
    "ARRAY_COUNTER": "ArrayCounter_RBV", "ARRAY_CALLBACKS": "ArrayCallbacks_RBV",
    "UNIQUE_ID": "UniqueId_RBV", "TIME_STAMP": "TimeStamp_RBV",
    "MAX_SIZE_X": "MaxSizeX_RBV", "MAX_SIZE_Y": "MaxSizeY_RBV",
    "MODEL": "Model_RBV", "MANUFACTURER": "Manufacturer_RBV",
    "SERIAL_NUMBER": "SerialNumber_RBV", "SDK_VERSION": "SDKVersion_RBV",
    "FIRMWARE_VERSION": "FirmwareVersion_RBV", "DRIVER_VERSION": "DriverVersion_RBV",
    "ADCORE_VERSION": "ADCoreVersion_RBV", "PORT_NAME_SELF": "PortName_RBV",
    "ACQ_TIME": "AcquireTime_RBV", "ACQ_PERIOD": "AcquirePeriod_RBV", "GAIN": "Gain_RBV",
    "BIN_X": "BinX_RBV", "BIN_Y": "BinY_RBV", "MIN_X": "MinX_RBV", "MIN_Y": "MinY_RBV",
    "SIZE_X": "SizeX_RBV", "SIZE_Y": "SizeY_RBV", "REVERSE_X": "ReverseX_RBV",
    "REVERSE_Y": "ReverseY_RBV", "IMAGE_MODE": "ImageMode_RBV",
    "TRIGGER_MODE": "TriggerMode_RBV", "NIMAGES": "NumImages_RBV",
    "NIMAGES_COUNTER": "NumImagesCounter_RBV", "NEXPOSURES": "NumExposures_RBV",
    "DATA_TYPE": "DataType_RBV", "COLOR_MODE": "ColorMode_RBV",
    "STATUS": "DetectorState_RBV", "STATUS_MESSAGE": "StatusMessage_RBV",
    "ARRAY_SIZE_X": "ArraySizeX_RBV", "ARRAY_SIZE_Y": "ArraySizeY_RBV",
    "ARRAY_SIZE_Z": "ArraySizeZ_RBV", "ARRAY_SIZE": "ArraySize_RBV",
    "TEMPERATURE": "Temperature_RBV", "TEMPERATURE_ACTUAL": "TemperatureActual",
    "ACQUIRE": "Acquire_RBV", "SHUTTER_MODE": "ShutterMode_RBV",
    "FILE_PATH": "FilePath_RBV", "FILE_NAME": "FileName_RBV",
    "FILE_NUMBER": "FileNumber_RBV", "FULL_FILE_NAME": "FullFileName_RBV",
}

# DBR_NATIVE: the PV's field type decides (PVAttribute::connectCallback).
_NATIVE_TYPES = {
    ChannelType.STRING: NDAttrType.String, ChannelType.INT: NDAttrType.Int16,
    ChannelType.FLOAT: NDAttrType.Float32, ChannelType.ENUM: NDAttrType.Int16,
    ChannelType.CHAR: NDAttrType.Int8, ChannelType.LONG: NDAttrType.Int32,
    ChannelType.DOUBLE: NDAttrType.Float64,
}

# The image plugin's PVs besides ArrayData.
_META = ("NDimensions_RBV", "ArraySize0_RBV", "ArraySize1_RBV", "ArraySize2_RBV",
         "DataType_RBV", "ColorMode_RBV", "UniqueId_RBV", "TimeStamp_RBV",
         "EpicsTSSec_RBV", "EpicsTSNsec_RBV")


def _scalar(response):
    value = response.data[0] if len(response.data) else None
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    return value


# -- NDAttribute PVs ------------------------------------------------------------

@dataclass
class _Watched:
    definition: AttributeDef
    pvname: str
    forced: NDAttrType | None
    value: object = None
    native: ChannelType | None = None
    sub: object = None


class AttributeSampler:
    """Keeps the latest value of every attribute PV; ``sample()`` snapshots them."""

    CONNECT_WAIT = 2.0

    def __init__(self, context, cam_prefix: str = ""):
        self.context = context
        self.cam_prefix = cam_prefix
        self._watched: list[_Watched] = []
        self._constants: list[NDAttribute] = []
        self._lock = threading.Lock()
        self._callbacks = []  # strong references: caproto holds callbacks weakly
        self.messages: list[str] = []
        self._disconnected: set[str] = set()
        self._connection_watched: set[str] = set()
        self.on_message = None  # called with the new NDAttributesMessage_RBV text

    def set_definitions(self, definitions: list[AttributeDef]) -> list[str]:
        """Subscribe to the PVs of a new attributes file; returns notes for the operator."""
        self.clear()
        messages: list[str] = []
        watched: list[_Watched] = []
        constants: list[NDAttribute] = []
        for d in definitions:
            if d.kind is AttrKind.CONST:
                constants.append(d.constant())
            elif d.kind is AttrKind.FUNCTION:
                messages.append(f"{d.name}: FUNCTION attributes cannot be evaluated outside the "
                                "driver; skipped")
            elif d.kind is AttrKind.PARAM:
                suffix = PARAM_PVS.get(d.source)
                if suffix is None or not self.cam_prefix:
                    why = "no --cam prefix" if suffix else f"no PV known for PARAM {d.source}"
                    messages.append(f"{d.name}: {why}; stored as undefined")
                    watched.append(_Watched(d, "", d.forced_type))
                else:
                    watched.append(_Watched(d, self.cam_prefix + suffix, d.forced_type))
            else:
                watched.append(_Watched(d, d.source, d.forced_type))
        names = [w.pvname for w in watched if w.pvname]
        if names:
            pvs = self.context.get_pvs(*names, timeout=2.0)
            for pv in pvs:  # once per PV: the context keeps PVs across attribute files
                if pv.name not in self._connection_watched:
                    self._connection_watched.add(pv.name)
                    pv.connection_state_callback.add_callback(self._on_connection)
            by_name = dict(zip(names, pvs, strict=True))
            for w in watched:
                if not w.pvname:
                    continue
                pv = by_name[w.pvname]
                callback = self._make_callback(w)
                self._callbacks.append(callback)
                w.sub = pv.subscribe(data_type="native", data_count=0)
                w.sub.add_callback(callback)
        with self._lock:
            self._watched = watched
            self._constants = constants
        # ADCore waits 0.5 s after loading for the CA connections; we wait until every
        # PV has sent its first value, at most CONNECT_WAIT.
        deadline = time.monotonic() + self.CONNECT_WAIT
        while time.monotonic() < deadline and any(w.pvname and w.value is None for w in watched):
            time.sleep(0.02)
        unconnected = [w.pvname for w in watched if w.pvname and w.value is None]
        if unconnected:
            messages.append(f"not connected (undefined until they connect): "
                            f"{', '.join(unconnected)}")
        self.messages = messages
        return messages

    def _on_connection(self, pv, state: str) -> None:
        """An attribute PV that disconnects keeps its last value in the frames (ADCore);
        NDAttributesMessage_RBV and the log say so until it is back."""
        with self._lock:
            if not any(w.pvname == pv.name for w in self._watched):
                return
            was = pv.name in self._disconnected
            if state == "disconnected":
                self._disconnected.add(pv.name)
            elif state == "connected":
                self._disconnected.discard(pv.name)
            now = pv.name in self._disconnected
        if was == now:
            return
        if now:
            log.warning("attribute PV %s disconnected: its last value is recorded until it "
                        "is back", pv.name)
        else:
            log.warning("attribute PV %s connected again", pv.name)
        if self.on_message is not None:
            self.on_message(self.message())

    def message(self) -> str:
        """NDAttributesMessage_RBV: notes from loading, then PVs disconnected now."""
        parts = list(self.messages)
        with self._lock:
            gone = sorted(self._disconnected)
        if gone:
            parts.append(f"disconnected (last value recorded): {', '.join(gone)}")
        return "; ".join(parts)

    def _make_callback(self, watched: _Watched):
        def callback(sub, response):
            native = sub.pv.channel.native_data_type if sub.pv.channel else None
            watched.native = native
            data = response.data
            if native == ChannelType.CHAR:
                value = bytes(np.asarray(data, dtype="u1")).split(b"\0")[0].decode("latin-1")
                if watched.forced is not NDAttrType.String and len(data) == 1:
                    value = int(np.asarray(data)[0])
            elif native == ChannelType.STRING:
                value = data[0].decode("latin-1") if len(data) else ""
            else:
                value = np.asarray(data)[0].item() if len(data) else None
            watched.value = value
        return callback

    def clear(self) -> None:
        with self._lock:
            for w in self._watched:
                if w.sub is not None:
                    try:
                        w.sub.clear()
                    except Exception:  # noqa: BLE001 - circuit may be gone already
                        pass
            self._watched = []
            self._constants = []
            self._callbacks = []
            self._disconnected = set()

    def sample(self) -> dict[str, NDAttribute]:
        with self._lock:
            watched, constants = list(self._watched), list(self._constants)
        out = {c.name: c for c in constants}
        for w in watched:
            out[w.definition.name] = self._value(w)
        return out

    @staticmethod
    def _value(w: _Watched) -> NDAttribute:
        d = w.definition
        if w.value is None or (w.native is None and w.forced is None):
            return d.undefined()
        dtype = w.forced or _NATIVE_TYPES.get(w.native, NDAttrType.Undefined)
        if w.native == ChannelType.CHAR and w.forced is None and isinstance(w.value, str):
            dtype = NDAttrType.String  # a long-string CHAR waveform
        value = w.value
        try:
            if dtype is NDAttrType.String:
                value = str(value)
            elif dtype is not NDAttrType.Undefined:
                value = np.asarray(float(value) if dtype.numpy.kind == "f" else int(float(value))
                                   ).astype(dtype.numpy).item()
        except (TypeError, ValueError):
            return d.undefined()
        return d.value(value, dtype)


# -- the image ------------------------------------------------------------------

class _Pending:
    __slots__ = ("data", "uid", "timestamp", "sec", "nsec", "received", "uid_received")

    def __init__(self, data):
        self.data = data
        self.uid = None
        self.timestamp = 0.0
        self.sec = 0
        self.nsec = 0
        self.received = time.monotonic()
        self.uid_received = 0.0


class CAImageSource:
    """Rebuilds NDArrays from an NDStdArrays plugin (reference §4.3).

    ADCore posts a frame's dimensions first (when they change), then ArrayData,
    then UniqueId, the type/colour scalars and the timestamps.  A frame is
    complete when its EpicsTSNsec arrives (the last one posted), when the next
    ArrayData arrives, or 50 ms after its UniqueId, whichever is first.  Data
    whose UniqueId never arrives is not used (it is counted as skipped).
    """

    FINISH_AFTER = 0.05

    def __init__(self, prefix: str, on_frame: Callable[[NDArray], None], *,
                 accepting: Callable[[], bool] = lambda: True,
                 on_status: Callable[[dict], None] = lambda status: None,
                 on_error: Callable[[str], None] = lambda message: None,
                 attributes: AttributeSampler | None = None, context=None,
                 allocate: Callable[[int], np.ndarray | None] | None = None):
        from caproto.threading.client import Context

        self.context = context or Context()
        self.prefix = prefix
        self.on_frame = on_frame
        self.accepting = accepting
        self.on_status = on_status
        self.on_error = on_error
        self.attributes = attributes
        # Where a frame's pixels go: ``allocate(nbytes)`` gives a writable uint8 buffer
        # (the receiver process hands out shared-memory slots), or None for new memory.
        self.allocate = allocate
        self.meta: dict[str, object] = {}
        self.pending: _Pending | None = None
        self.last_uid: int | None = None
        self.skipped = 0
        self.duplicates = 0
        self._lock = threading.RLock()
        self._subs: list = []
        self._callbacks: list = []
        self._pvs: list = []
        self._connected: set[str] = set()
        self._live: set[str] = set()
        self._skip_current = True
        self._stop = threading.Event()
        self._timer = threading.Thread(target=self._finish_late, name="frame-timer", daemon=True)

    # -- lifecycle ---------------------------------------------------------------
    def start(self) -> None:
        self._subscribe()
        self._timer.start()

    def stop(self) -> None:
        self._stop.set()
        self._unsubscribe()

    def set_prefix(self, prefix: str) -> None:
        # Not under self._lock: clearing a subscription may wait for the callback
        # thread, which takes that lock.
        self._unsubscribe()
        with self._lock:
            self.prefix = prefix
            self.meta = {}
            self.pending = None
            self.last_uid = None
        self._subscribe()

    def _subscribe(self) -> None:
        if not self.prefix:
            self.on_status({"connected": False})
            return
        names = [self.prefix + "ArrayData"] + [self.prefix + s for s in _META]
        self._connected = set()
        self._live = set()
        self._skip_current = True  # a new subscription first sends the value held now
        self._pvs = self.context.get_pvs(*names, timeout=2.0,
                                         connection_state_callback=self._on_connection)
        # The context reuses PV objects it already has: those may be connected already.
        self._connected |= {pv.name for pv in self._pvs if pv.connected}
        self.on_status({"connected": self.connected})
        data_cb = self._on_array
        self._callbacks = [data_cb]
        sub = self._pvs[0].subscribe(data_type="time", data_count=0)
        sub.add_callback(data_cb)
        self._subs = [sub]
        for suffix, pv in zip(_META, self._pvs[1:], strict=True):
            callback = self._meta_callback(suffix)
            self._callbacks.append(callback)
            sub = pv.subscribe(data_type="time")
            sub.add_callback(callback)
            self._subs.append(sub)

    def _unsubscribe(self) -> None:
        for sub in self._subs:
            try:
                sub.clear()
            except Exception:  # noqa: BLE001
                pass
        self._subs = []
        self._callbacks = []

    def _on_connection(self, pv, state: str) -> None:
        if not pv.name.startswith(self.prefix) or not self.prefix:
            return  # a PV of a previous prefix
        log.debug("%s %s", pv.name, state)  # per PV: -vv; serve logs the source's state
        if state == "connected":
            self._connected.add(pv.name)
        else:
            self._connected.discard(pv.name)
            self._live.discard(pv.name)
            if pv.name.endswith("ArrayData"):
                # After reconnecting, the first update is the frame the source holds:
                # the one we saw last (a duplicate by UniqueId), a frame made while we
                # were away (new: kept), or, from a restarted IOC, no frame at all
                # (UniqueId 0: ignored).
                with self._lock:
                    self.pending = None
        self.on_status({"connected": self.connected})

    def _mark_live(self, name: str) -> None:
        """A PV counts as connected once its subscription delivers (not just the channel:
        frames made before the monitors are back cannot be paired)."""
        if name not in self._live:
            self._live.add(name)
            if self.connected:
                self.on_status({"connected": True})

    @property
    def connected(self) -> bool:
        return bool(self.prefix) and len(self._connected & self._live) == 1 + len(_META)

    def read_current(self, timeout: float = 2.0) -> NDArray | None:
        """The frame the source holds now (used to prime the readbacks at connect)."""
        try:
            values = {}
            for suffix, pv in zip(_META, self._pvs[1:], strict=True):
                values[suffix] = _scalar(pv.read(data_type="native", timeout=timeout))
            response = self._pvs[0].read(data_type="native", data_count=0, timeout=timeout)
        except Exception as exc:  # noqa: BLE001 - not connected yet
            log.warning("cannot read the source's current frame: %s", exc)
            return None
        with self._lock:
            meta = {**self.meta, **values}
        pending = _Pending(response.data)
        pending.uid = values.get("UniqueId_RBV") or 0
        pending.timestamp = values.get("TimeStamp_RBV") or 0.0
        pending.sec = values.get("EpicsTSSec_RBV") or 0
        pending.nsec = values.get("EpicsTSNsec_RBV") or 0
        return self._build(pending, meta, quiet=True)

    # -- callbacks (caproto's callback thread) -----------------------------------------
    def _on_array(self, sub, response) -> None:
        self._mark_live(sub.pv.name)
        with self._lock:
            if self._skip_current:
                self._skip_current = False
                log.info("ArrayData: skipping the value held at (re)connection (%d elements)",
                         len(response.data))
                return
            if self.pending is not None:
                self._finish()
            self.pending = _Pending(response.data)

    def _meta_callback(self, suffix: str):
        def callback(sub, response):
            self._mark_live(sub.pv.name)
            with self._lock:
                value = _scalar(response)
                self.meta[suffix] = value
                pending = self.pending
                if pending is None:
                    return
                if suffix == "UniqueId_RBV":
                    if pending.uid is not None:
                        self._finish()  # a second id: the first frame had no timestamps
                        return
                    pending.uid = value
                    pending.uid_received = time.monotonic()
                elif pending.uid is None:
                    return
                elif suffix == "TimeStamp_RBV":
                    pending.timestamp = value
                elif suffix == "EpicsTSSec_RBV":
                    pending.sec = value
                elif suffix == "EpicsTSNsec_RBV":
                    pending.nsec = value
                    self._finish()
        return callback

    def _finish_late(self) -> None:
        while not self._stop.wait(0.01):
            with self._lock:
                p = self.pending
                if p is not None and p.uid is not None and \
                        time.monotonic() - p.uid_received > self.FINISH_AFTER:
                    self._finish()

    def _finish(self) -> None:
        pending, self.pending = self.pending, None
        if pending is None:
            return
        if pending.uid is None:
            # Its UniqueId never came (the server dropped that update): a frame we
            # cannot identify is not written; the UniqueId gap counts it as skipped.
            log.warning("an ArrayData update without its UniqueId_RBV; frame not used")
            return
        uid = int(pending.uid)
        if uid == 0:
            return  # what a detector IOC holds before its first frame
        if not self.accepting():
            # Nobody would take it (callbacks disabled, or the queue is full): hand over
            # only the id, without the cost of rebuilding the frame.
            if self._track(uid):
                self.on_frame(uid)
            return
        frame = self._build(pending, self.meta, allocate=self.allocate)
        if frame is None:
            return
        if self._track(uid):
            self.on_frame(frame)

    def _track(self, uid: int) -> bool:
        """Count duplicates and gaps; False for a duplicate (to be ignored).  A smaller
        id than the last one is a restarted detector: it counts from 1 again."""
        if self.last_uid is not None:
            if uid == self.last_uid:
                self.duplicates += 1
                self.on_status({"duplicates": self.duplicates})
                return False
            if uid > self.last_uid + 1:
                log.warning("frames %d..%d never arrived", self.last_uid + 1, uid - 1)
                self.skipped += uid - self.last_uid - 1
                self.on_status({"skipped": self.skipped})
        self.last_uid = uid
        return True

    def _build(self, pending: _Pending, meta: dict, quiet: bool = False,
               allocate: Callable[[int], np.ndarray | None] | None = None) -> NDArray | None:
        ndims = int(meta.get("NDimensions_RBV") or 0)
        dims = [int(meta.get(f"ArraySize{i}_RBV") or 0) for i in range(min(ndims, 3))]
        if ndims < 1 or ndims > 3 or any(d <= 0 for d in dims):
            if not quiet:
                self.on_error(f"frame {pending.uid}: invalid dimensions {dims} "
                              f"(NDimensions={ndims})")
            return None
        count = int(np.prod(dims))
        raw = np.asarray(pending.data)
        if raw.size < count:
            if not quiet:
                self.on_error(f"frame {pending.uid}: ArrayData holds {raw.size} elements, "
                              f"its dimensions {dims} need {count}; frame rejected")
            return None
        try:
            target = NDDataType(int(meta.get("DataType_RBV") or 0)).numpy
        except ValueError:
            target = raw.dtype.newbyteorder("<")
        # Exactly one copy: little-endian (caproto's client hands out big-endian views of
        # its receive buffer, which must not stay pinned by a queued frame).
        wire = raw.dtype.newbyteorder("<")
        reinterpret = wire.itemsize == target.itemsize and wire.kind in "iu" and target.kind in "iu"
        stored = wire if reinterpret else target  # e.g. SHORT carrying UInt16: copy, then view
        out = allocate(count * stored.itemsize) if allocate is not None else None
        if out is None:
            data = np.array(raw[:count], dtype=stored)
        else:
            data = out.view(stored)
            np.copyto(data, raw[:count], casting="unsafe")
        data = data.view(target).reshape(tuple(reversed(dims)))
        color = int(meta.get("ColorMode_RBV") or 0)
        attrs = {"ColorMode": NDAttribute("ColorMode", color, NDAttrType.Int32, "Color mode",
                                          "Driver", NDAttrSource.DRIVER)}
        if self.attributes is not None:
            attrs.update(self.attributes.sample())
        return NDArray(data=data, unique_id=int(pending.uid or 0),
                       timestamp=float(pending.timestamp or 0.0),
                       epics_ts_sec=int(pending.sec or 0), epics_ts_nsec=int(pending.nsec or 0),
                       attributes=attrs)
