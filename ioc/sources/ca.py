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
from ..ndarray import NDArray, NDAttribute, NDAttrType
from .ca_frames import FramePairing, Pending, build_frame
from .frame_params import FRAME_PARAMS

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
         "EpicsTSSec_RBV", "EpicsTSNsec_RBV", "ArrayCounter_RBV")


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
    from_frame: Callable[[NDArray], int | float] | None = None  # a PARAM the frame carries


class AttributeSampler:
    """Keeps the latest value of every attribute PV; ``sample(frame)`` snapshots them.

    PARAMs that describe the frame (``FRAME_PARAMS``: UNIQUE_ID, ARRAY_COUNTER,
    TIME_STAMP, ...) are taken from the frame itself, never from a driver PV that may
    already show a later frame."""

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
            elif d.kind is AttrKind.PARAM and d.source in FRAME_PARAMS:
                watched.append(_Watched(d, "", d.forced_type, from_frame=FRAME_PARAMS[d.source]))
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

    def sample(self, frame: NDArray | None = None) -> dict[str, NDAttribute]:
        """The attributes for ``frame`` (in file order: as declared)."""
        with self._lock:
            watched, constants = list(self._watched), list(self._constants)
        out = {c.name: c for c in constants}
        for w in watched:
            if w.from_frame is not None:
                out[w.definition.name] = self._frame_value(w, frame)
            else:
                out[w.definition.name] = self._value(w)
        return out

    @classmethod
    def _frame_value(cls, w: _Watched, frame: NDArray | None) -> NDAttribute:
        if frame is None:
            return w.definition.undefined()
        return cls._convert(w.definition, w.from_frame(frame), w.forced or NDAttrType.Float64)

    @classmethod
    def _value(cls, w: _Watched) -> NDAttribute:
        d = w.definition
        if w.value is None or (w.native is None and w.forced is None):
            return d.undefined()
        dtype = w.forced or _NATIVE_TYPES.get(w.native, NDAttrType.Undefined)
        if w.native == ChannelType.CHAR and w.forced is None and isinstance(w.value, str):
            dtype = NDAttrType.String  # a long-string CHAR waveform
        return cls._convert(d, w.value, dtype)

    @staticmethod
    def _convert(d: AttributeDef, value, dtype: NDAttrType) -> NDAttribute:
        try:
            if dtype is NDAttrType.String:
                value = str(value)
            elif dtype is not NDAttrType.Undefined:
                value = np.asarray(float(value) if dtype.numpy.kind == "f" else int(float(value))
                                   ).astype(dtype.numpy).item()
        except (TypeError, ValueError):
            return d.undefined()
        return d.value(value, dtype)


def add_attributes(frame: NDArray, *samplers) -> NDArray:
    """Attach attributes as ADCore merges them: the driver's first (they travel with the
    frame), then the plugin's own NDAttributesFile; a later one of the same name replaces
    the earlier.  A sampler is anything with ``sample(frame)``; None is skipped."""
    for sampler in samplers:
        if sampler is not None:
            frame.attributes.update(sampler.sample(frame))
    return frame


# -- the image ------------------------------------------------------------------

class CAImageSource:
    """Rebuilds NDArrays from an NDStdArrays plugin (reference §4.3).

    Which updates make a frame, and whether its pixels surely are its own, is
    ``ca_frames.FramePairing``'s to say (EPICS base's server sends an array as it is when
    sent, after the scalars of frames posted meanwhile were queued).  A frame is
    complete when the next ArrayData arrives, or 50 ms after its last scalar.  A frame
    whose pairing is not certain, or whose UniqueId never arrives, is not used and
    counts as skipped.
    """

    PIPELINE_GRACE = 0.5  # s: how long ``latest_unique_id`` lets the image plugin catch up

    def __init__(self, prefix: str, on_frame: Callable[[NDArray], None], *,
                 accepting: Callable[[], bool] = lambda: True,
                 on_status: Callable[[dict], None] = lambda status: None,
                 on_error: Callable[[str], None] = lambda message: None,
                 attributes: AttributeSampler | None = None, context=None,
                 allocate: Callable[[int], np.ndarray | None] | None = None,
                 driver_attributes=None, driver_prefix: str = ""):
        from caproto.threading.client import Context

        self.context = context or Context()
        self.prefix = prefix
        self.on_frame = on_frame
        self.accepting = accepting
        self.on_status = on_status
        self.on_error = on_error
        self.attributes = attributes
        # the driver's NDAttributesFile, evaluated here (see driver_attributes.py)
        self.driver_attributes = driver_attributes
        self.driver_prefix = driver_prefix
        # Where a frame's pixels go: ``allocate(nbytes)`` gives a writable uint8 buffer
        # (the receiver process hands out shared-memory slots), or None for new memory.
        self.allocate = allocate
        self.meta: dict[str, object] = {}
        self.pairing = FramePairing()
        self.last_uid: int | None = None
        self.skipped = 0
        self.duplicates = 0
        self.doubtful = 0  # frames not used: their pixels could not be paired for sure
        self._doubt_logged = float("-inf")
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

    def set_driver_prefix(self, prefix: str) -> None:
        self.driver_prefix = prefix

    def set_prefix(self, prefix: str) -> None:
        # Not under self._lock: clearing a subscription may wait for the callback
        # thread, which takes that lock.
        self._unsubscribe()
        with self._lock:
            self.prefix = prefix
            self.meta = {}
            self.pairing.reset()
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
                    self.pairing.reset()
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
        pending = Pending(response.data)
        pending.uid = values.get("UniqueId_RBV") or 0
        pending.timestamp = values.get("TimeStamp_RBV") or 0.0
        pending.sec = values.get("EpicsTSSec_RBV") or 0
        pending.nsec = values.get("EpicsTSNsec_RBV") or 0
        frame = build_frame(pending, meta, on_error=lambda message: None)
        if frame is not None:
            add_attributes(frame, self.driver_attributes, self.attributes)
        return frame

    def latest_unique_id(self, timeout: float = 1.0) -> int | None:
        """The UniqueId of the newest frame the source has finished, read now (not from a
        monitor): the image plugin's UniqueId_RBV, posted after its ArrayData.  The driver
        may have finished a frame its image plugin has not posted yet (a plugin with its
        own queue): while the driver's ArrayCounter_RBV is ahead, the plugin gets up to
        PIPELINE_GRACE to catch up.  None when not connected."""
        if not self.connected:
            return None
        uid_pv = self._pvs[1 + _META.index("UniqueId_RBV")]

        def read(pv) -> int:
            return int(_scalar(pv.read(data_type="native", timeout=timeout)) or 0)

        uid = read(uid_pv)
        driver = self.driver_prefix
        if driver:
            try:
                (counter_pv,) = self.context.get_pvs(driver + "ArrayCounter_RBV",
                                                     timeout=timeout)
                counter = read(counter_pv)
            except Exception as exc:  # noqa: BLE001 - the driver is optional here
                log.info("cannot read %sArrayCounter_RBV: %s", driver, exc)
                return uid
            deadline = time.monotonic() + min(self.PIPELINE_GRACE, timeout)
            while uid < counter and time.monotonic() < deadline:
                time.sleep(0.01)
                uid = read(uid_pv)
        return uid

    # -- callbacks (caproto's callback thread) -----------------------------------------
    def _on_array(self, sub, response) -> None:
        self._mark_live(sub.pv.name)
        with self._lock:
            if self._skip_current:
                self._skip_current = False
                log.info("ArrayData: skipping the value held at (re)connection (%d elements)",
                         len(response.data))
                return
            self._finish(self.pairing.array(response.data))

    def _meta_callback(self, suffix: str):
        def callback(sub, response):
            self._mark_live(sub.pv.name)
            with self._lock:
                value = _scalar(response)
                self.meta[suffix] = value
                self.pairing.scalar(suffix, value)
        return callback

    def _finish_late(self) -> None:
        while not self._stop.wait(0.01):
            with self._lock:
                self._finish(self.pairing.quiet())

    def _finish(self, pending: Pending | None) -> None:
        """Hand a finished frame over (or only its id), or count it as not used."""
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
        if pending.doubt is not None:
            # Not written under a UniqueId its pixels may not have: counted as skipped
            # (SourceSkipped_RBV), as a frame that never arrived.
            self._not_used(uid, pending.doubt)
            return
        if not self.accepting():
            # Nobody would take it (callbacks disabled, or the queue is full): hand over
            # only the id, without the cost of rebuilding the frame.
            if self._track(uid):
                self.on_frame(uid)
            return
        frame = build_frame(pending, self.meta, self.on_error, allocate=self.allocate)
        if frame is None:
            return
        add_attributes(frame, self.driver_attributes, self.attributes)
        if self._track(uid):
            self.on_frame(frame)

    def _not_used(self, uid: int, why: str) -> None:
        self.doubtful += 1
        self.pairing.lagging()
        now = time.monotonic()
        if now - self._doubt_logged > 1.0:
            self._doubt_logged = now
            log.warning("frame %d not used (%d so far): %s", uid, self.doubtful, why)
        if self.last_uid is not None and uid == self.last_uid:
            return
        missed = uid - self.last_uid if self.last_uid is not None and uid > self.last_uid else 1
        self.skipped += missed
        self.last_uid = uid
        # "arrived": a stop waiting for this frame need not wait any longer
        self.on_status({"skipped": self.skipped, "arrived": uid})

    def _track(self, uid: int) -> bool:
        """Count duplicates and gaps; False for a duplicate (to be ignored).  A smaller
        id than the last one is a restarted detector: it counts from 1 again."""
        if self.last_uid is not None:
            if uid == self.last_uid:
                self.duplicates += 1
                self.on_status({"duplicates": self.duplicates})
                return False
            if uid > self.last_uid + 1:
                self.pairing.lagging()
                log.warning("frames %d..%d never arrived", self.last_uid + 1, uid - 1)
                self.skipped += uid - self.last_uid - 1
                self.on_status({"skipped": self.skipped})
        self.last_uid = uid
        return True
