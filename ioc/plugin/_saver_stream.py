"""Stream mode: one file open while capturing, each frame written as it comes, flushed
periodically; a write error or a frame PositionMode cannot place ends the file and the
capture, keeping what was written.

A mixin of ``FileSaver`` (``file_saver.py``): the open file is the saver's ``writer``; it
is opened and closed by ``MultiFrameFiles``.
"""

from __future__ import annotations

import time

from ..ndarray import NDArray
from ..writer.extra_dims import PositionError
from ..writer.nexus import FrameMismatch
from ._saver_common import SaverError


class StreamFile:
    """FileSaver's Stream file (see the module's docstring)."""

    def _open_stream(self, frame: NDArray) -> str | None:
        """Open the stream file; None on success, else the error (also in WriteMessage)."""
        try:
            self._ok()
            self.writer = self._open(frame, multi_frame=True)
        except SaverError as exc:
            self._error(str(exc))
            return str(exc)
        return None

    def _stream_frame(self, frame: NDArray) -> bool:
        self._ok()  # NDPluginFile::writeFileBase: each write starts from OK
        try:
            self.writer.write(frame)
        except FrameMismatch:
            self._invalid_frame()
            return False
        except PositionError as exc:
            self._abort_placement(str(exc))
            return False
        except Exception as exc:  # noqa: BLE001 - disk full, a vanished mount, ...
            # ADCore: a write error closes the file and clears Capture.
            self._abandon_stream("Error writing file", exc)
            return False
        if time.monotonic() - self._last_flush >= self.FLUSH_INTERVAL:
            self._flush_open_file()
            if self.writer is None:
                return False
        self.num_captured += 1
        self.post(NumCaptured_RBV=self.num_captured, SWMRCbCounter_RBV=self.writer.flush_count)
        limit = int(self.p("NumCapture"))
        if limit > 0 and self.num_captured >= limit:
            self._close_stream()
            self._set_capture(False)
        return True

    def _flush_open_file(self) -> None:
        """Flush the open Stream file (periodically, and when idle)."""
        self._last_flush = time.monotonic()
        try:
            self.writer.flush()
        except Exception as exc:  # noqa: BLE001 - a write error, found at the flush
            self._abandon_stream("Error writing file", exc)

    def _close_stream(self) -> None:
        writer, self.writer = self.writer, None
        if writer is None:
            return
        try:
            self._finish(writer)
        except SaverError as exc:
            self._error(str(exc))

    def _abandon_stream(self, what: str, exc: BaseException) -> None:
        """A write failed: close the stream file keeping what it holds, stop capturing."""
        writer, self.writer = self.writer, None
        if writer is not None:
            self._error(self._close_after_error(writer, what, exc))
        self.post(SWMRActive_RBV=0)
        self._set_capture(False)

    def _abort_placement(self, reason: str) -> None:
        """PositionMode: a frame that cannot be placed ends the file and the capture, as in
        ADCore; the frames written so far stay, in a properly closed file."""
        writer, self.writer = self.writer, None
        try:
            self._finish(writer)
            kept = f"file closed with {writer.frames_written} frames"
        except SaverError as exc:
            kept = str(exc)
        self.post(SWMRActive_RBV=0)
        self._error(f"Error writing file, {reason}; {kept}")
        self._set_capture(False)
