"""The IOC's memory budget for frames it holds (the input queue and the Capture buffer),
as ADCore bounds them with the NDArrayPool's maximum memory (PoolMaxMem)."""

from __future__ import annotations

import ctypes
import ctypes.util
import os

__all__ = ["default_limit", "give_back", "megabytes"]


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
