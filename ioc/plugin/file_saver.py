"""NDPluginFile's processing, run in one worker thread: modes, naming, files.

Frames and commands share one FIFO (frames bounded by QueueSize, commands
not), so a command sees every frame received before it, as ADCore's plugin
thread does.  The worker reads the current parameter values from a shared
mapping (updated by the PV layer) and reports PV values through ``post``.
No EPICS here: the PV layer (``ioc.plugin.group``) owns the PVs.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
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
    effective_chunks,
)
from ..writer.recovery import describe_error, recover
from ..writer.single_file import SingleFileWriter
from . import memory
from .extra_dim_rules import extra_dims_of
from .frame_queue import Command, FrameQueue
from .single_pipeline import SinglePipeline
from .naming import (
    PathPolicy,
    TemplateError,
    c_format,
    check_full_name,
    template_warnings,
    temporary_name,
)
from .stop_drain import STOP_TIMEOUT, Arrivals, take_in_finished
from .user_paths import UserPaths

log = logging.getLogger(__name__)

SINGLE, CAPTURE, STREAM = 0, 1, 2
INT32_MAX = 2**31 - 1


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


def _cause(exc: BaseException) -> str:
    """Our own exceptions say what happened; h5py's and the system's are cut to the cause."""
    if isinstance(exc, (SaverError, WriterError, LayoutError, TemplateError)):
        return str(exc)
    return describe_error(exc)


def _settle(future: concurrent.futures.Future, result=None, error=None) -> None:
    """Complete a command's future; one cancelled meanwhile (its put was cancelled at
    shutdown) is left alone instead of killing the worker."""
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
    except concurrent.futures.InvalidStateError:
        pass


class _ReadRecorder(Mapping):
    """A read-only view of the parameters that notes which ones were read."""

    def __init__(self, params: Mapping[str, object]):
        self.params = params
        self.names: dict[str, None] = {}

    def __getitem__(self, name: str):
        self.names[name] = None
        return self.params[name]

    def __iter__(self):
        return iter(self.params)

    def __len__(self) -> int:
        return len(self.params)


class FileSaver:
    """The file-writing half of the plugin, driven from one worker thread."""

    IDLE_AFTER = 1.0  # s without work: files held for write-behind are let go
    # An open multi-frame file is flushed this often: what it holds is then a valid file
    # on disk, and stays readable if the disk fills or the IOC is killed.
    FLUSH_INTERVAL = 1.0

    def __init__(self, params: Mapping[str, object], post: Callable[..., None],
                 queue_size: int = 20, policy: PathPolicy = NO_POLICY,
                 memory_limit: int | None = None, user_paths: UserPaths | None = None):
        self.params = params
        self.policy = policy
        self.post = post
        self.memory_limit = memory_limit or memory.default_limit()
        self.user_paths = user_paths or UserPaths()
        self.queue = FrameQueue(queue_size, max_bytes=self.memory_limit)
        self.single = SingleFileWriter()
        self.pipeline = SinglePipeline()  # Single-mode files written while the next is made
        self._described_dims: tuple[int, ...] = ()
        self._layout_cache: tuple[tuple, Layout] | None = None
        self._options_cache: tuple[tuple, WriterOptions] | None = None
        self.last_frame: NDArray | None = None
        self.capturing = False
        self.lazy_pending = False
        self.buffer: list[NDArray] = []
        self.buffer_bytes = 0
        self._last_flush = 0.0
        self._stopping = False  # set by stop(): a long Capture buffer write ends early
        self._plugin_attributes: set[str] = set()  # names the attributes file added
        self._warned: set[tuple] = set()  # name warnings already logged
        self.writer: NexusWriter | None = None
        self.paths: tuple[Path, Path] | None = None  # (written, final)
        self.num_captured = 0
        self.array_counter = 0
        self.invalid_frames = 0
        # Captures are numbered; on_capture_end(n) is called when capture n ends (its file
        # written or closed), for the Capture busy record's put-callback.
        self.capture_serial = 0
        self.on_capture_end: Callable[[int], None] | None = None
        self._thread: threading.Thread | None = None
        self._stop = False
        # a stop first takes in the frames finished before it (stop_drain.py): the source's
        # latest_unique_id(timeout), set by the server, and what has arrived so far
        self.latest_unique_id: Callable[[float], int | None] | None = None
        self.arrivals = Arrivals()
        self.stop_timeout = STOP_TIMEOUT

    # -- thread plumbing -----------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="file-saver", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Close any open file (it stays valid) and end the worker, within ``timeout``:
        a worker blocked in a file system that does not answer is left behind."""
        if self._thread is None:
            return
        self._stopping = True
        done = self.submit("shutdown")
        try:
            done.result(timeout)
        except concurrent.futures.TimeoutError:
            log.warning("the file saver did not finish within %.0f s (a file system not "
                        "answering?); exiting without it", timeout)
        except Exception:  # noqa: BLE001 - shutting down anyway
            log.exception("error while closing files at shutdown")
        self._thread.join(1.0)

    def submit(self, name: str, **args) -> concurrent.futures.Future:
        command = Command(name, args)
        self.queue.put_command(command)
        return command.future

    def enqueue(self, frame: NDArray) -> bool:
        return self.queue.put_frame(frame)

    def arrived(self, uid: int) -> None:
        """Any thread: the source delivered frame ``uid`` (after it was queued, or not)."""
        self.arrivals.note(uid)

    def _take_in_finished(self, what: str) -> tuple[str, bool] | None:
        try:
            return take_in_finished(self.queue, self.process, self.arrivals,
                                    self.latest_unique_id, what, self.stop_timeout)
        finally:
            self.pipeline.wait()  # their files are written before the stop goes on

    def _report_stop(self, note: tuple[str, bool] | None) -> None:
        if note is not None:
            message, is_error = note
            if is_error:
                self._error(message)
            else:
                self.post(WriteMessage=message[:255])

    def _run(self) -> None:
        while not self._stop:
            try:
                self._step()
            except Exception:  # noqa: BLE001 - the worker must outlive any one error
                log.exception("file saver: unexpected error")

    def _step(self) -> None:
        item = self.queue.get(timeout=self.IDLE_AFTER)
        if item is None:
            self._idle()
            return
        if isinstance(item, Command):
            self.pipeline.wait()  # the files in flight first: a command sees them written
            try:
                result = getattr(self, f"cmd_{item.name}")(**item.args)
            except Exception as exc:  # noqa: BLE001 - reported to the caller
                if not isinstance(exc, SaverError):
                    log.exception("command %s failed", item.name)
                _settle(item.future, error=exc)
            else:
                _settle(item.future, result)
        else:
            try:
                self.process(item)
            except Exception as exc:  # noqa: BLE001 - never let one frame kill the worker
                log.exception("error processing frame %s", item.unique_id)
                self._error(f"Internal error processing frame {item.unique_id}: "
                            f"{_cause(exc)}")
            item = None  # a frame's memory (a receiver slot) goes back now, not at the next get
            return  # (process posted the queue's state with the frame's values)
        item = None
        self.post(QueueFree=self.queue.free, NumQueuedArrays=self.queue.frames)

    def _idle(self) -> None:
        self.pipeline.wait()
        _write_behind.drop_all()  # let go of the files written last
        if self.writer is not None and time.monotonic() - self._last_flush >= \
                self.FLUSH_INTERVAL:
            self._flush_open_file()

    # -- parameters -----------------------------------------------------------
    def p(self, suffix: str):
        return self.params[suffix]

    def options(self, multi_frame: bool) -> WriterOptions:
        """The WriterOptions the PVs say now.  Built again only when one of the values it
        was built from has changed (a Single-mode run asks for them for every file)."""
        cached = self._options_cache
        if cached is not None:
            (was_multi, names, values), options = cached
            if was_multi == multi_frame and values == tuple(map(self.params.__getitem__, names)):
                return options
        read = _ReadRecorder(self.params)
        options = self._build_options(read, multi_frame)
        names = tuple(read.names)
        self._options_cache = ((multi_frame, names, tuple(map(self.params.__getitem__, names))),
                               options)
        return options

    @staticmethod
    def _build_options(params: Mapping[str, object], multi_frame: bool) -> WriterOptions:
        p = params.__getitem__
        chunks = (p("NumColChunks"), p("NumRowChunks"), *(p(f"ChunkSize{i}") for i in range(2, 10)))
        num_capture = max(int(p("NumCapture")), 0)
        # NDFileHDF5::configureDims: the frame axis chunk is NumFramesChunks (at least 1,
        # at most NumCapture), and NumFramesFlush is raised to it.
        frames_chunk = max(int(p("NumFramesChunks")), 1)
        if num_capture > 0:
            frames_chunk = min(frames_chunk, num_capture)
        return WriterOptions(
            multi_frame=multi_frame, num_capture=num_capture,
            store_attributes=bool(p("StoreAttr")), store_performance=bool(p("StorePerform")),
            compression=Compression(p("Compression")), zlevel=p("ZLevel"),
            szip_pixels=p("SZipNumPixels"), blosc_compressor=p("BloscCompressor"),
            blosc_shuffle=p("BloscShuffle"), blosc_level=p("BloscLevel"),
            chunk_size_auto=bool(p("ChunkSizeAuto")), chunks=tuple(int(c) for c in chunks),
            frames_chunks=frames_chunk, fill_value=float(p("FillValue")),
            boundary_align=int(p("BoundaryAlign")),
            boundary_threshold=int(p("BoundaryThreshold")),
            ndattribute_chunk=max(int(p("NDAttributeChunk")), 0),
            swmr=bool(p("SWMRMode")) and multi_frame,
            flush_every=max(int(p("NumFramesFlush")), frames_chunk),
            extra_dims=extra_dims_of(params, multi_frame),
        )

    @property
    def file_open(self) -> bool:
        return self.writer is not None

    # -- frames -------------------------------------------------------------------
    def process(self, frame: NDArray) -> None:
        t0 = time.perf_counter()
        mode = self.p("FileWriteMode")
        single = mode == SINGLE and self.p("AutoSave")
        if not single:
            self.pipeline.wait()  # what this frame posts comes after the files in flight
        described = self._describe(frame)
        self.last_frame = frame
        # NDPluginFile::processCallbacks counts every frame it hands to the writer (Single
        # with AutoSave, Stream while capturing), written or not; in Capture, those buffered.
        counted = False
        if single:
            if self._write_single(frame, lambda: self._frame_done(described, True, t0)) is None:
                return  # its file is being written: the frame's readbacks follow it
            counted = True
        elif mode == CAPTURE:
            if self.capturing and self._buffer_frame(frame):
                counted = True
                if self.num_captured >= self.p("NumCapture"):
                    # ADCore writes the buffer, then clears Capture: its put completes
                    # once the file is written
                    if self.p("AutoSave"):
                        self._write_buffer()
                    self._set_capture(False)
        elif mode == STREAM and self.capturing:
            counted = True
            if self.writer is None and self.lazy_pending:
                self.lazy_pending = False
                if self._open_stream(frame) is not None:
                    self._set_capture(False)
            if self.writer is not None:
                self._stream_frame(frame)
        self._frame_done(described, counted, t0)

    def _frame_done(self, described: dict, counted: bool, t0: float) -> None:
        """One post a frame: what describes it, the counters, the queue (each post takes
        the PV layer's lock)."""
        if counted:
            self.array_counter = int(self.p("ArrayCounter")) + 1
            described.update(ArrayCounter=self.array_counter, ArrayCounter_RBV=self.array_counter)
        self.post(**described, ExecutionTime_RBV=(time.perf_counter() - t0) * 1e3,
                  QueueFree=self.queue.free, NumQueuedArrays=self.queue.frames)

    def _describe(self, frame: NDArray) -> dict:
        """NDArrayBase readbacks describe the last frame processed (the sizes are
        posted only when they change, as ADCore posts Dimensions_RBV): the values to
        post with the frame's."""
        dims = frame.dims
        color = frame.attributes.get("ColorMode")
        described = dict(
            UniqueId_RBV=frame.unique_id, TimeStamp_RBV=frame.timestamp,
            EpicsTSSec_RBV=frame.epics_ts_sec, EpicsTSNsec_RBV=frame.epics_ts_nsec,
            DataType_RBV=int(frame.data_type),
            ColorMode_RBV=int(color.value) if color is not None and color.defined else 0,
            Codec_RBV=frame.codec_name, CompressedSize_RBV=frame.compressed_size,
        )
        if dims != self._described_dims:
            self._described_dims = dims
            padded = tuple(dims) + (0,) * (10 - len(dims))
            described.update({f"ArraySize{i}_RBV": padded[i] for i in range(10)})
            described.update({f"ArraySize{i}": padded[i] for i in range(10)})
            described.update(NDimensions_RBV=len(dims), Dimensions_RBV=padded)
        return described  # (posted together: a client sees the sizes with the data type)

    # -- naming -------------------------------------------------------------------
    def _next_name(self, swmr: bool) -> tuple[Path, Path]:
        """Build the full name (FileNumber++ when AutoIncrement), as openFileBase does.

        Returns (name written while open, final name).  SWMR files are written under
        their final name: their readers open them while they grow.  A name that cannot
        be used is refused before FileNumber moves; once the name is made, the number is
        used even if the open then fails (ADCore's createFileName)."""
        number = int(self.p("FileNumber"))
        path, name = str(self.p("FilePath")), str(self.p("FileName"))
        template = str(self.p("FileTemplate"))
        auto = bool(self.p("AutoIncrement"))
        if auto and number >= INT32_MAX:
            raise SaverError(f"FileNumber {number} is the largest a 32-bit FileNumber holds: "
                             "AutoIncrement cannot go on; set FileNumber")
        try:
            full = c_format(template, path, name, number)
        except TemplateError as exc:
            raise SaverError(f"Invalid FileTemplate: {exc}") from None
        problem = check_full_name(full)
        if problem is None and not os.path.isabs(full):
            problem = (f"the name {full} is relative (FilePath empty or left out of "
                       f"FileTemplate): not writing into the IOC's working directory")
        if problem is None:
            problem = self.policy.check_file(full, path)
        if problem:
            raise SaverError(f"Error opening file: {problem}")
        final = Path(full)
        suffix = str(self.p("TempSuffix"))
        try:
            written = final if swmr and not suffix else temporary_name(final, suffix)
        except TemplateError as exc:
            raise SaverError(f"Error opening file: {exc}") from None
        if auto:
            self.post(FileNumber=number + 1, FileNumber_RBV=number + 1)
        self.post(FullFileName_RBV=full)
        self._warn_about_name(template, path, name, number)
        return written, final

    def _warn_about_name(self, template: str, path: str, name: str, number: int) -> None:
        # (the same for every number of one template: found once, not for every file)
        cached = getattr(self, "_notes_for", None)
        if cached is not None and cached[0] == (template, path, name):
            notes = cached[1]
        else:
            notes = template_warnings(template, path, name, number)
            self._notes_for = ((template, path, name), notes)
        if notes and (template, path, name) not in self._warned:
            self._warned.add((template, path, name))
            log.warning("file name %r: %s", template, "; ".join(notes))
        self._name_notes = notes

    # -- opening and closing -----------------------------------------------------------
    def _layout(self) -> Layout:
        """The layout, verified again at each open as ADCore does; a file that has not
        changed (same name, size and mtime) is not parsed again."""
        spec = str(self.p("XMLFileName"))
        key: tuple = (spec,)
        if spec.strip() and "<?xml" not in spec:
            try:
                stat = self.user_paths.call("layout file", os.stat, spec)
                key = (spec, stat.st_mtime_ns, stat.st_size)
            except OSError:
                key = (spec, None)
        if self._layout_cache is not None and self._layout_cache[0] == key and key[-1] is not None:
            return self._layout_cache[1]
        try:
            layout, message = self.user_paths.call("layout file", layout_status, spec,
                                                   self.policy)
        except OSError as exc:
            layout, message = None, str(exc)
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
            layout = self._layout()
            # A temporary name is created only if free: never another writer's file, nor
            # one a killed writer left.  The writer removes what it created if it fails.
            writer = NexusWriter(written, layout, frame, options, file_name=str(final),
                                 exclusive=written != final)
        except Exception as exc:  # noqa: BLE001 - every failure is reported the same way
            raise SaverError(f"Error opening file: {_cause(exc)} ({final.name})") from None
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
            raise SaverError(f"Error renaming file: {_cause(exc)} ({written.name} -> "
                             f"{final.name}); its {frames} frames are in {written.name}") from None
        speed = frames * frame_bytes * 8 / 2**20 / runtime if runtime > 0 else 0.0
        self.post(RunTime=runtime, IOSpeed=speed)
        warnings = list(writer.warnings) + list(getattr(self, "_name_notes", []))
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
        return f"{what}: {_cause(exc)}; {writer.frames_written} frames kept in {final.name}"

    def _salvage(self, writer: NexusWriter, what: str, exc: BaseException) -> str:
        """After a failed close: let go of the file without touching it again, keep the
        frames that can be read back, or remove the file (this writer created it)."""
        writer.release()
        self.post(SWMRActive_RBV=0)
        written, final = self.paths
        self.paths = None
        cause = _cause(exc)
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

    def _flush_open_file(self) -> None:
        """Flush the open Stream file (periodically, and when idle)."""
        self._last_flush = time.monotonic()
        try:
            self.writer.flush()
        except Exception as exc:  # noqa: BLE001 - a write error, found at the flush
            self._abandon_stream("Error writing file", exc)

    def _remove(self, path: Path) -> None:
        try:
            path.unlink()
        except OSError:
            pass

    def _ok(self) -> None:
        if self.params["WriteStatus"] != 0 or self.params["WriteMessage"] != "":
            self.post(WriteStatus=0, WriteMessage="")  # (unchanged values are not posted)

    def _error(self, message: str) -> None:
        message = " ".join(message.split())  # one line
        log.warning("%s", message)
        self.post(WriteStatus=1, WriteMessage=message[:255])

    # -- Single ------------------------------------------------------------------
    def _write_single(self, frame: NDArray, done: Callable[[], None] | None = None) -> bool | None:
        """One frame, one file (Single mode), through the template writer: True when
        written, False when refused or failed (said in WriteMessage); with ``done``, None
        when the pipeline writes it (and calls ``done`` after).  A file that needs h5py is
        written here, after the files in flight."""
        try:
            self._ok()
            if self.p("NumExtraDims"):  # ADCore: a Single-mode open forces NumExtraDims to 0
                self.post(NumExtraDims=0, NumExtraDims_RBV=0)
            options = self.options(multi_frame=False)
            written, final = self._next_name(swmr=False)
            try:
                layout = self._layout()
            except SaverError as exc:
                raise SaverError(f"Error opening file: {exc} ({final.name})") from None
            self._post_chunking(frame, options)
            t0 = time.perf_counter()
            write, fast = self.single.prepare(written, layout, frame, options, str(final),
                                              exclusive=written != final)
            notes = list(getattr(self, "_name_notes", []))
            if fast and done is not None:
                self.pipeline.submit(write, lambda warnings, error: self._complete_single(
                    warnings, error, written, final, frame.nbytes, t0, notes, done))
                return None
            # here, after the files in flight (h5py's file makes the template they use)
            self.pipeline.wait()
            try:
                warnings, error = write(), None
            except Exception as exc:  # noqa: BLE001 - h5py raises more than OSError
                warnings, error = None, exc
            return self._complete_single(warnings, error, written, final, frame.nbytes, t0,
                                         notes)
        except SaverError as exc:
            self._error(str(exc))
            return False

    def _complete_single(self, warnings: list[str] | None, error: BaseException | None,
                         written: Path, final: Path, nbytes: int, t0: float,
                         notes: list[str], done: Callable[[], None] | None = None) -> bool:
        """A Single file written (or not: the writer removed what it created), in order:
        name it, say so, then ``done`` (the frame's readbacks).  Whether it was written."""
        try:
            if error is not None:
                raise SaverError(f"Error writing file: {_cause(error)} ({final.name})")
            self._single_written(written, final, nbytes, t0, list(warnings) + notes)
            return True
        except SaverError as exc:
            self._error(str(exc))
            return False
        finally:
            if done is not None:
                done()

    def _single_written(self, written: Path, final: Path, nbytes: int, t0: float,
                        warnings: list[str]) -> None:
        if written != final:
            try:
                os.replace(written, final)
            except OSError as exc:
                raise SaverError(f"Error renaming file: {_cause(exc)} ({written.name} -> "
                                 f"{final.name})") from None
        runtime = time.perf_counter() - t0
        speed = nbytes * 8 / 2**20 / runtime if runtime > 0 else 0.0
        self.post(RunTime=runtime, IOSpeed=speed)
        if warnings:
            self.post(WriteMessage=f"Written with warnings: {warnings[0]}"[:255])
        self.post(NumCaptured_RBV=1)

    # -- Capture ---------------------------------------------------------------
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

    # -- Stream ------------------------------------------------------------------
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

    def _set_capture(self, on: bool) -> None:
        was_on, self.capturing = self.capturing, on
        if on and not was_on:
            self.capture_serial += 1
        value = int(on)
        updates = {"Capture": value, "Capture_RBV": value}
        if self.p("FileWriteMode") == STREAM:
            # WriteFile_RBV stays "Writing" for the whole stream, as in ADCore.
            updates.update(WriteFile=value, WriteFile_RBV=value)
        self.post(**updates)
        if was_on and not on and self.on_capture_end is not None:
            self.on_capture_end(self.capture_serial)

    # -- commands from the PV layer ------------------------------------------------
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

    def memory_used(self) -> int:
        """Bytes of frames held: the input queue and the Capture buffer (PoolUsedMem)."""
        return self.queue.nbytes + self.buffer_bytes

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
