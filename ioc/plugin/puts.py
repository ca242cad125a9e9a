"""Client writes: ADCore's rules for each setpoint, as ``put_<Suffix>`` handlers.

``PluginBase.group_write`` calls ``put_<Suffix>`` (if there is one) before it stores a
value: a handler refuses with ``_refuse`` (the client gets an error, the old value
stays, WriteMessage says why), returns a replacement value, or raises ``SkipWrite`` for
actions the saver publishes itself.  Anything that may block runs in an executor.
"""

from __future__ import annotations

import asyncio
import logging
import math

from caproto import SkipWrite

from .extra_dim_rules import ExtraDimRules
from .pvtable import to_param
from .user_paths import UserPathError

log = logging.getLogger(__name__)

MAX_QUEUE_SIZE = 100_000
MAX_FRAMES_CHUNK = 65_536  # NumFramesChunks; HDF5 also caps a chunk at 4 GiB
MAX_CHUNK_BYTES = 2**32 - 1
MAX_ATTRIBUTE_CHUNK = 65_536  # NDAttributeChunk (values; 16 MiB of 256-byte strings)


class PutRules(ExtraDimRules):
    """Mixin of the generated PVGroup: one handler per setpoint with a rule."""

    def _index(self, suffix: str, value) -> int:
        return to_param(self.table[suffix], value)

    async def put_Capture(self, value):
        on = bool(self._index("Capture", value))
        serial = await self._run_saver("capture", on=on)
        if on and serial is not None:
            # a busy record: the client's put completes when this capture ends
            self.complete_when_capture_ends(serial)
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
        return await self.num_capture_rule(int(value))  # extra dimensions (extra_dim_rules)

    async def put_FilePath(self, value):
        from .naming import create_directories, find_unfinished, normalise_file_path

        path = normalise_file_path(str(value))
        problem = None
        if path and self.policy.roots:  # resolving symlinks stats the path: off this thread
            try:
                problem = await self.user_paths.run("FilePath", self.policy.check_directory, path)
            except UserPathError as exc:
                problem = str(exc)
        if problem:
            await self._publish("FilePathExists_RBV", 0)
            self.params["FilePathExists_RBV"] = 0
            await self._refuse(f"FilePath refused: {problem}")
        depth = int(self.params["CreateDirectory"])
        if not path:
            problem = "FilePath is empty: no file is written until it is set"
        else:
            try:
                problem = await self.user_paths.run("FilePath", create_directories, path,
                                                    depth)
            except UserPathError as exc:
                problem = str(exc)
        exists = problem is None
        await self._publish("FilePathExists_RBV", int(exists))
        self.params["FilePathExists_RBV"] = int(exists)
        if not exists:
            await self._warn(f"FilePath {path}: {problem}" if path else problem)
        else:
            await self.report_unfinished(path, find_unfinished)
        return path

    async def report_unfinished(self, path: str, find_unfinished=None) -> None:
        """Hidden .partial files in FilePath: left by a writer that was killed (or being
        written by another one now).  Reported, never overwritten or deleted."""
        if find_unfinished is None:
            from .naming import find_unfinished
        try:
            found = await self.user_paths.run("FilePath", find_unfinished, path)
        except OSError:
            return
        if found:
            names = ", ".join(found[:3]) + (", ..." if len(found) > 3 else "")
            await self._warn(f"FilePath {path}: {len(found)} unfinished files from a writer "
                             f"that was stopped (or one writing now): {names}; not deleted")

    async def _warn(self, message: str) -> None:
        """A note for the operator: WriteMessage and the log (the put is accepted)."""
        log.warning("%s", message)
        await self._publish("WriteMessage", message[:255])

    async def _check_name(self, template: str, name: str) -> None:
        """A template that cannot make a name is refused when written (not only when a
        file is opened); one that leaves out the path or the name, or makes a name too
        long, is accepted with a warning (the next put may fix it).  With --allow-root,
        FileName/FileTemplate may not lead outside FilePath."""
        from .naming import TemplateError, c_format, check_full_name, template_warnings

        path = str(self.params["FilePath"])
        number = int(self.params["FileNumber"])
        try:
            full = c_format(template, path, name, number)
        except TemplateError as exc:
            await self._refuse(f"FileTemplate refused: {exc}")
            return
        if self.policy.roots:
            try:
                problem = await self.user_paths.run("FileName", self.policy.check_file, full,
                                                    path)
            except UserPathError as exc:
                problem = str(exc)
            if problem:
                await self._refuse(f"File name refused: {problem}")
        notes = template_warnings(template, path, name, number)
        problem = check_full_name(full) if full else None
        if problem:
            notes.append(problem)
        elif full and not full.startswith("/") and path:
            notes.append(f"the name {full} is relative")
        if notes:
            await self._warn(f"FileTemplate {template!r} with FileName {name!r}: "
                             + "; ".join(notes))

    async def put_FileName(self, value):
        await self._check_name(str(self.params["FileTemplate"]), str(value))

    async def put_FileTemplate(self, value):
        await self._check_name(str(value), str(self.params["FileName"]))

    async def put_TempSuffix(self, value):
        if "/" in str(value) or "\0" in str(value):
            await self._refuse("TempSuffix must not contain '/'")

    async def put_XMLFileName(self, value):
        try:
            layout, message = await self.user_paths.run("XMLFileName", self.check_layout,
                                                        str(value))
        except UserPathError as exc:
            layout, message = None, str(exc)
        await self._publish("XMLValid_RBV", int(layout is not None))
        await self._publish("XMLErrorMsg_RBV", message[:255])

    async def put_NDAttributesFile(self, value):
        await self._load_attributes(str(value), str(self.params["NDAttributesMacros"]))

    async def put_NDAttributesMacros(self, value):
        await self._load_attributes(str(self.params["NDAttributesFile"]), str(value))

    async def _load_attributes(self, spec: str, macros: str) -> None:
        if self.on_attributes is None:
            return
        try:
            status, message = await self.user_paths.run("NDAttributesFile", self.on_attributes,
                                                        spec, macros)
        except UserPathError as exc:
            status, message = 1, str(exc)  # "File not found": it could not be read
        await self._publish("NDAttributesStatus", status)
        await self._publish("NDAttributesMessage_RBV", message[:255])

    async def put_Compression(self, value):
        index = self._index("Compression", value)
        if index not in self.available_compressions:
            await self._refuse(f"Compression {self.table['Compression'].enum_strings[index]} "
                               "is not available in this writer")

    async def put_QueueSize(self, value):
        size = int(value)
        if not 1 <= size <= MAX_QUEUE_SIZE:
            await self._refuse(f"QueueSize must be 1-{MAX_QUEUE_SIZE}")
        frame = self.saver.last_frame
        if frame is not None and size * frame.nbytes > self.saver.memory_limit:
            await self._refuse(f"QueueSize {size} x {frame.nbytes / 1e6:.3g} MB frames is more "
                               f"than the memory limit {self.saver.memory_limit / 1e6:.0f} MB "
                               "(serve --max-memory)")
        self.saver.queue.capacity = size
        if self.on_queue_size is not None:
            self.on_queue_size(size)
        await self._publish("QueueFree", self.saver.queue.free)

    async def put_DroppedArrays(self, value):
        with self._frame_lock:
            self._dropped = int(value)

    async def put_MaxArrayRate(self, value):
        rate = float(value)
        if not math.isfinite(rate) or rate < 0:
            await self._refuse("MaxArrayRate must be a finite number >= 0")
        min_time = 1.0 / rate if rate > 0 else 0.0
        self.params["MinCallbackTime"] = min_time
        await self._publish("MinCallbackTime", min_time)
        await self._publish("MinCallbackTime_RBV", min_time)
        await self._publish("MaxArrayRate_RBV", rate)

    async def put_MinCallbackTime(self, value):
        if not math.isfinite(float(value)) or float(value) < 0:
            await self._refuse("MinCallbackTime must be a finite number >= 0")
        await self._publish("MaxArrayRate_RBV", 1.0 / float(value) if float(value) > 0 else 0.0)

    async def put_NDArrayPort(self, value):
        """NDArrayPort selects the source among the ports the IOC knows (the driver's, and
        ``serve --port NAME=SOURCE``); an unknown name is refused, never ignored."""
        if self.on_array_port is not None:
            loop = asyncio.get_running_loop()
            problem = await loop.run_in_executor(None, self.on_array_port, str(value))
            if problem:
                await self._refuse(problem)

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
        if int(value) > MAX_FRAMES_CHUNK:
            await self._refuse(f"NumFramesChunks must be at most {MAX_FRAMES_CHUNK}")
        frame = self.saver.last_frame
        if frame is not None and int(value) * frame.nbytes > MAX_CHUNK_BYTES:
            await self._refuse(f"NumFramesChunks {int(value)} x {frame.nbytes} bytes is more "
                               "than HDF5's 4 GiB chunk limit")

    async def put_NDAttributeChunk(self, value):
        await self._non_negative("NDAttributeChunk", value)
        if int(value) > MAX_ATTRIBUTE_CHUNK:
            await self._refuse(f"NDAttributeChunk must be at most {MAX_ATTRIBUTE_CHUNK}")

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
        # NDFileHDF5::writeInt32: "You cannot set the flush parameter to less than
        # nFramesChunks" (so also no negative value); raised to it again at each open.
        chunks = int(self.params["NumFramesChunks"])
        if int(value) < max(chunks, 0):
            await self._refuse(f"NumFramesFlush must not be below NumFramesChunks ({chunks})")
