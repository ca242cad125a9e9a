"""NDAttribute datasets shaped like the scan: DimAttDatasets and PosIndexDim index datasets.

The geometry is ``extra_dims``'s; this module owns the h5py side.  Values are kept and
written in batches with one point selection per batch (frames of a PositionMode scan may
land anywhere, in any order), so a value costs one HDF5 call per BATCH frames, not one.
"""

from __future__ import annotations

import h5py
import numpy as np

from ..layout.model import Placement, When
from ..ndarray import ATTRIBUTE_STRING_SIZE, NDAttribute, NDAttrType
from .extra_dims import ATTRIBUTE_TAIL
from .attribute_datasets import _c_string_type, attribute_array, create_attribute_dataset

__all__ = ["ScanAttributeDataset"]


class ScanAttributeDataset:
    """One NDAttribute dataset placed by position instead of appended.

    ``leading`` gives the chunk of each leading axis (outermost first) of a DimAttDatasets
    dataset, which then ends in ADCore's two length-1 axes; ``()`` in Single mode gives
    ADCore's (1, 1).  ``index_axis`` makes a 1-D PosIndexDim dataset fed by that axis's
    position instead (``chunk`` is then its 1-D chunk)."""

    BATCH = 64

    def __init__(self, group: h5py.Group, placement: Placement, attribute: NDAttribute, *,
                 leading: tuple[int, ...] = (), index_axis: int | None = None, chunk: int = 1,
                 multi_frame: bool = True):
        self.name = attribute.name
        self.path = placement.path
        self.when = placement.when
        self.dtype = attribute.dtype
        self.index_axis = index_axis
        self.written = 0
        self._pending: list[tuple[tuple[int, ...], np.ndarray]] = []
        if index_axis is not None:
            shape, maxshape, chunks = (1,), (None,), (max(chunk, 1),)
        elif multi_frame:
            shape = (1,) * len(leading) + ATTRIBUTE_TAIL
            maxshape = (None,) * len(leading) + ATTRIBUTE_TAIL
            chunks = tuple(max(c, 1) for c in leading) + ATTRIBUTE_TAIL
        else:
            shape = maxshape = chunks = ATTRIBUTE_TAIL
        self.extent = list(shape)
        self._maxshape = maxshape
        self.ds = create_attribute_dataset(group, placement, attribute, shape, maxshape, chunks)
        self.layout_attributes = placement.dataset.attributes if placement.dataset else ()

    def append(self, attribute: NDAttribute, offsets: tuple[int, ...] | None = None) -> None:
        """Keep the frame's value for its position (``offsets``: the frame's position on
        the leading axes; None for values written once, at open or close)."""
        value = attribute_array(self.dtype, attribute)
        if value is None:
            return
        self._pending.append((self._coordinates(offsets), value))
        if len(self._pending) >= self.BATCH:
            self.flush()

    def _coordinates(self, offsets: tuple[int, ...] | None) -> tuple[int, ...]:
        rank = len(self.extent)
        if offsets is None or self.when is not When.FRAME:
            return (0,) * rank
        if self.index_axis is not None:
            return (offsets[self.index_axis],)
        return tuple(offsets) + (0,) * (rank - len(offsets))

    @property
    def count(self) -> int:
        return self.written + len(self._pending)

    def flush(self) -> None:
        """Write the values kept so far: grow to hold them, then one point selection."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        grown = False
        for coordinates, _ in pending:
            for axis, c in enumerate(coordinates):
                if c + 1 > self.extent[axis]:
                    self.extent[axis] = c + 1
                    grown = True
        if grown:
            self.ds.resize(tuple(self.extent))
        # The last value for a position wins (a rewound scan overwrites, as in ADCore).
        latest = dict(pending)
        coordinates = np.asarray(list(latest), dtype=np.uint64)
        values = np.stack(list(latest.values()))
        fspace = self.ds.id.get_space()
        fspace.select_elements(coordinates)
        mspace = h5py.h5s.create_simple((len(values),))
        mtype = (_c_string_type(ATTRIBUTE_STRING_SIZE) if self.dtype is NDAttrType.String
                 else None)
        self.ds.id.write(mspace, fspace, values, mtype=mtype)
        self.written += len(pending)
