"""One writer worker's share of a capture: a part file, and the index a master file needs.

A part file is an ordinary NeXus file by the layout's rules (``NexusWriter``) holding the
frames one worker received, in the order it received them, plus a small index group
(``<entry>/writer_part``, NX_class NXcollection) saying which frame is where:

* ``unique_ids``: the UniqueId of each frame written, in write order (row i of every
  per-frame dataset is frame ``unique_ids[i]``);
* ``destinations``: only when the layout has several detector datasets
  (``detector_data_destination``): which one each frame went to (an index into the
  group's ``detector_datasets`` attribute);
* attributes ``detector_datasets`` (the default first), ``frame_datasets`` (NDAttribute
  datasets with one row per frame), ``performance_dataset`` (its rows are per frame too;
  written at close), ``worker`` and ``part``.

The file is flushed at least every ``DURABLE_EVERY`` seconds: a worker killed mid-stream
leaves a file readable up to its last flush (``durable`` frames), which the master file
can still map.  h5py only, no EPICS.
"""

from __future__ import annotations

import os
import time
from array import array
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from ..layout.model import Layout, When
from ..ndarray import NDArray, NDAttrType
from .attribute_datasets import set_string_attribute
from .nexus import NexusWriter, WriterError, WriterOptions

__all__ = ["DURABLE_EVERY", "INDEX_GROUP", "PartIndex", "PartWriter", "clear_swmr_flag", "index_parent",
           "part_name"]

INDEX_GROUP = "writer_part"
DURABLE_EVERY = 1.0  # s: at most this much is lost when a worker dies
_UID_CHUNK = 4096


def index_parent(detector_path: str) -> str:
    """The group holding the index: the top-level group of the default detector dataset
    (``/entry`` for ``/entry/instrument/detector/data``), or ``/``."""
    parts = detector_path.strip("/").split("/")
    return f"/{parts[0]}" if len(parts) > 1 else "/"


def part_name(master: str | os.PathLike, part: int) -> Path:
    """``/data/scan_001.h5`` -> ``/data/scan_001_part2.h5`` (the extension kept)."""
    master = Path(master)
    suffix = master.suffix if master.suffix in (".h5", ".hdf5", ".hdf", ".nxs", ".nx5") else ""
    stem = master.name[: len(master.name) - len(suffix)] if suffix else master.name
    return master.with_name(f"{stem}_part{part}{suffix}")


class PartWriter(NexusWriter):
    """A ``NexusWriter`` that also keeps the part index and flushes for durability."""

    def __init__(self, path: str | os.PathLike, layout: Layout, first: NDArray,
                 options: WriterOptions, *, file_name: str, worker: str, part: int):
        # read by _extend_tree, which runs inside NexusWriter.__init__
        self.worker = worker
        self.part = part
        self.unique_ids = array("q")  # every frame written, in order
        self.durable = 0  # frames flushed to the file (readable after a crash)
        self._index_written = 0
        self._destinations = array("h")
        self._detector_paths: list[str] = []
        self._last_flush = time.monotonic()
        super().__init__(path, layout, first, options, file_name=file_name)

    # -- the index group, built with the tree --------------------------------------
    def _extend_tree(self) -> None:
        parent = self.file.require_group(index_parent(self._default_detector))
        if INDEX_GROUP in parent:
            raise WriterError(f"the layout already has {parent.name}/{INDEX_GROUP}, where the "
                              "part index goes")
        group = parent.create_group(INDEX_GROUP)
        set_string_attribute(group, "NX_class", "NXcollection")
        self._detector_paths = [self._default_detector] + sorted(
            p for p in self._detectors if p != self._default_detector)
        frame_datasets = [h.path for h in self._attr_datasets
                          if h.when is When.FRAME and h.dtype is not NDAttrType.Undefined]
        group.attrs["detector_datasets"] = np.array(self._detector_paths, dtype=h5py.string_dtype())
        group.attrs["frame_datasets"] = np.array(frame_datasets, dtype=h5py.string_dtype())
        if self.performance_path:  # written at close, one row per frame
            set_string_attribute(group, "performance_dataset", self.performance_path)
        set_string_attribute(group, "worker", self.worker)
        group.attrs["part"] = np.int32(self.part)
        self._uid_ds = group.create_dataset("unique_ids", shape=(0,), maxshape=(None,),
                                            chunks=(_UID_CHUNK,), dtype="<i8")
        self._dest_ds = None
        if len(self._detector_paths) > 1:
            self._dest_ds = group.create_dataset("destinations", shape=(0,), maxshape=(None,),
                                                 chunks=(_UID_CHUNK,), dtype="<i2")

    # -- frames --------------------------------------------------------------------
    def write(self, frame: NDArray) -> None:
        super().write(frame)  # raises before anything is recorded when refused
        self.unique_ids.append(int(frame.unique_id))
        if self._dest_ds is not None:
            self._destinations.append(self._detector_paths.index(self.destination(frame)))
        if time.monotonic() - self._last_flush >= DURABLE_EVERY:
            self.flush()

    def _write_index(self) -> None:
        n = len(self.unique_ids)
        start = self._index_written
        if n == start:
            return
        self._uid_ds.resize((n,))
        self._uid_ds[start:n] = np.frombuffer(self.unique_ids, dtype="<i8")[start:n]
        if self._dest_ds is not None:
            self._dest_ds.resize((n,))
            self._dest_ds[start:n] = np.frombuffer(self._destinations, dtype="<i2")[start:n]
        self._index_written = n

    def flush(self) -> None:
        self._write_index()
        super().flush()
        self.durable = self._index_written
        self._last_flush = time.monotonic()

    def close(self) -> None:
        if not self._closed:
            self._write_index()
        super().close()
        self.durable = self._index_written


# -- reading a part back (the master file's side) -----------------------------------------

@dataclass
class PartIndex:
    """What a part file holds, as read back from it."""

    unique_ids: np.ndarray  # per frame, write order
    destinations: np.ndarray | None
    detector_datasets: list[str]
    frame_datasets: list[str]
    worker: str
    rows: dict[str, int]  # rows present in each per-frame dataset

    @property
    def frames(self) -> int:
        return int(self.unique_ids.size)

    def detector_rows(self, index: int) -> np.ndarray:
        """Frame numbers (rows of ``unique_ids``) that went to detector dataset ``index``."""
        if self.destinations is None:
            return np.arange(self.frames) if index == 0 else np.arange(0)
        return np.flatnonzero(self.destinations[: self.frames] == index)

    @classmethod
    def read(cls, f: h5py.File, limit: int | None = None) -> PartIndex:
        """The index of an open part file; ``limit`` keeps only the first frames (those
        known to be flushed).  The frame count is what the index and every detector
        dataset agree on: a file cut short by a crash may hold fewer rows in one."""
        group = find_index(f)
        if group is None:
            raise WriterError(f"{f.filename} has no {INDEX_GROUP} group: not a part file")
        uids = group["unique_ids"][()].astype(np.int64)
        destinations = group["destinations"][()] if "destinations" in group else None
        detectors = [_text(p) for p in group.attrs.get("detector_datasets", [])]
        frame_datasets = [_text(p) for p in group.attrs.get("frame_datasets", [])]
        performance = _text(group.attrs.get("performance_dataset", ""))
        if performance and performance in f:
            frame_datasets.append(performance)
        rows = {p: int(f[p].shape[0]) for p in detectors + frame_datasets
                if p in f and f[p].shape}
        n = uids.size if limit is None else min(uids.size, limit)
        if destinations is not None:
            n = min(n, destinations.size)
            destinations = destinations[:n]
        else:
            n = min(n, rows.get(detectors[0], n) if detectors else n)
        worker = _text(group.attrs.get("worker", ""))
        return cls(uids[:n], destinations, detectors, frame_datasets, worker, rows)


def find_index(f: h5py.File) -> h5py.Group | None:
    if INDEX_GROUP in f:
        return f[INDEX_GROUP]
    for name in f:
        obj = f.get(name)
        if isinstance(obj, h5py.Group) and INDEX_GROUP in obj:
            return obj[INDEX_GROUP]
    return None


def _text(value) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def clear_swmr_flag(path: str | os.PathLike) -> None:
    """Let plain readers open a SWMR part file whose writer was killed: the file stays
    marked "open for SWMR writing" and HDF5 refuses it to them.  This clears the mark as
    HDF5's ``h5clear -s`` does (the library's own ``clear_status_flags`` file-access
    property, which h5py does not expose: set through the library h5py is linked with).
    Raises WriterError if that cannot be done."""
    import ctypes

    try:
        library = ctypes.CDLL(h5py.h5f.__file__)  # libhdf5's symbols via h5py's module
        set_property = library.H5Pset
    except (OSError, AttributeError) as exc:
        raise WriterError(f"cannot clear the SWMR mark of {path}: {exc}") from None
    set_property.argtypes = [ctypes.c_int64, ctypes.c_char_p, ctypes.c_void_p]
    set_property.restype = ctypes.c_int
    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    fapl.set_libver_bounds(h5py.h5f.LIBVER_LATEST, h5py.h5f.LIBVER_LATEST)
    flag = ctypes.c_bool(True)
    if set_property(fapl.id, b"clear_status_flags", ctypes.byref(flag)) < 0:
        raise WriterError(f"cannot clear the SWMR mark of {path}: HDF5 refused the property")
    try:
        h5py.h5f.open(os.fsencode(path), h5py.h5f.ACC_RDWR, fapl=fapl).close()
    except OSError as exc:
        raise WriterError(f"cannot clear the SWMR mark of {path}: {exc}") from None
