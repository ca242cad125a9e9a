"""One NeXus file per image, fast: build the tree once, then patch bytes.

In Single mode every file of a run has the same structure; only the image, the
NDAttribute values, the performance row and the file's name and time change.
The first file is written by ``NexusWriter`` (h5py); its bytes become a
template, with the file offsets of every value that changes.  Each later file
is that template with the new values in place, written with one ``os.writev``
(the image is not copied).  Anything the template cannot reproduce exactly
(compression, a different structure, HDF5 attributes fed by NDAttributes)
goes through ``NexusWriter`` again, so files are always what the layout says;
a test compares fast and slow files object by object.
"""

from __future__ import annotations

import datetime
import errno
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from ..layout.model import Layout
from ..ndarray import ATTRIBUTE_STRING_SIZE, NDArray, NDAttrType, file_attribute_list
from . import _direct_io, _write_behind
from ._aio import REFUSED, fallocate
from .codecs import decoded
from .nexus import Compression, NexusWriter, WriterOptions

__all__ = ["SingleFileWriter"]


@dataclass
class _Patch:
    offset: int
    size: int


@dataclass
class _Template:
    key: tuple
    data: bytes
    image: _Patch
    attributes: dict[str, tuple[_Patch, NDAttrType]]
    performance: _Patch | None
    file_name: _Patch
    file_time: _Patch
    warnings: list[str]


def _now() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="milliseconds")


def _has_ndattribute_attributes(layout: Layout) -> bool:
    return any(a.source == "ndattribute" for g in layout.iter_groups() for a in g.attributes) \
        or any(a.source == "ndattribute" for d in layout.iter_datasets() for a in d.attributes)


class SingleFileWriter:
    """Writes one frame per file; keeps one template per (layout, options, frame kind)."""

    def __init__(self) -> None:
        self.template: _Template | None = None
        self.fast_files = 0
        self.slow_files = 0
        self.direct_files = 0  # fast files whose image went with O_DIRECT
        self.direct_io = True  # until a file system refuses it
        self._last_time: float | None = None
        self._checked_layout: Layout | None = None
        self._layout_ok = False

    def key(self, layout: Layout, options: WriterOptions, frame: NDArray, file_name: str,
            attrs: dict) -> tuple | None:
        """What a template depends on; None when the fast path cannot be used."""
        if options.multi_frame or options.swmr or options.compression != Compression.NONE:
            return None
        if layout is not self._checked_layout:
            self._checked_layout = layout
            self._layout_ok = not _has_ndattribute_attributes(layout)
        if not self._layout_ok:
            return None
        destination = None
        if layout.data_destination and layout.data_destination in attrs:
            destination = str(attrs[layout.data_destination].value)
        return (id(layout), options, frame.data.shape, frame.data.dtype.str,
                frame.dim_offsets(), frame.dim_binnings(), frame.dim_reverses(),
                tuple((a.name, a.dtype, a.defined, a.description, a.source, a.source_type)
                      for a in attrs.values()),
                destination, len(file_name.encode()))

    def prepare(self, path: Path, layout: Layout, frame: NDArray, options: WriterOptions,
                file_name: str, exclusive: bool = False) -> tuple[Callable[[], list[str]], bool]:
        """This file's write as a call to make (it returns the writer's warnings), and
        whether it is the template's: then another thread may make it, in order (the call
        holds ``frame``); otherwise h5py writes it and makes the template.

        ``exclusive``: never overwrite a file of that name (temporary names).  A file the
        call created and could not complete is removed before the error is raised."""
        t0 = time.perf_counter()
        if frame.codec is not None and options.compression == Compression.NONE:
            frame = decoded(frame)  # pre-compressed, written uncompressed: by the template
        attrs = file_attribute_list(frame) if options.store_attributes else {}
        key = self.key(layout, options, frame, file_name, attrs)
        template = self.template
        if key is not None and template is not None and template.key == key:
            return _FastWrite(self, path, template, frame, attrs, file_name, t0, exclusive), True

        def slow() -> list[str]:
            writer = NexusWriter(path, layout, frame, options, file_name=file_name,
                                 exclusive=exclusive)
            try:
                writer.write(frame)
                writer.close()
            except BaseException:
                writer.release()
                _remove(path)  # created by the writer above
                raise
            self.slow_files += 1
            self._last_time = time.perf_counter()
            self.template = self._make_template(path, key, writer, frame, options, file_name) \
                if key is not None else None
            return writer.warnings

        return slow, False

    def write(self, path: Path, layout: Layout, frame: NDArray, options: WriterOptions,
              file_name: str, exclusive: bool = False) -> list[str]:
        """Write ``frame`` as a complete file at ``path`` now (see ``prepare``); returns
        the writer's warnings."""
        return self.prepare(path, layout, frame, options, file_name, exclusive)[0]()

    # -- the template ------------------------------------------------------------
    def _make_template(self, path: Path, key: tuple, writer: NexusWriter, frame: NDArray,
                       options: WriterOptions, file_name: str) -> _Template | None:
        data = Path(path).read_bytes()
        with h5py.File(path, "r") as f:
            image = self._chunk(f[writer.destination(frame)])
            if image is None or image.size != frame.nbytes:
                return None
            attributes = {}
            for name, path_, dtype, count in writer.attribute_datasets():
                if dtype is NDAttrType.Undefined or count != 1:
                    continue
                patch = self._chunk(f[path_])
                if patch is None:
                    return None
                attributes[name] = (patch, dtype)
            performance = None
            perf_path = writer.performance_path
            if perf_path is not None and perf_path in f:
                performance = self._chunk(f[perf_path])
            names = {}
            for attr in ("file_name", "file_time"):
                value = f.attrs[attr]
                encoded = value if isinstance(value, bytes) else str(value).encode()
                if data.count(encoded) != 1:
                    return None  # not unique in the file: cannot be patched safely
                names[attr] = _Patch(data.index(encoded), len(encoded))
        return _Template(key, data, image, attributes, performance, names["file_name"],
                         names["file_time"], list(writer.warnings))

    @staticmethod
    def _chunk(ds: h5py.Dataset) -> _Patch | None:
        """File offset and size of a dataset's only chunk, uncompressed."""
        if ds.chunks is None or ds.id.get_num_chunks() != 1 or ds._filters:
            return None
        info = ds.id.get_chunk_info(0)
        return _Patch(int(info.byte_offset), int(info.size))

    # -- a file from the template ---------------------------------------------------
    def _write_patched(self, fd: int, path: Path, t: _Template,
                       patches: list[tuple[_Patch, bytes | memoryview]]) -> bool:
        """The template with ``patches`` (sorted, the image among them) in place.  The
        image's whole blocks go with O_DIRECT where ``_direct_io`` says it pays (the
        template's image starts on a block: the first file was written aligned), the
        rest through the page cache.  True when the image went with O_DIRECT."""
        image = next(value for patch, value in patches if patch is t.image)
        done = 0
        if self.direct_io and _direct_io.wanted(path, t.image.size) and \
                _direct_io.aligned(t.image.offset, image):
            try:
                _fcntl_direct(fd, True)
                try:
                    done = _direct_io.write_blocks(fd, t.image.offset, image)
                finally:
                    _fcntl_direct(fd, False)
            except OSError as exc:
                if not _direct_io.refused(exc):
                    raise
                self.direct_io = False  # this file system does not take it
        for offset, buffers in _runs(t, patches, done):
            _direct_io.pwrite_all(fd, buffers, offset)
        if done:
            self.direct_files += 1
        return bool(done)

    def _patches(self, t: _Template, frame: NDArray, values: dict, file_name: str,
                 t0: float, image: memoryview | None = None
                 ) -> list[tuple[_Patch, bytes | memoryview]]:
        """What this file changes in the template (the image, ``image`` if given, among
        them), sorted."""
        patches: list[tuple[_Patch, bytes | memoryview]] = []
        patches.append((t.image, _image_bytes(frame) if image is None else image))
        for name, (patch, dtype) in t.attributes.items():
            attribute = values[name]
            if dtype is NDAttrType.String:
                raw = str(attribute.value).encode("utf-8", "replace")[: ATTRIBUTE_STRING_SIZE - 1]
                patches.append((patch, raw.ljust(patch.size, b"\0")[: patch.size]))
            else:
                raw = np.asarray(attribute.value).astype(dtype.numpy).tobytes()
                patches.append((patch, raw + bytes(patch.size - len(raw))))
        patches.append((t.file_name, file_name.encode()))
        now = _now().encode()
        if len(now) == t.file_time.size:
            patches.append((t.file_time, now))
        if t.performance is not None:
            t1 = time.perf_counter()
            period = t1 - (self._last_time if self._last_time is not None else t0)
            mbit = 8.0 * frame.nbytes / 2**20
            row = np.asarray([t1 - t0, period, t1 - t0, mbit / period if period > 0 else 0.0,
                              mbit / (t1 - t0) if t1 > t0 else 0.0], dtype="<f8")
            patches.append((t.performance, row.tobytes()))
        patches.sort(key=lambda p: p[0].offset)
        return patches

    def _write_fast(self, path: Path, t: _Template, frame: NDArray, values: dict,
                    file_name: str, t0: float, exclusive: bool = False) -> None:
        patches = self._patches(t, frame, values, file_name, t0)
        fd = os.open(path, _create_flags(exclusive), 0o644)
        try:
            if not self._write_patched(fd, path, t, patches):
                _write_behind.file_written(fd)  # (the image is in the page cache)
        except BaseException:
            os.close(fd)
            _remove(path)  # created above
            raise
        os.close(fd)
        self._last_time = time.perf_counter()

    def _start_fast(self, context, path: Path, t: _Template, frame: NDArray, values: dict,
                    file_name: str, t0: float, exclusive: bool) -> _FileInFlight | None:
        """The file written but its image, which the kernel writes with AIO (``context``,
        see ``_aio``) while the caller goes on: what completes it, or None (nothing done)
        where the image does not go with O_DIRECT.  The file is allocated first: ext4
        writes into a hole or past the end synchronously."""
        image = _image_bytes(frame)
        if not (self.direct_io and _direct_io.wanted(path, t.image.size)
                and _direct_io.aligned(t.image.offset, image)):
            return None
        patches = self._patches(t, frame, values, file_name, t0, image)
        head = image.nbytes - image.nbytes % _direct_io.BLOCK
        fd = os.open(path, _create_flags(exclusive), 0o644)
        try:
            try:
                fallocate(fd, 0, len(t.data))
            except OSError as exc:  # (ext2/3 have none: the write then waits, that is all)
                if exc.errno not in (errno.EOPNOTSUPP, errno.ENOSYS):
                    raise
            for offset, buffers in _runs(t, patches, head):
                _direct_io.pwrite_all(fd, buffers, offset)
            _fcntl_direct(fd, True)
            try:
                key = context.submit(fd, t.image.offset, image[:head])
            except OSError as exc:
                if not _direct_io.refused(exc) and exc.errno != errno.EAGAIN:
                    raise
                if exc.errno != errno.EAGAIN:
                    self.direct_io = False  # this file system does not take it
                _fcntl_direct(fd, False)
                _direct_io.pwrite_all(fd, [image[:head]], t.image.offset)
                key = None
        except BaseException:
            os.close(fd)
            _remove(path)  # created above
            raise
        os.close(fd)  # (the kernel holds the file until its write is done)
        self._last_time = time.perf_counter()
        self.fast_files += 1
        if key is not None:
            self.direct_files += 1
        return _FileInFlight(key, path, t.image.offset, image[:head], frame, t.warnings)


class _FastWrite:
    """A file from the template (``SingleFileWriter.prepare``): called, it is written now;
    ``start(context)`` leaves its image to the kernel's AIO and returns what completes it
    (None where AIO does not apply: then call it)."""

    def __init__(self, writer: SingleFileWriter, path: Path, t: _Template, frame: NDArray,
                 values: dict, file_name: str, t0: float, exclusive: bool):
        self.writer = writer
        self.args = (path, t, frame, values, file_name, t0, exclusive)

    def __call__(self) -> list[str]:
        self.writer._write_fast(*self.args)
        self.writer.fast_files += 1
        return self.args[1].warnings

    def start(self, context) -> _FileInFlight | None:
        return self.writer._start_fast(context, *self.args)


class _FileInFlight:
    """A Single file whose image the kernel is writing (AIO key ``key``; None: written
    already).  ``complete(result)`` with the write's result (bytes or -errno): the file's
    warnings, or the error (the file removed).  ``frame`` owns the image's memory."""

    def __init__(self, key: int | None, path: Path, offset: int, image: memoryview,
                 frame: NDArray, warnings: list[str]):
        self.key = key
        self.path = path
        self.offset = offset
        self.image = image
        self.frame = frame
        self.warnings = warnings

    def complete(self, result: int | None) -> list[str]:
        try:
            if result is not None and result < self.image.nbytes:
                if result < 0 and -result not in REFUSED:
                    raise OSError(-result, os.strerror(-result))
                done = max(result, 0)  # short, or refused: the rest through the page cache
                fd = os.open(self.path, os.O_WRONLY)
                try:
                    _direct_io.pwrite_all(fd, [self.image[done:]], self.offset + done)
                finally:
                    os.close(fd)
        except BaseException:
            _remove(self.path)
            raise
        finally:
            self.image = self.frame = None  # (its memory goes back)
        return self.warnings


def _image_bytes(frame: NDArray) -> memoryview:
    """The frame's pixels as the file holds them (little-endian, contiguous): its own
    memory where they are so already."""
    image = np.ascontiguousarray(frame.data, dtype=frame.data.dtype.newbyteorder("<"))
    return memoryview(image).cast("B")


def _create_flags(exclusive: bool) -> int:
    return os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC)


def _runs(t: _Template, patches: list, done: int) -> list[tuple[int, list]]:
    """The file's bytes as runs (offset, buffers): the template with ``patches`` in place,
    but the image's first ``done`` bytes (written with O_DIRECT)."""
    template = memoryview(t.data)
    runs: list[tuple[int, list]] = [(0, [])]
    position = 0
    for patch, value in patches:
        runs[-1][1].append(template[position:patch.offset])
        if patch is t.image and done:
            runs.append((patch.offset + done, [value[done:]]))
        else:
            runs[-1][1].append(value)
        position = patch.offset + patch.size
    runs[-1][1].append(template[position:])
    return runs


def _fcntl_direct(fd: int, on: bool) -> None:
    import fcntl

    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_DIRECT if on else flags & ~os.O_DIRECT)


def _remove(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
