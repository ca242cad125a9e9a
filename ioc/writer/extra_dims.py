"""Scan-shaped files: NDFileHDF5's extra dimensions, PositionMode and DimAttDatasets.

Pure geometry (no h5py), shared by the writer and ``check-layout``'s dry run.

ADCore's rules (``NDFileHDF5::configureDims``, ``configureDatasetDims``, ``writeFile``,
``calcNumFrames``, ``NDFileHDF5Dataset::extendDataSet``, ``NDFileHDF5AttributeDataset``):

* A multi-frame file has ``NumExtraDims + 1`` leading axes before the frame's own axes,
  outermost first ``[dim k, ..., Y, X, N]``; dim 0 (N, frames per point) varies fastest.
  With NumExtraDims=0 the one leading axis is the frame axis, ``NumCapture`` long
  (0: unlimited).  Single mode has none (NumExtraDims is forced to 0).
* Each extra axis has maxshape = its ExtraDimSize.  Its chunk is ExtraDimChunk clipped to
  [1, size], except the N axis, whose chunk is NumFramesChunks.
* The dataset starts with every leading axis 1 long and grows to the bounding box of the
  positions written.  Frames go to positions N fastest, then X, then Y ... or, with
  PositionMode, to the indices held by the frame's NDAttributes named by PosNameDim*.
* NumCapture is the product of the sizes of dims 0..NumExtraDims.
* DimAttDatasets: NDAttribute datasets get the same leading axes (all unlimited, chunk
  ExtraDimSize each, or NDAttributeChunk, or 32 when NumCapture is 0) plus two trailing
  axes of length 1, as ADCore writes them (its test_AttributeDimensionalDataset expects
  3x4x5 -> (3, 4, 5, 1, 1)); in Single mode (1, 1).  With PositionMode, an NDAttribute
  named by PosIndexDim<d> becomes a 1-D dataset indexed by dim d's position.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod

from ..ndarray import NDAttribute, NDAttrType

__all__ = ["DIM_NAMES", "MAX_EXTRA_DIMS", "AxesPlan", "ExtraDims", "FramePlacement", "Placer",
           "PositionError",
           "num_capture_for"]

DIM_NAMES = ("N", "X", "Y", "3", "4", "5", "6", "7", "8", "9")  # PV suffixes, dim 0 first
MAX_EXTRA_DIMS = len(DIM_NAMES) - 1  # NumExtraDims range 0..9
MAX_FRAMES = 2**31 - 1  # NumCapture is an Int32: the extra dimensions may not hold more
ATTRIBUTE_TAIL = (1, 1)  # the two length-1 axes ADCore gives DimAttDatasets datasets
ATTRIBUTE_CHUNK_BYTES = 1 << 20  # cap on a DimAttDatasets chunk (see attribute_chunks)


class PositionError(ValueError):
    """A frame cannot be placed: its position attribute is missing, not an index, or
    outside the extra dimensions.  ADCore aborts the file; so does the saver."""


def num_capture_for(num_extra_dims: int, sizes: tuple[int, ...]) -> int:
    """``calcNumFrames``: the product of ExtraDimSize of dims 0..NumExtraDims."""
    return prod(int(s) for s in sizes[: num_extra_dims + 1])


@dataclass(frozen=True)
class ExtraDims:
    """The extra-dimension PVs as they stand when a file is opened (one snapshot per file)."""

    num_extra_dims: int = 0
    sizes: tuple[int, ...] = (1,) * len(DIM_NAMES)  # ExtraDimSizeN, X, Y, 3..9
    chunks: tuple[int, ...] = (0,) * len(DIM_NAMES)  # ExtraDimChunkN (no PV), X, Y, 3..9
    position_mode: bool = False  # PositionMode
    pos_names: tuple[str, ...] = ("",) * len(DIM_NAMES)  # PosNameDimN..9
    pos_index: tuple[str, ...] = ("",) * len(DIM_NAMES)  # PosIndexDimN..9
    dim_att_datasets: bool = False  # DimAttDatasets

    def __post_init__(self) -> None:
        if not 0 <= self.num_extra_dims <= MAX_EXTRA_DIMS:
            raise ValueError(f"NumExtraDims {self.num_extra_dims} is outside 0-{MAX_EXTRA_DIMS}")

    @property
    def dims(self) -> tuple[int, ...]:
        """The dim index of each leading axis, outermost first (k, ..., 1, 0)."""
        return tuple(range(self.num_extra_dims, -1, -1))

    def num_capture(self) -> int:
        """The NumCapture these settings give (when NumExtraDims > 0)."""
        return num_capture_for(self.num_extra_dims, self.sizes)

    def size(self, dim: int) -> int:
        return max(int(self.sizes[dim]), 1)

    def plan(self, num_capture: int, frames_chunk: int) -> AxesPlan:
        """The leading axes of a multi-frame detector dataset."""
        k = self.num_extra_dims
        if k == 0:
            limit = num_capture if num_capture > 0 else None
            chunk = max(frames_chunk, 1)
            if limit is not None:
                chunk = min(chunk, limit)  # ADCore's H5Dcreate would fail; we clip
            # PositionMode with NumExtraDims=0: the index must also fit ExtraDimSizeN
            # (ADCore's virtual size of the one axis).
            bound = self.size(0) if limit is None else min(self.size(0), limit)
            return AxesPlan(dims=(0,), maxshape=(limit,), chunks=(chunk,),
                            sequential_limits=(limit,), position_limits=(bound,))
        sizes = tuple(self.size(d) for d in self.dims)
        chunks = []
        for d, size in zip(self.dims, sizes, strict=True):
            want = frames_chunk if d == 0 else int(self.chunks[d])
            chunks.append(min(max(want, 1), size))
        return AxesPlan(dims=self.dims, maxshape=sizes, chunks=tuple(chunks),
                        sequential_limits=sizes, position_limits=sizes)

    def attribute_chunks(self, num_capture: int, ndattribute_chunk: int,
                         itemsize: int = 8) -> tuple[int, ...]:
        """Chunk of each leading axis of a DimAttDatasets dataset.

        ADCore (``calculateAttributeChunking``): NDAttributeChunk on every axis, else 32 on
        every axis when NumCapture is 0, else each axis's ExtraDimSize.  A whole scan in one
        chunk (or 32**k values) can be far more than a chunk should hold, or than HDF5
        allows (2**32 values): chunks are capped at ATTRIBUTE_CHUNK_BYTES, shrinking the
        outer axes first."""
        if ndattribute_chunk > 0:
            chunks = [ndattribute_chunk for _ in self.dims]
        elif num_capture <= 0:
            chunks = [32 for _ in self.dims]
        else:
            chunks = [int(self.sizes[d]) if int(self.sizes[d]) > 0 else 32 for d in self.dims]
        for axis in range(len(chunks)):
            excess = -(-prod(chunks) * itemsize // ATTRIBUTE_CHUNK_BYTES)  # ceil
            if excess <= 1:
                break
            chunks[axis] = max(1, chunks[axis] // excess)
        return tuple(chunks)

    def index_dim(self, attribute_name: str) -> int | None:
        """The dim whose 1-D index dataset this NDAttribute feeds (PosIndexDim<d>), if any.

        ADCore: the last PosIndexDim naming it wins; only with PositionMode and
        DimAttDatasets; a PosIndexDim beyond NumExtraDims is not used (ADCore would read
        outside its offsets array)."""
        if not (self.position_mode and self.dim_att_datasets) or not attribute_name:
            return None
        found = None
        for d, name in enumerate(self.pos_index):
            if name == attribute_name and d <= self.num_extra_dims:
                found = d
        return found

    def unused_index_names(self) -> list[str]:
        """Warnings for PosIndexDim settings beyond NumExtraDims (no index dataset)."""
        if not (self.position_mode and self.dim_att_datasets):
            return []
        return [f"PosIndexDim{DIM_NAMES[d]}={name!r} is beyond NumExtraDims "
                f"{self.num_extra_dims}: no index dataset"
                for d, name in enumerate(self.pos_index) if name and d > self.num_extra_dims]

    def labels(self, attributes: dict[str, NDAttribute], frame_id: int,
               plan: AxesPlan) -> tuple[int, ...]:
        """PositionMode: the frame's position, outermost axis first (``findPositionIndex``).

        The attribute must be on the frame and hold a non-negative integer index inside
        the dim's size; anything else raises PositionError, which aborts the file."""
        offsets = []
        # ADCore looks the labels up N first (PosNameDimN, X, Y, ...): the error names the
        # first one missing in that order.
        for d, limit in reversed(tuple(zip(plan.dims, plan.position_limits, strict=True))):
            name = self.pos_names[d]
            label = f"PosNameDim{DIM_NAMES[d]}"
            if not name:
                raise PositionError(f"PositionMode is on but {label} is empty: frame "
                                    f"{frame_id} cannot be placed")
            attribute = attributes.get(name)
            if attribute is None:
                raise PositionError(f"frame {frame_id} has no NDAttribute {name!r} "
                                    f"({label}) for its position")
            index = _as_index(attribute)
            if index is None:
                raise PositionError(f"frame {frame_id}: NDAttribute {name!r} ({label}) = "
                                    f"{attribute.value!r} is not a position index")
            if limit is not None and index >= limit:
                raise PositionError(f"frame {frame_id}: NDAttribute {name!r} ({label}) = "
                                    f"{index} is outside ExtraDimSize{DIM_NAMES[d]} = {limit}")
            offsets.append(index)
        return tuple(reversed(offsets))


def _as_index(attribute: NDAttribute) -> int | None:
    """ADCore reads the attribute as Int32 (numbers converted, C truncation); -1 or
    anything not numeric is 'not found'."""
    if attribute.dtype in (NDAttrType.String, NDAttrType.Undefined) or attribute.value is None:
        return None
    try:
        value = float(attribute.value)
    except (TypeError, ValueError):
        return None
    if value != value or value < 0 or value >= 2**31:  # NaN, negative, beyond Int32
        return None
    return int(value)


@dataclass(frozen=True)
class AxesPlan:
    """The leading axes of one multi-frame dataset, outermost first."""

    dims: tuple[int, ...]  # ADCore dim index of each axis (k .. 0)
    maxshape: tuple[int | None, ...]
    chunks: tuple[int, ...]
    sequential_limits: tuple[int | None, ...]  # positions each axis holds (None: unbounded)
    position_limits: tuple[int | None, ...]  # what PositionMode indices must stay below

    @property
    def rank(self) -> int:
        return len(self.dims)

    @property
    def capacity(self) -> int | None:
        """How many positions the axes hold (None: unbounded)."""
        if any(limit is None for limit in self.sequential_limits):
            return None
        return prod(self.sequential_limits)


class Placer:
    """Where each frame of one dataset goes, and how far the dataset has grown."""

    def __init__(self, plan: AxesPlan):
        self.plan = plan
        # ADCore starts every leading axis at 1 (a fill-value frame in an empty file): 0 here
        self.extent = [0] * plan.rank
        self.count = 0

    def next_sequential(self, frame_id: int) -> tuple[int, ...]:
        """The next position in N-fastest order (``extendDataSet`` without offsets)."""
        remaining = self.count
        offsets = [0] * self.plan.rank
        for axis in range(self.plan.rank - 1, -1, -1):
            limit = self.plan.sequential_limits[axis]
            if limit is None:
                offsets[axis] = remaining
                remaining = 0
            else:
                offsets[axis] = remaining % limit
                remaining //= limit
        if remaining:
            # ADCore wraps to the start and overwrites the first frames: refused here.
            raise PositionError(f"frame {frame_id}: the extra dimensions hold "
                                f"{self.plan.capacity} frames; this one does not fit")
        return tuple(offsets)

    def take(self, offsets: tuple[int, ...]) -> bool:
        """Record a frame at ``offsets``; True when the dataset must grow."""
        self.count += 1
        grown = False
        for axis, offset in enumerate(offsets):
            if offset + 1 > self.extent[axis]:
                self.extent[axis] = offset + 1
                grown = True
        return grown


class FramePlacement:
    """Where the frames of one multi-frame file go: a Placer per detector dataset.

    PositionMode places the frames of the default detector dataset by their labels; frames
    routed elsewhere (``detector_data_destination``) go in arrival order, as in ADCore."""

    def __init__(self, dims: ExtraDims, plan: AxesPlan, default_path: str):
        self.dims = dims
        self.plan = plan
        self.default_path = default_path
        self._placers: dict[str, Placer] = {}

    def placer(self, path: str) -> Placer:
        if path not in self._placers:
            self._placers[path] = Placer(self.plan)
        return self._placers[path]

    def locate(self, path: str, frame_id: int,
               attributes: dict[str, NDAttribute]) -> tuple[int, ...]:
        """The frame's position (raises PositionError; nothing is recorded then)."""
        if self.dims.position_mode and path == self.default_path:
            return self.dims.labels(attributes, frame_id, self.plan)
        return self.placer(path).next_sequential(frame_id)

    def take(self, path: str, offsets: tuple[int, ...]) -> bool:
        """Record a frame written at ``offsets``; True when the dataset must grow."""
        return self.placer(path).take(offsets)

    def extent(self, path: str) -> tuple[int, ...]:
        return tuple(self.placer(path).extent)

    def rewind(self, path: str, count: int) -> None:
        """A sequential stream (one leading axis) holds only its first ``count`` frames."""
        placer = self.placer(path)
        placer.count = count
        placer.extent = [count]
