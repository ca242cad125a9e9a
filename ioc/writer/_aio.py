"""A stream's frame writes in flight without a thread: Linux native AIO (``io_submit``).

``_io_thread.DeferredWrites`` overlaps the disk's time with the next frame by writing on a
thread of its own.  Each frame then costs two thread wake-ups, a hand-over under a lock and
the thread's own Python, and on this project's 2-vCPU machine a Python thread that has
slept resumes slowly (cold caches): a hand-over measured 45-75 us of the caller's CPU
against 11 us when nothing slept, and the thread 0.1 ms of Python per frame besides the
kernel's work.  Here the writer's own thread hands the write to the kernel
(``io_submit``: the pages pinned and the request queued, about 0.2 ms of kernel time for
2 MiB, as the thread's ``pwrite`` cost) and collects the completions later without
waiting (``io_getevents``), so nothing else runs per frame.

The kernel runs an ``O_DIRECT`` write asynchronously only where it does not change the
file's size: ext4 (and xfs) wait inside ``io_submit`` for a write past the end (measured:
2.4 ms a frame, as a plain write).  ``DirectFile`` therefore extends the file ahead of its
writes (``fallocate``) and keeps its logical size itself; HDF5 cuts the file back to its
end of allocation at every flush and at the close.

No library: Python has no binding for the four system calls, and the project's
dependencies none either; they are called through ``ctypes``.  Where they are missing
(another architecture, a sandbox refusing them, ``fs.aio-max-nr`` reached), ``start``
returns None and the thread is used.
"""

from __future__ import annotations

import ctypes
import errno
import itertools
import os
import platform

import numpy as np

# the system call numbers (asm-generic on aarch64)
_SYSCALLS = {"x86_64": (206, 207, 208, 209), "aarch64": (0, 1, 4, 2)}
_PWRITE = 1  # IOCB_CMD_PWRITE
# what a file system answers to an O_DIRECT write it does not take (not a write error)
REFUSED = frozenset({errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP})


class _IOCB(ctypes.Structure):
    """``struct iocb`` (linux/aio_abi.h, little-endian field order)."""
    _fields_ = [("data", ctypes.c_uint64), ("key", ctypes.c_uint32),
                ("rw_flags", ctypes.c_int32), ("opcode", ctypes.c_uint16),
                ("reqprio", ctypes.c_int16), ("fildes", ctypes.c_uint32),
                ("buf", ctypes.c_uint64), ("nbytes", ctypes.c_uint64),
                ("offset", ctypes.c_int64), ("reserved2", ctypes.c_uint64),
                ("flags", ctypes.c_uint32), ("resfd", ctypes.c_uint32)]


class _Event(ctypes.Structure):
    """``struct io_event``."""
    _fields_ = [("data", ctypes.c_uint64), ("obj", ctypes.c_uint64),
                ("res", ctypes.c_int64), ("res2", ctypes.c_int64)]


_calls = None


def _system_calls():
    """(io_setup, io_destroy, io_getevents, io_submit) numbers and the two ways of calling
    ``syscall``: holding the GIL (short calls: no hand-over to another thread in between)
    and releasing it (a wait for the disk); None where unknown."""
    global _calls
    if _calls is None:
        numbers = _SYSCALLS.get(platform.machine())
        if numbers is None or platform.system() != "Linux" or \
                platform.architecture()[0] != "64bit":
            _calls = ()
        else:
            holding = ctypes.PyDLL(None, use_errno=True).syscall
            releasing = ctypes.CDLL(None, use_errno=True).syscall
            holding.restype = releasing.restype = ctypes.c_long
            _calls = (numbers, holding, releasing)
    return _calls or None


_fallocate = None


def fallocate(fd: int, offset: int, length: int) -> None:
    """Linux ``fallocate`` (mode 0: the file grows to offset + length); OSError as the
    call fails (EOPNOTSUPP where the file system has none: glibc's ``posix_fallocate``,
    which ``os.posix_fallocate`` calls, would then write every block)."""
    global _fallocate
    if _fallocate is None:
        _fallocate = ctypes.CDLL(None, use_errno=True).fallocate
        _fallocate.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64)
        _fallocate.restype = ctypes.c_int
    if length > 0 and _fallocate(fd, 0, offset, length) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def _fail(what: str) -> OSError:
    code = ctypes.get_errno()
    return OSError(code, f"{what}: {os.strerror(code)}")


class Context:
    """One AIO context: writes handed to the kernel (at most ``depth`` at a time), their
    results collected.  Used from one thread."""

    def __init__(self, handle: int, depth: int):
        self._handle = handle
        self.depth = depth
        self._numbers, self._call, self._wait_call = _system_calls()
        self._requests: dict[int, _IOCB] = {}  # key -> the request (the kernel reads it)
        self._events = (_Event * depth)()
        self._keys = itertools.count()

    @classmethod
    def open(cls, depth: int) -> Context | None:
        """A context, or None where the system gives none."""
        calls = _system_calls()
        if calls is None:
            return None
        numbers, holding, _ = calls
        handle = ctypes.c_ulong(0)
        if holding(ctypes.c_long(numbers[0]), ctypes.c_long(depth), ctypes.byref(handle)) != 0:
            return None  # ENOSYS, EPERM (a sandbox), EAGAIN (fs.aio-max-nr reached)
        return cls(handle.value, depth)

    def __len__(self) -> int:
        """Writes in flight."""
        return len(self._requests)

    def submit(self, fd: int, offset: int, view: memoryview) -> int:
        """Hand the write of ``view`` at ``offset`` to the kernel (``fd`` and ``view``
        as ``O_DIRECT`` wants them; the memory must stay as it is until the write is
        done); its key.  Raises OSError when the kernel refuses it."""
        key = next(self._keys)
        request = _IOCB(data=key, opcode=_PWRITE, fildes=fd,
                        # (numpy: ctypes cannot take the address of read-only memory)
                        buf=np.frombuffer(view, dtype=np.uint8).ctypes.data,
                        nbytes=view.nbytes, offset=offset)
        pointers = (ctypes.POINTER(_IOCB) * 1)(ctypes.pointer(request))
        if self._call(ctypes.c_long(self._numbers[3]), ctypes.c_ulong(self._handle),
                      ctypes.c_long(1), pointers) != 1:
            raise _fail("io_submit")
        self._requests[key] = request
        return key

    def reap(self, wait: bool = False) -> list[tuple[int, int]]:
        """(key, bytes written or -errno) of the writes the kernel has finished
        (``wait``: at least one, when any is in flight)."""
        if not self._requests:
            return []
        call = self._wait_call if wait else self._call
        n = call(ctypes.c_long(self._numbers[2]), ctypes.c_ulong(self._handle),
                 ctypes.c_long(1 if wait else 0), ctypes.c_long(self.depth), self._events, None)
        if n < 0:
            if ctypes.get_errno() == errno.EINTR:
                return []
            raise _fail("io_getevents")
        done = []
        for event in self._events[:n]:
            key = int(event.data)
            self._requests.pop(key, None)
            done.append((key, int(event.res)))
        return done

    def close(self) -> None:
        """After the writes in flight (their memory is read until they are done)."""
        try:
            while self._requests:
                self.reap(wait=True)
        finally:
            if self._handle:
                self._call(ctypes.c_long(self._numbers[1]), ctypes.c_ulong(self._handle))
                self._handle = 0


class AsyncWrites:
    """A stream's writes in flight on one file, in the interface of ``DeferredWrites``:
    ``submit`` gives a sequence number, ``done`` is the last one written with all before
    it, ``failed`` (first lost, why) once one failed (that one and every later one are
    lost).

    ``fd`` is the file's ``O_DIRECT`` descriptor; ``reserve(end)`` makes the file at least
    ``end`` bytes long (raises OSError); ``write_sync(offset, view)`` writes synchronously
    (the rest of a short write, or all of one the file system refuses).  Used from one
    thread (the file's writer)."""

    DEPTH = 4

    def __init__(self, context: Context, fd: int, reserve, write_sync):
        self._context = context
        self._fd = fd
        self._reserve = reserve
        self._write_sync = write_sync
        self._next = 0
        self._flight: dict[int, tuple] = {}  # key -> (seq, offset, view, keep)
        self._written: set[int] = set()  # done out of order, above ``done``
        self.done = -1
        self.direct_bytes = 0  # written by the kernel's AIO
        self._failed: tuple[int, OSError] | None = None

    @classmethod
    def start(cls, fd: int, reserve, write_sync) -> AsyncWrites | None:
        """Writes in flight on ``fd``, or None where the system gives no AIO context."""
        context = Context.open(cls.DEPTH)
        return None if context is None else cls(context, fd, reserve, write_sync)

    # -- the writer's side -----------------------------------------------------------
    def submit(self, offset: int, view: memoryview, keep: object) -> int:
        """Start writing ``view`` (whole blocks, aligned) at ``offset``; ``keep`` owns its
        memory and is held until the write is done."""
        seq = self._next
        self._next += 1
        self.reap()
        while len(self._flight) >= self.DEPTH and self._failed is None:
            self.reap(wait=True)
        if self._failed is not None:
            return seq  # lost with the one that failed
        try:
            self._reserve(offset + view.nbytes)
        except OSError as exc:  # disk full, file-size limit: as the write itself would
            self._lose(seq, exc)
            return seq
        try:
            key = self._context.submit(self._fd, offset, view)
        except OSError as error:
            if error.errno not in REFUSED and error.errno != errno.EAGAIN:
                self._lose(seq, error)
                return seq
            try:  # the file system takes no O_DIRECT here, or the kernel no more requests
                self._write_sync(offset, view)
            except OSError as exc:
                self._lose(seq, exc)
                return seq
            self._completed(seq)
            return seq
        self._flight[key] = (seq, offset, view, keep)
        return seq

    def reap(self, wait: bool = False) -> None:
        """Take in the writes the kernel has finished (``wait``: at least one)."""
        for key, result in self._context.reap(wait):
            self._finish(*self._flight.pop(key)[:3], result)

    def _finish(self, seq: int, offset: int, view: memoryview, result: int) -> None:
        try:
            if result < 0:
                code = -result
                error = OSError(code, os.strerror(code))
                if code not in REFUSED:
                    raise error
                self._write_sync(offset, view)  # refused: through the page cache
            else:
                self.direct_bytes += result
                if result < view.nbytes:  # a short write: the rest now
                    self._write_sync(offset + result, view[result:])
        except OSError as exc:
            self._lose(seq, exc)
            return
        self._completed(seq)

    def _completed(self, seq: int) -> None:
        self._written.add(seq)
        while self.done + 1 in self._written:
            self.done += 1
            self._written.discard(self.done)

    def _lose(self, seq: int, exc: OSError) -> None:
        if self._failed is None or seq < self._failed[0]:
            self._failed = (seq, exc)

    @property
    def failed(self) -> tuple[int, OSError] | None:
        """(first lost, why), from what the kernel has finished so far."""
        self.reap()
        return self._failed

    def wait(self) -> None:
        """Until every write in flight is done (or failed)."""
        while self._flight:
            self.reap(wait=True)

    def stop(self, drop: bool = False) -> None:
        """Wait for the writes in flight (the kernel reads their memory until done: they
        cannot be abandoned; ``drop`` is the thread's option), then end the context."""
        try:
            self.wait()
        finally:
            self._context.close()
