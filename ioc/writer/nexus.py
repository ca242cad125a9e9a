"""Layout model + frames -> a NeXus HDF5 file.  h5py, no EPICS.

``NexusWriter(path, layout, first_frame, options)`` opens a file and builds
the tree the layout describes, the way ADCore's NDFileHDF5 does at open
(reference §2.4-2.9, §3.2-3.4); ``write(frame)`` appends one frame;
``close()`` writes the OnFileClose values, the performance dataset and
closes.  Single mode (``multi_frame=False``) gives one image per file with no
frame axis.
"""

from __future__ import annotations

import datetime
import enum
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from .. import __version__
from ..layout.model import Attribute, Dataset, Group, Layout, Placement, When, parse_constant
from ..ndarray import (
    ATTRIBUTE_STRING_SIZE,
    NDArray,
    NDAttribute,
    NDAttrType,
    file_attribute_list,
)
from . import _direct_io, _write_behind, codecs
from ._in_flight import FramesInFlight
from .extra_dims import ExtraDims, FramePlacement
from .recovery import describe_error, release

__all__ = [
    "BLOSC_COMPRESSORS", "BLOSC_SHUFFLES", "COMPRESSION_LABELS", "Compression",
    "CompressionUnavailable", "FrameMismatch", "NexusWriter", "WriterError", "WriterOptions",
    "available_compressions", "effective_chunks", "write_single",
]


class Compression(enum.IntEnum):
    """The Compression PV's values, in ADCore's order."""

    NONE = 0
    NBIT = 1
    SZIP = 2
    ZLIB = 3
    BLOSC = 4
    BSLZ4 = 5
    LZ4 = 6
    JPEG = 7


COMPRESSION_LABELS = ("None", "N-bit", "szip", "zlib", "Blosc", "BSLZ4", "LZ4", "JPEG")
BLOSC_COMPRESSORS = ("BloscLZ", "LZ4", "LZ4HC", "SNAPPY", "ZLIB", "ZSTD")
BLOSC_SHUFFLES = ("None", "Byte", "Bit")


class WriterError(RuntimeError):
    """The file could not be opened, written or closed as asked."""


class CompressionUnavailable(WriterError):
    pass


class FrameMismatch(WriterError):
    """A frame whose shape or type differs from the frame the file was opened with."""


@dataclass(frozen=True)
class WriterOptions:
    """What the NDFileHDF5 PVs say about the file to write."""

    multi_frame: bool = False  # False: Single mode, no frame axis
    num_capture: int = 1  # frame-axis maxshape; 0 = unlimited
    store_attributes: bool = True  # StoreAttr
    store_performance: bool = True  # StorePerform
    compression: Compression = Compression.NONE
    zlevel: int = 6
    szip_pixels: int = 16
    blosc_compressor: int = 0  # index into BLOSC_COMPRESSORS
    blosc_shuffle: int = 1  # index into BLOSC_SHUFFLES
    blosc_level: int = 5
    chunk_size_auto: bool = True
    chunks: tuple[int, ...] = ()  # per NDArray dim: NumColChunks, NumRowChunks, ChunkSize2..
    frames_chunks: int = 1  # NumFramesChunks
    fill_value: float = 0.0
    boundary_align: int = 0  # BoundaryAlign (bytes; 0: HDF5's default placement)
    boundary_threshold: int = 65536  # BoundaryThreshold: objects this large are aligned
    ndattribute_chunk: int = 0  # NDAttributeChunk; 0 = automatic
    swmr: bool = False
    flush_every: int = 0  # NumFramesFlush (SWMR)
    extra_dims: ExtraDims = ExtraDims()  # NumExtraDims, ExtraDim*, PositionMode, Pos*, DimAtt
    hostname: str = socket.gethostname()
    creator: str = f"nexus-writer-ioc {__version__}"


# -- compression -------------------------------------------------------------

def _szip_encodes() -> bool:
    try:
        info = h5py.h5z.get_filter_info(h5py.h5z.FILTER_SZIP)
    except Exception:  # noqa: BLE001 - filter not compiled in at all
        return False
    return bool(info & h5py.h5z.FILTER_CONFIG_ENCODE_ENABLED)


def available_compressions() -> set[Compression]:
    available = {Compression.NONE, Compression.ZLIB}
    if _szip_encodes():
        available.add(Compression.SZIP)
    try:
        import hdf5plugin  # noqa: F401  (registers Blosc, Bitshuffle, LZ4 with HDF5)

        available |= {Compression.BLOSC, Compression.BSLZ4, Compression.LZ4}
    except ImportError:
        pass
    return available


def compression_kwargs(options: WriterOptions, dtype: np.dtype) -> dict:
    """h5py ``create_dataset`` keywords for the Compression PVs, or raise."""
    kind = Compression(options.compression)
    if kind not in available_compressions():
        raise CompressionUnavailable(
            f"Compression {COMPRESSION_LABELS[kind]} is not available in this writer "
            f"(available: {', '.join(COMPRESSION_LABELS[c] for c in sorted(available_compressions()))})"
        )
    if kind is Compression.NONE:
        return {}
    if kind is Compression.ZLIB:
        return {"compression": "gzip", "compression_opts": int(min(max(options.zlevel, 0), 9))}
    if kind is Compression.SZIP:
        pixels = int(options.szip_pixels) if options.szip_pixels % 2 == 0 else 16
        return {"compression": "szip", "compression_opts": ("nn", min(max(pixels, 2), 32))}
    import hdf5plugin

    if kind is Compression.LZ4:
        return dict(hdf5plugin.LZ4())
    if kind is Compression.BSLZ4:
        return dict(hdf5plugin.Bitshuffle(cname="lz4"))
    cname = BLOSC_COMPRESSORS[options.blosc_compressor].lower()
    shuffle = (hdf5plugin.Blosc.NOSHUFFLE, hdf5plugin.Blosc.SHUFFLE,
               hdf5plugin.Blosc.BITSHUFFLE)[options.blosc_shuffle]
    return dict(hdf5plugin.Blosc(cname=cname, clevel=int(min(max(options.blosc_level, 0), 9)),
                                 shuffle=shuffle))


def effective_chunks(dims: tuple[int, ...], options: WriterOptions) -> tuple[int, ...]:
    """Chunk size per NDArray dim (fastest first), as ADCore computes it at open:
    the user's value clipped to the dim, or the whole dim when ChunkSizeAuto is
    on or the value is < 1."""
    result = []
    for i, size in enumerate(dims):
        want = options.chunks[i] if i < len(options.chunks) else 0
        if options.chunk_size_auto or want < 1:
            result.append(size)
        else:
            result.append(min(want, size))
    return tuple(result)


# HDF5 refuses chunks of 4 GiB or more; a chunk is also a buffer the library allocates.
MAX_CHUNK_BYTES = 2**32 - 1
# Automatic NDAttribute chunks: at most this many bytes, so that a file holds what it
# records (ADCore's chunk of NumCapture or 16384 values is allocated whole: 4 MiB per
# string attribute per file, ADCore#603).  Fewer when fewer frames are expected.
ATTRIBUTE_CHUNK_BYTES = 16 * 1024
MAX_ATTRIBUTE_CHUNK = 65536  # NDAttributeChunk's upper bound (values)


def attribute_chunk(options: WriterOptions, itemsize: int) -> int:
    """Chunk length of an NDAttribute dataset: NDAttributeChunk when set (bounded),
    else 1 in Single mode, else the frames expected (NumCapture) up to
    ATTRIBUTE_CHUNK_BYTES of values."""
    if options.ndattribute_chunk > 0:
        return min(options.ndattribute_chunk, MAX_ATTRIBUTE_CHUNK)
    if not options.multi_frame:
        return 1
    most = max(1, ATTRIBUTE_CHUNK_BYTES // max(itemsize, 1))
    return min(options.num_capture, most) if options.num_capture > 0 else most


# -- low-level helpers: fixed-length NUL-terminated strings, as ADCore writes them --

def _c_string_type(size: int) -> h5py.h5t.TypeStringID:
    tid = h5py.h5t.C_S1.copy()
    tid.set_size(max(size, 1))
    tid.set_strpad(h5py.h5t.STR_NULLTERM)
    return tid


def _encode(text: str) -> bytes:
    return text.encode("utf-8", errors="replace")


def set_string_attribute(obj: h5py.HLObject, name: str, text: str) -> None:
    """Scalar fixed-length string holding the text and its NUL: STRSIZE = length + 1,
    NULLTERM, as ADCore >= R3-11 writes them."""
    data = _encode(text)
    if name in obj.attrs:
        del obj.attrs[name]
    tid = _c_string_type(len(data) + 1)
    attr = h5py.h5a.create(obj.id, _encode(name), tid, h5py.h5s.create(h5py.h5s.SCALAR))
    # Memory type = file type: HDF5 copies the bytes (text + NUL) unconverted.
    attr.write(np.array(data, dtype=f"S{len(data) + 1}"), mtype=tid)


def set_value_attribute(obj: h5py.HLObject, name: str, value) -> None:
    if isinstance(value, str):
        set_string_attribute(obj, name, value)
        return
    if name in obj.attrs:
        del obj.attrs[name]
    obj.attrs.create(name, value)


def _constant_value(item: Attribute | Dataset):
    value = parse_constant(item.value, item.type)
    if item.type == "int":
        return np.asarray(value, dtype="<i4")
    if item.type == "float":
        return np.asarray(value, dtype="<f8")
    return value


def _ndattr_value(attribute: NDAttribute):
    """Native numpy scalar of an NDAttribute (strings stay str)."""
    if attribute.dtype is NDAttrType.String:
        return str(attribute.value)
    return np.asarray(attribute.value).astype(attribute.dtype.numpy)[()]


def _join(group: str, name: str) -> str:
    return f"/{name}" if group == "/" else f"{group}/{name}"


# -- NDAttribute datasets ----------------------------------------------------

def create_attribute_dataset(group: h5py.Group, placement: Placement, attribute: NDAttribute,
                             shape: tuple[int, ...], maxshape: tuple, chunks: tuple[int, ...],
                             ) -> h5py.Dataset:
    """The dataset of one NDAttribute, typed and described as ADCore's
    NDFileHDF5AttributeDataset makes it (NDAttrName, NDAttrDescription, NDAttrSourceType,
    NDAttrSource); an undefined type gives ADCore's float32 of NaN, never written."""
    if attribute.dtype is NDAttrType.Undefined:
        ds = group.create_dataset(placement.name, shape=shape, maxshape=maxshape,
                                  chunks=chunks, dtype="<f4", fillvalue=np.nan)
    elif attribute.dtype is NDAttrType.String:
        space = h5py.h5s.create_simple(shape, tuple(h5py.h5s.UNLIMITED if m is None else m
                                                    for m in maxshape))
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_chunk(chunks)
        ds = h5py.Dataset(h5py.h5d.create(group.id, _encode(placement.name),
                                          _c_string_type(ATTRIBUTE_STRING_SIZE), space,
                                          dcpl=dcpl))
    else:
        ds = group.create_dataset(placement.name, shape=shape, maxshape=maxshape,
                                  chunks=chunks, dtype=attribute.dtype.numpy)
    for key, text in (("NDAttrName", attribute.name),
                      ("NDAttrDescription", attribute.description),
                      ("NDAttrSourceType", attribute.source_type.value),
                      ("NDAttrSource", attribute.source)):
        if text:
            set_string_attribute(ds, key, text)
    return ds


def attribute_array(dtype: NDAttrType, attribute: NDAttribute) -> np.ndarray | None:
    """A frame's NDAttribute value as an element of its dataset (``dtype``: the type at
    open); None when there is nothing to write (undefined, or a value of another type)."""
    if dtype is NDAttrType.Undefined or not attribute.defined:
        return None
    if dtype is NDAttrType.String:
        return np.array(_encode(str(attribute.value))[: ATTRIBUTE_STRING_SIZE - 1],
                        dtype=f"S{ATTRIBUTE_STRING_SIZE}")
    try:
        return np.asarray(attribute.value).astype(dtype.numpy)
    except (TypeError, ValueError):
        return None  # a value of another type than at open: skipped for this frame


_PLAIN_NUMBERS = (int, float, bool)
_INT64_LIMIT = 2**63  # plain ints beyond do not make one numpy array with the others


class _AttributeDataset:
    """One growing 1-D dataset fed by an NDAttribute (NDFileHDF5AttributeDataset)."""

    BATCH = 64

    def __init__(self, group: h5py.Group, placement: Placement, attribute: NDAttribute,
                 chunk: int):
        self.name = attribute.name
        self.path = placement.path
        self.when = placement.when
        self.dtype = attribute.dtype
        self._numeric = attribute.dtype not in (NDAttrType.String, NDAttrType.Undefined)
        self._converted = False
        self.written = 0
        self._pending: list[np.ndarray] = []
        # ADCore's undefined attribute is one NaN; the others grow from empty
        length = 1 if attribute.dtype is NDAttrType.Undefined else 0
        self.ds = create_attribute_dataset(group, placement, attribute, (length,), (None,),
                                           (chunk,))
        self.layout_attributes = placement.dataset.attributes if placement.dataset else ()

    def append(self, attribute: NDAttribute, offsets=None) -> None:
        value = attribute.value
        if self._numeric and type(value) in _PLAIN_NUMBERS and attribute.defined and \
                -_INT64_LIMIT <= value < _INT64_LIMIT:
            pass  # converted with the batch at flush (a numpy scalar each: ~10 us a value)
        else:
            value = attribute_array(self.dtype, attribute)
            if value is None:
                return
            self._converted = True  # not one numpy array with plain numbers (uint64)
        # Kept and written in batches: one resize and one write per BATCH frames instead
        # of per frame (h5py's per-call cost was 15 % of a 1 Mpixel frame's write).
        self._pending.append(value)
        if len(self._pending) >= self.BATCH:
            self.flush()

    @property
    def count(self) -> int:
        return self.written + len(self._pending)

    def truncate(self, count: int) -> None:
        """Keep the first ``count`` values only (frames taken out of the file)."""
        if count >= self.count:
            return
        if count < self.written:
            self.ds.resize((count,))
            self.written = count
            self._pending.clear()
        else:
            del self._pending[count - self.written:]

    def flush(self) -> None:
        """Write the values kept so far (before an HDF5 flush, and at close)."""
        if not self._pending:
            return
        if self._numeric:
            dtype = self.dtype.numpy
            values = np.array([v if isinstance(v, np.ndarray) else np.asarray(v).astype(dtype)
                               for v in self._pending]) if self._converted \
                else np.array(self._pending).astype(dtype)
        else:
            values = np.stack(self._pending)
        self._converted = False
        n = len(values)
        self.ds.resize((self.written + n,))
        self.ds[self.written:self.written + n] = values
        self.written += n
        self._pending.clear()


# -- the writer --------------------------------------------------------------

class NexusWriter:
    """One open NeXus file."""

    def __init__(self, path: str | os.PathLike, layout: Layout, first: NDArray,
                 options: WriterOptions | None = None, *, file_name: str | None = None,
                 exclusive: bool = False):
        """``exclusive``: create the file only if nothing has that name (temporary names:
        another writer's file, or one left by a killed writer, is never overwritten).
        If the open fails after the file was created, the file is removed: a file is
        removed only by the writer that created it."""
        self.path = Path(path)
        self.layout = layout
        self.options = options or WriterOptions()
        self.warnings: list[str] = []
        self.frames_written = 0
        self.flush_count = 0  # flushes of this file (SWMR every NumFramesFlush, FlushNow)
        self._frame_shape = first.data.shape
        self._frame_dtype = first.data.dtype.newbyteorder("<") if first.data.dtype.byteorder == ">" \
            else first.data.dtype
        self._frame_bytes = first.nbytes
        self._t_open = time.perf_counter()
        self._t_last = self._t_open
        self._perf_rows: list[tuple[float, float, float, float, float]] = []
        self._closed = False
        default_detector = layout.default_detector()  # raises LayoutError when none
        self._compression = compression_kwargs(self.options, self._frame_dtype)
        self._check_frame_chunk(first)
        if exclusive and os.path.lexists(self.path):
            raise WriterError(f"{self.path.name} exists already (a file being written by "
                              "another writer, or left by one that was stopped); not "
                              "overwritten")
        # frames with O_DIRECT where it applies: HDF5 writes through a file of ours
        self._direct_io: _direct_io.DirectFile | None = None
        self._in_flight: FramesInFlight | None = None
        try:
            if self._direct_io_wanted(first):
                self._direct_io = _direct_io.DirectFile(self.path, exclusive)
        except OSError as exc:
            raise WriterError(describe_error(exc)) from exc
        try:
            libver = "latest" if self.options.swmr else None
            # No chunk cache: each frame goes to the file when written, so a write error
            # (disk full) is reported for that frame, and memory stays bounded.
            self.file = h5py.File(self._direct_io or self.path,
                                  "w-" if exclusive and self._direct_io is None else "w",
                                  libver=libver, rdcc_nbytes=0, **self._alignment())
        except (OSError, RuntimeError, ValueError) as exc:
            if self._direct_io is not None:  # created above
                self._direct_io.close()
                try:
                    self.path.unlink()
                except OSError:
                    pass
            raise WriterError(describe_error(exc)) from exc
        self._fd = self._direct_io.fileno() if self._direct_io is not None \
            else _write_behind.h5_file_fd(self.file)
        self._unadvised = 0
        try:
            self._open_attrs = file_attribute_list(first)
            self._last_attrs = self._open_attrs
            self._detectors: dict[str, h5py.Dataset] = {}
            self._direct: set[str] = set()
            self._codec_direct: set[str] = set()
            self._det_counts: dict[str, int] = {}
            self._default_detector = default_detector.path
            self._placement = FramePlacement(
                self.options.extra_dims,
                self.options.extra_dims.plan(self.options.num_capture, self.options.frames_chunks),
                default_detector.path)
            if self.options.multi_frame:
                self.warnings += self.options.extra_dims.unused_index_names()
            self._close_attributes: list[tuple[h5py.HLObject, Attribute]] = []
            self._build_group(self.file, layout.root, first)
            self._create_attribute_datasets()
            self._write_root_attributes(file_name or str(self.path))
            self._create_hard_links()
            self._extend_tree()
            # a plain stream into one dataset: its frames' writes overlap the next frame
            dims = self.options.extra_dims
            self._in_flight = FramesInFlight(self._direct_io, WriterError) \
                if self._direct_io is not None and self.options.multi_frame and \
                not dims.num_extra_dims and not dims.position_mode and \
                len(self._detectors) == 1 else None
            if self.options.swmr:
                self.file.swmr_mode = True
        except BaseException:
            self.release()
            try:
                self.path.unlink()  # ours: created above
            except OSError:
                pass
            raise

    def _direct_io_wanted(self, first: NDArray) -> bool:
        """Whether HDF5 writes this file through ``_direct_io.DirectFile`` (frames with
        O_DIRECT): not SWMR (h5py's file-object driver has none), and frames of at
        least ``MIN_BYTES`` written as one chunk each (a frame cut in many chunks would
        cost a Python call per chunk).  Pre-compressed chunks of a matching codec qualify:
        their payload is a receiver slot too."""
        if self.options.swmr or \
                tuple(effective_chunks(first.dims, self.options)) != tuple(first.dims):
            return False
        return _direct_io.wanted(self.path, first.nbytes)

    def _alignment(self) -> dict:
        """h5py's alignment keywords: ADCore's BoundaryAlign/BoundaryThreshold
        (``H5Pset_alignment``) when BoundaryAlign is set; else 4 KiB for the chunks written
        with O_DIRECT."""
        if self.options.boundary_align > 0:
            return {"alignment_threshold": max(int(self.options.boundary_threshold), 1),
                    "alignment_interval": int(self.options.boundary_align)}
        if self._direct_io is not None:
            return {"alignment_threshold": _direct_io.MIN_BYTES,
                    "alignment_interval": _direct_io.BLOCK}
        return {}

    def _check_frame_chunk(self, first: NDArray) -> None:
        """Refuse chunk sizes HDF5 cannot allocate (NumFramesChunks x frame bytes)."""
        if not self.options.multi_frame:
            return
        frames = max(1, self.options.frames_chunks)
        if self.options.num_capture > 0:
            frames = min(frames, self.options.num_capture)
        chunk_bytes = frames * int(np.prod(effective_chunks(first.dims, self.options))) * \
            self._frame_dtype.itemsize
        if chunk_bytes > MAX_CHUNK_BYTES:
            raise WriterError(f"chunk too large: NumFramesChunks {frames} x "
                              f"{chunk_bytes // frames} bytes = {chunk_bytes} bytes; HDF5 "
                              f"allows {MAX_CHUNK_BYTES}")

    def release(self) -> None:
        """Let go of the file after a failed write or close without writing into it again
        (``recovery.release``); what is on disk stays as it is."""
        self._closed = True
        direct_io = getattr(self, "_direct_io", None)
        if direct_io is not None:
            direct_io.release()  # HDF5's last writes go nowhere
        file = getattr(self, "file", None)
        if file is not None:
            release(file, None if direct_io is not None else self._fd)

    # -- open ------------------------------------------------------------------
    def _extend_tree(self) -> None:
        """Subclasses add objects of their own here: the last step of building the tree,
        before SWMR mode (which allows no new objects) starts."""

    def _build_group(self, h5group: h5py.Group, group: Group, first: NDArray) -> None:
        self._apply_attributes(h5group, group.attributes)
        for dataset in group.sorted_datasets():
            if dataset.source == "detector":
                self._create_detector(h5group, dataset, first)
            elif dataset.source == "constant" and not self.layout.is_performance_dataset(dataset):
                self._create_constant(h5group, dataset)
            # ndattribute datasets are made by _create_attribute_datasets, driven by
            # the frame's attribute list, as in ADCore.
        for child in group.sorted_groups():
            self._build_group(h5group.create_group(child.name), child, first)

    def _apply_attributes(self, obj: h5py.HLObject, attributes: tuple[Attribute, ...]) -> None:
        for attribute in attributes:
            if attribute.source == "constant":
                set_value_attribute(obj, attribute.name, _constant_value(attribute))
            elif not self.options.store_attributes:
                continue
            elif attribute.when is When.CLOSE:
                self._close_attributes.append((obj, attribute))
            else:
                self._set_ndattr_attribute(obj, attribute, self._open_attrs)

    def _set_ndattr_attribute(self, obj: h5py.HLObject, attribute: Attribute,
                              values: dict[str, NDAttribute]) -> None:
        source = values.get(attribute.ndattribute)
        if source is None or not source.defined:
            self.warnings.append(f"attribute {obj.name}@{attribute.name}: NDAttribute "
                                 f"{attribute.ndattribute!r} not present")
            return
        set_value_attribute(obj, attribute.name, _ndattr_value(source))

    def _create_detector(self, h5group: h5py.Group, dataset: Dataset, first: NDArray) -> None:
        frame_shape = self._frame_shape
        chunks = tuple(reversed(effective_chunks(first.dims, self.options)))
        if self.options.multi_frame:
            plan = self._placement.plan  # the extra dimensions' leading axes (extra_dims)
            shape = (0,) * plan.rank + frame_shape  # an empty stream holds no frame
            maxshape = (*plan.maxshape, *frame_shape)
            chunks = (*plan.chunks, *chunks)
        else:
            shape = maxshape = frame_shape
        ds = h5group.create_dataset(
            dataset.name, shape=shape, maxshape=maxshape, chunks=chunks,
            dtype=self._frame_dtype, fillvalue=self._fill_value(), **self._compression,
        )
        ndims = first.data.ndim

        def per_dim(values: tuple[int, ...]):
            array = np.asarray(values, dtype="<i4")
            return array[0] if ndims == 1 else array

        ds.attrs.create("NDArrayNumDims", np.int32(ndims))
        ds.attrs.create("NDArrayDimOffset", per_dim(first.dim_offsets()))
        ds.attrs.create("NDArrayDimBinning", per_dim(first.dim_binnings()))
        ds.attrs.create("NDArrayDimReverse", per_dim(first.dim_reverses()))
        self._apply_attributes(ds, dataset.attributes)  # a layout attribute wins
        self._detectors[dataset.path] = ds
        self._det_counts[dataset.path] = 0
        # One uncompressed chunk per frame: the frame's bytes are the chunk, written
        # with H5Dwrite_chunk (as ADCore does when dims and codec match one chunk).
        frame_chunk = (1,) * (len(shape) - len(frame_shape)) + frame_shape
        if not self._compression and chunks == frame_chunk:
            self._direct.add(dataset.path)
        if self._compression and chunks == frame_chunk:
            self._codec_direct.add(dataset.path)  # pre-compressed frames of a matching codec

    def _fill_value(self):
        value = self.options.fill_value
        if self._frame_dtype.kind != "f" and not np.isfinite(value):
            value = 0
        with np.errstate(all="ignore"):
            return np.asarray(value).astype(self._frame_dtype)[()]

    def _create_constant(self, h5group: h5py.Group, dataset: Dataset) -> None:
        value = _constant_value(dataset)
        if isinstance(value, str):
            data = _encode(value)
            tid = _c_string_type(len(data) + 1)
            dsid = h5py.h5d.create(h5group.id, _encode(dataset.name), tid,
                                   h5py.h5s.create_simple((1,)))
            dsid.write(h5py.h5s.ALL, h5py.h5s.ALL, np.array([data], dtype=f"S{len(data) + 1}"))
            ds = h5py.Dataset(dsid)
        else:
            ds = h5group.create_dataset(dataset.name, data=value)
        self._apply_attributes(ds, dataset.attributes)

    def _attribute_chunk(self, attribute: NDAttribute | None = None) -> int:
        """Sized by what the dataset holds (``attribute_chunk``); a performance row (5
        float64) when no attribute is given."""
        if attribute is None:
            itemsize = 40
        elif attribute.dtype is NDAttrType.String:
            itemsize = ATTRIBUTE_STRING_SIZE
        elif attribute.dtype is NDAttrType.Undefined:
            itemsize = 4
        else:
            itemsize = np.dtype(attribute.dtype.numpy).itemsize
        return attribute_chunk(self.options, itemsize)

    def _create_attribute_datasets(self) -> None:
        self._attr_datasets: list[_AttributeDataset] = []
        self._perf_location = None
        if self.options.store_performance:
            self._perf_location = self.layout.performance_location()
        if not self.options.store_attributes:
            return
        default = self.layout.ndattr_default_group()
        used_default = False
        for name, attribute in self._open_attrs.items():
            placement = self.layout.place_ndattribute(name)
            if placement is None:
                continue
            group = self.file.require_group(placement.group)
            if placement.name in group:
                self.warnings.append(f"NDAttribute {name!r}: {placement.path} already exists; "
                                     "not stored")
                continue
            if self._perf_location is not None and placement.path == _join(*self._perf_location):
                self.warnings.append(f"NDAttribute {name!r}: {placement.path} is the "
                                     "performance dataset; not stored")
                continue
            holder = self._attribute_holder(group, placement, attribute,
                                            self._attribute_chunk(attribute))
            self._apply_attributes(holder.ds, holder.layout_attributes)
            if placement.when is When.OPEN:
                holder.append(attribute)
            self._attr_datasets.append(holder)
            used_default |= default is not None and placement.group == default.path
        # NDArrayUniqueId last in each write pass: a "row complete" marker for SWMR readers.
        self._attr_datasets.sort(key=lambda h: h.name == "NDArrayUniqueId")
        if default is not None and self.options.hostname:
            set_string_attribute(self.file[default.path], "hostname", self.options.hostname)

    def _attribute_holder(self, group: h5py.Group, placement: Placement, attribute: NDAttribute,
                          chunk: int):
        """A 1-D NDAttribute dataset, or one shaped like the scan (DimAttDatasets, PosIndexDim)."""
        dims = self.options.extra_dims
        if not dims.dim_att_datasets:
            return _AttributeDataset(group, placement, attribute, chunk)
        from .scan_attributes import ScanAttributeDataset  # it builds on this module

        multi = self.options.multi_frame
        index_dim = dims.index_dim(attribute.name) if multi else None
        if index_dim is not None:
            axis = self._placement.plan.dims.index(index_dim)
            return ScanAttributeDataset(group, placement, attribute, index_axis=axis, chunk=chunk)
        itemsize = ATTRIBUTE_STRING_SIZE if attribute.dtype is NDAttrType.String else 8
        leading = dims.attribute_chunks(self.options.num_capture, self.options.ndattribute_chunk,
                                        itemsize)
        return ScanAttributeDataset(group, placement, attribute, leading=leading if multi else (),
                                    multi_frame=multi)

    def _write_root_attributes(self, file_name: str) -> None:
        root = self.file
        now = datetime.datetime.now().astimezone().isoformat(timespec="milliseconds")
        for name, value in (("file_name", file_name), ("file_time", now),
                            ("creator", self.options.creator),
                            ("HDF5_Version", h5py.version.hdf5_version),
                            ("h5py_version", h5py.version.version)):
            if name not in root.attrs:
                set_string_attribute(root, name, value)

    def _create_hard_links(self) -> None:
        def walk(group: Group):
            yield from group.hardlinks
            for child in group.groups:
                yield from walk(child)

        for link in walk(self.layout.root):
            if link.target not in self.file:
                self.warnings.append(f"hard link {link.path} -> {link.target}: target does "
                                     "not exist; link not created")
                continue
            parent, name = link.path.rsplit("/", 1)
            group = self.file.require_group(parent or "/")
            if name in group:  # e.g. an NDAttribute dataset of that name (ADCore: link fails)
                self.warnings.append(f"hard link {link.path}: the name is taken by another "
                                     "object; link not created")
                continue
            group[name] = self.file[link.target]

    # -- frames ----------------------------------------------------------------
    def write(self, frame: NDArray) -> None:
        """Append one frame (Single mode: the one frame of the file)."""
        if self._closed:
            raise WriterError("file is closed")
        if self._in_flight is not None:
            self._in_flight.check(self)  # a frame handed over earlier did not reach the disk
        data = frame.data
        if data.shape != self._frame_shape or data.dtype.newbyteorder("=") != \
                self._frame_dtype.newbyteorder("="):
            raise FrameMismatch(
                f"frame {frame.unique_id}: shape {data.shape} {data.dtype} differs from "
                f"the file's {self._frame_shape} {self._frame_dtype}")
        t0 = time.perf_counter()
        values = file_attribute_list(frame) if self.options.store_attributes else {}
        path = self._destination(values)
        ds = self._detectors[path]
        chunk = None
        if frame.codec is not None:
            chunk = self._codec_chunk(frame, path)
            if chunk is None:  # another codec than the file's: decompress, write as configured
                try:
                    data = codecs.decoded(frame).data
                except codecs.CodecError as exc:
                    raise FrameMismatch(str(exc)) from None
        if chunk is None and (data.dtype.byteorder == ">" or not data.flags.c_contiguous):
            data = np.ascontiguousarray(data, dtype=self._frame_dtype)
        direct = chunk is not None or path in self._direct
        if chunk is None and direct:
            chunk = memoryview(data).cast("B")
        offsets = None
        if self.options.multi_frame:
            # Where it goes (PositionMode labels or the next position); a frame that cannot
            # be placed raises PositionError before anything of it is written.
            offsets = self._placement.locate(path, frame.unique_id, frame.attributes)
            before = self._placement.extent(path) + data.shape  # the dataset's shape now
            grown = self._placement.take(path, offsets)
            if grown:  # (the low-level call: h5py's resize costs ~50 us of checks a frame)
                ds.id.set_extent(self._placement.extent(path) + data.shape)
            try:
                if direct:
                    self._write_chunk(ds, offsets + (0,) * data.ndim, chunk, keep=frame)
                else:
                    ds[offsets] = data
                    self._unadvised += data.nbytes
            except BaseException:
                if grown:
                    try:  # the file keeps only frames written whole
                        ds.id.set_extent(before)
                    except Exception:  # noqa: BLE001 - the original error says more
                        pass
                raise
        elif direct:
            self._write_chunk(ds, (0,) * data.ndim, chunk)
        else:
            ds[...] = data
            self._unadvised += data.nbytes
        self._det_counts[path] += 1
        if self._unadvised >= _write_behind.STREAM_EVERY and self._fd is not None:
            self._unadvised = 0
            _write_behind.advise(self._fd)
        # DimAttDatasets: values are recorded only for frames of the default dataset (ADCore).
        if not self.options.extra_dims.dim_att_datasets or path == self._default_detector:
            for holder in self._attr_datasets:
                if holder.when is When.FRAME and holder.name in values:
                    holder.append(values[holder.name], offsets)
        if values:
            self._last_attrs = values
        self.frames_written += 1
        t1 = time.perf_counter()
        self._record_performance(t0, t1)
        if self.options.swmr:
            every = self.options.flush_every or self.options.frames_chunks
            if every and self.frames_written % every == 0:
                self.flush()

    def _write_chunk(self, ds: h5py.Dataset, coords: tuple[int, ...], chunk,
                     keep: NDArray | None = None) -> None:
        """One whole chunk (``DirectFile`` writes it with O_DIRECT where it applies, in
        a plain stream while the next frame is made: ``keep`` owns its memory; what goes
        through the page cache is advised out of it as it accumulates)."""
        io = self._direct_io
        if io is None:
            ds.id.write_direct_chunk(coords, chunk)
            self._unadvised += len(chunk)
        elif keep is not None and self._in_flight is not None:
            io.keep, io.last_seq = keep, None
            try:
                ds.id.write_direct_chunk(coords, chunk)
            finally:
                io.keep = None
            self._in_flight.sent(io.last_seq)
        else:
            ds.id.write_direct_chunk(coords, chunk)

    def drop_last_frames(self, n: int) -> None:
        """Take the last ``n`` frames out of the file (their writes failed; see
        ``_in_flight``): the frames dataset, its NDAttribute values and performance rows."""
        (path, ds), = self._detectors.items()
        count = max(self._det_counts[path] - n, 0)
        ds.id.set_extent((count,) + self._frame_shape)
        self._det_counts[path] = count
        self._placement.rewind(path, count)
        self.frames_written -= n
        for holder in self._attr_datasets:
            if holder.when is When.FRAME:
                holder.truncate(count)
        del self._perf_rows[count:]

    def _codec_chunk(self, frame: NDArray, path: str):
        """The chunk to write unchanged for a pre-compressed frame whose codec is the file's
        Compression (one chunk per frame), or None when it must be decompressed."""
        if path not in self._codec_direct or frame.data.dtype.newbyteorder("=") != \
                self._frame_dtype.newbyteorder("="):
            return None
        name, options = frame.codec.name, self.options
        try:
            if name == "blosc":
                compressor, shuffle, typesize = codecs.blosc_settings(frame.codec.payload)
                wanted = {options.blosc_compressor, 1 if options.blosc_compressor == 2
                          else options.blosc_compressor}  # lz4hc frames read as lz4
                if options.compression != Compression.BLOSC or compressor not in wanted or \
                        shuffle != options.blosc_shuffle or typesize != self._frame_dtype.itemsize:
                    return None
            elif (name, options.compression) not in (("lz4", Compression.LZ4),
                                                     ("bslz4", Compression.BSLZ4)):
                return None
            return codecs.chunk_bytes(frame)
        except codecs.CodecError:
            return None

    def _destination(self, values: dict[str, NDAttribute]) -> str:
        name = self.layout.data_destination
        if name and name in values:
            target = str(values[name].value)
            if target in self._detectors:
                return target
        return self._default_detector

    def _record_performance(self, t0: float, t1: float) -> None:
        mbit = 8.0 * self._frame_bytes / 2**20
        period = t1 - self._t_last
        runtime = t1 - self._t_open
        n = self.frames_written
        self._perf_rows.append((t1 - t0, period, runtime,
                                mbit / period if period > 0 else 0.0,
                                n * mbit / runtime if runtime > 0 else 0.0))
        self._t_last = t1

    def flush(self) -> None:
        if self._in_flight is not None:  # what the flushed index lists is on the disk
            error = self._in_flight.settle(self)
            if error is not None:
                raise error
        for holder in self._attr_datasets:
            holder.flush()
        self.file.flush()
        self.flush_count += 1

    # -- close -----------------------------------------------------------------
    def close(self) -> None:
        """Write what is written at close and close the file.  If this raises, the file may
        still be open in HDF5: the caller decides what to keep, then calls ``release``."""
        if self._closed:
            return
        self._closed = True
        # frames whose writes failed leave the file before it is closed; then it is said
        lost = self._in_flight.settle(self) if self._in_flight is not None else None
        try:
            for holder in self._attr_datasets:
                if holder.when is When.CLOSE and holder.name in self._last_attrs:
                    holder.append(self._last_attrs[holder.name])
                holder.flush()
            for obj, attribute in self._close_attributes:
                self._set_ndattr_attribute(obj, attribute, self._last_attrs)
            if self._perf_location is not None and self._perf_rows:
                self._write_performance(*self._perf_location)
        finally:
            self.file.close()  # (if this raises, release() lets go of the file object)
            if self._direct_io is not None:
                self._direct_io.close()
        if lost is not None:
            raise lost
        _write_behind.path_written(self.path)

    def _write_performance(self, group_path: str, name: str) -> None:
        group = self.file.require_group(group_path)
        if name in group:
            self.warnings.append(f"performance dataset {_join(group_path, name)} exists "
                                 "already; not written")
            return
        rows = np.asarray(self._perf_rows, dtype="<f8")
        group.create_dataset(name, data=rows, maxshape=(None, None),
                             chunks=(max(1, min(len(rows), self._attribute_chunk())), 5))

    # -- what the file holds (for the template writer and the saver) ---------------------
    @property
    def frame_bytes(self) -> int:
        return self._frame_bytes

    @property
    def performance_path(self) -> str | None:
        if self._perf_location is None:
            return None
        return _join(*self._perf_location)

    def per_frame_datasets(self) -> tuple[list[str], list[str], str | None]:
        """(frames datasets, NDAttribute datasets with a value per frame, the
        NDArrayUniqueId dataset): what ``recovery.recover`` keeps consistent."""
        per_frame = [h for h in self._attr_datasets if h.when is When.FRAME]
        marker = next((h.path for h in per_frame if h.name == "NDArrayUniqueId"), None)
        return list(self._detectors), [h.path for h in per_frame], marker

    def attribute_datasets(self) -> list[tuple[str, str, NDAttrType, int]]:
        """(NDAttribute name, dataset path, type, values written) of each NDAttribute dataset."""
        return [(h.name, h.path, h.dtype, h.count) for h in self._attr_datasets]

    def destination(self, frame: NDArray) -> str:
        """The detector dataset ``frame`` goes to."""
        values = file_attribute_list(frame) if self.options.store_attributes else {}
        return self._destination(values)

    @property
    def runtime(self) -> float:
        return time.perf_counter() - self._t_open

    def __enter__(self) -> NexusWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_single(path: str | os.PathLike, layout: Layout, frame: NDArray,
                 options: WriterOptions | None = None) -> NexusWriter:
    """One image, one file (Single mode): open with the frame, write it, close."""
    options = options or WriterOptions()
    writer = NexusWriter(path, layout, frame, options)
    try:
        writer.write(frame)
    finally:
        writer.close()
    return writer

