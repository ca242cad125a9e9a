"""The NDFileHDF5 PV interface: a caproto PVGroup generated from ``ioc.plugin.pvtable``.

This layer owns the PVs: it validates writes (ADCore's rules, the
locked-while-open list), keeps the parameter mapping the file saver reads,
forwards actions (Capture, WriteFile, ...) to the saver's queue, and publishes
what the saver reports.  No h5py and no file I/O here: anything that may
block runs in the saver's worker thread or in an executor.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from caproto import ChannelType, SkipWrite
from caproto.server import PVGroup, pvproperty
from caproto.server.server import PvpropertyChar, pvspec_type_map

from .pvtable import BY_SUFFIX, PV, Kind

log = logging.getLogger(__name__)


class PutRefused(Exception):
    """A write ADCore would refuse: the client gets an error, the old value stays."""


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
        kw.update(dtype=ChannelType.ENUM, enum_strings=list(pv.enum_strings),
                  value=pv.enum_strings[int(pv.value)])
    elif pv.kind is Kind.LONG:
        kw.update(dtype=ChannelType.LONG, value=int(pv.value))
    elif pv.kind is Kind.DOUBLE:
        kw.update(dtype=ChannelType.DOUBLE, value=float(pv.value), precision=pv.precision)
    elif pv.kind is Kind.CHAR:
        kw.update(dtype=str, value=str(pv.value), max_length=pv.nelm)
        record = "waveform"
    elif pv.kind is Kind.STRING:
        kw.update(dtype=ChannelType.STRING, value=str(pv.value))
    elif pv.kind is Kind.LONG_ARRAY:
        kw.update(dtype=ChannelType.LONG, value=list(pv.value), max_length=pv.nelm)
    if pv.units:
        kw["units"] = pv.units
    if record in ("ai", "ao", "bi", "bo", "longin", "longout", "mbbi", "mbbo", "stringin",
                  "stringout", "waveform", "calc", "calcout", "subArray", "asyn"):
        kw["record"] = record
    return pvproperty(**kw)


def to_param(pv: PV, value: Any) -> Any:
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


def to_pv(pv: PV, value: Any) -> Any:
    if pv.kind is Kind.ENUM and not isinstance(value, str):
        return pv.enum_strings[int(value)]
    if pv.kind is Kind.LONG_ARRAY:
        return list(value)
    return value


# PVs whose every value must reach clients (ophyd-async counts NumCaptured_RBV).
EVERY_VALUE = {"NumCaptured_RBV"}


class PluginBase(PVGroup):
    """Behaviour shared by the generated group; see ``make_group_class``."""

    type_map = {**pvspec_type_map, str: CharData}
    PUBLISH_INTERVAL = 0.01  # s, between two flushes of posted values (only when busy)

    def __init__(self, *args, table: tuple[PV, ...], **kwargs):
        super().__init__(*args, **kwargs)
        self.table = {pv.suffix: pv for pv in table}
        self.params: dict[str, Any] = {pv.suffix: to_param(pv, pv.value) for pv in table}
        self.loop: asyncio.AbstractEventLoop | None = None
        self.saver = None  # ioc.file_saver.FileSaver, attached by the server
        self.on_source_prefix: Callable[[str], None] | None = None
        self.on_queue_size: Callable[[int], None] | None = None
        self.on_attributes: Callable[[str, str], Any] | None = None
        self.check_layout: Callable[[str], tuple[Any, str]] | None = None
        self.available_compressions: set[int] = {0, 3}
        from .naming import PathPolicy

        self.policy = PathPolicy()
        self._pending: dict[str, Any] = {}
        self._sequence: list[tuple[str, Any]] = []
        self._post_lock = threading.Lock()
        self._flush_scheduled = False
        self._last_flush = float("-inf")
        self._dropped = 0
        self._last_accept = 0.0
        self._frame_lock = threading.Lock()
        self._counter_history: list[tuple[float, int]] = []

    def pv(self, suffix: str):
        return self.attr_pvdb[suffix]

    # -- values from other threads ---------------------------------------------------
    def post(self, **updates: Any) -> None:
        """Thread-safe: publish values that changed (coalesced, except EVERY_VALUE PVs,
        whose every value is published).  The saver describes every frame with ~30
        values; most do not change, and each PV write costs the server loop time."""
        with self._post_lock:
            for suffix, value in updates.items():
                if suffix in self.table:
                    new = to_param(self.table[suffix], value)
                    if suffix not in EVERY_VALUE and self.params.get(suffix) == new:
                        continue
                    self.params[suffix] = new
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
            await self._publish(suffix, value)
        for suffix, value in pending.items():
            await self._publish(suffix, value)

    async def _publish(self, suffix: str, value: Any) -> None:
        pv = self.table.get(suffix)
        if pv is None:
            return
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

    async def _refuse(self, message: str):
        await self._publish("WriteMessage", message[:255])
        raise PutRefused(message)

    async def _run_saver(self, name: str, **args) -> None:
        from .file_saver import SaverError  # only the exception type; no h5py use here

        try:
            await asyncio.wrap_future(self.saver.submit(name, **args))
        except SaverError as exc:
            await self._publish("WriteStatus", 1)
            await self._refuse(str(exc))

    def _index(self, suffix: str, value) -> int:
        return to_param(self.table[suffix], value)

    async def put_Capture(self, value):
        on = bool(self._index("Capture", value))
        await self._run_saver("capture", on=on)
        raise SkipWrite  # the saver published Capture / Capture_RBV itself

    async def put_WriteFile(self, value):
        if self._index("WriteFile", value):
            await self._run_saver("write_file")
        raise SkipWrite

    async def put_ReadFile(self, value):
        if self._index("ReadFile", value):
            await self._refuse("ERROR: ReadFile is not supported by NDFileHDF5")
        raise SkipWrite

    async def put_FreeCapture(self, value):
        if self._index("FreeCapture", value):
            await self._run_saver("free_capture")
        raise SkipWrite

    async def put_FlushNow(self, value):
        if self._index("FlushNow", value):
            await self._run_saver("flush")
        raise SkipWrite

    async def put_ProcessPlugin(self, value):
        if self._index("ProcessPlugin", value):
            await self._run_saver("process_last")
        raise SkipWrite

    async def put_FileWriteMode(self, value):
        if self.saver.file_open or self.saver.capturing:
            await self._refuse("FileWriteMode cannot be changed while capturing")

    async def put_NumCapture(self, value):
        if int(value) < 0:
            await self._refuse("NumCapture must not be negative")
        if self.saver.file_open:
            await self._refuse("NumCapture cannot be changed while a file is open")

    async def put_FilePath(self, value):
        from .naming import create_directories, normalise_file_path

        path = normalise_file_path(str(value))
        problem = self.policy.check_directory(path) if path else None
        if problem:
            await self._publish("FilePathExists_RBV", 0)
            self.params["FilePathExists_RBV"] = 0
            await self._refuse(f"FilePath refused: {problem}")
        depth = int(self.params["CreateDirectory"])
        loop = asyncio.get_running_loop()
        problem = await loop.run_in_executor(None, create_directories, path, depth) \
            if path else "FilePath is empty"
        exists = problem is None
        await self._publish("FilePathExists_RBV", int(exists))
        self.params["FilePathExists_RBV"] = int(exists)
        if not exists:
            await self._publish("WriteMessage", f"FilePath {path}: {problem}"[:255])
        return path

    async def _check_name(self, template: str, name: str) -> None:
        """With --allow-root, FileName/FileTemplate may not lead outside FilePath."""
        if not self.policy.roots:
            return
        from .naming import TemplateError, c_format

        path = str(self.params["FilePath"])
        try:
            full = c_format(template, path, name, int(self.params["FileNumber"]))
        except TemplateError as exc:
            await self._refuse(f"FileTemplate refused: {exc}")
            return
        problem = self.policy.check_file(full, path)
        if problem:
            await self._refuse(f"File name refused: {problem}")

    async def put_FileName(self, value):
        await self._check_name(str(self.params["FileTemplate"]), str(value))

    async def put_FileTemplate(self, value):
        await self._check_name(str(value), str(self.params["FileName"]))

    async def put_XMLFileName(self, value):
        loop = asyncio.get_running_loop()
        layout, message = await loop.run_in_executor(None, self.check_layout, str(value))
        await self._publish("XMLValid_RBV", int(layout is not None))
        await self._publish("XMLErrorMsg_RBV", message[:255])

    async def put_NDAttributesFile(self, value):
        await self._load_attributes(str(value), str(self.params["NDAttributesMacros"]))

    async def put_NDAttributesMacros(self, value):
        await self._load_attributes(str(self.params["NDAttributesFile"]), str(value))

    async def _load_attributes(self, spec: str, macros: str) -> None:
        if self.on_attributes is None:
            return
        loop = asyncio.get_running_loop()
        status, message = await loop.run_in_executor(None, self.on_attributes, spec, macros)
        await self._publish("NDAttributesStatus", status)
        await self._publish("NDAttributesMessage_RBV", message[:255])

    async def put_Compression(self, value):
        index = self._index("Compression", value)
        if index not in self.available_compressions:
            await self._refuse(f"Compression {self.table['Compression'].enum_strings[index]} "
                               "is not available in this writer")

    async def put_QueueSize(self, value):
        size = int(value)
        if size < 1:
            await self._refuse("QueueSize must be at least 1")
        self.saver.queue.capacity = size
        if self.on_queue_size is not None:
            self.on_queue_size(size)
        await self._publish("QueueFree", self.saver.queue.free)

    async def put_DroppedArrays(self, value):
        with self._frame_lock:
            self._dropped = int(value)

    async def put_MaxArrayRate(self, value):
        rate = float(value)
        min_time = 1.0 / rate if rate > 0 else 0.0
        self.params["MinCallbackTime"] = min_time
        await self._publish("MinCallbackTime", min_time)
        await self._publish("MinCallbackTime_RBV", min_time)
        await self._publish("MaxArrayRate_RBV", rate)

    async def put_MinCallbackTime(self, value):
        if float(value) < 0:
            await self._refuse("MinCallbackTime must not be negative")
        await self._publish("MaxArrayRate_RBV", 1.0 / float(value) if float(value) > 0 else 0.0)

    async def put_SourcePrefix(self, value):
        if self.on_source_prefix is not None:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, self.on_source_prefix, str(value))

    async def _non_negative(self, suffix, value):
        if int(value) < 0:
            await self._refuse(f"{suffix} must not be negative")

    async def put_NumColChunks(self, value):
        await self._non_negative("NumColChunks", value)

    async def put_NumRowChunks(self, value):
        await self._non_negative("NumRowChunks", value)

    async def put_NumFramesChunks(self, value):
        await self._non_negative("NumFramesChunks", value)

    async def put_NDAttributeChunk(self, value):
        await self._non_negative("NDAttributeChunk", value)

    async def put_ZLevel(self, value):
        if not 0 <= int(value) <= 9:
            await self._refuse("ZLevel must be 0-9")

    async def put_BloscLevel(self, value):
        if not 0 <= int(value) <= 9:
            await self._refuse("BloscLevel must be 0-9")

    async def put_SZipNumPixels(self, value):
        if not 0 <= int(value) <= 32:
            await self._refuse("SZipNumPixels must be 0-32")

    async def put_NumFramesFlush(self, value):
        await self._non_negative("NumFramesFlush", value)

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
                size = self.saver.last_frame.nbytes if self.saver.last_frame is not None else 0
                await self._publish("PoolUsedMem", used * size / 1e6)
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
