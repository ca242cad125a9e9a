"""Write-behind: start writing our files to disk at once, and drop them from the page
cache once they are there.

A detector writer streams far more data than anyone reads back from memory.  Left to
the kernel, every file stays cached: the page cache grows by the data rate, each new
page must be found (and, on a virtual machine, first backed by the host: measured
~400 MB/s here), and write-back comes late and in bursts that stall the writer.
With ``posix_fadvise(DONTNEED)`` right after a file is written (starts its
write-back) and again ``KEEP`` files later (drops its pages, written by then), the
same few pages are reused: 2 MiB files went from 3.4-5.9 to 0.8-1.4 ms each on this
project's machine, a stream from 1.5-2.8 to 0.8-1.0 ms per 2 MiB frame.

The price: files just written are read back from disk, not memory.  ``serve
--keep-page-cache`` turns this off.  Nothing here raises: advice that fails (a
file system without it) is ignored.
"""

from __future__ import annotations

import collections
import os
import threading

KEEP = 16                       # files whose pages are dropped this many files later
STREAM_EVERY = 32 * 2**20       # bytes appended to an open file between two advices

_enabled = hasattr(os, "posix_fadvise")
_lock = threading.Lock()
_written: collections.deque[int] = collections.deque()


def set_enabled(enabled: bool) -> None:
    global _enabled
    _enabled = enabled and hasattr(os, "posix_fadvise")


def enabled() -> bool:
    return _enabled


def advise(fd: int) -> None:
    """Start write-back of ``fd``'s dirty pages and drop its clean ones (whole file)."""
    if not _enabled:
        return
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    except OSError:
        pass


def file_written(fd: int) -> None:
    """A file we wrote with plain ``os`` calls is complete (``fd`` stays the caller's to
    close): write it back now, drop its pages ``KEEP`` files later."""
    if not _enabled:
        return
    advise(fd)
    try:
        kept = os.dup(fd)
    except OSError:
        return
    _hold(kept)


def path_written(path) -> None:
    """A file HDF5 wrote has been closed.  Reopened, not ``dup``-ed: HDF5 locks the open
    file it had (``flock``), and a duplicate would keep that lock after its close."""
    if not _enabled:
        return
    try:
        kept = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return
    advise(kept)
    _hold(kept)


def _hold(kept: int) -> None:
    with _lock:
        _written.append(kept)
        old = [_written.popleft() for _ in range(len(_written) - KEEP)]
    for fd_ in old:
        advise(fd_)
        os.close(fd_)


def h5_file_fd(h5file) -> int | None:
    """The POSIX descriptor under an open h5py file (sec2 driver), else None."""
    try:
        fd = h5file.id.get_vfd_handle()
    except Exception:  # noqa: BLE001 - another driver: no advice
        return None
    return fd if isinstance(fd, int) and fd >= 0 else None


def drop_all() -> None:
    """Advise and forget every file still held: when the writer is idle (a held
    descriptor keeps a deleted file's space allocated), and at shutdown."""
    with _lock:
        held = list(_written)
        _written.clear()
    for fd in held:
        advise(fd)
        os.close(fd)
