"""The master file of a capture written by several workers: the layout's tree, with every
per-frame dataset a virtual dataset (VDS) over the part files.

The tree (groups, attributes, constants, OnFileOpen/OnFileClose values, hard links) is
copied from one part file, written by the same layout and options, so the master has
exactly the paths a single NDFileHDF5 file would have.  Each per-frame dataset (the
detector data, NDAttribute datasets with one row per frame, the performance rows) becomes
a VDS whose row ``i`` is the frame with UniqueId ``first + i``, read from the part and row
that holds it.  Frames no part holds read as the dataset's fill value and are listed in
``<entry>/writer_parts/missing_unique_ids``; each part's UniqueIds are in
``<entry>/writer_parts/part<k>/unique_ids``.

Mappings are few however long the stream: a worker's frames usually follow a regular
pattern (blocks of K frames every N x K), which one strided hyperslab describes
(``regular_runs``); a new mapping starts only where the pattern changes (a worker joined
or left, a frame was lost).  Source files are named relative to the master's directory.
h5py only, no EPICS.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from .attribute_datasets import set_string_attribute
from .nexus import WriterError
from .part import PartIndex, find_index, index_parent

__all__ = ["MASTER_GROUP", "MasterResult", "MasterSource", "Run", "regular_runs",
           "write_master"]

MASTER_GROUP = "writer_parts"
# Up to this many frames, every row of a virtual dataset is a mapping of its own: readers
# that assume so (nexusformat 2.1's NXvirtualfield takes the number of mappings as the
# length of the first axis) read it right.  Longer captures use strided runs (a few
# mappings per part): thousands of times fewer, and reading one frame does not scan them all.
PER_FRAME_MAPPINGS = 65536


# -- mappings -------------------------------------------------------------------------

@dataclass(frozen=True)
class Run:
    """``count`` blocks of ``block`` frames: in the master they start at ``master_start``,
    ``stride`` apart; in the part they are consecutive from ``part_start``."""

    master_start: int
    part_start: int
    block: int
    count: int
    stride: int

    @property
    def frames(self) -> int:
        return self.block * self.count


def regular_runs(master_rows: np.ndarray, part_rows: np.ndarray) -> list[Run]:
    """The fewest strided runs mapping ``part_rows[i]`` to ``master_rows[i]`` (both rising)."""
    master_rows = np.asarray(master_rows, dtype=np.int64)
    part_rows = np.asarray(part_rows, dtype=np.int64)
    if master_rows.size == 0:
        return []
    breaks = np.flatnonzero((np.diff(master_rows) != 1) | (np.diff(part_rows) != 1)) + 1
    starts = np.concatenate(([0], breaks))
    lengths = np.diff(np.concatenate((starts, [master_rows.size])))
    runs: list[Run] = []
    current: list[int] | None = None  # [master_start, part_start, block, count, stride]
    for start, length in zip(starts.tolist(), lengths.tolist(), strict=True):
        m, p = int(master_rows[start]), int(part_rows[start])
        if current is not None:
            m0, p0, block, count, stride = current
            follows = length == block and p == p0 + block * count
            gap = m - (m0 + stride * (count - 1))
            if follows and (count == 1 and gap > block or count > 1 and gap == stride):
                if count == 1:
                    current[4] = gap
                current[3] += 1
                continue
            runs.append(Run(*current))
        current = [m, p, length, 1, length]
    runs.append(Run(*current))
    return runs


# -- inputs and result ------------------------------------------------------------------

@dataclass
class MasterSource:
    """One part as the master sees it: its name from the master's directory, where this
    process reads it, and how many of its frames to map (None: all)."""

    name: str
    path: Path
    label: str = ""  # e.g. "worker w1 on host2"
    limit: int | None = None
    state: str = "closed"  # closed | lost | failed | open
    number: int | None = None  # its part number (default: its place in the list)
    index: PartIndex | None = None  # filled by write_master


@dataclass
class MasterResult:
    frames: int = 0  # rows of the master's frame axis
    written: int = 0  # rows some part holds
    first_uid: int | None = None
    missing: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    duplicates: int = 0
    before: int = 0  # frames the parts hold with UniqueIds below the capture's first
    mappings: int = 0
    warnings: list[str] = field(default_factory=list)


# -- writing ------------------------------------------------------------------------------

def write_master(path: str | os.PathLike, sources: Sequence[MasterSource], *,
                 first_uid: int | None = None, last_uid: int | None = None,
                 file_name: str | None = None, libver: str | None = None,
                 swmr_read: bool = False) -> MasterResult:
    """Write the master file at ``path`` over ``sources``; frames with UniqueIds in
    ``[first_uid, last_uid]`` (default: the range the parts hold).  ``swmr_read`` opens
    parts still being written (SWMR).  Raises WriterError when no part can be read."""
    result = MasterResult()
    readable: list[MasterSource] = []
    files: list[h5py.File] = []
    handles: dict[int, h5py.File] = {}
    try:
        for source in sources:
            try:
                f = h5py.File(source.path, "r", swmr=swmr_read)
            except OSError as exc:
                result.warnings.append(f"part {source.name} ({source.label}) cannot be read: {exc}")
                continue
            files.append(f)
            handles[id(source)] = f
            try:
                source.index = PartIndex.read(f, source.limit)
            except (WriterError, KeyError, OSError) as exc:
                result.warnings.append(f"part {source.name}: {exc}")
                continue
            readable.append(source)
        if not readable:
            raise WriterError("no part file could be read: " + "; ".join(result.warnings))
        _write(Path(path), readable, handles, result, first_uid, last_uid,
               file_name or str(path), libver)
    finally:
        for f in files:
            f.close()
    return result


def _frame_axis(indices: list[PartIndex], first: int | None, last: int | None):
    uids = np.concatenate([i.unique_ids for i in indices]) if indices else np.zeros(0, np.int64)
    inside = uids[(uids >= first) if first is not None else slice(None)]
    if last is not None:
        inside = inside[inside <= last]
    if inside.size == 0 and first is None:
        return None, 0
    lo = first if first is not None else int(inside.min())
    hi = last if last is not None else (int(inside.max()) if inside.size else lo - 1)
    return lo, max(hi - lo + 1, 0)


def _write(path: Path, sources: list[MasterSource], handles: dict, result: MasterResult,
           first: int | None, last: int | None, file_name: str, libver: str | None) -> None:
    indices = [s.index for s in sources]
    lo, frames = _frame_axis(indices, first, last)
    held = np.unique(np.concatenate([i.unique_ids for i in indices]))
    if frames > 16 * held.size + 1_000_000:  # a row per UniqueId would not be bounded
        raise WriterError(f"UniqueIds from {lo} to {lo + frames - 1} for {held.size} frames "
                          "(the detector restarted?): no master file; the parts hold the frames")
    result.first_uid, result.frames = lo, frames
    if lo is not None:
        result.before = int(np.count_nonzero(held < lo))
    # Which part and row holds each master row: the first part listing a UniqueId wins.
    owner = np.full(frames, -1, np.int64)
    owned: list[np.ndarray] = []  # per source: its rows that map (row numbers of unique_ids)
    for k, index in enumerate(indices):
        rows = np.arange(index.frames)
        m = index.unique_ids - (lo if lo is not None else 0)
        ok = (m >= 0) & (m < frames)
        rows, m = rows[ok], m[ok]
        _, first_seen = np.unique(m, return_index=True)
        keep = np.zeros(m.size, bool)
        keep[first_seen] = True
        keep &= owner[m] == -1 if m.size else keep
        result.duplicates += int(m.size - keep.sum())
        owner[m[keep]] = k
        owned.append(rows[keep])
    result.written = int((owner >= 0).sum())
    result.missing = (np.flatnonzero(owner < 0) + (lo or 0)).astype(np.int64)

    template_k = _template_part(indices, owned)
    template = handles[id(sources[template_k])]
    tmp = path.with_name(f".{path.name}.master-tmp")
    try:
        with h5py.File(tmp, "w", libver=libver) as out:
            _Builder(out, template, sources[template_k].index, sources, handles, owned,
                     lo or 0, frames, result).build()
            _write_part_group(out, template, sources, owned, result)
            _root_attributes(out, file_name)
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise


def _template_part(indices: list[PartIndex], owned: list[np.ndarray]) -> int:
    """The part holding the last frame: its OnFileClose values are the capture's."""
    best, best_uid = 0, None
    for k, (index, rows) in enumerate(zip(indices, owned, strict=True)):
        if rows.size:
            uid = int(index.unique_ids[rows[-1]])
            if best_uid is None or uid > best_uid:
                best, best_uid = k, uid
    return best


class _Builder:
    """Copies the template's tree; per-frame datasets become virtual datasets."""

    def __init__(self, out: h5py.File, template: h5py.File, index: PartIndex,
                 sources: list[MasterSource], handles: dict, owned: list[np.ndarray], lo: int,
                 frames: int, result: MasterResult):
        self.out, self.template = out, template
        self.sources, self.handles, self.owned = sources, handles, owned
        self.lo, self.frames, self.result = lo, frames, result
        self.detectors = index.detector_datasets
        # object address -> (kind, dataset path): kind "frame", or a detector's index
        self.per_frame: dict[object, tuple[object, str]] = {}
        for i, p in enumerate(self.detectors):
            if p in template:
                self.per_frame[_address(template[p])] = (i, p)
        for p in index.frame_datasets:
            if p in template:
                self.per_frame[_address(template[p])] = ("frame", p)
        self.skip = _address(find_index(template))
        self.made: dict[object, str] = {}
        detectors = index.detector_datasets
        parent = index_parent(detectors[0]) if detectors else "/"
        self.part_group_path = f"{parent.rstrip('/')}/{MASTER_GROUP}"

    def build(self) -> None:
        _copy_attributes(self.template, self.out)
        self._group(self.template, self.out)

    def _group(self, src: h5py.Group, dst: h5py.Group) -> None:
        for name in src:
            link = src.get(name, getlink=True)
            if isinstance(link, h5py.SoftLink):
                dst[name] = h5py.SoftLink(link.path)
                continue
            if isinstance(link, h5py.ExternalLink):
                dst[name] = h5py.ExternalLink(link.filename, link.path)
                continue
            obj = src[name]
            address = _address(obj)
            if address == self.skip:
                continue
            if address in self.made:  # a second hard link to an object already made
                dst[name] = self.out[self.made[address]]
                continue
            if isinstance(obj, h5py.Group):
                child = dst.create_group(name)
                _copy_attributes(obj, child)
                self.made[address] = child.name
                self._group(obj, child)
            elif address in self.per_frame:
                kind, path = self.per_frame[address]
                self._virtual(dst, name, obj, kind, path)
                self.made[address] = dst[name].name
            else:
                dst.copy(obj, dst, name=name)
                self.made[address] = dst[name].name

    def _virtual(self, dst: h5py.Group, name: str, like: h5py.Dataset, kind, path: str) -> None:
        rest = like.shape[1:]
        axis = None if kind in ("frame", 0) else self._destination_axis(kind)
        frames = self.frames if axis is None else axis.size
        shape = (frames, *rest)
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        fill = np.zeros((), dtype=like.dtype)
        like.id.get_create_plist().get_fill_value(fill)
        _set_fill(dcpl, fill)
        per_frame = frames <= PER_FRAME_MAPPINGS
        covered = np.zeros(frames, bool)
        for k, source in enumerate(self.sources):
            if path not in self.handles[id(source)]:
                if self.owned[k].size:
                    self.result.warnings.append(
                        f"part {source.name} has no {path} (its first frame did not carry "
                        "that NDAttribute): its frames read as the fill value there")
                continue
            master_rows, part_rows = self._rows(k, kind, path, axis)
            covered[master_rows] = True
            if per_frame:
                runs = [Run(m, p, 1, 1, 1) for m, p in zip(master_rows.tolist(),
                                                           part_rows.tolist(), strict=True)]
            else:
                runs = regular_runs(master_rows, part_rows)
            rows = self.handles[id(source)][path].shape[0]
            for run in runs:
                self._map(dcpl, shape, source.name, path, rows, run)
        holes = np.flatnonzero(~covered)
        if per_frame and holes.size:
            # One mapping per row (see PER_FRAME_MAPPINGS): a row no part holds maps to an
            # empty dataset of this file, which reads as the fill value.
            fill_path = self._fill_dataset(like, fill)
            for m in holes.tolist():
                self._map(dcpl, shape, ".", fill_path, 1, Run(m, 0, 1, 1, 1))
        dsid = h5py.h5d.create(dst.id, name.encode(), like.id.get_type(),
                               h5py.h5s.create_simple(shape, shape), dcpl=dcpl)
        _copy_attributes(like, h5py.Dataset(dsid))

    def _fill_dataset(self, like: h5py.Dataset, fill: np.ndarray) -> str:
        group = self.out.require_group(f"{self.part_group_path}/fill")
        name = str(len(group))
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_chunk((1, *like.shape[1:]) if like.shape[1:] else (1,))
        _set_fill(dcpl, fill)
        dcpl.set_fill_time(h5py.h5d.FILL_TIME_NEVER)  # never written: no storage at all
        space = h5py.h5s.create_simple((1, *like.shape[1:]))
        h5py.h5d.create(group.id, name.encode(), like.id.get_type(), space, dcpl=dcpl)
        return f"{group.name}/{name}"

    def _rows(self, k: int, kind, path: str, axis: np.ndarray | None):
        """(master rows, part rows) of the frames part ``k`` contributes to ``path``."""
        index = self.sources[k].index
        rows = self.owned[k]
        if axis is None:
            if kind == 0 and index.destinations is not None:
                rows = rows[index.destinations[rows] == 0]
                part_rows = np.searchsorted(index.detector_rows(0), rows)
            else:
                part_rows = rows
            available = index.rows.get(path, 0)
            if part_rows.size and part_rows[-1] >= available:
                self.result.warnings.append(
                    f"{path} in part {self.sources[k].name} has {available} rows for "
                    f"{index.frames} frames; the frames past row {available} read as the "
                    "fill value there")
            ok = part_rows < available
            return index.unique_ids[rows[ok]] - self.lo, part_rows[ok]
        mine = index.detector_rows(kind)
        keep = np.isin(mine, rows)
        return np.searchsorted(axis, index.unique_ids[mine[keep]]), np.flatnonzero(keep)

    def _destination_axis(self, kind: int) -> np.ndarray:
        uids = [s.index.unique_ids[s.index.detector_rows(kind)] for s in self.sources]
        owned = [s.index.unique_ids[rows] for s, rows in zip(self.sources, self.owned, strict=True)]
        axis = np.unique(np.concatenate(uids)) if uids else np.zeros(0, np.int64)
        return axis[np.isin(axis, np.concatenate(owned))] if owned else axis

    def _map(self, dcpl, shape: tuple, file_name: str, path: str, rows: int, run: Run) -> None:
        rest = shape[1:]
        ones, zeros = (1,) * len(rest), (0,) * len(rest)
        v = h5py.h5s.create_simple(shape, shape)
        v.select_hyperslab((run.master_start, *zeros), (run.count, *ones),
                           (run.stride, *ones), (run.block, *rest))
        # The source as it is now, growing without limit: a part still open for writing
        # can be mapped up to the rows it has flushed.
        s = h5py.h5s.create_simple((rows, *rest), (h5py.h5s.UNLIMITED, *rest))
        s.select_hyperslab((run.part_start, *zeros), (run.count, *ones), (run.block, *ones),
                           (run.block, *rest))
        dcpl.set_virtual(v, file_name.encode(), path.encode(), s)
        self.result.mappings += 1


def _write_part_group(out: h5py.File, template: h5py.File, sources: list[MasterSource],
                      owned: list[np.ndarray], result: MasterResult) -> None:
    detectors = sources[0].index.detector_datasets
    parent_path = index_parent(detectors[0]) if detectors else "/"
    group = out.require_group(f"{parent_path.rstrip('/')}/{MASTER_GROUP}")
    set_string_attribute(group, "NX_class", "NXcollection")
    group.attrs["frames"] = np.int64(result.frames)
    group.attrs["frames_written"] = np.int64(result.written)
    group.attrs["missing"] = np.int64(result.missing.size)
    group.attrs["duplicates"] = np.int64(result.duplicates)
    if result.first_uid is not None:
        group.attrs["first_unique_id"] = np.int64(result.first_uid)
    missing = group.create_dataset("missing_unique_ids", data=result.missing.astype("<i8"),
                                   maxshape=(None,))
    set_string_attribute(missing, "description",
                         "UniqueIds in the capture's range that no part holds (read as the "
                         "fill value)")
    for k, (source, rows) in enumerate(zip(sources, owned, strict=True)):
        part = group.create_group(f"part{source.number if source.number is not None else k}")
        set_string_attribute(part, "NX_class", "NXcollection")
        set_string_attribute(part, "file_name", source.name)
        set_string_attribute(part, "worker", source.label or source.index.worker)
        set_string_attribute(part, "state", source.state)
        part.create_dataset("unique_ids", data=source.index.unique_ids.astype("<i8"))
        part.attrs["frames_mapped"] = np.int64(rows.size)


def _root_attributes(out: h5py.File, file_name: str) -> None:
    now = datetime.datetime.now().astimezone().isoformat(timespec="milliseconds")
    set_string_attribute(out, "file_name", file_name)
    set_string_attribute(out, "file_time", now)


def _set_fill(dcpl, fill: np.ndarray) -> None:
    # h5py 3.16 stores garbage for a fixed-length string fill value; HDF5's default fill
    # (all zeros: an empty string) is what the parts have anyway.
    if fill.dtype.kind != "S":
        dcpl.set_fill_value(fill)


def _address(obj) -> object:
    if obj is None:
        return None
    info = h5py.h5o.get_info(obj.id)
    return (obj.file.id.fileno, getattr(info, "token", None) or getattr(info, "addr", None))


def _copy_attributes(src: h5py.HLObject, dst: h5py.HLObject) -> None:
    """Attributes with their exact HDF5 types (fixed NUL-terminated strings stay so)."""
    for name in src.attrs:
        aid = h5py.h5a.open(src.id, name.encode("utf-8"))
        tid = aid.get_type()
        if isinstance(tid, h5py.h5t.TypeStringID) and tid.is_variable_str() or \
                tid.get_class() in (h5py.h5t.VLEN, h5py.h5t.REFERENCE):
            dst.attrs[name] = src.attrs[name]
            continue
        buffer = np.empty(aid.shape, dtype=aid.dtype)
        aid.read(buffer, mtype=tid)
        if name in dst.attrs:
            del dst.attrs[name]
        new = h5py.h5a.create(dst.id, name.encode("utf-8"), tid, aid.get_space())
        new.write(buffer, mtype=tid)
