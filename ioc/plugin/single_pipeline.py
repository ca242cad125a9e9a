"""Single mode, one file per frame, in stages: the writer's thread names and prepares file
N+2 while two other threads write files N and N+1.

Writing a 1 Mpixel file from the template is mostly waiting: the disk takes ~1.5 ms for
the image (``O_DIRECT``) and ext4 ~0.25 ms to create the file, during which the writer's
thread would only wait.  Here the file's bytes are written on two threads (one waits for
the disk while the other makes its file), then, in order on a third, the file is renamed
to its name and the frame's readbacks (ArrayCounter, UniqueId, NumCaptured,
WriteMessage, ...) posted, at most ``DEPTH`` files behind; a client
that sees ArrayCounter_RBV count a frame finds its file complete.  Anything else the
writer does (a command, a frame of another mode, a file that needs h5py) first waits for
the files in flight (``wait``), so that what it posts comes after theirs.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable

from .._thread_names import name_this_thread, named

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

    @property
    def busy(self) -> bool:
        with self._cv:
            return bool(self._jobs or self._running)

    def submit(self, write: Callable[[], object],
               finish: Callable[[object, BaseException | None], None]) -> None:
        """``write()`` on one of WRITERS threads; then ``finish(result, error)`` in the
        order of submission, one at a time.  Waits while DEPTH are pending."""
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
        """Until every submitted job has finished."""
        with self._cv:
            while self._jobs or self._running:
                self._cv.wait()

    def stop(self) -> None:
        self.wait()
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
