"""Helpers shared by the unit tests: frames with checkable pixels, attributes."""

from __future__ import annotations

from pathlib import Path

import numpy as np

TESTS = Path(__file__).parent
DATA = TESTS / "data"

from ioc.ndarray import NDArray, NDAttribute, NDAttrSource, NDAttrType  # noqa: E402


def make_frame(uid: int, shape=(4, 5), dtype="u2", attrs=(), **kw) -> NDArray:
    """A frame whose pixels encode its id: ramp + uid (checkable after reading back)."""
    data = (np.arange(int(np.prod(shape))).reshape(shape) + uid).astype(dtype)
    return NDArray(data=data, unique_id=uid, timestamp=1000.0 + uid, epics_ts_sec=10 + uid,
                   epics_ts_nsec=uid * 1000, attributes={a.name: a for a in attrs}, **kw)


def attr(name, value, dtype=NDAttrType.Float64, source_type=NDAttrSource.PARAM,
         description="", source="") -> NDAttribute:
    return NDAttribute(name, value, dtype, description, source or name.upper(), source_type)
