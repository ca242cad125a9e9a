"""A writer worker's file writing: its share of the frames, into its part file.

Frames (from the distributor) and the coordinator's commands share one FIFO, as in the
plugin's own saver, so a command sees every frame received before it: ``stop`` writes the
frames already queued, then closes.  Everything the coordinator needs to know goes back
through ``report`` (a message dict, see ``protocol``).  No EPICS here.
"""

from __future__ import annotations

import base64
import concurrent.futures
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from ..._thread_names import named
from ...layout._xml import XMLText
from ...layout.model import Layout, LayoutError, default_layout, parse_layout
from ...ndarray import NDArray
from ...writer.nexus import FrameMismatch, WriterError, WriterOptions
from ...writer.part import PartWriter
from .._saver_options import build_options
from ..file_saver import NO_POLICY
from ..frame_queue import Command, FrameQueue
from ..naming import PathPolicy, temporary_name

log = logging.getLogger(__name__)

IDLE, ARMED, CAPTURING, STOPPED, FAILED = "idle", "armed", "capturing", "stopped", "failed"


def writer_options(params: dict, num_capture: int) -> WriterOptions:
    """WriterOptions from the coordinator's PV values, by the plugin's own rules."""
    values = dict(params, NumCapture=num_capture)
    return build_options(values, True)


def decode_layout(text: str, source: str) -> Layout:
    if not text:
        return default_layout()
    return parse_layout(XMLText(base64.b64decode(text), source or "<coordinator>", True))


class PartSaver:
    """One thread: frames and commands in order; reports go to the coordinator."""

    PROGRESS_EVERY = 0.1  # s between progress reports while frames are written

    def __init__(self, report: Callable[[dict], None], *, policy: PathPolicy = NO_POLICY,
                 queue_size: int = 20, worker: str = "",
                 leave_group: Callable[[], None] = lambda: None):
        self.report = report
        self.policy = policy
        self.worker = worker
        self.leave_group = leave_group  # stop receiving frames (the others get our share)
        self.queue = FrameQueue(queue_size)
        self.state = IDLE
        self.capture: int | None = None
        self.mode = "stream"
        self.params: dict = {}
        self.layout: Layout | None = None
        self.part = 0
        self.final: Path | None = None
        self.written_path: Path | None = None
        self.after: int | None = None
        self.first: int | None = None  # the first frame of the capture this worker received
        self.pending: list[NDArray] = []
        self.buffer: list[NDArray] = []
        self.writer: PartWriter | None = None
        self.seen: int | None = None
        self.dropped = 0
        self.invalid = 0
        self.last: dict | None = None  # description of the last frame processed
        self._unreported: list[int] = []
        self._reported_at = time.monotonic()
        self._thread: threading.Thread | None = None
        self._stop = False

    # -- plumbing -------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=named(self._run), name="part-saver", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        if self._thread is None or not self._thread.is_alive():
            return
        try:
            self.submit("shutdown").result(timeout)
        except Exception:  # noqa: BLE001 - shutting down anyway
            log.exception("closing the part file at shutdown")
        self._thread.join(timeout)

    def submit(self, name: str, **args) -> concurrent.futures.Future:
        command = Command(name, args)
        self.queue.put_command(command)
        return command.future

    def enqueue(self, frame: NDArray) -> bool:
        """From the source's thread: never blocks; a full queue drops (and counts)."""
        if self.queue.put_frame(frame):
            return True
        self.dropped += 1
        return False

    def _run(self) -> None:
        while not self._stop:
            item = self.queue.get(timeout=self.PROGRESS_EVERY)
            if isinstance(item, Command):
                try:
                    item.future.set_result(getattr(self, f"cmd_{item.name}")(**item.args))
                except Exception as exc:  # noqa: BLE001 - reported to the caller
                    log.exception("command %s failed", item.name)
                    item.future.set_exception(exc)
            elif item is not None:
                try:
                    self.process(item)
                except Exception as exc:  # noqa: BLE001 - one frame must not end the worker
                    log.exception("frame %s", item.unique_id)
                    self._fail(f"internal error writing frame {item.unique_id}: {exc}")
            item = None  # the frame's memory (a receiver slot) goes back now
            if self._unreported and time.monotonic() - self._reported_at >= self.PROGRESS_EVERY:
                self._progress()

    # -- frames ------------------------------------------------------------------------
    def process(self, frame: NDArray) -> None:
        uid = frame.unique_id
        self.seen = uid if self.seen is None else max(self.seen, uid)
        self.last = {"uid": uid, "dims": list(frame.dims), "dtype": int(frame.data_type),
                     "timestamp": frame.timestamp, "sec": frame.epics_ts_sec,
                     "nsec": frame.epics_ts_nsec,
                     "color": _color(frame)}
        if self.state == ARMED:
            self.pending.append(frame)
        elif self.state == CAPTURING:
            self._capture(frame)

    def _capture(self, frame: NDArray) -> None:
        if self.after is not None and frame.unique_id <= self.after:
            return  # received before the capture started somewhere else
        if self.first is None:
            self.first = frame.unique_id  # where the capture starts, written or not
        if self.mode == "capture":
            self.buffer.append(frame.detached())
            self._unreported.append(frame.unique_id)
            return
        if self.writer is None and not self._open(frame):
            return
        try:
            self.writer.write(frame)
        except FrameMismatch:
            self.invalid += 1
            return
        except (WriterError, OSError, ValueError) as exc:
            self._fail(f"Error writing file {self.final}: {exc}")
            return
        self._unreported.append(frame.unique_id)

    def _open(self, first: NDArray, num_capture: int = 0) -> bool:
        options = writer_options(self.params, num_capture)
        final = self.final
        problem = self.policy.check_file(final, str(final.parent) + "/")
        if problem:
            self._fail(f"Error opening file {final}: {problem}")
            return False
        suffix = str(self.params.get("TempSuffix", ""))
        written = final if options.swmr and not suffix else temporary_name(final, suffix)
        try:
            self.writer = PartWriter(written, self.layout, first, options, file_name=str(final),
                                     worker=self.worker, part=self.part)
        except (WriterError, LayoutError, OSError, ValueError) as exc:
            _remove(written)
            self._fail(f"Error opening file {final}: {exc}")
            return False
        self.written_path = written
        self.report({"type": "opened", "capture": self.capture, "path": str(final),
                     "swmr": options.swmr})
        return True

    def _progress(self, stage: str | None = None) -> None:
        uids, self._unreported = self._unreported, []
        self._reported_at = time.monotonic()
        durable = self.writer.durable if self.writer is not None else 0
        self.report({"type": "progress", "capture": self.capture, "uids": uids,
                     "durable": durable, "invalid": self.invalid, "first": self.first,
                     "stage": stage or ("buffer" if self.mode == "capture" else "stream")})

    def _close(self) -> dict:
        """Close the part under its final name; the 'closed' message."""
        writer, self.writer = self.writer, None
        message = {"type": "closed", "capture": self.capture, "frames": 0, "warnings": []}
        if writer is None:
            return message
        message.update(frames=writer.frames_written, path=str(self.final),
                       warnings=list(writer.warnings))
        try:
            writer.close()
            if self.written_path != self.final:
                os.replace(self.written_path, self.final)
        except (OSError, WriterError, ValueError) as exc:
            message.update(type="failed", message=f"Error closing file {self.final}: {exc}")
        return message

    def _fail(self, message: str) -> None:
        """The part cannot go on: keep what it holds, leave the group, tell the coordinator."""
        log.error("%s", message)
        if self._unreported:
            self._progress()
        closed = self._close()
        self.state = FAILED
        self.buffer = []
        self.leave_group()
        self.report({"type": "failed", "capture": self.capture, "message": message[:500],
                     "frames": closed.get("frames", 0), "first": self.first})

    # -- commands from the coordinator ---------------------------------------------------
    def cmd_start(self, capture: int, mode: str, params: dict, layout: str = "",
                  layout_source: str = "", part: int = 0, final: str | None = None) -> None:
        if self.writer is not None:  # a capture the coordinator forgot: keep its frames
            self.report(self._close())
        self.capture, self.mode, self.params, self.part = capture, mode, params, part
        self.final = Path(final) if final else None
        self.after = self.first = None
        self.pending, self.buffer, self._unreported = [], [], []
        self.invalid = 0
        try:
            self.layout = decode_layout(layout, layout_source)
        except (LayoutError, ValueError) as exc:
            self.state = IDLE
            self.report({"type": "failed", "capture": capture, "message": f"layout: {exc}"})
            return
        self.state = ARMED
        self.report({"type": "started", "capture": capture, "seen": self.seen})

    def cmd_begin(self, capture: int, after: int | None) -> None:
        if capture != self.capture or self.state not in (ARMED, CAPTURING):
            return
        self.after = after
        self.state = CAPTURING
        pending, self.pending = self.pending, []
        for frame in pending:
            self._capture(frame)
            if self.state != CAPTURING:
                break

    def cmd_stop(self, capture: int) -> None:
        if capture != self.capture:
            return
        if self.mode == "capture":
            if self.state in (ARMED, CAPTURING):
                self.state = STOPPED
            self._progress()
            self.report({"type": "stopped", "capture": capture, "buffered": len(self.buffer)})
            return
        if self._unreported:
            self._progress()
        failed = self.state == FAILED
        self.state = IDLE
        if not failed:
            self.report(self._close())

    def cmd_write(self, capture: int, final: str, upto: int | None) -> None:
        """Capture mode: write the buffered frames (up to ``upto``) to the part file."""
        if capture != self.capture:
            return
        frames = [f for f in self.buffer if upto is None or f.unique_id <= upto]
        self.buffer = []
        self.state = IDLE
        self.final = Path(final)
        if not frames:
            self.report({"type": "closed", "capture": capture, "frames": 0, "warnings": []})
            return
        if not self._open(frames[0], num_capture=len(frames)):
            return
        for frame in frames:
            try:
                self.writer.write(frame)
            except FrameMismatch:
                self.invalid += 1
            except (WriterError, OSError, ValueError) as exc:
                self._fail(f"Error writing file {self.final}: {exc}")
                return
            self._unreported.append(frame.unique_id)
            if time.monotonic() - self._reported_at >= self.PROGRESS_EVERY:
                self._progress("write")
        self._progress("write")
        self.report(self._close())

    def cmd_discard(self, capture: int | None = None) -> None:
        self.buffer = []
        if self.mode == "capture" and self.state == STOPPED:
            self.state = IDLE

    def cmd_flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()
            self._progress()

    def cmd_abort(self) -> None:
        """The coordinator is gone: close the part (its frames stay), forget the capture."""
        if self.writer is not None:
            closed = self._close()
            log.warning("coordinator lost: part %s closed with %s frames", self.final,
                        closed.get("frames"))
        self.state = IDLE
        self.buffer, self.pending = [], []

    def cmd_resize_queue(self, size: int) -> None:
        self.queue.capacity = max(int(size), 1)

    def cmd_shutdown(self) -> None:
        if self.writer is not None:
            if self._unreported:
                self._progress()
            self.report(self._close())
        self._stop = True

    def cmd_sync(self) -> None:
        """No-op: returns once everything queued before it was processed."""


def _color(frame: NDArray) -> int:
    color = frame.attributes.get("ColorMode")
    try:
        return int(color.value) if color is not None and color.defined else 0
    except (TypeError, ValueError):
        return 0


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass
