"""What every transport shares: source names, UniqueId bookkeeping, and the frame
message that carries an NDArray from the receiver process to the IOC.

A source is named ``ca://PREFIX`` (an NDStdArrays plugin: ``PREFIX`` + ``ArrayData``
...), ``pva://PVNAME`` (an NDPluginPva NTNDArray) or just ``PREFIX`` (Channel Access, as
before).  Both transports rebuild an ``NDArray`` whose pixels (or compressed bytes) lie in
a buffer from ``allocate``; ``frame_message`` describes it (picklable, small) and
``frame_from_message`` rebuilds it around the shared-memory slot on the IOC's side.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import numpy as np

from ..ndarray import Codec, NDArray, NDAttribute, NDAttrSource, NDAttrType, placeholder

log = logging.getLogger(__name__)

TRANSPORTS = ("ca", "pva")


def parse_source(spec: str) -> tuple[str, str]:
    """``"pva://13SIM1:Pva1:Image"`` -> ("pva", "13SIM1:Pva1:Image"); no scheme is CA."""
    spec = spec.strip()
    scheme, sep, rest = spec.partition("://")
    if not sep:
        return "ca", spec
    scheme = scheme.lower()
    if scheme not in TRANSPORTS:
        raise ValueError(f"unknown source transport {scheme!r} in {spec!r} "
                         f"(expected ca:// or pva://)")
    return scheme, rest


class UniqueIdTracker:
    """Duplicates and gaps in the UniqueIds a source delivers (SourceDuplicates_RBV,
    SourceSkipped_RBV).  A smaller id than the last is a restarted detector: it counts
    from 1 again and is not a gap."""

    def __init__(self, on_status: Callable[[dict], None], gaps: bool = True):
        self.on_status = on_status
        self.gaps = gaps  # False for a distributor's share: the others' frames are no gap
        self.last_uid: int | None = None
        self.skipped = 0
        self.duplicates = 0

    def reset(self) -> None:
        self.last_uid = None

    def track(self, uid: int) -> bool:
        """False for a duplicate (to be ignored)."""
        if self.last_uid is not None:
            if uid == self.last_uid:
                self.duplicates += 1
                self.on_status({"duplicates": self.duplicates})
                return False
            if uid > self.last_uid + 1 and self.gaps:
                log.warning("frames %d..%d never arrived", self.last_uid + 1, uid - 1)
                self.skipped += uid - self.last_uid - 1
                self.on_status({"skipped": self.skipped})
        self.last_uid = uid
        return True


# -- attributes as plain tuples (cheap to pickle) ------------------------------------------

_SOURCES = tuple(NDAttrSource)
_SOURCE_INDEX = {s: i for i, s in enumerate(_SOURCES)}


def attribute_tuple(a: NDAttribute) -> tuple:
    return (a.name, a.value, int(a.dtype), a.description, a.source, _SOURCE_INDEX[a.source_type])


def attribute_from_tuple(t: tuple) -> NDAttribute:
    name, value, dtype, description, source, source_type = t
    return NDAttribute(name, value, NDAttrType(dtype), description, source, _SOURCES[source_type])


# -- the frame message ---------------------------------------------------------------------

def frame_message(frame: NDArray) -> tuple:
    """Everything about ``frame`` but its pixels (they are in the slot)."""
    return (frame.data.dtype.str, frame.data.shape, frame.unique_id, frame.timestamp,
            frame.epics_ts_sec, frame.epics_ts_nsec,
            [attribute_tuple(a) for a in frame.attributes.values()],
            frame.offset, frame.binning, frame.reverse,
            frame.codec.name if frame.codec is not None else "",
            frame.codec.compressed_size if frame.codec is not None else 0)


def frame_from_message(buffer, message: tuple) -> tuple[NDArray, np.ndarray]:
    """The NDArray of a message whose pixels are in ``buffer`` (read-only), and the base
    array viewing the buffer (whose lifetime is the slot's)."""
    (dtype, shape, uid, timestamp, sec, nsec, attributes, offset, binning, reverse,
     codec, compressed) = message
    dtype = np.dtype(dtype)
    if codec:
        base = np.frombuffer(buffer, dtype=np.uint8, count=compressed)
        base.flags.writeable = False
        data, codec_ = placeholder(shape, dtype), Codec(codec, base)
    else:
        base = np.frombuffer(buffer, dtype=dtype, count=math.prod(shape))
        base.flags.writeable = False  # the mapping is read-only
        data, codec_ = base.reshape(shape), None
    attrs = {t[0]: attribute_from_tuple(t) for t in attributes}
    frame = NDArray(data=data, unique_id=uid, timestamp=timestamp, epics_ts_sec=sec,
                    epics_ts_nsec=nsec, attributes=attrs, offset=offset, binning=binning,
                    reverse=reverse, codec=codec_)
    return frame, base
