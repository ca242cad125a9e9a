"""The file saver's multi-frame files (Capture and Stream): opening one, closing it
(TempSuffix rename, RunTime, IOSpeed), and what is kept when a write or the close fails.

A mixin of ``FileSaver`` (``file_saver.py``): ``paths`` and ``_last_flush`` are the
saver's; the name, options and layout come from ``NamingAndOptions``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from ..ndarray import NDArray
from ..writer.nexus import NexusWriter, WriterOptions, effective_chunks
from ..writer.recovery import recover
from ._saver_common import SaverError, cause_of, log


class MultiFrameFiles:
    """FileSaver's opening and closing of multi-frame files (see the module's docstring)."""

    def _open(self, frame: NDArray, multi_frame: bool) -> NexusWriter:
        options = self.options(multi_frame)
        written, final = self._next_name(options.swmr)
        try:
            layout = self._layout()
            # A temporary name is created only if free: never another writer's file, nor
            # one a killed writer left.  The writer removes what it created if it fails.
            writer = NexusWriter(written, layout, frame, options, file_name=str(final),
                                 exclusive=written != final)
        except Exception as exc:  # noqa: BLE001 - every failure is reported the same way
            raise SaverError(f"Error opening file: {cause_of(exc)} ({final.name})") from None
        self.paths = (written, final)
        self._last_flush = time.monotonic()
        self._post_opened(writer, frame)
        return writer

    def _post_opened(self, writer: NexusWriter, frame: NDArray) -> None:
        """What ADCore reports when a multi-frame file opens: SWMR state (in every mode),
        a new flush count, and the chunking the file uses (configureDims writes the
        effective values back; here the _RBV PVs show them, the setpoints keep what was
        asked for the next file)."""
        options = writer.options
        self.post(SWMRActive_RBV=int(options.swmr), SWMRCbCounter_RBV=writer.flush_count,
                  NumFramesChunks_RBV=options.frames_chunks,
                  NumFramesFlush_RBV=options.flush_every)
        self._post_chunking(frame, options)

    def _post_chunking(self, frame: NDArray, options: WriterOptions) -> None:
        names = ("NumColChunks", "NumRowChunks", *(f"ChunkSize{i}" for i in range(2, 10)))
        chunks = effective_chunks(frame.dims, options)
        self.post(**{f"{name}_RBV": size for name, size in zip(names, chunks, strict=False)})

    def _finish(self, writer: NexusWriter) -> None:
        """Close, rename TempSuffix files, report RunTime and IOSpeed.  A failed close
        keeps what can be read (``_salvage``) and raises SaverError saying so."""
        runtime = writer.runtime
        frames = writer.frames_written
        frame_bytes = writer.frame_bytes
        self._ok()  # NDPluginFile::closeFileBase: OK unless the close fails
        try:
            writer.close()
        except Exception as exc:  # noqa: BLE001 - h5py raises RuntimeError too
            raise SaverError(self._salvage(writer, "Error closing file", exc)) from None
        written, final = self.paths
        self.paths = None
        self.post(SWMRActive_RBV=0)
        try:
            if written != final:
                os.replace(written, final)
        except OSError as exc:
            raise SaverError(f"Error renaming file: {cause_of(exc)} ({written.name} -> "
                             f"{final.name}); its {frames} frames are in {written.name}") from None
        speed = frames * frame_bytes * 8 / 2**20 / runtime if runtime > 0 else 0.0
        self.post(RunTime=runtime, IOSpeed=speed)
        warnings = list(writer.warnings) + list(self._name_notes)
        if warnings:
            self.post(WriteMessage=f"Written with warnings: {warnings[0]}"[:255])

    def _close_after_error(self, writer: NexusWriter, what: str, exc: BaseException) -> str:
        """A write failed: close the file keeping its frames; the message to show."""
        try:
            writer.close()
        except Exception:  # noqa: BLE001 - the close fails too (disk still full)
            return self._salvage(writer, what, exc)
        written, final = self.paths
        self.paths = None
        self.post(SWMRActive_RBV=0)
        if written != final:
            try:
                os.replace(written, final)
            except OSError:
                final = written
        return f"{what}: {cause_of(exc)}; {writer.frames_written} frames kept in {final.name}"

    def _salvage(self, writer: NexusWriter, what: str, exc: BaseException) -> str:
        """After a failed close: let go of the file without touching it again, keep the
        frames that can be read back, or remove the file (this writer created it)."""
        writer.release()
        self.post(SWMRActive_RBV=0)
        written, final = self.paths
        self.paths = None
        cause = cause_of(exc)
        try:
            kept = recover(written, *writer.per_frame_datasets())
        except Exception:  # noqa: BLE001 - treat as unreadable
            log.exception("recovering %s", written)
            kept = None
        if kept is None or kept.frames == 0:
            self._remove(written)
            return (f"{what}: {cause}; {final.name} could not be completed and was removed "
                    f"({writer.frames_written} frames lost)")
        if written != final:
            try:
                os.replace(written, final)
            except OSError:
                final = written
        lost = writer.frames_written - kept.frames
        return (f"{what}: {cause}; {kept.frames} frames kept in {final.name}"
                + (f", {lost} lost" if lost > 0 else ""))

    def _remove(self, path: Path) -> None:
        try:
            path.unlink()
        except OSError:
            pass
