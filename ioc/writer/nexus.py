"""Layout model + frames -> a NeXus HDF5 file.  h5py, no EPICS.

``NexusWriter(path, layout, first_frame, options)`` opens a file and builds
the tree the layout describes, the way ADCore's NDFileHDF5 does at open
(reference §2.4-2.9, §3.2-3.4); ``write(frame)`` appends one frame;
``close()`` writes the OnFileClose values, the performance dataset and
closes.  Options and compression are ``options.py``; NDAttribute datasets and ADCore's
string attributes ``attribute_datasets.py``.  Single mode (``multi_frame=False``) gives one image per file with no
frame axis.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import h5py
import numpy as np

from ..layout.model import Attribute, Layout, When
from ..ndarray import NDArray, NDAttrType, file_attribute_list
from . import _direct_io, _write_behind
from ._frames import FrameAppending
from ._in_flight import FramesInFlight
from ._tree import TreeBuilding
from .attribute_datasets import _join
from .extra_dims import FramePlacement
from .options import (  # noqa: F401 (re-exported: the writer's interface)
    BLOSC_COMPRESSORS,
    BLOSC_SHUFFLES,
    COMPRESSION_LABELS,
    MAX_CHUNK_BYTES,
    Compression,
    CompressionUnavailable,
    FrameMismatch,
    WriterError,
    WriterOptions,
    available_compressions,
    compression_kwargs,
    effective_chunks,
)
from .recovery import describe_error, release

__all__ = [
    "BLOSC_COMPRESSORS", "BLOSC_SHUFFLES", "COMPRESSION_LABELS", "Compression",
    "CompressionUnavailable", "FrameMismatch", "NexusWriter", "WriterError", "WriterOptions",
    "available_compressions", "effective_chunks", "write_single",
]


class NexusWriter(TreeBuilding, FrameAppending):
    """One open NeXus file: opened here, its tree built by ``TreeBuilding`` (``_tree.py``),
    frames appended by ``FrameAppending`` (``_frames.py``), flushed and closed here."""

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
            self._plan_frame_values()
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
            last = self._last_attrs
            for holder in self._attr_datasets:
                if holder.when is When.CLOSE and holder.name in last:
                    holder.append(last[holder.name])
                holder.flush()
            for obj, attribute in self._close_attributes:
                self._set_ndattr_attribute(obj, attribute, last)
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
        return self._destination(frame) if self.options.store_attributes \
            else self._default_detector

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

