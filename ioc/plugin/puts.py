"""Client writes: ADCore's rules for each setpoint, as ``put_<Suffix>`` handlers.

``PluginBase.group_write`` calls ``put_<Suffix>`` (if there is one) before it stores a
value: a handler refuses with ``_refuse`` (the client gets an error, the old value
stays, WriteMessage says why), returns a replacement value, or raises ``SkipWrite`` for
actions the saver publishes itself.  Anything that may block runs in an executor.
"""

from __future__ import annotations

import asyncio

from caproto import SkipWrite

from .extra_dim_rules import ExtraDimRules
from .pvtable import to_param


class PutRules(ExtraDimRules):
    """Mixin of the generated PVGroup: one handler per setpoint with a rule."""

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
        return await self.num_capture_rule(int(value))  # extra dimensions (extra_dim_rules)

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
