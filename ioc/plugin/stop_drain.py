"""A stop loses no finished frame.

With BlockingCallbacks=Yes, ADCore writes each frame inside the driver's callback, so
when ``cam1:Acquire`` finishes the file holds every frame; ophyd's SingleTrigger then
puts ``Capture=0`` at once.  Here frames travel over the network and a queue: at that
moment the detector's last frames may still be in flight (measured: 3-5 of 5 frames
per file over 8 runs, DroppedArrays 0).  So before a stop (Capture=0 in Stream and
Capture mode, WriteFile) the saver asks the source for the newest frame it has finished
(``latest_unique_id``, read fresh), takes in every frame up to that one, and only then
closes; frames made after the stop stay out.  The wait is bounded; a shortfall is
reported in WriteMessage.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

STOP_TIMEOUT = 5.0  # s: the longest a stop waits for frames finished before it
READ_TIMEOUT = 1.0  # s: reading the source's latest id


class Arrivals:
    """The newest UniqueId the source has delivered (queued, dropped or ignored).  Noted
    after the frame was queued, so once it reaches an id, that frame is in the queue or
    will never be."""

    def __init__(self):
        self._cond = threading.Condition()
        self.latest: int | None = None

    def note(self, uid: int) -> None:
        with self._cond:
            self.latest = uid
            self._cond.notify_all()

    def wait(self, timeout: float) -> int | None:
        with self._cond:
            self._cond.wait(timeout)
            return self.latest


def take_in_finished(queue, process: Callable, arrivals: Arrivals,
                     latest_unique_id: Callable[[float], int | None] | None,
                     what: str, timeout: float = STOP_TIMEOUT) -> tuple[str, bool] | None:
    """Process the queued frames up to the source's newest finished frame, waiting (at
    most ``timeout``) for those still in flight.  Runs in the saver's thread.  Returns
    (message, is_error) for WriteMessage when something is missing, else None."""
    if latest_unique_id is None:
        return None
    start = time.monotonic()
    try:
        target = latest_unique_id(READ_TIMEOUT)
    except Exception as exc:  # noqa: BLE001 - a stop never fails on this
        log.warning("cannot read the source's latest frame id: %s", exc)
        target = None
    if target is None:
        return (f"{what}: the source's latest frame id could not be read (not connected?); "
                "closed with the frames received", False)

    def finished(frame) -> bool:
        return frame.unique_id <= target

    deadline = start + timeout
    while True:
        frame = queue.pop_frame_if(finished)
        if frame is not None:
            process(frame)
            continue
        arrived = arrivals.latest
        if arrived is not None and arrived >= target:
            # every frame up to the target is queued now (or was dropped, and counted)
            while (frame := queue.pop_frame_if(finished)) is not None:
                process(frame)
            return None
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            first = (arrived + 1) if arrived is not None and arrived < target else target
            missing = f"frame {target}" if first == target else f"frames {first}-{target}"
            message = (f"{what}: {missing} finished by the detector did not arrive within "
                       f"{timeout:g} s; closed without them")
            log.warning("%s", message)
            return message, True
        arrivals.wait(min(remaining, 0.02))


__all__ = ["Arrivals", "READ_TIMEOUT", "STOP_TIMEOUT", "take_in_finished"]
