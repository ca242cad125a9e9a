"""Keep big buffers in the heap (glibc): without this, every 2 MiB frame buffer is a
fresh ``mmap`` whose pages the kernel must fault in and zero (measured: ~60 % of the
receiver's CPU at 200 frames/s of 1 Mpixel), then ``munmap`` again."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 2**20   # glibc's maximum on 64-bit: frames up to 2048x2048x8 bytes
TRIM_THRESHOLD = 256 * 2**20  # free memory above this is still given back


def keep_frame_buffers() -> bool:
    """Raise glibc's mmap and trim thresholds for this process; False if not glibc."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    ok = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and \
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    if not ok:
        log.info("mallopt refused the frame-buffer thresholds")
    return ok
