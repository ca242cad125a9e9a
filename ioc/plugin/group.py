"""The NDFileHDF5 PV interface: a caproto PVGroup generated from ``ioc.plugin.pvtable``.

This layer owns the PVs: it validates writes (ADCore's rules, the
locked-while-open list), keeps the parameter mapping the file saver reads,
forwards actions (Capture, WriteFile, ...) to the saver's queue, and publishes
what the saver reports.  No h5py and no file I/O here: anything that may
block runs in the saver's worker thread or in an executor.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from caproto import ChannelType
from caproto.server import PVGroup, pvproperty
from caproto.server.server import PvpropertyChar, pvspec_type_map

from .puts import PutRules
from .pvtable import BY_SUFFIX, NO_STATE_NAMES, PV, Kind, to_param, to_pv
from .records import BusyEnum, NamelessEnum, complete_put_when
from .refusals import PutRefused, RefusalLog, WriteNeutralAlarm, install

log = logging.getLogger(__name__)


class CharData(PvpropertyChar):
    """CHAR-waveform string PV that accepts an empty string.

    A client writing "" sends one NUL byte; caproto 1.3 turns it into '' and
    then fails converting it to uint8 ("Invalid write request").  ophyd's
    unstage (FileTemplate="") and ophyd-async's prepare (XMLFileName="") both
    do this, so it must work.
    """

    async def write_from_dbr(self, data, data_type, metadata, *, flags=0):
        if data_type in (ChannelType.CHAR, ChannelType.TIME_CHAR, ChannelType.STRING):
            raw = bytes(data) if not isinstance(data, (list, tuple)) else b"".join(
                d if isinstance(d, bytes) else bytes([d]) for d in data)
            if not raw.strip(b"\0"):
                return await self.write("", flags=flags)
        return await super().write_from_dbr(data, data_type, metadata, flags=flags)


def _record(pv: PV) -> str | None:
    return {"busy": "bo"}.get(pv.record, pv.record)


def make_pvproperty(pv: PV) -> pvproperty:
    kw: dict[str, Any] = dict(name=pv.suffix, read_only=not pv.writable, doc=pv.doc or None)
    record = _record(pv)
    if pv.kind is Kind.ENUM:
        dtype: Any = ChannelType.ENUM
        if pv.writable and pv.record == "busy":
            dtype = BusyEnum
        elif pv.writable and pv.enum_strings == NO_STATE_NAMES:
            dtype = NamelessEnum
        kw.update(dtype=dtype, enum_strings=list(pv.enum_strings),
                  value=pv.enum_strings[int(pv.value)])
    elif pv.kind is Kind.LONG:
        kw.update(dtype=ChannelType.LONG, value=int(pv.value))
    elif pv.kind is Kind.DOUBLE:
        kw.update(dtype=ChannelType.DOUBLE, value=float(pv.value), precision=pv.precision)
    elif pv.kind is Kind.CHAR:
        # UTF-8 as clients send it ("café" must name café_001.h5 on disk, not cafÃ©)
        kw.update(dtype=str, value=str(pv.value), max_length=pv.nelm, string_encoding="utf-8")
        record = "waveform"
    elif pv.kind is Kind.STRING:
        kw.update(dtype=ChannelType.STRING, value=str(pv.value), string_encoding="utf-8")
    elif pv.kind is Kind.LONG_ARRAY:
        kw.update(dtype=ChannelType.LONG, value=list(pv.value), max_length=pv.nelm)
    if pv.units:
        kw["units"] = pv.units
    if record in ("ai", "ao", "bi", "bo", "longin", "longout", "mbbi", "mbbo", "stringin",
                  "stringout", "waveform", "calc", "calcout", "subArray", "asyn"):
        kw["record"] = record
    return pvproperty(**kw)


# PVs whose every change must reach clients (ophyd-async counts NumCaptured_RBV; SWMR
# readers wait for SWMRActive_RBV, which is Active only while a file is written).
EVERY_VALUE = {"NumCaptured_RBV", "SWMRActive_RBV"}
_MISSING = object()


class PluginBase(PutRules, PVGroup):
    """Behaviour shared by the generated group; see ``make_group_class``."""

    type_map = {**pvspec_type_map, str: CharData}
    PUBLISH_INTERVAL = 0.05  # s, between two flushes of posted values (only when busy)

    def __init__(self, *args, table: tuple[PV, ...], **kwargs):
        super().__init__(*args, **kwargs)
        self.table = {pv.suffix: pv for pv in table}
        self.params: dict[str, Any] = {pv.suffix: to_param(pv, pv.value) for pv in table}
        self.loop: asyncio.AbstractEventLoop | None = None
        self.saver = None  # ioc.file_saver.FileSaver, attached by the server
        self.on_source_prefix: Callable[[str], None] | None = None
        self.on_array_port: Callable[[str], str | None] | None = None  # -> refusal or None
        self.on_queue_size: Callable[[int], None] | None = None
        self.on_attributes: Callable[[str, str], Any] | None = None
        self.check_layout: Callable[[str], tuple[Any, str]] | None = None
        self.available_compressions: set[int] = {0, 3}
        from .naming import PathPolicy
        from .user_paths import UserPaths

        self.policy = PathPolicy()
        self.user_paths = UserPaths()  # calls on operator-given paths, with a timeout
        self._pending: dict[str, Any] = {}
        self._sequence: list[tuple[str, Any]] = []
        self._post_lock = threading.Lock()
        self._flush_scheduled = False
        self._last_flush = float("-inf")
        self._dropped = 0
        self._last_accept = 0.0
        self._frame_lock = threading.Lock()
        self._counter_history: list[tuple[float, int]] = []
        # Capture=1 puts wait for the end of the capture they started or joined: the
        # saver numbers captures, and reports each one's end (on_capture_end).
        self._capture_waiters: list[tuple[int, asyncio.Future]] = []
        self._captures_ended = 0
        # every client write: refusals said in WriteMessage and in one log line
        self.refusals = RefusalLog()
        install(self.attr_pvdb.values(), self._say_refused, self.refusals)

    def _create_pvdb(self):
        # a refused put raises no alarm (caproto's would be published to every PV)
        self.alarms = collections.defaultdict(WriteNeutralAlarm)
        return super()._create_pvdb()

    def pv(self, suffix: str):
        return self.attr_pvdb[suffix]

    # -- values from other threads ---------------------------------------------------
    def post(self, **updates: Any) -> None:
        """Thread-safe: publish values that changed, coalesced to the latest, except
        EVERY_VALUE PVs, each of whose changes is published in order.  A value equal to
        the last one is not published again (asyn's callParamCallbacks posts changed
        parameters only: Single mode's NumCaptured_RBV=1 once, not once a file).  The
        saver describes every frame with ~30 values; most do not change, and each PV
        write costs the server loop time."""
        params = self.params
        with self._post_lock:
            for suffix, value in updates.items():
                old = params.get(suffix, _MISSING)
                if type(old) is type(value) and old == value:
                    continue  # (most values come in parameter form: no conversion then)
                pv = self.table.get(suffix)
                if pv is not None:
                    new = to_param(pv, value)
                    if old == new:
                        continue
                    params[suffix] = new
                if suffix in EVERY_VALUE:
                    self._sequence.append((suffix, value))
                else:
                    self._pending[suffix] = value
            if self._flush_scheduled or self.loop is None:
                return
            self._flush_scheduled = True
        try:
            self.loop.call_soon_threadsafe(self._schedule_flush)
        except RuntimeError:  # the server has stopped: nobody to tell
            pass

    def _schedule_flush(self) -> None:
        # At most one flush per PUBLISH_INTERVAL: at hundreds of frames/s the per-frame
        # readbacks coalesce to their latest value instead of costing a server write each.
        delay = self._last_flush + self.PUBLISH_INTERVAL - self.loop.time()
        if delay > 0:
            self.loop.call_later(delay, self._start_flush)
        else:
            self._start_flush()

    def _start_flush(self) -> None:
        self._last_flush = self.loop.time()
        self.loop.create_task(self._flush())

    async def _flush(self) -> None:
        with self._post_lock:
            pending, self._pending = self._pending, {}
            sequence, self._sequence = self._sequence, []
            self._flush_scheduled = False
        for suffix, value in sequence:
            await self._publish(suffix, value, remember=False)
        for suffix, value in pending.items():
            await self._publish(suffix, value, remember=False)

    async def _publish(self, suffix: str, value: Any, remember: bool = True) -> None:
        """Write a value to its PV now.  Direct publications (``remember``) also update the
        parameter mapping, so that a later ``post`` of another value is not taken for "no
        change" (a refused put's WriteStatus=1 must be cleared by the next file's OK)."""
        pv = self.table.get(suffix)
        if pv is None:
            return
        if remember and suffix not in EVERY_VALUE:
            with self._post_lock:
                self.params[suffix] = to_param(pv, value)
                self._pending.pop(suffix, None)  # posted before: older than this value
        instance = self.pv(suffix)
        try:
            await instance.write(to_pv(pv, value), verify_value=False)
        except Exception:  # noqa: BLE001 - a bad value must not stop the others
            log.exception("cannot publish %s=%r", suffix, value)

    # -- frames from the source thread ---------------------------------------------
    def accepting(self) -> bool:
        """Whether a frame would be queued now (else the source need not rebuild it)."""
        return bool(self.params["EnableCallbacks"]) and self.saver.queue.free > 0

    def on_frame(self, frame) -> None:
        """Called by the source for every frame: never blocks.  ``frame`` is an NDArray,
        or just its UniqueId when ``accepting()`` said no (it is not rebuilt then)."""
        try:
            self._take_frame(frame)
        finally:
            # after it was queued (or not): a stop waiting for this frame may go on
            self.saver.arrived(frame if isinstance(frame, int) else frame.unique_id)

    def _take_frame(self, frame) -> None:
        if not self.params["EnableCallbacks"]:
            return
        with self._frame_lock:
            now = time.monotonic()
            min_time = float(self.params["MinCallbackTime"])
            if min_time > 0 and now - self._last_accept < min_time:
                return  # ignored, not dropped (ADCore)
            self._last_accept = now
            if isinstance(frame, int) or not self.saver.enqueue(frame):
                self._dropped = int(self.params["DroppedArrays"]) + 1
                self.post(DroppedArrays=self._dropped, DroppedArrays_RBV=self._dropped)
                return
        self.post(QueueFree=self.saver.queue.free, NumQueuedArrays=self.saver.queue.frames)

    # -- writes from clients ---------------------------------------------------------
    async def group_write(self, instance, value):
        suffix = instance.pvspec.name
        pv = self.table[suffix]
        if pv.locked and self.saver is not None and self.saver.file_open:
            await self._refuse(f"{suffix} cannot be changed while a file is open")
        handler = getattr(self, f"put_{suffix}", None)
        if handler is not None:
            try:
                result = await handler(value)
            finally:
                # what the put changed is visible before the put completes
                await self._flush()
            if result is not None:
                value = result
        self.params[suffix] = to_param(pv, value)
        readback = self.table.get(f"{suffix}_RBV")
        if readback is not None:
            await self.pv(readback.suffix).write(to_pv(readback, self.params[suffix]))
        return value

    async def _say_refused(self, reason: str) -> None:
        """WriteMessage says why a put was refused.  The same reason again within a second
        is not published again: a client repeating one bad put (a flood) would otherwise
        cost a PV update, half of a refusal's time, each time."""
        now = time.monotonic()
        last, when = getattr(self, "_last_refusal", ("", float("-inf")))
        if reason == last and now - when < 1.0 and \
                self.pv("WriteMessage").value == to_pv(self.table["WriteMessage"], reason):
            return
        self._last_refusal = (reason, now)
        await self._publish("WriteMessage", reason[:255])

    async def _refuse(self, message: str):
        await self._say_refused(message)
        raise PutRefused(message)

    async def _run_saver(self, name: str, **args) -> Any:
        from .file_saver import SaverError  # only the exception type; no h5py use here

        try:
            return await asyncio.wrap_future(self.saver.submit(name, **args))
        except SaverError as exc:
            await self._publish("WriteStatus", 1)
            await self._refuse(str(exc))

    # -- Capture as a busy record ----------------------------------------------------
    def complete_when_capture_ends(self, serial: int) -> None:
        """The current put (Capture=1) completes when capture number ``serial`` ends."""
        if serial <= self._captures_ended:
            return  # it has already ended (a short capture): complete now
        done = asyncio.get_running_loop().create_future()
        self._capture_waiters.append((serial, done))
        complete_put_when(done)

    def on_capture_end(self, serial: int) -> None:
        """Saver thread: capture number ``serial`` has ended (its file written or closed)."""
        if self.loop is None:
            return
        try:
            self.loop.call_soon_threadsafe(self._capture_ended, serial)
        except RuntimeError:  # the server has stopped: nobody waits
            pass

    def _capture_ended(self, serial: int) -> None:
        self._captures_ended = max(self._captures_ended, serial)
        self.loop.create_task(self._complete_capture_puts())

    async def _complete_capture_puts(self) -> None:
        await self._flush()  # the capture's last values reach clients before its put completes
        waiting, self._capture_waiters = self._capture_waiters, []
        for serial, done in waiting:
            if serial > self._captures_ended:
                self._capture_waiters.append((serial, done))
            elif not done.done():
                done.set_result(None)

    # -- periodic statistics ----------------------------------------------------------
    async def statistics_loop(self) -> None:
        """ArrayRate_RBV (from ArrayCounter), pool memory: once a second, like ADCore."""
        while True:
            await asyncio.sleep(1.0)
            now, count = time.monotonic(), int(self.params["ArrayCounter"])
            self._counter_history.append((now, count))
            self._counter_history = self._counter_history[-2:]
            if len(self._counter_history) == 2:
                (t0, c0), (t1, c1) = self._counter_history
                rate = max(c1 - c0, 0) / (t1 - t0) if t1 > t0 else 0.0
                await self._publish("ArrayRate_RBV", rate)
            if self.saver is not None:
                used = self.saver.queue.frames + len(self.saver.buffer)
                await self._publish("PoolAllocBuffers", used)
                await self._publish("PoolUsedBuffers", float(used))
                await self._publish("PoolUsedMem", self.saver.memory_used() / 1e6)
                await self._publish("QueueUse", float(self.saver.queue.frames))


def make_group_class(table: tuple[PV, ...]) -> type[PluginBase]:
    namespace = {pv.suffix: make_pvproperty(pv) for pv in table}
    return type("NDFileHDF5Group", (PluginBase,), namespace)


def pv_listing(prefix: str, table: tuple[PV, ...]) -> list[str]:
    """``--list-pvs`` lines: name, CA type, element count, enum strings."""
    lines = []
    for pv in table:
        ca_type = {Kind.ENUM: "ENUM", Kind.LONG: "LONG", Kind.DOUBLE: "DOUBLE",
                   Kind.CHAR: "CHAR", Kind.STRING: "STRING", Kind.LONG_ARRAY: "LONG"}[pv.kind]
        access = "rw" if pv.writable else "ro"
        enums = "|".join(pv.enum_strings)
        lines.append(f"{prefix}{pv.suffix}\t{ca_type}\t{pv.nelm}\t{access}\t{enums}")
    return lines


__all__ = ["BY_SUFFIX", "PluginBase", "PutRefused", "make_group_class", "pv_listing"]
