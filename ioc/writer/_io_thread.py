"""Frame writes in flight: the disk's time overlaps the next frame's work.

An ``O_DIRECT`` write of a 2 MiB frame takes the disk about 1.5 ms here (its bandwidth:
two threads writing halves take as long), during which the writer's thread would only
wait.  Writes handed over here go in order on one thread of their own, at most
``DEPTH`` at a time (the caller waits beyond); each keeps the object owning its memory
(the frame, whose receiver slot is not reused before the write is done).

A write that fails (disk full, I/O error) ends the writing: it and every write after it
are lost, and ``failed`` says from which sequence number on, so that the file's writer
takes those frames out of the file before it reports the error (``NexusWriter``).
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable

from .._thread_names import named


class DeferredWrites:
    DEPTH = 4

    def __init__(self, write: Callable[[int, memoryview], None], name: str = "frame-io"):
        self._write = write  # (offset, bytes) -> None, raises OSError
        self._name = name
        self._jobs: collections.deque = collections.deque()
        self._cv = threading.Condition()
        self._thread: threading.Thread | None = None
        self._next = 0
        self.done = -1  # the last sequence number written (all before it too)
        self.failed: tuple[int, OSError] | None = None  # (first lost, why)
        self._closing = False

    def submit(self, offset: int, view: memoryview, keep: object) -> int:
        """Queue a write; its sequence number.  Waits while DEPTH writes are in flight."""
        with self._cv:
            while len(self._jobs) >= self.DEPTH and self.failed is None:
                self._cv.wait()
            seq = self._next
            self._next += 1
            if self.failed is None:
                self._jobs.append((seq, offset, view, keep))
                self._cv.notify_all()
            if self._thread is None:
                self._thread = threading.Thread(target=named(self._run), name=self._name, daemon=True)
                self._thread.start()
        return seq

    def wait(self) -> None:
        """Until every queued write is done (or the writing failed)."""
        with self._cv:
            while self._jobs:
                self._cv.wait()

    def stop(self, drop: bool = False) -> None:
        """Finish (``drop``: abandon) the queued writes and end the thread."""
        with self._cv:
            if drop:
                self._jobs.clear()
            self._closing = True
            self._cv.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._jobs and not self._closing:
                    self._cv.wait()
                if not self._jobs:
                    return
                seq, offset, view, _keep = self._jobs[0]
            error = None
            try:
                self._write(offset, view)
            except OSError as exc:
                error = exc
            with self._cv:
                if error is not None:
                    self.failed = (seq, error)
                    self._jobs.clear()  # lost with it: the file is cut before them
                else:
                    self.done = seq
                    if self._jobs:
                        self._jobs.popleft()  # (the frame's memory goes back)
                self._cv.notify_all()
