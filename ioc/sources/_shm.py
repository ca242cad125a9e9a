"""Shared-memory frame slots that hold no file descriptor while mapped.

Python's ``mmap.mmap(fd, ...)`` keeps a duplicate of ``fd`` open for as long as
the mapping lives (so that it can resize it; ``trackfd=False`` only came in
Python 3.13).  The receiver maps one memfd per frame slot, in both processes,
and there are up to QueueSize + a few slots: with a large QueueSize the IOC would
run out of descriptors (a soft limit of 1024 is common) and then fail to open
files.  Here the memfd is mapped with libc's ``mmap`` and its descriptor can be
closed at once; the mapping is released when the last array using it is gone.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import weakref

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                       ctypes.c_int, ctypes.c_long)
_libc.munmap.restype = ctypes.c_int
_libc.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
_MAP_FAILED = ctypes.c_void_p(-1).value


def map_shared(fd: int, size: int, *, writable: bool) -> ctypes.Array:
    """Map ``size`` bytes of ``fd`` (shared).  The caller may close ``fd`` right away.

    The result exports the memory through the buffer protocol (``np.frombuffer``);
    arrays made from it keep it alive, and the memory is unmapped when it and every
    such array are gone.  A read-only mapping must only be viewed through read-only
    arrays (writing to it would be a segmentation fault, not an exception)."""
    prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
    address = _libc.mmap(None, size, prot, mmap.MAP_SHARED, fd, 0)
    if address is None or address == _MAP_FAILED:
        err = ctypes.get_errno()
        raise OSError(err, f"mmap of {size} bytes: {os.strerror(err)}")
    buffer = (ctypes.c_ubyte * size).from_address(address)
    # Not at interpreter exit: a daemon thread may still be reading a frame then (the
    # process's end unmaps everything anyway).
    weakref.finalize(buffer, _libc.munmap, address, size).atexit = False
    return buffer


def new_slot(name: str, size: int) -> tuple[int, ctypes.Array]:
    """A new anonymous shared-memory file of ``size`` bytes, mapped writable: its
    descriptor (to pass to another process, then close) and the mapping."""
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    try:
        os.ftruncate(fd, size)
        return fd, map_shared(fd, size, writable=True)
    except BaseException:
        os.close(fd)
        raise
