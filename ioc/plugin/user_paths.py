"""Calls on operator-given paths (layout and attributes files, FilePath), with a timeout.

Opening, reading or statting a path a CA client chose can block for as long as the
path wants: a FIFO waits for a writer, a hung network mount for ever.  Such a call must
not hold a CA server thread, nor a thread other puts need, nor stop the IOC from
exiting.  Each call here runs in a daemon thread of its own and is waited for at most
``timeout`` seconds; a call that does not return in time is left behind (a blocked
system call cannot be interrupted), counted, and reported.  While ``max_stuck`` calls
are still stuck, new ones are refused at once instead of piling up threads.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["UserPathError", "UserPaths"]


class UserPathError(OSError):
    """The call did not return in time, or too many earlier ones are still stuck."""


class UserPaths:
    def __init__(self, timeout: float = 5.0, max_stuck: int = 8):
        self.timeout = timeout
        self.max_stuck = max_stuck
        self._stuck = 0
        self._lock = threading.Lock()

    @property
    def stuck(self) -> int:
        return self._stuck

    def _start(self, what: str, fn: Callable, args, on_done: Callable[[dict], None]):
        with self._lock:
            if self._stuck >= self.max_stuck:
                raise UserPathError(f"{what}: {self._stuck} earlier file-system calls have "
                                    "not returned (a path that does not answer?); refused")
        state: dict[str, Any] = {"late": False}

        def run() -> None:
            try:
                state["result"] = fn(*args)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                state["error"] = exc
            with self._lock:
                if state["late"]:
                    self._stuck -= 1
                    return
                state["done"] = True
            on_done(state)

        threading.Thread(target=run, name=f"user-path: {what}", daemon=True).start()
        return state

    def _late(self, state: dict, what: str) -> UserPathError:
        with self._lock:
            if state.get("done"):
                return None
            state["late"] = True
            self._stuck += 1
        return UserPathError(f"{what}: no answer within {self.timeout:.0f} s (a FIFO, or a "
                             "file system that does not answer?)")

    @staticmethod
    def _outcome(state: dict):
        if "error" in state:
            raise state["error"]
        return state.get("result")

    def call(self, what: str, fn: Callable, *args):
        """Run ``fn(*args)`` from a plain thread; its result, or UserPathError."""
        finished = threading.Event()
        state = self._start(what, fn, args, lambda _state: finished.set())
        if not finished.wait(self.timeout):
            error = self._late(state, what)
            if error is not None:
                raise error
        return self._outcome(state)

    async def run(self, what: str, fn: Callable, *args):
        """Run ``fn(*args)`` from the event loop without blocking it."""
        loop = asyncio.get_running_loop()
        finished = asyncio.Event()

        def done(_state) -> None:
            try:
                loop.call_soon_threadsafe(finished.set)
            except RuntimeError:  # the loop has stopped
                pass

        state = self._start(what, fn, args, done)
        try:
            await asyncio.wait_for(finished.wait(), self.timeout)
        except asyncio.TimeoutError:
            error = self._late(state, what)
            if error is not None:
                raise error from None
        return self._outcome(state)
