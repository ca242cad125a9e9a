"""The IOC's memory budget for frames it holds (the input queue and the Capture buffer),
as ADCore bounds them with the NDArrayPool's maximum memory (PoolMaxMem)."""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import mmap
import os

import numpy as np

from ..ndarray import NDArray

__all__ = ["default_limit", "give_back", "kept_frame", "megabytes"]


def physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return None


def default_limit() -> int:
    """Half of the machine's memory (the rest for the OS, the page cache, the receiver);
    4 GiB where it cannot be known."""
    total = physical_memory()
    return total // 2 if total else 4 * 2**30


def megabytes(nbytes: float) -> float:
    return nbytes / 1e6


def give_back() -> None:
    """Return freed heap memory to the system (glibc ``malloc_trim``): the IOC keeps frame
    buffers in its heap (``ioc.sources._malloc``), so a freed Capture buffer would
    otherwise stay resident."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        libc.malloc_trim(0)
    except (OSError, AttributeError, TypeError):
        pass


def kept_frame(frame: NDArray) -> NDArray:
    """A copy of ``frame`` for the Capture buffer, its pixels in an anonymous mapping of
    their own: unmapped the moment the frame is dropped.  (Copies on the heap, where this
    process keeps frame buffers on purpose, are not given back to the system when freed
    by a thread other than the main one: a freed 4.7 GB buffer stayed resident.)"""
    data = frame.data
    memory = mmap.mmap(-1, max(data.nbytes, 1))
    copy = np.frombuffer(memory, dtype=data.dtype, count=data.size).reshape(data.shape)
    np.copyto(copy, data)
    return dataclasses.replace(frame, data=copy)
