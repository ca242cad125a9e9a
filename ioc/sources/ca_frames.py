"""A frame from an NDStdArrays plugin's updates: which scalars belong to which pixels.

ADCore posts a frame's dimensions first (when they change), then ArrayData, then
ArrayCounter/UniqueId, the type/colour scalars and the timestamps (reference §4.3).

EPICS base's server (RSRV) queues scalar updates but sends an array by reference, read
when it is sent, and keeps at most one array update per subscription queued; for a
client that lags it also replaces queued updates.  So ArrayData can carry a later
frame's pixels than the scalars that follow it.  ``FramePairing`` decides, as far as the
wire shows, whether a frame's pairing is certain: exactly one UniqueId and one
image-plugin ArrayCounter_RBV after its ArrayData (or several, when no ArrayData
follows: then the pixels are the newest frame's, whose scalars came last), each counter
one more than the previous one (the plugin counts every frame it posts, whatever the
UniqueIds do), and, while frames are being lost, not the same pixels as the next update.
What the wire cannot show (the array read a moment after the next frame replaced it,
the next update newer still) remains possible for a client that lags; pvAccess sends
each frame whole.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from ..ndarray import NDArray, NDAttribute, NDAttrSource, NDAttrType, NDDataType


class Pending:
    """One ArrayData update and the scalars that came after it."""

    __slots__ = ("data", "uid", "timestamp", "sec", "nsec", "received", "updated",
                 "counter", "doubt", "several")

    def __init__(self, data):
        self.data = data
        self.uid = None
        self.counter = None  # the image plugin's ArrayCounter_RBV posted with it
        self.doubt: str | None = None  # why its pixels may not be this frame's
        self.several = False  # several frames' scalars came after its ArrayData
        # None: not posted with this frame (an IOC posts a value only when it changes,
        # e.g. EpicsTSSec_RBV once a second): the last value posted is this frame's too
        self.timestamp = None
        self.sec = None
        self.nsec = None
        self.received = time.monotonic()
        self.updated = 0.0  # when its last scalar came


def same_pixels(a, b) -> bool:
    """Two ArrayData updates with the same pixels (a sample first: cheap when not)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        return False
    step = max(a.size // 1024, 1)
    return bool(np.array_equal(a[::step], b[::step]) and np.array_equal(a, b))


def posted(value, meta: dict, suffix: str):
    """A frame's scalar: posted with it, else the last value posted (unchanged since)."""
    if value is None:
        value = meta.get(suffix)
    return value or 0


class FramePairing:
    """The frame being assembled; not thread-safe (the source holds its lock)."""

    FINISH_AFTER = 0.05  # s after its last scalar, a frame with no ArrayData after it is done
    # ... or after this long if its EpicsTSNsec_RBV (the last scalar posted) has not come:
    # on a busy machine the rest of a frame's scalars (NDimensions_RBV of a first frame)
    # can come later than 50 ms
    INCOMPLETE_AFTER = 0.5
    LAG_WINDOW = 2.0  # s after a lost or unused frame during which same pixels are doubted

    def __init__(self):
        self.pending: Pending | None = None
        self._last_counter = None
        # Frames were lost or not used lately: the link lags, and an array may then be
        # read after the next frame replaced it; consecutive updates with the same
        # pixels are doubted then (only then: a detector may send identical frames)
        self._lagging_until = float("-inf")

    def reset(self) -> None:
        self.pending = None

    def lagging(self) -> None:
        """A frame was lost or not used."""
        self._lagging_until = time.monotonic() + self.LAG_WINDOW

    def array(self, data) -> Pending | None:
        """An ArrayData update: starts a frame; returns the previous one, finished."""
        pending = self.pending
        if pending is not None and pending.doubt is None and \
                time.monotonic() < self._lagging_until and same_pixels(pending.data, data):
            # RSRV read the previous update's array after this frame had replaced it
            # (the server was blocked sending to us: a client that lags)
            pending.doubt = "the next ArrayData update had the same pixels"
        done = self.take(last=False)
        self.pending = Pending(data)
        return done

    def scalar(self, suffix: str, value) -> None:
        """One of the scalars posted after ArrayData."""
        if suffix == "ArrayCounter_RBV":
            self._counter(value)
            return
        pending = self.pending
        if pending is None:
            return
        if suffix == "UniqueId_RBV":
            if pending.uid is not None:
                # RSRV sent one ArrayData update for several frames (an array is read
                # when sent, the scalars were queued): see take().  It follows the
                # newest frame's scalars.
                pending.several = True
            pending.uid = value
        elif pending.uid is None:
            return
        elif suffix == "TimeStamp_RBV":
            pending.timestamp = value
        elif suffix == "EpicsTSSec_RBV":
            pending.sec = value
        elif suffix == "EpicsTSNsec_RBV":
            pending.nsec = value
        else:
            return
        # Not finished at its last scalar: another frame's scalars may follow before the
        # next ArrayData (then its pixels are not for sure this frame's)
        pending.updated = time.monotonic()

    def _counter(self, value) -> None:
        """The image plugin's ArrayCounter_RBV goes up by one for every frame it posts,
        whatever the UniqueIds do: a jump means updates were lost on the way (RSRV
        replaces queued updates for a lagging client), and then the scalars that follow
        an ArrayData update need not be its frame's."""
        previous, self._last_counter = self._last_counter, value
        pending = self.pending
        if pending is None:
            return
        if pending.counter is not None:
            pending.several = True
        pending.counter = value
        pending.updated = time.monotonic()
        if previous is not None and value != previous + 1 and pending.doubt is None:
            pending.doubt = (f"the image plugin's ArrayCounter_RBV went {previous} -> {value}: "
                             "updates were lost on the way")

    def quiet(self) -> Pending | None:
        """The frame, finished, if the source has been quiet since its last scalar."""
        p = self.pending
        if p is None or p.uid is None:
            return None
        wait = self.FINISH_AFTER if p.nsec is not None else self.INCOMPLETE_AFTER
        if time.monotonic() - p.updated > wait:
            return self.take(last=True)
        return None

    def take(self, last: bool) -> Pending | None:
        """The frame, its doubt decided.  ``last``: no ArrayData update came after it
        (the source has gone quiet)."""
        pending, self.pending = self.pending, None
        if pending is None:
            return None
        if pending.several and not last and pending.doubt is None:
            # The array was read when sent: by then it held the newest frame posted, and
            # a frame posted after that would have queued another array update, here
            # the next one.  With none after it (the source went quiet) the pixels are
            # the last frame's; with one, they may be any of them, or the next's.
            pending.doubt = "several frames' scalars followed one ArrayData update"
        if pending.doubt is None and pending.uid is not None and pending.counter is None:
            pending.doubt = "its ArrayCounter_RBV update never came"
        return pending


def build_frame(pending: Pending, meta: dict, on_error: Callable[[str], None],
                allocate: Callable[[int], np.ndarray | None] | None = None) -> NDArray | None:
    """The NDArray of a frame: the waveform cut to the elements its dimensions need,
    reinterpreted as DataType_RBV, little-endian, reshaped, ColorMode attached (as the
    driver does).  ``allocate(nbytes)`` gives a writable buffer for the pixels (the
    receiver process's shared-memory slots), or None for new memory."""
    ndims = int(meta.get("NDimensions_RBV") or 0)
    dims = [int(meta.get(f"ArraySize{i}_RBV") or 0) for i in range(min(ndims, 3))]
    if ndims < 1 or ndims > 3 or any(d <= 0 for d in dims):
        on_error(f"frame {pending.uid}: invalid dimensions {dims} (NDimensions={ndims})")
        return None
    count = int(np.prod(dims))
    raw = np.asarray(pending.data)
    if raw.size < count:
        on_error(f"frame {pending.uid}: ArrayData holds {raw.size} elements, "
                 f"its dimensions {dims} need {count}; frame rejected")
        return None
    try:
        target = NDDataType(int(meta.get("DataType_RBV") or 0)).numpy
    except ValueError:
        target = raw.dtype.newbyteorder("<")
    # Exactly one copy: little-endian (caproto's client hands out big-endian views of
    # its receive buffer, which must not stay pinned by a queued frame).
    wire = raw.dtype.newbyteorder("<")
    reinterpret = wire.itemsize == target.itemsize and wire.kind in "iu" and target.kind in "iu"
    stored = wire if reinterpret else target  # e.g. SHORT carrying UInt16: copy, then view
    out = allocate(count * stored.itemsize) if allocate is not None else None
    if out is None:
        data = np.array(raw[:count], dtype=stored)
    else:
        data = out.view(stored)
        np.copyto(data, raw[:count], casting="unsafe")
    data = data.view(target).reshape(tuple(reversed(dims)))
    color = int(meta.get("ColorMode_RBV") or 0)
    attrs = {"ColorMode": NDAttribute("ColorMode", color, NDAttrType.Int32, "Color mode",
                                      "Driver", NDAttrSource.DRIVER)}
    return NDArray(data=data, unique_id=int(pending.uid or 0),
                   timestamp=float(posted(pending.timestamp, meta, "TimeStamp_RBV")),
                   epics_ts_sec=int(posted(pending.sec, meta, "EpicsTSSec_RBV")),
                   epics_ts_nsec=int(posted(pending.nsec, meta, "EpicsTSNsec_RBV")),
                   attributes=attrs)


__all__ = ["FramePairing", "Pending", "build_frame", "posted", "same_pixels"]
