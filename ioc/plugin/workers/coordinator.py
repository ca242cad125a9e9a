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

from ...layout.model import LayoutError
from ...writer.part import part_name
from ..file_saver import CAPTURE, NO_POLICY, SINGLE, STREAM, SaverError
from ..frame_queue import FrameQueue
from ..naming import PathPolicy, TemplateError, c_format
from . import closing
from .ledger import CAPTURING, CLOSED, FAILED, LOST, Ledger
from .links import LinkServer, WorkerLink
from .protocol import HEARTBEAT, json_params

log = logging.getLogger(__name__)


class Coordinator:
    """Drop-in for ``FileSaver`` when frames are written by workers."""

    START_TIMEOUT = 3.0  # s for every worker to acknowledge a start
    CLOSE_TIMEOUT = 60.0  # s for every part to close at the end of a capture
    MASTER_EVERY = 1.0  # s between rewrites of a SWMR capture's master file

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
        self._started_at = 0.0
        self._frame_bytes = 0
        self._ending: asyncio.Future | None = None
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
        if self.capturing and ledger is not None and not self._ending:
            # A worker joining mid-capture writes a part of this capture from now on.
            part = ledger.add_part(link.id, link.label)
            if self.master is not None:
                part.final = part_name(self.master, part.number)
            link.send(self._start_message(ledger, part))
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
        if uids:
            counter = int(self._p("ArrayCounter")) + len(uids)
            self.post(ArrayCounter=counter, ArrayCounter_RBV=counter)
        captured = ledger.captured()
        if ledger.num_capture:
            captured = min(captured, ledger.num_capture)
        self.post(NumCaptured_RBV=captured)
        self._check_cutoff(ledger)

    def _check_cutoff(self, ledger: Ledger) -> None:
        if self.capturing and self._ending is None and ledger is self.ledger and \
                ledger.decide_cutoff() is not None:
            self._loop.create_task(self._end_capture(by_count=True))

    async def _watch_cutoff(self, ledger: Ledger) -> None:
        """NumCapture: re-check while no frames arrive (workers falling idle move the
        frontier: the last frames of a stream end the capture)."""
        while self.capturing and ledger is self.ledger and self._ending is None:
            await asyncio.sleep(0.25)
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

    def _publish_workers(self) -> None:
        alive = self.links.alive()
        self.post(Workers_RBV=len(alive),
                  WorkersMessage_RBV=closing.workers_line(alive, self.ledger)[:255])

    # -- commands from the PV layer ----------------------------------------------------------
    async def cmd_capture(self, on: bool) -> None:
        if not on:
            if self._ending is not None:
                await asyncio.shield(self._ending)
            elif self.capturing:
                await self._end_capture()
            else:
                self._set_capture(False)
            return
        mode = self._p("FileWriteMode")
        if mode == SINGLE:
            raise SaverError("ERROR: Single mode is not available with writer workers (use "
                             "Capture or Stream)")
        if self.capturing:
            return
        workers = self.links.alive()
        if not workers:
            raise SaverError("ERROR: no writer worker is connected; nothing would be written "
                             "(start: nexus-writer-ioc worker --coordinator HOST:PORT)")
        if mode == CAPTURE and int(self._p("NumCapture")) < 1:
            raise SaverError("ERROR: NumCapture must be at least 1 in Capture mode")
        if int(self._p("NumExtraDims")) > 0:
            raise SaverError("ERROR: NumExtraDims is not available with writer workers")
        self.layout_payload = await self._layout_payload()
        self.post(FullFileName_RBV="", NumCaptured_RBV=0, MissingFrames_RBV=0)
        self.master = self._next_name() if mode == STREAM else None
        self._capture_id += 1
        ledger = Ledger(self._capture_id, "stream" if mode == STREAM else "capture",
                        int(self._p("NumCapture")))
        self.ledger = ledger
        for link in workers:
            part = ledger.add_part(link.id, link.label)
            part.acked = False
            if self.master is not None:
                part.final = part_name(self.master, part.number)
            link.send(self._start_message(ledger, part))
        await self._wait_for(lambda: all(p.acked or not p.active for p in ledger.parts.values()),
                             self.START_TIMEOUT)
        for link in workers:
            part = ledger.parts[link.id]
            if not part.acked and part.active:
                part.state = LOST
                part.message = f"no answer to the start within {self.START_TIMEOUT:.0f} s"
                ledger.lost_messages.append(f"writer worker {link.label}: {part.message}")
        if not ledger.active_parts():
            self.ledger = None
            raise SaverError("ERROR: no writer worker answered the start")
        after = ledger.begin()
        for link in workers:
            if ledger.parts[link.id].active:
                link.send({"type": "begin", "capture": ledger.capture, "after": after})
        self._started_at = time.monotonic()
        self._ending = None
        self.post(WriteStatus=0, WriteMessage=(ledger.lost_messages or [""])[0][:255])
        self._set_capture(True)
        if ledger.num_capture:
            self._loop.create_task(self._watch_cutoff(ledger))
        if mode == STREAM and bool(self._p("SWMRMode")) and not str(self._p("TempSuffix")):
            self._live = self._loop.create_task(self._live_master(ledger))
        self._publish_workers()

    def _start_message(self, ledger: Ledger, part) -> dict:
        layout, source = self.layout_payload
        return {"type": "start", "capture": ledger.capture, "mode": ledger.mode,
                "params": json_params(dict(self.params)), "layout": layout,
                "layout_source": source, "part": part.number,
                "final": str(part.final) if part.final else None}

    async def cmd_write_file(self) -> None:
        mode = self._p("FileWriteMode")
        if mode == SINGLE:
            raise SaverError("ERROR: Single mode is not available with writer workers")
        if mode == STREAM:
            raise SaverError("ERROR: WriteFile is not used in Stream mode (use Capture)")
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

    # -- the end of a capture --------------------------------------------------------------
    async def _end_capture(self, by_count: bool = False) -> None:
        """Stop every part; Stream: wait for them to close and write the master file;
        Capture mode: the buffers are complete (written by WriteFile or AutoSave)."""
        if self._ending is not None:
            await asyncio.shield(self._ending)
            return
        self._ending = self._loop.create_future()
        ledger = self.ledger
        try:
            for link in self.links.alive():
                if link.id in ledger.parts and ledger.parts[link.id].active:
                    link.send({"type": "stop", "capture": ledger.capture})
            if self._live is not None:
                self._live.cancel()
                self._live = None
            if ledger.mode == "stream":
                self.writing = True
                await self._wait_for(lambda: not ledger.active_parts(), self.CLOSE_TIMEOUT)
                self._give_up_on(ledger, "did not close its part in time")
                await self._finish_master(ledger, self.master)
                self.writing = False
                self._set_capture(False)
            else:
                await self._wait_for(lambda: all(p.stopped for p in ledger.active_parts()), 5.0)
                self._set_capture(False)
                self.post(NumCaptured_RBV=ledger.captured())
                if by_count and self._p("AutoSave"):
                    self._ending.set_result(None)
                    self._ending = None
                    await self._write_buffers()
                    return
        finally:
            self.writing = False
            if self._ending is not None and not self._ending.done():
                self._ending.set_result(None)
            self._ending = None
            self._publish_workers()

    def _give_up_on(self, ledger: Ledger, why: str) -> None:
        for part in ledger.active_parts():
            part.state = LOST
            part.message = why
            ledger.lost_messages.append(f"writer worker {part.label} {why}")

    async def _write_buffers(self) -> None:
        ledger = self.ledger
        if ledger is None or ledger.mode != "capture" or not ledger.captured():
            self.post(WriteStatus=1, WriteMessage="ERROR, no capture buffer present")
            raise SaverError("ERROR, no capture buffer present")
        self.post(WriteFile=1, WriteFile_RBV=1)
        self.writing = True
        try:
            master = self._next_name()
            cutoff = ledger.cutoff
            holders = [p for p in ledger.parts.values() if p.uids and p.state != LOST]
            links = {link.id: link for link in self.links.alive()}
            for part in holders:
                part.final = part_name(master, part.number)
                part.state = CAPTURING
                part.written = 0
                link = links.get(part.worker)
                if link is None:
                    part.state = LOST
                    continue
                link.send({"type": "write", "capture": ledger.capture, "final": str(part.final),
                           "upto": cutoff})
            await self._wait_for(lambda: not ledger.active_parts(), self.CLOSE_TIMEOUT)
            self._give_up_on(ledger, "did not write its part in time")
            await self._finish_master(ledger, master)
        finally:
            self.writing = False
            self.ledger = None
            self.post(WriteFile=0, WriteFile_RBV=0, NumCaptured_RBV=0)  # the buffer is written

    async def _finish_master(self, ledger: Ledger, master: Path) -> None:
        loop = asyncio.get_running_loop()
        suffix = str(self._p("TempSuffix"))
        try:
            outcome = await loop.run_in_executor(self._files, closing.write_final_master,
                                                 ledger, master, suffix)
        except (OSError, ValueError, LayoutError) as exc:
            self.post(WriteStatus=1, WriteMessage=f"Error writing file {master}: {exc}"[:255])
            return
        runtime = max(time.monotonic() - self._started_at, 1e-9)
        self.post(**closing.outcome_pvs(outcome, ledger, master, runtime, self._frame_bytes))

    async def _live_master(self, ledger: Ledger) -> None:
        """SWMR Stream: rewrite the master file (atomically) as the parts flush, mapping
        only frames already flushed, so that a SWMR reader never sees a wrong frame."""
        loop = asyncio.get_running_loop()
        written = None
        while True:
            await asyncio.sleep(self.MASTER_EVERY)
            state = tuple((p.worker, p.durable, p.state) for p in ledger.parts.values())
            if state == written or not any(p.durable for p in ledger.parts.values()):
                continue
            try:
                await loop.run_in_executor(self._files, closing.write_live_master, ledger,
                                           self.master)
                written = state
            except Exception as exc:  # noqa: BLE001 - the final master is what counts
                log.warning("live master file %s not written: %s", self.master, exc)

    # -- names and layout -------------------------------------------------------------------
    def _next_name(self) -> Path:
        number = int(self._p("FileNumber"))
        try:
            name = c_format(str(self._p("FileTemplate")), str(self._p("FilePath")),
                            str(self._p("FileName")), number)
        except TemplateError as exc:
            raise SaverError(f"Invalid FileTemplate: {exc}") from None
        if self._p("AutoIncrement"):
            self.post(FileNumber=number + 1, FileNumber_RBV=number + 1)
        self.post(FullFileName_RBV=name)
        problem = self.policy.check_file(name, str(self._p("FilePath")))
        if problem:
            raise SaverError(f"Error opening file {name}: {problem}")
        return Path(name)

    async def _layout_payload(self) -> tuple[str, str]:
        spec = str(self._p("XMLFileName", ""))
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._files, closing.layout_payload, spec,
                                              self.policy)
        except LayoutError as exc:
            self.post(XMLValid_RBV=0, XMLErrorMsg_RBV=str(exc)[:255])
            raise SaverError(str(exc)) from None

    def _set_capture(self, on: bool) -> None:
        self.capturing = on
        updates = {"Capture": int(on), "Capture_RBV": int(on)}
        if self._p("FileWriteMode") == STREAM:
            updates.update(WriteFile=int(on), WriteFile_RBV=int(on))
        self.post(**updates)
