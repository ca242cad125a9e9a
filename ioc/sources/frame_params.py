"""Driver parameters that describe one frame, taken from the frame itself.

Inside the detector IOC a PARAM attribute is read from the driver's parameter library
when the driver attaches attributes to the frame it has just made: ARRAY_COUNTER and
UNIQUE_ID are that frame's, TIME_STAMP its time.  Over Channel Access the driver's PVs
arrive on their own monitors and may already describe a later frame when the frame is
rebuilt (under CPU load ARRAY_COUNTER of frame N read N+1), so these values are taken
from the frame's own id, timestamps, dimensions and type instead.
"""

from __future__ import annotations

from collections.abc import Callable

from ..ndarray import NDArray

# ColorMode -> the NDArray dimension holding X, Y and the colour (None: no colour axis).
_AXES = {2: (1, 2, 0), 3: (0, 2, 1), 4: (0, 1, 2)}  # RGB1, RGB2, RGB3


def _color(frame: NDArray) -> int:
    attribute = frame.attributes.get("ColorMode")
    return int(attribute.value) if attribute is not None and attribute.defined else 0


def _size(frame: NDArray, axis: int) -> int:
    """ADCore's NDArraySizeX/Y/Z of the frame (axis 0, 1, 2)."""
    dims = frame.dims
    if len(dims) == 3:
        index = _AXES.get(_color(frame), (0, 1, 2))[axis]
        return int(dims[index])
    if axis < len(dims):
        return int(dims[axis])
    return 0


# asyn drvInfo (asynNDArrayDriver.h) -> the value for this frame.
FRAME_PARAMS: dict[str, Callable[[NDArray], int | float]] = {
    "UNIQUE_ID": lambda f: int(f.unique_id),
    # ADDriver drivers number their frames with the array counter (uniqueId = counter)
    "ARRAY_COUNTER": lambda f: int(f.unique_id),
    "TIME_STAMP": lambda f: float(f.timestamp),
    "EPICS_TS_SEC": lambda f: int(f.epics_ts_sec),
    "EPICS_TS_NSEC": lambda f: int(f.epics_ts_nsec),
    "ARRAY_SIZE_X": lambda f: _size(f, 0),
    "ARRAY_SIZE_Y": lambda f: _size(f, 1),
    "ARRAY_SIZE_Z": lambda f: _size(f, 2),
    "ARRAY_SIZE": lambda f: int(f.nbytes),
    "ARRAY_NDIMENSIONS": lambda f: len(f.dims),
    "DATA_TYPE": lambda f: int(f.data_type),
    "COLOR_MODE": _color,
}


__all__ = ["FRAME_PARAMS"]
