"""The commands the PV layer submits to the file saver (``cmd_<name>``, run in the saver's
thread in order with the frames): Capture, WriteFile, FreeCapture, FlushNow, and the
server's own (prime, resize_queue, shutdown, sync, ...).

A mixin of ``FileSaver`` (``file_saver.py``); the work is done by the mode mixins.
"""

from __future__ import annotations

import dataclasses

from ..ndarray import NDArray
from ..writer import _write_behind
from . import memory
from ._saver_common import CAPTURE, SINGLE, STREAM, SaverError, log


class Commands:
    """FileSaver's commands (see the module's docstring)."""

    def cmd_capture(self, on: bool) -> int:
        """Start or stop capturing; returns the number of the capture started or joined
        (its end completes the Capture=1 put)."""
        mode = self.p("FileWriteMode")
        if not on:
            note = None
            if self.capturing and mode in (STREAM, CAPTURE):
                note = self._take_in_finished("Capture=0")
            if mode == STREAM:
                self.lazy_pending = False
                self._close_stream()
            self._set_capture(False)
            self._report_stop(note)
            return self.capture_serial
        self._ok()  # NDPluginFile::writeInt32 clears the status when Capture is set
        if mode == SINGLE:
            raise SaverError("ERROR: capture not supported in Single mode")
        if mode == STREAM and (self.writer is not None or self.lazy_pending):
            return self.capture_serial  # already streaming: the put joins this stream
        self.post(FullFileName_RBV="", NumCaptured_RBV=0)
        self.num_captured = 0
        if mode == CAPTURE:
            count = int(self.p("NumCapture"))
            if count < 1:
                raise SaverError("ERROR: NumCapture must be at least 1 in Capture mode")
            frame = self.last_frame
            if frame is not None and count * frame.nbytes > self.memory_limit:
                raise SaverError(
                    f"NumCapture {count} x {memory.megabytes(frame.nbytes):.3g} MB frames is "
                    f"more than the memory limit {memory.megabytes(self.memory_limit):.0f} MB "
                    "(serve --max-memory)")
            self._free_buffer()
            self._set_capture(True)
            return self.capture_serial
        if self.p("LazyOpen"):
            self.lazy_pending = True
            self.post(WriteMessage="Lazy Open...")
            self._set_capture(True)
            return self.capture_serial
        if self.last_frame is None:
            raise SaverError("ERROR: must collect an array to get dimensions first")
        error = self._open_stream(self.last_frame)
        if error is not None:
            raise SaverError(error)
        self._set_capture(True)
        return self.capture_serial

    def cmd_write_file(self) -> None:
        mode = self.p("FileWriteMode")
        note = None
        if mode == SINGLE or (mode == CAPTURE and self.capturing):
            # "the last array" / the buffer: with the frames finished before this press
            note = self._take_in_finished("WriteFile")
        if mode == SINGLE:
            if self.last_frame is None:
                raise SaverError("ERROR, no array to write")
            self.post(WriteFile=1, WriteFile_RBV=1)
            try:
                if not self._write_single(self.last_frame):
                    raise SaverError("Error writing file")
            finally:
                self.post(WriteFile=0, WriteFile_RBV=0)
            self._report_stop(note)
            return
        if mode == CAPTURE:
            if not self.buffer:
                self._error("ERROR, no capture buffer present")
                raise SaverError("ERROR, no capture buffer present")
            self._write_buffer()
            self._report_stop(note)
            return
        raise SaverError("ERROR: WriteFile is not used in Stream mode (use Capture)")

    def cmd_free_capture(self) -> None:
        self._free_buffer()
        self.num_captured = 0
        self.post(NumCaptured_RBV=0)

    def cmd_flush(self) -> None:
        if self.writer is None:
            raise SaverError("ERROR: no file is open")
        self.writer.flush()
        self.post(SWMRCbCounter_RBV=self.writer.flush_count)

    def cmd_attributes_changed(self, values: dict, names: set[str]) -> None:
        """The attributes file changed: the last frame (a Stream with LazyOpen=No opens
        with it) carries the new attributes' current values instead of the old ones, as
        ADCore evaluates its plugin attributes at open."""
        frame = self.last_frame
        if frame is not None:
            attributes = {k: v for k, v in frame.attributes.items()
                          if k not in self._plugin_attributes}
            attributes.update(values)
            self.last_frame = dataclasses.replace(frame, attributes=attributes)
        self._plugin_attributes = set(names)

    def cmd_prime(self, frame: NDArray) -> None:
        """The source's current frame at connect: describes the readbacks and serves as
        "the last array received" for Stream opens; it is not saved."""
        self.post(**self._describe(frame))
        self.last_frame = frame

    def cmd_process_last(self) -> None:
        if self.last_frame is not None:
            self.process(self.last_frame)

    def cmd_resize_queue(self, size: int) -> None:
        self.queue.capacity = max(int(size), 1)

    def cmd_shutdown(self) -> None:
        if self.buffer:
            log.warning("shutdown: %d frames in the Capture buffer (%.0f MB) were not written",
                        len(self.buffer), memory.megabytes(self.buffer_bytes))
        self._close_stream()
        _write_behind.drop_all()
        self._stop = True

    def cmd_sync(self) -> None:
        """No-op: returns once everything queued before it was processed."""
