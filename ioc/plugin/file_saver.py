"""NDPluginFile's processing, run in one worker thread: modes, naming, files.

Frames and commands share one FIFO (frames bounded by QueueSize, commands
not), so a command sees every frame received before it, as ADCore's plugin
thread does.  The worker reads the current parameter values from a shared
mapping (updated by the PV layer) and reports PV values through ``post``.
No EPICS here: the PV layer (``ioc.plugin.group``) owns the PVs.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from ..layout import warnings_summary
from ..layout.model import Layout, LayoutError, default_layout, load_layout
from ..ndarray import NDArray
from ..writer import _write_behind
from ..writer.extra_dims import PositionError
from ..writer.nexus import (
    Compression,
    FrameMismatch,
    NexusWriter,
    WriterError,
    WriterOptions,
)
from ..writer.single_file import SingleFileWriter
from .extra_dim_rules import extra_dims_of
from .frame_queue import Command, FrameQueue
from .naming import PathPolicy, TemplateError, c_format, temporary_name

log = logging.getLogger(__name__)

SINGLE, CAPTURE, STREAM = 0, 1, 2


class SaverError(Exception):
    """A refused action; the message is what WriteMessage shows."""


NO_POLICY = PathPolicy()


def layout_status(spec: str, policy: PathPolicy = NO_POLICY) -> tuple[Layout | None, str]:
    """Load XMLFileName's layout: (layout, "" or its warnings) or (None, the error)."""
    if not spec.strip():
        return default_layout(), "Default layout selected"
    try:
        layout = load_layout(spec, allowed_roots=policy.roots)
    except LayoutError as exc:
        return None, str(exc)
    for warning in layout.warnings:
        log.warning("layout %s: %s", layout.source[:200], warning)
    return layout, warnings_summary(layout.warnings)


class FileSaver:
    """The file-writing half of the plugin, driven from one worker thread."""

    IDLE_AFTER = 1.0  # s without work: files held for write-behind are let go

    def __init__(self, params: Mapping[str, object], post: Callable[..., None],
                 queue_size: int = 20, policy: PathPolicy = NO_POLICY):
        self.params = params
        self.policy = policy
        self.post = post
        self.queue = FrameQueue(queue_size)
        self.single = SingleFileWriter()
        self._described_dims: tuple[int, ...] = ()
        self._layout_cache: tuple[tuple, Layout] | None = None
        self.last_frame: NDArray | None = None
        self.capturing = False
        self.lazy_pending = False
        self.buffer: list[NDArray] = []
        self.writer: NexusWriter | None = None
        self.paths: tuple[Path, Path] | None = None  # (written, final)
        self.num_captured = 0
        self.array_counter = 0
        self.invalid_frames = 0
        self._thread: threading.Thread | None = None
        self._stop = False

    # -- thread plumbing -----------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="file-saver", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Close any open file (it stays valid) and end the worker."""
        if self._thread is None:
            return
        done = self.submit("shutdown")
        try:
            done.result(timeout)
        except Exception:  # noqa: BLE001 - shutting down anyway
            log.exception("error while closing files at shutdown")
        self._thread.join(timeout)

    def submit(self, name: str, **args) -> concurrent.futures.Future:
        command = Command(name, args)
        self.queue.put_command(command)
        return command.future

    def enqueue(self, frame: NDArray) -> bool:
        return self.queue.put_frame(frame)

    def _run(self) -> None:
        while not self._stop:
            item = self.queue.get(timeout=self.IDLE_AFTER)
            if item is None:
                _write_behind.drop_all()  # idle: let go of the files written last
                continue
            if isinstance(item, Command):
                try:
                    item.future.set_result(getattr(self, f"cmd_{item.name}")(**item.args))
                except Exception as exc:  # noqa: BLE001 - reported to the caller
                    if not isinstance(exc, SaverError):
                        log.exception("command %s failed", item.name)
                    item.future.set_exception(exc)
            else:
                try:
                    self.process(item)
                except Exception:  # noqa: BLE001 - never let one frame kill the worker
                    log.exception("error processing frame %s", item.unique_id)
                    self._error(f"Internal error processing frame {item.unique_id}")
            item = None  # a frame's memory (a receiver slot) goes back now, not at the next get
            self.post(QueueFree=self.queue.free, NumQueuedArrays=self.queue.frames)

    # -- parameters -----------------------------------------------------------
    def p(self, suffix: str):
        return self.params[suffix]

    def options(self, multi_frame: bool) -> WriterOptions:
        p = self.p
        chunks = (p("NumColChunks"), p("NumRowChunks"), *(p(f"ChunkSize{i}") for i in range(2, 10)))
        return WriterOptions(
            multi_frame=multi_frame, num_capture=max(int(p("NumCapture")), 0),
            store_attributes=bool(p("StoreAttr")), store_performance=bool(p("StorePerform")),
            compression=Compression(p("Compression")), zlevel=p("ZLevel"),
            szip_pixels=p("SZipNumPixels"), blosc_compressor=p("BloscCompressor"),
            blosc_shuffle=p("BloscShuffle"), blosc_level=p("BloscLevel"),
            chunk_size_auto=bool(p("ChunkSizeAuto")), chunks=tuple(int(c) for c in chunks),
            frames_chunks=max(int(p("NumFramesChunks")), 1), fill_value=float(p("FillValue")),
            ndattribute_chunk=max(int(p("NDAttributeChunk")), 0),
            swmr=bool(p("SWMRMode")) and multi_frame, flush_every=int(p("NumFramesFlush")),
            extra_dims=extra_dims_of(self.params, multi_frame),
        )

    @property
    def file_open(self) -> bool:
        return self.writer is not None

    # -- frames -------------------------------------------------------------------
    def process(self, frame: NDArray) -> None:
        t0 = time.perf_counter()
        self._describe(frame)
        self.last_frame = frame
        mode = self.p("FileWriteMode")
        saved = False
        if mode == SINGLE:
            if self.p("AutoSave"):
                saved = self._write_single(frame)
        elif mode == CAPTURE:
            if self.capturing:
                self.buffer.append(frame.detached())  # held for long: off the slot
                self.num_captured = len(self.buffer)
                self.post(NumCaptured_RBV=self.num_captured)
                saved = True
                if self.num_captured >= self.p("NumCapture"):
                    self._set_capture(False)
                    if self.p("AutoSave"):
                        self._write_buffer()
        elif mode == STREAM and self.capturing:
            if self.writer is None and self.lazy_pending:
                self.lazy_pending = False
                if self._open_stream(frame) is not None:
                    self._set_capture(False)
                    return
            if self.writer is not None:
                saved = self._stream_frame(frame)
        if saved:
            self.array_counter = int(self.p("ArrayCounter")) + 1
            self.post(ArrayCounter=self.array_counter, ArrayCounter_RBV=self.array_counter)
        self.post(ExecutionTime_RBV=(time.perf_counter() - t0) * 1e3)

    def _describe(self, frame: NDArray) -> None:
        """NDArrayBase readbacks describe the last frame processed (the sizes are
        posted only when they change, as ADCore posts Dimensions_RBV)."""
        dims = frame.dims
        color = frame.attributes.get("ColorMode")
        self.post(
            UniqueId_RBV=frame.unique_id, TimeStamp_RBV=frame.timestamp,
            EpicsTSSec_RBV=frame.epics_ts_sec, EpicsTSNsec_RBV=frame.epics_ts_nsec,
            DataType_RBV=int(frame.data_type),
            ColorMode_RBV=int(color.value) if color is not None and color.defined else 0,
            Codec_RBV=frame.codec_name, CompressedSize_RBV=frame.compressed_size,
        )
        if dims != self._described_dims:
            self._described_dims = dims
            padded = tuple(dims) + (0,) * (10 - len(dims))
            sizes = {f"ArraySize{i}_RBV": padded[i] for i in range(10)}
            sizes.update({f"ArraySize{i}": padded[i] for i in range(10)})
            self.post(NDimensions_RBV=len(dims), Dimensions_RBV=padded, **sizes)

    # -- naming -------------------------------------------------------------------
    def _next_name(self, swmr: bool) -> tuple[Path, Path]:
        """Build the full name (FileNumber++ when AutoIncrement), as openFileBase does.

        Returns (name written while open, final name).  SWMR files are written under
        their final name: their readers open them while they grow."""
        number = int(self.p("FileNumber"))
        try:
            name = c_format(str(self.p("FileTemplate")), str(self.p("FilePath")),
                            str(self.p("FileName")), number)
        except TemplateError as exc:
            raise SaverError(f"Invalid FileTemplate: {exc}") from None
        if self.p("AutoIncrement"):
            self.post(FileNumber=number + 1, FileNumber_RBV=number + 1)
        self.post(FullFileName_RBV=name)
        problem = self.policy.check_file(name, str(self.p("FilePath")))
        if problem:
            raise SaverError(f"Error opening file {name}: {problem}")
        final = Path(name)
        suffix = str(self.p("TempSuffix"))
        written = final if swmr and not suffix else temporary_name(final, suffix)
        return written, final

    # -- opening and closing -----------------------------------------------------------
    def _layout(self) -> Layout:
        """The layout, verified again at each open as ADCore does; a file that has not
        changed (same name, size and mtime) is not parsed again."""
        spec = str(self.p("XMLFileName"))
        key: tuple = (spec,)
        if spec.strip() and "<?xml" not in spec:
            try:
                stat = os.stat(spec)
                key = (spec, stat.st_mtime_ns, stat.st_size)
            except OSError:
                key = (spec, None)
        if self._layout_cache is not None and self._layout_cache[0] == key and key[-1] is not None:
            return self._layout_cache[1]
        layout, message = layout_status(spec, self.policy)
        if layout is not None:
            self._layout_cache = (key, layout)
        valid = layout is not None
        self.post(XMLValid_RBV=int(valid), XMLErrorMsg_RBV=message[:255])
        if layout is None:
            raise SaverError(message)
        return layout

    def _open(self, frame: NDArray, multi_frame: bool) -> NexusWriter:
        options = self.options(multi_frame)
        written, final = self._next_name(options.swmr)
        try:
            writer = NexusWriter(written, self._layout(), frame, options, file_name=str(final))
        except (SaverError, WriterError, LayoutError, OSError, ValueError) as exc:
            self._remove(written)
            raise SaverError(f"Error opening file {final}: {exc}") from None
        self.paths = (written, final)
        return writer

    def _finish(self, writer: NexusWriter) -> None:
        """Close, rename TempSuffix files, report RunTime and IOSpeed."""
        runtime = writer.runtime
        frames = writer.frames_written
        frame_bytes = writer.frame_bytes
        written, final = self.paths
        try:
            writer.close()
            if written != final:
                os.replace(written, final)
        except (OSError, WriterError, ValueError) as exc:
            self._remove(written)
            raise SaverError(f"Error closing file {final}: {exc}") from None
        finally:
            self.paths = None
        speed = frames * frame_bytes * 8 / 2**20 / runtime if runtime > 0 else 0.0
        self.post(RunTime=runtime, IOSpeed=speed)
        if writer.warnings:
            self.post(WriteMessage=f"Written with warnings: {writer.warnings[0]}"[:255])

    def _remove(self, path: Path) -> None:
        try:
            path.unlink()
        except OSError:
            pass

    def _ok(self) -> None:
        self.post(WriteStatus=0, WriteMessage="")

    def _error(self, message: str) -> None:
        log.warning("%s", message)
        self.post(WriteStatus=1, WriteMessage=message[:255])

    # -- Single ------------------------------------------------------------------
    def _write_single(self, frame: NDArray) -> bool:
        """One frame, one file (Single mode), through the template writer."""
        try:
            self._ok()
            if self.p("NumExtraDims"):  # ADCore: a Single-mode open forces NumExtraDims to 0
                self.post(NumExtraDims=0, NumExtraDims_RBV=0)
            options = self.options(multi_frame=False)
            written, final = self._next_name(swmr=False)
            try:
                layout = self._layout()
            except SaverError as exc:
                raise SaverError(f"Error opening file {final}: {exc}") from None
            t0 = time.perf_counter()
            try:
                warnings = self.single.write(written, layout, frame, options, str(final))
                if written != final:
                    os.replace(written, final)
            except (WriterError, LayoutError, OSError, ValueError) as exc:
                self._remove(written)
                raise SaverError(f"Error writing file {final}: {exc}") from None
            runtime = time.perf_counter() - t0
            speed = frame.nbytes * 8 / 2**20 / runtime if runtime > 0 else 0.0
            self.post(RunTime=runtime, IOSpeed=speed)
            if warnings:
                self.post(WriteMessage=f"Written with warnings: {warnings[0]}"[:255])
        except SaverError as exc:
            self._error(str(exc))
            return False
        self.post(NumCaptured_RBV=1)
        return True

    # -- Capture ---------------------------------------------------------------
    def _write_buffer(self) -> None:
        if not self.buffer:
            raise SaverError("ERROR, no capture buffer present")
        frames, self.buffer = self.buffer, []
        self.post(WriteFile=1, WriteFile_RBV=1)
        try:
            self._ok()
            writer = self._open(self.last_frame or frames[-1], multi_frame=True)
            remaining = len(frames)
            try:
                for frame in frames:
                    try:
                        writer.write(frame)
                    except FrameMismatch:
                        self._invalid_frame()
                    except PositionError as exc:
                        self._finish(writer)  # what was written is kept, as ADCore does
                        raise SaverError(f"Error writing file, {exc}; file closed with "
                                         f"{writer.frames_written} frames") from None
                    remaining -= 1
                    self.post(NumCaptured_RBV=remaining)
            except (WriterError, OSError, ValueError) as exc:
                writer.close()
                self._remove(self.paths[0])
                self.paths = None
                raise SaverError(f"Error writing file: {exc}") from None
            self._finish(writer)
        except SaverError as exc:
            self._error(str(exc))
        finally:
            self.num_captured = 0
            self.post(WriteFile=0, WriteFile_RBV=0, NumCaptured_RBV=0)

    # -- Stream ------------------------------------------------------------------
    def _open_stream(self, frame: NDArray) -> str | None:
        """Open the stream file; None on success, else the error (also in WriteMessage)."""
        try:
            self._ok()
            self.writer = self._open(frame, multi_frame=True)
        except SaverError as exc:
            self._error(str(exc))
            return str(exc)
        self.post(SWMRActive_RBV=int(self.writer.options.swmr), SWMRCbCounter_RBV=0)
        return None

    def _stream_frame(self, frame: NDArray) -> bool:
        try:
            self.writer.write(frame)
        except FrameMismatch:
            self._invalid_frame()
            return False
        except PositionError as exc:
            self._abort_placement(str(exc))
            return False
        except (WriterError, OSError, ValueError) as exc:
            # ADCore: a write error closes the file and clears Capture.
            self._abandon_stream(f"Error writing file, {exc}")
            return False
        self.num_captured += 1
        self.post(NumCaptured_RBV=self.num_captured)
        limit = int(self.p("NumCapture"))
        if limit > 0 and self.num_captured >= limit:
            self._close_stream()
            self._set_capture(False)
        return True

    def _invalid_frame(self) -> None:
        self.invalid_frames += 1
        self.post(WriteMessage="Invalid frame. Ignoring.", InvalidFrames_RBV=self.invalid_frames)

    def _close_stream(self) -> None:
        writer, self.writer = self.writer, None
        if writer is None:
            return
        try:
            self._finish(writer)
        except SaverError as exc:
            self._error(str(exc))
        self.post(SWMRActive_RBV=0)

    def _abandon_stream(self, message: str) -> None:
        writer, self.writer = self.writer, None
        if writer is not None:
            try:
                writer.close()
            except Exception:  # noqa: BLE001 - the file is already broken
                pass
            if self.paths:
                self._remove(self.paths[0])
                self.paths = None
        self._error(message)
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

    def _set_capture(self, on: bool) -> None:
        self.capturing = on
        value = int(on)
        updates = {"Capture": value, "Capture_RBV": value}
        if self.p("FileWriteMode") == STREAM:
            # WriteFile_RBV stays "Writing" for the whole stream, as in ADCore.
            updates.update(WriteFile=value, WriteFile_RBV=value)
        self.post(**updates)

    # -- commands from the PV layer ------------------------------------------------
    def cmd_capture(self, on: bool) -> None:
        mode = self.p("FileWriteMode")
        if not on:
            if mode == STREAM:
                self.lazy_pending = False
                self._close_stream()
            self._set_capture(False)
            return
        if mode == SINGLE:
            raise SaverError("ERROR: capture not supported in Single mode")
        self.post(FullFileName_RBV="", NumCaptured_RBV=0)
        self.num_captured = 0
        if mode == CAPTURE:
            if int(self.p("NumCapture")) < 1:
                raise SaverError("ERROR: NumCapture must be at least 1 in Capture mode")
            self.buffer = []
            self._set_capture(True)
            return
        if self.writer is not None:
            return  # already streaming
        if self.p("LazyOpen"):
            self.lazy_pending = True
            self._ok()
            self.post(WriteMessage="Lazy Open...")
            self._set_capture(True)
            return
        if self.last_frame is None:
            raise SaverError("ERROR: must collect an array to get dimensions first")
        error = self._open_stream(self.last_frame)
        if error is not None:
            raise SaverError(error)
        self._set_capture(True)

    def cmd_write_file(self) -> None:
        mode = self.p("FileWriteMode")
        if mode == SINGLE:
            if self.last_frame is None:
                raise SaverError("ERROR, no array to write")
            self.post(WriteFile=1, WriteFile_RBV=1)
            try:
                if not self._write_single(self.last_frame):
                    raise SaverError("Error writing file")
            finally:
                self.post(WriteFile=0, WriteFile_RBV=0)
            return
        if mode == CAPTURE:
            if not self.buffer:
                self._error("ERROR, no capture buffer present")
                raise SaverError("ERROR, no capture buffer present")
            self._write_buffer()
            return
        raise SaverError("ERROR: WriteFile is not used in Stream mode (use Capture)")

    def cmd_free_capture(self) -> None:
        self.buffer = []
        self.num_captured = 0
        self.post(NumCaptured_RBV=0)

    def cmd_flush(self) -> None:
        if self.writer is None:
            raise SaverError("ERROR: no file is open")
        self.writer.flush()
        self.post(SWMRCbCounter_RBV=int(self.params.get("SWMRCbCounter_RBV", 0)) + 1)

    def cmd_prime(self, frame: NDArray) -> None:
        """The source's current frame at connect: describes the readbacks and serves as
        "the last array received" for Stream opens; it is not saved."""
        self._describe(frame)
        self.last_frame = frame

    def cmd_process_last(self) -> None:
        if self.last_frame is not None:
            self.process(self.last_frame)

    def cmd_resize_queue(self, size: int) -> None:
        self.queue.capacity = max(int(size), 1)

    def cmd_shutdown(self) -> None:
        self._close_stream()
        _write_behind.drop_all()
        self._stop = True

    def cmd_sync(self) -> None:
        """No-op: returns once everything queued before it was processed."""
