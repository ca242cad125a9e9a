"""Frames into an open file: placement on the frame axis (and the extra dimensions), one
chunk per frame with ``H5Dwrite_chunk`` (pre-compressed frames unchanged when their codec is
the file's), the NDAttribute values of each frame, the performance rows.

``FrameAppending`` is a part of ``NexusWriter`` (``nexus.py``): it writes into the datasets
``TreeBuilding`` (``_tree.py``) made, with the writer's ``options`` and the state set at
open (``_placement``, ``_direct_io``, ``_in_flight``, ``_perf_rows``)."""

from __future__ import annotations

import time

import h5py
import numpy as np

from ..layout.model import When
from ..ndarray import BUILTIN_VALUES, NDArray, NDAttribute, file_attribute_list
from . import _write_behind, codecs
from .attribute_datasets import AttributeDataset
from .options import Compression, FrameMismatch, WriterError

class _Stamp:
    """What the close needs of the last frame (its NDAttributes and built-in values),
    without its pixels: a frame kept until close would hold its receiver slot."""

    __slots__ = ("attributes", "unique_id", "timestamp", "epics_ts_sec", "epics_ts_nsec")

    def __init__(self, frame: NDArray):
        self.attributes = frame.attributes
        self.unique_id = frame.unique_id
        self.timestamp = frame.timestamp
        self.epics_ts_sec = frame.epics_ts_sec
        self.epics_ts_nsec = frame.epics_ts_nsec


class FrameAppending:
    """The per-frame half of ``NexusWriter``."""

    def _plan_frame_values(self) -> None:
        """After the NDAttribute datasets are made: those fed by every frame, each with
        how its value is read (the frame's own NDAttribute first, as ``file_attribute_list``
        merges them; else a built-in value, read as a plain number where the dataset takes
        one)."""
        self._frame_holders = []
        for holder in self._attr_datasets:
            if holder.when is not When.FRAME:
                continue
            # the built-in values read from the frame as plain numbers: making their
            # NDAttribute objects for every frame was a tenth of the writer's CPU per frame
            builtin = BUILTIN_VALUES.get(holder.name, (None,))[0]
            plain = builtin if builtin is not None and isinstance(holder, AttributeDataset) \
                and holder.takes_plain_numbers else None
            self._frame_holders.append((holder, holder.name, builtin, plain))
        self._last_stamp: _Stamp | None = None

    @property
    def _last_attrs(self) -> dict[str, NDAttribute]:
        """The last frame's attribute list (the open frame's before any frame)."""
        stamp = self._last_stamp
        return self._open_attrs if stamp is None else file_attribute_list(stamp)

    def _append_frame_values(self, frame: NDArray, offsets) -> None:
        attributes = frame.attributes
        merged = None  # file_attribute_list(frame), made only if a dataset needs it
        for holder, name, builtin, plain in self._frame_holders:
            attribute = attributes.get(name)
            if attribute is not None:
                holder.append(attribute, offsets)
            elif plain is not None:
                holder.append_plain(plain(frame))
            elif builtin is not None:
                if merged is None:
                    merged = file_attribute_list(frame)
                holder.append(merged[name], offsets)

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
        store = self.options.store_attributes
        path = self._destination(frame) if store else self._default_detector
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
        if store:
            # DimAttDatasets: values are recorded only for frames of the default dataset
            # (ADCore).
            if not self.options.extra_dims.dim_att_datasets or path == self._default_detector:
                self._append_frame_values(frame, offsets)
            self._last_stamp = _Stamp(frame)
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

    def _destination(self, frame: NDArray) -> str:
        """The detector dataset the layout's ``ndattr_default`` data destination names for
        this frame (its NDAttribute's value), else the default one."""
        name = self.layout.data_destination
        if not name:
            return self._default_detector
        attribute = frame.attributes.get(name)
        if attribute is None:
            attribute = file_attribute_list(frame).get(name)  # a built-in's name
        if attribute is not None:
            target = str(attribute.value)
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
