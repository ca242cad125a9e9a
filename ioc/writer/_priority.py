"""The writing threads' scheduling priority: below the threads that receive frames.

A frame not taken off the wire in time is lost (the detector's server keeps only a few
updates for a lagging client); a frame received and not yet written waits in the
plugin's queue (QueueSize) in shared memory.  When the CPU is short for a moment,
the backlog should build where the buffer is: in the queue, at the end of the pipeline,
not at its head.  ``serve --writer-nice N`` gives the file writer's thread (and the
threads it starts: frame I/O, Single-mode file writers) Linux niceness N; the receiver
process, the receiver's pipe thread and the CA/PVA server loop keep theirs.  ADCore does
the same with its plugins' thread priorities.

Raising niceness needs no privilege; over a long run it changes nothing of the average
rate the CPU allows, only who waits during a burst.  Nothing here raises.
"""

from __future__ import annotations

import logging
import os
import threading

log = logging.getLogger(__name__)

_nice = 0


def set_writer_nice(nice: int) -> None:
    """The niceness writing threads take (0: as the process)."""
    global _nice
    _nice = max(0, min(int(nice), 19))


def writer_nice() -> int:
    return _nice


def lower_this_thread() -> None:
    """Give the calling thread (and the threads it starts later) the writer's niceness;
    Linux keeps niceness per thread."""
    if _nice <= 0 or not hasattr(os, "setpriority"):
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, max(os.getpriority(os.PRIO_PROCESS, tid), _nice))
    except OSError as exc:
        log.warning("cannot lower the writer thread's priority: %s", exc)
