"""Capture mode: frames kept in a buffer within the memory limit, then written to one file
(WriteFile, or AutoSave when NumCapture are in); a failed write keeps them for another try.

A mixin of ``FileSaver`` (``file_saver.py``): ``buffer``, ``buffer_bytes`` and the queue's
byte budget are the saver's; the file is opened and closed by ``MultiFrameFiles``.
"""

from __future__ import annotations

import time

from ..ndarray import NDArray
from ..writer.extra_dims import PositionError
from ..writer.nexus import FrameMismatch
from . import memory
from ._saver_common import SaverError, log


class CaptureBuffer:
    """FileSaver's Capture buffer (see the module's docstring)."""

    def _buffer_frame(self, frame: NDArray) -> bool:
        """Keep a frame in the Capture buffer: frames of another shape or type than the
        first are refused (ADCore's isFrameValid), and the buffer stays within the memory
        limit (ADCore: the NDArrayPool's maximum memory)."""
        if self.buffer and (frame.data.shape != self.buffer[0].data.shape
                            or frame.data.dtype != self.buffer[0].data.dtype):
            self._invalid_frame()
            return False
        if self.buffer_bytes + frame.nbytes > self.memory_limit:
            self._error(f"Capture stopped: the buffer reached the memory limit "
                        f"({len(self.buffer)} frames, {memory.megabytes(self.buffer_bytes):.0f}"
                        f" MB; limit {memory.megabytes(self.memory_limit):.0f} MB, serve "
                        "--max-memory); WriteFile writes them, FreeCapture frees them")
            self._set_capture(False)  # the Capture=1 put completes, the message set
            return False
        kept = memory.kept_frame(frame)  # held for long: off the receiver's slot
        self.buffer.append(kept)
        self.buffer_bytes += kept.nbytes
        self.queue.max_bytes = max(self.memory_limit - self.buffer_bytes, 0)  # one budget
        self.num_captured = len(self.buffer)
        self.post(NumCaptured_RBV=self.num_captured)
        return True

    def _free_buffer(self) -> None:
        self.buffer = []
        self.buffer_bytes = 0
        self.queue.max_bytes = self.memory_limit
        memory.give_back()

    def _write_buffer(self) -> None:
        """Write the Capture buffer to one file, opened with its first frame.  If the write
        fails, the frames stay in the buffer: WriteFile tries again."""
        if not self.buffer:
            raise SaverError("ERROR, no capture buffer present")
        frames = self.buffer
        self.post(WriteFile=1, WriteFile_RBV=1)
        kept = False
        placement: PositionError | None = None
        try:
            self._ok()
            writer = self._open(frames[0], multi_frame=True)
            remaining = len(frames)
            try:
                for frame in frames:
                    if self._stopping:
                        log.warning("shutdown: writing the Capture buffer stopped after %d "
                                    "of %d frames", len(frames) - remaining, len(frames))
                        break
                    try:
                        writer.write(frame)
                    except FrameMismatch:
                        self._invalid_frame()
                    except PositionError as exc:
                        placement = exc
                        break
                    remaining -= 1
                    self.post(NumCaptured_RBV=remaining, SWMRCbCounter_RBV=writer.flush_count)
                    if time.monotonic() - self._last_flush >= self.FLUSH_INTERVAL:
                        self._last_flush = time.monotonic()
                        writer.flush()
            except Exception as exc:  # noqa: BLE001 - disk full, a vanished mount, ...
                raise SaverError(self._close_after_error(writer, "Error writing file", exc)) \
                    from None
            self._finish(writer)
            if placement is not None:  # what was written is kept, as ADCore does
                self._error(f"Error writing file, {placement}; file closed with "
                            f"{writer.frames_written} frames")
        except SaverError as exc:
            kept = True
            self._error(f"{exc}; the {len(frames)} frames stay in the capture buffer "
                        "(WriteFile writes them, FreeCapture frees them)")
        finally:
            if not kept:
                self._free_buffer()
            self.num_captured = len(self.buffer)
            self.post(WriteFile=0, WriteFile_RBV=0, NumCaptured_RBV=self.num_captured)
