"""The writer's threads by name where the system shows threads (``top -H``, ``ps -L``,
``/proc/<pid>/task/*/comm``), so that one can see which of them takes the CPU: the file
writer, the receiver's pipe, the frame I/O, ...  Python sets the name of a thread it
starts only from 3.14 on; before, every thread shows as "python".  Linux only (``prctl``);
elsewhere nothing is named.  The kernel keeps 15 bytes of a name."""

from __future__ import annotations

import ctypes
import functools
import sys
import threading
from collections.abc import Callable

_PR_SET_NAME = 15  # <linux/prctl.h>
NAME_BYTES = 15


def _load_prctl():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_prctl = _load_prctl()


def name_this_thread(name: str | None = None) -> None:
    """Show the calling thread under ``name`` (default: its Python name)."""
    if _prctl is None:
        return
    text = (name or threading.current_thread().name).encode("utf-8", "replace")[:NAME_BYTES]
    _prctl(_PR_SET_NAME, ctypes.c_char_p(text), 0, 0, 0)


def named(target: Callable[..., object]) -> Callable[..., object]:
    """``target`` that first names its thread after the Python thread running it."""
    @functools.wraps(target)
    def run(*args, **kwargs):
        name_this_thread()
        return target(*args, **kwargs)

    return run
