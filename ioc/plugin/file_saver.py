"""NDPluginFile's processing, run in one worker thread: modes, naming, files.

Frames and commands share one FIFO (frames bounded by QueueSize, commands
not), so a command sees every frame received before it, as ADCore's plugin
thread does.  The worker reads the current parameter values from a shared
mapping (updated by the PV layer) and reports PV values through ``post``.
No EPICS here: the PV layer (``ioc.plugin.group``) owns the PVs.

``FileSaver`` is one object, in parts (mixins, each in a module of its own, all run on
the saver's thread): this module holds its state, the worker thread, the dispatch of
frames by mode and the status it posts; ``_saver_options`` the options, names and
layout of the next file; ``_saver_files`` opening and closing multi-frame files;
``_saver_single``, ``_saver_capture`` and ``_saver_stream`` the three modes;
``_saver_commands`` the PV layer's commands; ``_saver_common`` what they share.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from .._thread_names import named
from ..layout.model import Layout
from ..ndarray import NDArray
from ..writer import _write_behind
from ..writer.nexus import NexusWriter, WriterOptions
from ..writer.single_file import SingleFileWriter
from . import memory
from ._saver_capture import CaptureBuffer
from ._saver_commands import Commands
from ._saver_common import CAPTURE, NO_POLICY, SINGLE, STREAM, SaverError, cause_of, log
from ._saver_files import MultiFrameFiles
from ._saver_options import NamingAndOptions, layout_status
from ._saver_single import SingleMode
from ._saver_stream import StreamFile
from .frame_queue import Command, FrameQueue
from .naming import PathPolicy
from .single_pipeline import SinglePipeline
from .stop_drain import STOP_TIMEOUT, Arrivals, take_in_finished
from .user_paths import UserPaths

# (the modes, the exception and layout_status are imported from here by the PV layer,
# the server and the writer workers)
__all__ = ["CAPTURE", "NO_POLICY", "SINGLE", "STREAM", "FileSaver", "SaverError",
           "layout_status"]


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


class FileSaver(Commands, SingleMode, CaptureBuffer, StreamFile, MultiFrameFiles,
                NamingAndOptions):
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
        # (template, path, name) -> what template_warnings says of it, and the notes of
        # the name made last (said with its file's "Written with warnings")
        self._notes_for: tuple[tuple, list[str]] | None = None
        self._name_notes: list[str] = []
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
        self._thread = threading.Thread(target=named(self._run), name="file-saver", daemon=True)
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
        if self.pipeline.in_flight and self.queue.empty:
            # Single files whose images the disk is writing (AIO): nothing else to do, so
            # their names and readbacks now (a few ms), not at the next frame
            self.pipeline.wait()
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
                            f"{cause_of(exc)}")
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

    @property
    def file_open(self) -> bool:
        return self.writer is not None

    def memory_used(self) -> int:
        """Bytes of frames held: the input queue and the Capture buffer (PoolUsedMem)."""
        return self.queue.nbytes + self.buffer_bytes

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

    # -- status -------------------------------------------------------------------
    def _ok(self) -> None:
        if self.params["WriteStatus"] != 0 or self.params["WriteMessage"] != "":
            self.post(WriteStatus=0, WriteMessage="")  # (unchanged values are not posted)

    def _error(self, message: str) -> None:
        message = " ".join(message.split())  # one line
        log.warning("%s", message)
        self.post(WriteStatus=1, WriteMessage=message[:255])

    def _invalid_frame(self) -> None:
        self.invalid_frames += 1
        self.post(WriteMessage="Invalid frame. Ignoring.", InvalidFrames_RBV=self.invalid_frames)

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
