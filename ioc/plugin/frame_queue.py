"""The plugin's input queue: frames and commands in one FIFO, as ADCore's plugin thread
sees them (a command sees every frame received before it).  Only frames count against
QueueSize, and against ``max_bytes`` (the memory limit); a frame that does not fit is
refused (the caller counts it as dropped)."""

from __future__ import annotations

import collections
import concurrent.futures
import threading
from dataclasses import dataclass, field

from ..ndarray import NDArray


@dataclass
class Command:
    name: str
    args: dict = field(default_factory=dict)
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)


class FrameQueue:
    """FIFO of frames and commands; only frames count against the capacity."""

    def __init__(self, capacity: int, max_bytes: int | None = None):
        self.capacity = capacity
        self.max_bytes = max_bytes
        self._items: collections.deque = collections.deque()
        self._frames = 0
        self._bytes = 0
        self._cond = threading.Condition()

    def put_frame(self, frame: NDArray) -> bool:
        with self._cond:
            if self._frames >= self.capacity:
                return False
            if self.max_bytes is not None and self._frames and \
                    self._bytes + frame.nbytes > self.max_bytes:
                return False
            self._items.append(frame)
            self._frames += 1
            self._bytes += frame.nbytes
            self._cond.notify()
            return True

    def put_command(self, command: Command) -> None:
        with self._cond:
            self._items.append(command)
            self._cond.notify()

    def get(self, timeout: float | None = None):
        with self._cond:
            if not self._items and not self._cond.wait_for(lambda: self._items, timeout):
                return None
            item = self._items.popleft()
            if isinstance(item, NDArray):
                self._frames -= 1
                self._bytes -= item.nbytes
            return item

    def pop_frame_if(self, predicate) -> NDArray | None:
        """The oldest queued frame if ``predicate(frame)``, else None; commands queued
        before it stay where they are (a stop taking in the frames finished before it)."""
        with self._cond:
            for index, item in enumerate(self._items):
                if isinstance(item, NDArray):
                    if not predicate(item):
                        return None
                    del self._items[index]
                    self._frames -= 1
                    return item
            return None

    @property
    def empty(self) -> bool:
        """Nothing queued (no frame, no command)."""
        return not self._items

    @property
    def frames(self) -> int:
        return self._frames

    @property
    def nbytes(self) -> int:
        return self._bytes

    @property
    def free(self) -> int:
        return max(self.capacity - self._frames, 0)
