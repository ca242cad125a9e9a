"""The coordinator's account of one capture across its workers.  Pure: no I/O.

Each worker's frames arrive in rising UniqueId order (the distributor hands out updates
in order), so a worker that has written UniqueId u will never write a smaller one.  The
*frontier* -- the smallest "last UniqueId written" over the workers still writing -- is
therefore a point up to which the set of frames written is final: a UniqueId at or below
it that no worker holds was lost.  NumCapture ends a capture there: the cut is the
NumCapture-th frame at or below the frontier, so no worker still holding an earlier frame
in its queue is cut short.  A worker that has written nothing for ``IDLE`` seconds (the
stream paused or ended, or the distributor gives it nothing) holds no frame back and does
not count for the frontier.
"""

from __future__ import annotations

import time
from array import array
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

IDLE = 1.0  # s without a frame written: a worker no longer holds the frontier back
STARTING, CAPTURING, CLOSED, LOST, FAILED = "starting", "capturing", "closed", "lost", "failed"


@dataclass
class PartRecord:
    worker: int  # the worker's id at the coordinator
    number: int  # the part's number in this capture (its file name)
    label: str  # "w1 (host2)"
    final: Path | None = None
    state: str = STARTING
    seen: int | None = None  # highest UniqueId received before the start
    first: int | None = None  # the first frame of the capture it received (written or not)
    uids: array = field(default_factory=lambda: array("q"))  # written (or buffered), in order
    durable: int = 0  # frames flushed to the part file
    invalid: int = 0  # frames refused (shape or type differs from the part's)
    written: int = 0  # Capture mode: buffered frames written to the file so far
    message: str = ""
    warnings: list[str] = field(default_factory=list)
    updated: float = 0.0  # time.monotonic() of the last frames recorded
    acked: bool = True  # answered the start (False while the coordinator waits for it)
    stopped: bool = False  # Capture mode: its buffer is complete

    @property
    def active(self) -> bool:
        return self.state in (STARTING, CAPTURING)

    @property
    def last(self) -> int | None:
        return self.uids[-1] if self.uids else None


class Ledger:
    """One capture: its parts, the first UniqueId that belongs to it, where it ends."""

    def __init__(self, capture: int, mode: str, num_capture: int):
        self.capture = capture
        self.mode = mode  # "stream" | "capture"
        self.num_capture = max(int(num_capture), 0)
        self.parts: dict[int, PartRecord] = {}
        self.after: int | None = None  # frames with UniqueId > after belong to the capture
        self.cutoff: int | None = None  # ... and <= cutoff (None: no end decided)
        self.lost_messages: list[str] = []

    # -- parts -----------------------------------------------------------------------
    def add_part(self, worker: int, label: str) -> PartRecord:
        record = PartRecord(worker, len(self.parts), label)
        self.parts[worker] = record
        return record

    def active_parts(self) -> list[PartRecord]:
        return [p for p in self.parts.values() if p.active]

    def begin(self) -> int | None:
        """The start point: frames above the highest UniqueId any worker saw before it
        started belong to the capture, so no frame is counted twice or half-missed at
        the start."""
        seen = [p.seen for p in self.parts.values() if p.seen is not None]
        self.after = max(seen) if seen else None
        return self.after

    def record(self, worker: int, uids, durable: int | None = None) -> None:
        part = self.parts.get(worker)
        if part is None:
            return
        if uids:
            part.uids.extend(int(u) for u in uids)
            part.updated = time.monotonic()
        if durable is not None:
            part.durable = int(durable)
        if part.state == STARTING:
            part.state = CAPTURING

    # -- counting ------------------------------------------------------------------
    def frontier(self, now: float | None = None) -> int | None:
        now = time.monotonic() if now is None else now
        lasts = [p.last for p in self.parts.values() if p.active and p.last is not None]
        busy = [p.last for p in self.parts.values()
                if p.active and p.last is not None and now - p.updated < IDLE]
        if busy:
            return min(busy)
        return max(lasts) if lasts else None  # everyone idle: what is written is final

    def all_uids(self) -> np.ndarray:
        arrays = [np.frombuffer(p.uids, dtype=np.int64) for p in self.parts.values() if p.uids]
        return np.concatenate(arrays) if arrays else np.zeros(0, np.int64)

    def captured(self) -> int:
        """Frames written (or buffered) that belong to the capture (for NumCaptured_RBV)."""
        total = sum(len(p.uids) for p in self.parts.values())
        if self.cutoff is None:
            return total
        return int(np.count_nonzero(self.all_uids() <= self.cutoff))

    def decide_cutoff(self, now: float | None = None) -> int | None:
        """With NumCapture = N: the UniqueId of the N-th frame once N frames at or below
        the frontier are written (None until then, or when there is no limit)."""
        if self.cutoff is not None or self.num_capture <= 0:
            return self.cutoff
        if sum(len(p.uids) for p in self.parts.values()) < self.num_capture:
            return None
        frontier = self.frontier(now)
        if frontier is None:
            return None
        uids = np.unique(self.all_uids())
        settled = uids[uids <= frontier]
        if settled.size >= self.num_capture:
            self.cutoff = int(settled[self.num_capture - 1])
        return self.cutoff

    def window(self) -> tuple[int | None, int | None]:
        """(first, last) UniqueId of the master file's frame axis."""
        uids = self.all_uids()
        firsts = [p.first for p in self.parts.values() if p.first is not None]
        if uids.size:
            firsts.append(int(uids.min()))
        first = self.after + 1 if self.after is not None else (min(firsts) if firsts else None)
        last = self.cutoff
        if last is None and uids.size:
            last = int(uids.max())
        return first, last

    def live_window(self) -> tuple[int | None, int | None]:
        """The frames a master file written now can show: those flushed at or below the
        frontier of flushed frames (each part maps only its ``durable`` rows)."""
        first, _ = self.window()
        lasts = [p.uids[p.durable - 1] for p in self.parts.values()
                 if p.active and p.durable > 0]
        if not lasts:
            return first, None
        last = min(lasts)
        if self.cutoff is not None:
            last = min(last, self.cutoff)
        return first, last
