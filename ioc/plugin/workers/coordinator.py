"""The coordinator: the NDFileHDF5 IOC clients drive, with writer workers writing the frames.

It stands in for the plugin's ``FileSaver`` (same ``submit``/``queue``/``file_open``
interface, so the PV layer is unchanged): Capture, NumCapture, FileName, ... start and
stop the workers' part files together, NumCaptured_RBV, DroppedArrays, WriteStatus and
the frame readbacks aggregate what they report, and at the end of each capture it writes
the master file (``writer.vds``): the layout's tree with every per-frame dataset a virtual
dataset over the parts, frames in UniqueId order, missing frames counted and located.

It has its own thread and asyncio event loop (worker connections, timers); file work
(the master file, recovering a lost worker's part) runs in an executor thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from ..file_saver import NO_POLICY, SINGLE, STREAM, SaverError
from ..frame_queue import FrameQueue
from ..naming import PathPolicy
from . import closing
from .capture import CaptureControl
from .ledger import CLOSED, FAILED, LOST, Ledger
from .links import LinkServer, WorkerLink
from .protocol import HEARTBEAT

log = logging.getLogger(__name__)


class Coordinator(CaptureControl):
    """Drop-in for ``FileSaver`` when frames are written by workers."""

    def __init__(self, params: Mapping[str, object], post: Callable[..., None],
                 queue_size: int = 20, policy: PathPolicy = NO_POLICY, *,
                 listen: tuple[str, int] = ("127.0.0.1", 0), source: dict | None = None):
        self.params = params
        self.post = post
        self.policy = policy
        self.listen = listen
        self.source = dict(source or {})  # channel + distributor options for the workers
        self.queue = FrameQueue(queue_size)  # QueueFree etc.; frames never come here
        self.buffer: list = []
        self.last_frame = None
        self.capturing = False
        self.writing = False
        self.ledger: Ledger | None = None
        self.master: Path | None = None
        self.address: tuple[str, int] | None = None
        self.links = LinkServer(self._on_join, self._on_message, self._on_lost)
        self._capture_id = 0
        # Captures are numbered as by FileSaver: on_capture_end(n) is called when capture n
        # has ended (its master file written, its buffers complete, or it failed), which
        # completes the Capture=1 puts that started or joined it (a busy record).
        self.capture_serial = 0
        self.on_capture_end: Callable[[int], None] | None = None
        self._started_at = 0.0
        self._frame_bytes = 0
        self._ending: asyncio.Future | None = None
        self._starting = False  # a Capture=1 is waiting for the workers' answers
        self._changed = asyncio.Event()  # something a waiter may be waiting for
        self._commands: asyncio.Lock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._files = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="master")
        self._live: asyncio.Task | None = None
        self.attributes = {"type": "attributes", "xml": "", "macros": ""}

    # -- the FileSaver interface --------------------------------------------------------
    @property
    def file_open(self) -> bool:
        return self.writing or (self.capturing and self.params["FileWriteMode"] == STREAM)

    def enqueue(self, frame) -> bool:
        return False  # no frames reach the coordinator

    def memory_used(self) -> int:
        return 0  # PoolUsedMem: the frames are held by the workers, not here

    def start(self) -> None:
        ready: concurrent.futures.Future = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="coordinator",
                                        daemon=True)
        self._thread.start()
        self.address = ready.result(30)

    def stop(self, timeout: float = 30.0) -> None:
        if self._loop is None:
            return
        try:
            self.submit("shutdown").result(timeout)
        except Exception:  # noqa: BLE001 - shutting down anyway
            log.exception("ending the capture at shutdown")
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)
        self._files.shutdown(wait=True)

    def submit(self, name: str, **args) -> concurrent.futures.Future:
        return asyncio.run_coroutine_threadsafe(self._command(name, args), self._loop)

    def set_attributes(self, spec: str, macros: str) -> None:
        """NDAttributesFile (checked by the PV layer): the workers sample these PVs into
        their frames, as the plugin itself would; they get the XML, read here."""
        text = ""
        if spec.strip():
            try:
                text = closing.attributes_text(spec, self.policy)
            except Exception as exc:  # noqa: BLE001 - already reported by the PV layer
                log.info("attributes file %s not sent to the workers: %s", spec, exc)
        self.attributes = {"type": "attributes", "xml": text, "macros": macros}
        if self._loop is not None:
            for link in self.links.alive():
                self._loop.call_soon_threadsafe(link.send, self.attributes)

    def set_queue_size(self, size: int) -> None:
        for link in self.links.alive():
            self._loop.call_soon_threadsafe(link.send, {"type": "resize_queue", "size": size})

    # -- the loop -------------------------------------------------------------------------
    def _run(self, ready: concurrent.futures.Future) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        self._commands = asyncio.Lock()
        self._changed = asyncio.Event()
        try:
            address = loop.run_until_complete(self.links.start(*self.listen))
        except OSError as exc:
            ready.set_exception(exc)
            return
        ready.set_result(address)
        log.info("waiting for writer workers on %s:%d", *address)
        self._publish_workers()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self.links.close())
            loop.close()

    async def _command(self, name: str, args: dict):
        handler = getattr(self, f"cmd_{name}", None)
        if handler is None:
            raise SaverError(f"{name} is not available with writer workers")
        async with self._commands:
            return await handler(**args)

    def _notify(self) -> None:
        self._changed.set()

    async def _wait_for(self, condition: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not condition():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), min(remaining, HEARTBEAT))
            except asyncio.TimeoutError:
                pass
        return True

    def _p(self, suffix: str, default=0):
        return self.params.get(suffix, default)

    # -- workers come and go ---------------------------------------------------------------
    async def _on_join(self, link: WorkerLink, hello: dict) -> str | None:
        link.send({"type": "welcome", "id": link.id, "label": link.label, "source": self.source,
                   "queue_size": self.queue.capacity})
        link.send(self.attributes)
        log.warning("writer worker %s joined", link.label)
        self.post(SourceConnected_RBV=0)  # until it has subscribed too
        ledger = self.ledger
        starting = self._starting
        if ledger is not None and (self.capturing or starting) and self._ending is None:
            # A worker joining mid-capture writes a part of this capture from now on (while
            # the capture starts, it is waited for with the others).
            self._add_part(ledger, link, acked=not starting)
            if not starting:
                link.send({"type": "begin", "capture": ledger.capture, "after": ledger.after})
        self._publish_workers()
        self._notify()
        return None

    async def _on_lost(self, link: WorkerLink, why: str) -> None:
        log.error("writer worker %s lost: %s", link.label, why)
        ledger = self.ledger
        part = ledger.parts.get(link.id) if ledger is not None else None
        if part is not None and (part.active or (ledger.mode == "capture" and part.uids
                                                 and part.state != CLOSED)):
            part.state = LOST
            part.message = why
            message = (f"writer worker {link.label} lost ({why}) after {len(part.uids)} "
                       "frames; the others receive its share")
            ledger.lost_messages.append(message)
            self.post(WriteStatus=1, WriteMessage=message[:255])
            if self.capturing and not ledger.active_parts() and self._ending is None:
                self._loop.create_task(self._end_capture())
        self._publish_workers()
        self._notify()

    async def _on_message(self, link: WorkerLink, message: dict) -> None:
        kind = message["type"]
        if kind == "status":
            self._on_status(link, message)
            return
        ledger = self.ledger
        if ledger is None or message.get("capture") != ledger.capture:
            return  # about a capture that is over
        part = ledger.parts.get(link.id)
        if part is None:
            return
        if message.get("first") is not None and part.first is None:
            part.first = int(message["first"])
        if kind == "started":
            part.seen = message.get("seen")
            part.acked = True
        elif kind == "progress":
            self._on_progress(ledger, part, message)
        elif kind == "closed":
            if part.state != LOST:
                part.state = CLOSED
            part.warnings = list(message.get("warnings", []))
        elif kind == "failed":
            part.state = FAILED
            part.message = str(message.get("message", ""))
            text = f"writer worker {link.label}: {part.message}"
            ledger.lost_messages.append(text)
            self.post(WriteStatus=1, WriteMessage=text[:255])
            if self.capturing and not ledger.active_parts() and self._ending is None:
                self._loop.create_task(self._end_capture())
        elif kind == "stopped":
            part.stopped = True
        self._notify()

    def _on_progress(self, ledger: Ledger, part, message: dict) -> None:
        uids = message.get("uids", [])
        if message.get("stage") == "write":
            part.written += len(uids)
            total = sum(len(p.uids) for p in ledger.parts.values())
            written = sum(p.written for p in ledger.parts.values())
            self.post(NumCaptured_RBV=max(total - written, 0))
            return
        ledger.record(part.worker, uids, message.get("durable"))
        invalid = int(message.get("invalid", 0))
        if invalid > part.invalid:  # frames of another shape or type than the part's
            total = int(self._p("InvalidFrames_RBV")) + invalid - part.invalid
            self.post(InvalidFrames_RBV=total, WriteMessage="Invalid frame. Ignoring.")
            part.invalid = invalid
        if uids:
            counter = int(self._p("ArrayCounter")) + len(uids)
            self.post(ArrayCounter=counter, ArrayCounter_RBV=counter)
        captured = ledger.captured()
        if ledger.num_capture:
            captured = min(captured, ledger.num_capture)
        self.post(NumCaptured_RBV=captured)
        self._check_cutoff(ledger)

    def _on_status(self, link: WorkerLink, status: dict) -> None:
        link.status = status
        dropped = int(status.get("dropped", 0))
        if dropped > link.dropped_seen:
            total = int(self._p("DroppedArrays")) + dropped - link.dropped_seen
            self.post(DroppedArrays=total, DroppedArrays_RBV=total)
        link.dropped_seen = dropped
        # Connected: every worker reads the channel (one that does not gets no share)
        connected = all(w.status.get("connected") for w in self.links.alive())
        self.post(SourceConnected_RBV=int(connected))
        last = status.get("last")
        if last and last.get("uid", -1) >= int(self._p("UniqueId_RBV")):
            closing.describe(self.post, last)
            self._frame_bytes = closing.frame_bytes(last)
        self._publish_workers()  # each worker's frames so far: refreshed every second

    def _publish_workers(self) -> None:
        alive = self.links.alive()
        self.post(Workers_RBV=len(alive),
                  WorkersMessage_RBV=closing.workers_line(alive, self.ledger)[:255])

    # -- commands from the PV layer ----------------------------------------------------------
    async def cmd_write_file(self) -> None:
        mode = self._p("FileWriteMode")
        if mode == SINGLE:
            raise SaverError("ERROR: Single mode is not available with writer workers")
        if mode == STREAM:
            raise SaverError("ERROR: WriteFile is not used in Stream mode (use Capture)")
        if self._ending is not None:  # AutoSave is writing the buffers: not twice at once
            await asyncio.shield(self._ending)
        await self._write_buffers()

    async def cmd_free_capture(self) -> None:
        ledger = self.ledger
        for link in self.links.alive():
            link.send({"type": "discard", "capture": ledger.capture if ledger else None})
        if ledger is not None and ledger.mode == "capture" and not self.capturing:
            self.ledger = None
        self.post(NumCaptured_RBV=0)

    async def cmd_flush(self) -> None:
        if not self.file_open:
            raise SaverError("ERROR: no file is open")
        for link in self.links.alive():
            link.send({"type": "flush"})
        self.post(SWMRCbCounter_RBV=int(self._p("SWMRCbCounter_RBV")) + 1)

    async def cmd_process_last(self) -> None:
        """Nothing to do: the frames are at the workers."""

    async def cmd_prime(self, frame=None) -> None:
        pass

    async def cmd_sync(self) -> None:
        pass

    async def cmd_resize_queue(self, size: int) -> None:
        self.set_queue_size(size)

    async def cmd_shutdown(self) -> None:
        if self._ending is not None:
            await asyncio.shield(self._ending)
        elif self.capturing and self.ledger is not None and self.ledger.mode == "stream":
            await self._end_capture()
