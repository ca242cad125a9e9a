"""Starting and ending a capture across the workers (the coordinator's half that decides
what the files hold): Capture on/off, NumCapture's cut, WriteFile in Capture mode, the
master file at the end and, for SWMR streams, while the parts are written."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from ...layout.model import LayoutError
from ...writer.part import part_name
from ..file_saver import CAPTURE, SINGLE, STREAM, SaverError
from ..naming import TemplateError, c_format
from . import closing
from .ledger import CAPTURING, LOST, Ledger
from .protocol import json_params

log = logging.getLogger(__name__)


class CaptureControl:
    """Mixin of ``Coordinator``: the capture lifecycle (runs in its event loop)."""

    START_TIMEOUT = 3.0  # s for every worker to acknowledge a start
    CLOSE_TIMEOUT = 60.0  # s for every part to close at the end of a capture
    MASTER_EVERY = 1.0  # s between rewrites of a SWMR capture's master file

    async def cmd_capture(self, on: bool) -> int:
        """Start or stop a capture; returns the number of the capture started or joined
        (its end completes the Capture=1 put, as ADCore's busy record)."""
        if not on:
            if self._ending is not None:
                await asyncio.shield(self._ending)
            elif self.capturing:
                await self._end_capture()
            else:
                self._set_capture(False)
            return self.capture_serial
        mode = self._p("FileWriteMode")
        if mode == SINGLE:
            raise SaverError("ERROR: Single mode is not available with writer workers (use "
                             "Capture or Stream)")
        if self.capturing:
            return self.capture_serial  # the put joins this capture
        workers = self.links.alive()
        if not workers:
            raise SaverError("ERROR: no writer worker is connected; nothing would be written "
                             "(start: nexus-writer-ioc worker --coordinator HOST:PORT)")
        if mode == CAPTURE and int(self._p("NumCapture")) < 1:
            raise SaverError("ERROR: NumCapture must be at least 1 in Capture mode")
        for suffix in ("NumExtraDims", "PositionMode", "DimAttDatasets"):
            if int(self._p(suffix)) > 0:  # the parts' frame axis would not be one row a frame
                raise SaverError(f"ERROR: {suffix} is not available with writer workers")
        self.layout_payload = await self._layout_payload()
        self.post(FullFileName_RBV="", NumCaptured_RBV=0, MissingFrames_RBV=0)
        self.master = self._next_name() if mode == STREAM else None
        self._capture_id += 1
        ledger = Ledger(self._capture_id, "stream" if mode == STREAM else "capture",
                        int(self._p("NumCapture")))
        self.ledger = ledger
        for link in workers:
            self._add_part(ledger, link)
        self._starting = True
        try:
            await self._wait_for(lambda: all(p.acked or not p.active
                                             for p in ledger.parts.values()), self.START_TIMEOUT)
        finally:
            self._starting = False
        for part in ledger.active_parts():
            if not part.acked:
                part.state = LOST
                part.message = f"no answer to the start within {self.START_TIMEOUT:.0f} s"
                ledger.lost_messages.append(f"writer worker {part.label}: {part.message}")
        if not ledger.active_parts():
            self.ledger = None
            raise SaverError("ERROR: no writer worker answered the start")
        after = ledger.begin()
        links = {link.id: link for link in self.links.alive()}
        for part in ledger.active_parts():
            links[part.worker].send({"type": "begin", "capture": ledger.capture, "after": after})
        self._started_at = time.monotonic()
        self._ending = None
        self.post(WriteStatus=0, WriteMessage=(ledger.lost_messages or [""])[0][:255])
        self._set_capture(True)
        if ledger.num_capture:
            self._loop.create_task(self._watch_cutoff(ledger))
        if mode == STREAM and bool(self._p("SWMRMode")) and not str(self._p("TempSuffix")):
            self._live = self._loop.create_task(self._live_master(ledger))
        self._publish_workers()
        return self.capture_serial

    def _add_part(self, ledger: Ledger, link, acked: bool = False):
        """A part of this capture for ``link`` (also for a worker joining mid-capture)."""
        part = ledger.add_part(link.id, link.label)
        part.acked = acked
        if self.master is not None:
            part.final = part_name(self.master, part.number)
        link.send(self._start_message(ledger, part))
        return part

    def _start_message(self, ledger: Ledger, part) -> dict:
        layout, source = self.layout_payload
        return {"type": "start", "capture": ledger.capture, "mode": ledger.mode,
                "params": json_params(dict(self.params)), "layout": layout,
                "layout_source": source, "part": part.number,
                "final": str(part.final) if part.final else None}

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

    # -- the end of a capture --------------------------------------------------------------
    async def _end_capture(self, by_count: bool = False) -> None:
        """Stop every part; Stream: wait for them to close and write the master file;
        Capture mode: the buffers are complete (written now with AutoSave when NumCapture
        ended the capture, else by WriteFile).  Capture goes back to 0 only then: the
        Capture=1 puts complete when the files are done."""
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
            else:
                await self._wait_for(lambda: all(p.stopped for p in ledger.active_parts()), 5.0)
                self.post(NumCaptured_RBV=ledger.captured())
                if by_count and self._p("AutoSave"):
                    await self._auto_save()
        finally:
            self.writing = False
            self._set_capture(False)  # also after an error: no put waits forever
            if not self._ending.done():
                self._ending.set_result(None)
            self._ending = None
            self._publish_workers()

    async def _auto_save(self) -> None:
        """AutoSave: the buffers written as ADCore does once NumCapture is reached; a
        failure is said where the operator looks (no put waits for this one)."""
        try:
            await self._write_buffers()
        except SaverError as exc:
            self.post(WriteStatus=1, WriteMessage=str(exc)[:255])

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
        was_on, self.capturing = self.capturing, on
        if on and not was_on:
            self.capture_serial += 1
        updates = {"Capture": int(on), "Capture_RBV": int(on)}
        if self._p("FileWriteMode") == STREAM:
            updates.update(WriteFile=int(on), WriteFile_RBV=int(on))
        self.post(**updates)
        if was_on and not on and self.on_capture_end is not None:
            self.on_capture_end(self.capture_serial)
