"""Single mode, one file per frame, in stages: the disk writes the images of files N and
N+1 while the writer's thread makes file N+2.

Writing a 1 Mpixel file from the template is mostly waiting: the disk takes ~1.5 ms for
the image (``O_DIRECT``) and ext4 ~0.25 ms to create the file.  Where the kernel has AIO
(``ioc/writer/_aio.py``), the writer's thread makes each file and leaves its image to the
kernel; otherwise two threads write the files (one waits for the disk while the other
makes its file).  Then, in order (on the writer's thread, or on a third thread), the file
is renamed to its name and the frame's readbacks (ArrayCounter, UniqueId, NumCaptured,
WriteMessage, ...) posted, at most ``DEPTH`` files behind; a client that sees
ArrayCounter_RBV count a frame finds its file complete.  Anything else the writer does (a
command, a frame of another mode, a file that needs h5py) first waits for the files in
flight (``wait``), so that what it posts comes after theirs.

AIO spares three threads' hand-overs and wake-ups per file (a Python thread that has
slept resumes from cold caches on a shared machine): the IOC's CPU per Single file at 150
frames/s went from 2.47-2.58 to 2.22-2.31 ms, measured alternately on the same machine.
"""

from __future__ import annotations

import collections
import errno
import logging
import threading
from collections.abc import Callable

from .._thread_names import name_this_thread, named
from ..writer import _aio

log = logging.getLogger(__name__)


class SinglePipeline:
    WRITERS = 2  # files written at once: one waits for the disk while the other is made
    DEPTH = 3  # files written or waiting to be said, beyond which submit waits

    def __init__(self):
        self._jobs: collections.deque = collections.deque()  # (write's Future, finish), in order
        self._cv = threading.Condition()
        self._thread: threading.Thread | None = None
        self._writers = None
        self._running = 0  # jobs taken and not finished
        self._stop = False
        self._aio: _aio.Context | None = None
        self._aio_tried = False
        # files whose images the kernel writes (AIO), in order: [started file, finish]
        self._in_flight: collections.deque = collections.deque()
        self._results: dict[int, int] = {}  # AIO key -> result, before its file's turn

    @property
    def busy(self) -> bool:
        with self._cv:
            return bool(self._jobs or self._running or self._in_flight)

    @property
    def in_flight(self) -> int:
        """Files whose images the kernel is writing (AIO): the caller finishes them
        (``wait``) before it waits for anything else."""
        return len(self._in_flight)

    def submit(self, write: Callable[[], object],
               finish: Callable[[object, BaseException | None], None]) -> None:
        """``write()``, then ``finish(result, error)`` in the order of submission, one at
        a time; at most DEPTH pending (the caller waits beyond).  A ``write`` with
        ``start(context)`` leaves its image to the kernel's AIO (``start`` returns what
        completes it, or None where AIO does not apply); otherwise it runs on one of
        WRITERS threads."""
        start = getattr(write, "start", None)
        context = self._context() if start is not None else None
        if context is not None:
            self._wait_threads()  # (in order: the files the threads write come first)
            self._complete(until=self.DEPTH - 1)
            try:
                started = start(context)
            except Exception as exc:  # noqa: BLE001 - said by finish, in order
                started = exc
            if started is not None:
                self._in_flight.append((started, finish))
                self._complete(until=self.DEPTH)  # (those done already)
                return
        self._complete(until=0)  # the files in flight through AIO come first
        self._submit_to_threads(write, finish)

    def _context(self) -> _aio.Context | None:
        if not self._aio_tried:
            self._aio_tried = True
            self._aio = _aio.Context.open(self.DEPTH)
        return self._aio

    def _complete(self, until: int) -> None:
        """Finish the AIO files, in order, until at most ``until`` are left (waiting for
        the kernel where needed); any done already are finished too."""
        while self._in_flight:
            started, finish = self._in_flight[0]
            key = getattr(started, "key", None)
            if key is not None and key not in self._results:
                wait = len(self._in_flight) > until
                try:
                    for done, result in self._aio.reap(wait):
                        self._results[done] = result
                except OSError as exc:  # the context is broken: its files are lost
                    self._abandon(exc)
                if key not in self._results:
                    if wait:
                        continue
                    return
            self._in_flight.popleft()
            try:
                if isinstance(started, BaseException):
                    result, error = None, started
                else:
                    try:
                        result, error = started.complete(self._results.pop(key, None)), None
                    except Exception as exc:  # noqa: BLE001 - finish says it
                        result, error = None, exc
                finish(result, error)
            except Exception:  # noqa: BLE001 - a job reports its own errors; never die
                log.exception("single-file write")
            started = finish = None  # (its frame's memory goes back now)

    def _abandon(self, exc: OSError) -> None:
        """AIO failed as a whole (``io_getevents`` refused): the files in flight fail with
        that error (and are removed), and threads write the next ones."""
        log.error("Single-mode files: %s; writing on threads from now on", exc)
        for started, _finish in self._in_flight:
            key = getattr(started, "key", None)
            if key is not None:
                self._results.setdefault(key, -(exc.errno or errno.EIO))
        self._aio = None  # (_aio_tried stays: no new context)

    def _submit_to_threads(self, write: Callable[[], object],
                           finish: Callable[[object, BaseException | None], None]) -> None:
        from concurrent.futures import ThreadPoolExecutor

        with self._cv:
            while len(self._jobs) + self._running >= self.DEPTH:
                self._cv.wait()
            if self._writers is None:
                self._writers = ThreadPoolExecutor(self.WRITERS, thread_name_prefix="single-write",
                                                   initializer=name_this_thread)
                self._thread = threading.Thread(target=named(self._run), name="single-files",
                                                daemon=True)
                self._thread.start()
            self._jobs.append((self._writers.submit(write), finish))
            self._cv.notify_all()

    def wait(self) -> None:
        """Until every submitted job has finished (the caller's thread: the one that
        submits)."""
        self._complete(until=0)
        self._wait_threads()

    def _wait_threads(self) -> None:
        with self._cv:
            while self._jobs or self._running:
                self._cv.wait()

    def stop(self) -> None:
        self.wait()
        if self._aio is not None:
            self._aio.close()
            self._aio, self._aio_tried = None, False
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5.0)
        if self._writers is not None:
            self._writers.shutdown(wait=False)

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._jobs and not self._stop:
                    self._cv.wait()
                if not self._jobs:
                    return
                future, finish = self._jobs.popleft()
                self._running += 1
            try:
                try:
                    result, error = future.result(), None
                except Exception as exc:  # noqa: BLE001 - finish says it
                    result, error = None, exc
                finish(result, error)
            except Exception:  # noqa: BLE001 - a job reports its own errors; never die
                log.exception("single-file write")
            finally:
                future = finish = None  # (its frame's memory goes back now)
                with self._cv:
                    self._running -= 1
                    self._cv.notify_all()
