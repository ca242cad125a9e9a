"""Frames straight to the disk: uncompressed frame chunks written with ``O_DIRECT``.

Writing a frame through the page cache costs the writer a copy of it into the cache and
the kernel its write-back; at hundreds of 2 MiB frames/s that is the largest CPU cost
left in the writer.  Measured on this project's 2-vCPU machine (ext4, one process
writing 2 MiB at a time, CPU of the whole machine): 0.82 ms a frame through the page
cache, 0.20 ms with ``O_DIRECT`` (wall time about equal, 1.6 ms); 1 MiB 0.43 / 0.22,
256 KiB 0.12 / 0.05, 64 KiB 0.03 / 0.03.

HDF5 stays the author of the file: it writes through ``DirectFile``, a Python file object
(h5py's ``fileobj`` driver), which sends each large write whose memory and file offset
are block-aligned (a frame's chunk, handed over by ``H5Dwrite_chunk`` without a copy) to a
descriptor opened with ``O_DIRECT``, and everything else (metadata, NDAttribute values,
the chunk's last partial block) through the page cache.  The file's alignment
(``H5Pset_alignment``, what ADCore's BoundaryAlign sets) puts frame chunks on 4 KiB
boundaries.  (Early allocation with ``H5Dget_chunk_info_by_coord`` for the address was
tried first: that call walks the whole chunk index, 0.3 ms a frame after 8000 frames.)

Only where it is safe and pays, otherwise h5py's own driver (sec2) writes the file:

* uncompressed frames, one per chunk, not SWMR (the ``fileobj`` driver has no SWMR);
* chunks of at least ``MIN_BYTES`` (below, the saving is within the noise);
* local block-device file systems (``LOCAL_FILE_SYSTEMS``, from ``/proc/self/mountinfo``):
  on network and parallel file systems ``O_DIRECT`` turns every write into a synchronous
  round trip;
* a write whose buffer is not on a 4 KiB boundary (a frame rebuilt in the IOC's own
  memory; a receiver slot is aligned) goes through the page cache;
* the first write the file system refuses (``EINVAL``) turns ``O_DIRECT`` off for that file.

``serve --keep-page-cache`` turns this off with the write-behind advice (``_write_behind``).
"""

from __future__ import annotations

import errno
import os
import threading

import numpy as np

from . import _write_behind
from ._aio import REFUSED, AsyncWrites, fallocate
from ._io_thread import DeferredWrites

BLOCK = 4096  # O_DIRECT alignment of file offsets, lengths and memory (covers 512-byte devices)
MIN_BYTES = 256 * 1024
LOCAL_FILE_SYSTEMS = frozenset({"ext2", "ext3", "ext4", "xfs", "btrfs", "f2fs", "overlay"})

_fs_cache: dict[str, str | None] = {}
_fs_lock = threading.Lock()


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo
    return field.encode().decode("unicode_escape") if "\\" in field else field


def file_system_type(directory: str) -> str | None:
    """The type of the file system holding ``directory`` (the longest mount point that
    contains it), or None when it cannot be told.  Cached per directory."""
    with _fs_lock:
        if directory in _fs_cache:
            return _fs_cache[directory]
    found, best = None, -1
    try:
        real = os.path.realpath(directory)
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as mounts:
            for line in mounts:
                fields = line.split()
                try:
                    mount_point = _unescape(fields[4])
                    fs_type = fields[fields.index("-") + 1]
                except (IndexError, ValueError):
                    continue
                inside = real == mount_point or real.startswith(mount_point.rstrip("/") + "/")
                if inside and len(mount_point) > best:
                    found, best = fs_type, len(mount_point)
    except OSError:
        found = None
    with _fs_lock:
        if len(_fs_cache) > 256:
            _fs_cache.clear()
        _fs_cache[directory] = found
    return found


def wanted(path: os.PathLike | str, chunk_bytes: int) -> bool:
    """Whether chunks of ``chunk_bytes`` of a file at ``path`` should be written directly."""
    # one switch with the write-behind advice: serve --keep-page-cache turns both off
    if not hasattr(os, "O_DIRECT") or not _write_behind.enabled() or chunk_bytes < MIN_BYTES:
        return False
    return file_system_type(os.path.dirname(os.path.abspath(path)) or "/") \
        in LOCAL_FILE_SYSTEMS


def _address(buffer: memoryview) -> int:
    return np.frombuffer(buffer, dtype=np.uint8).ctypes.data


def aligned(offset: int, chunk: memoryview) -> bool:
    """Whether ``chunk`` may be written at ``offset`` with O_DIRECT."""
    return offset % BLOCK == 0 and _address(chunk) % BLOCK == 0 and chunk.nbytes >= BLOCK


def write_blocks(fd: int, offset: int, chunk: memoryview) -> int:
    """Write the whole blocks of ``chunk`` at ``offset`` on ``fd`` (opened or set
    O_DIRECT, both aligned); the bytes written, a multiple of BLOCK: the caller writes
    the rest through the page cache.  Raises OSError as ``pwrite`` does."""
    head = chunk.nbytes - chunk.nbytes % BLOCK
    done = 0
    while done < head:
        written = os.pwrite(fd, chunk[done:head], offset + done)
        if written <= 0:
            raise OSError(errno.EIO, "short write")
        done += written
        if done % BLOCK:
            return done - done % BLOCK  # the rest again, through the page cache
    return done


def refused(exc: OSError) -> bool:
    """An O_DIRECT write the file system does not take (not a write error)."""
    return exc.errno in REFUSED


def pwrite_all(fd: int, buffers, offset: int) -> None:
    """``pwritev`` of ``buffers`` (bytes-like, one byte per item) at ``offset``, in batches
    of IOV_MAX, finishing short writes."""
    buffers = [b for b in buffers if len(b)]
    while buffers:
        batch = buffers[:IOV_MAX]
        written = os.pwritev(fd, batch, offset)
        if written <= 0:
            raise OSError(errno.EIO, "short write")
        offset += written
        done = 0
        while done < len(batch) and written >= len(batch[done]):
            written -= len(batch[done])
            done += 1
        buffers = buffers[done:]
        if written:  # part of one buffer went out
            buffers[0] = memoryview(buffers[0]).cast("B")[written:]


# At most this many buffers per pwritev (IOV_MAX: 1024 on Linux).
IOV_MAX = os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024


class DirectFile:
    """The file object h5py's ``fileobj`` driver writes one HDF5 file through: large
    aligned writes with ``O_DIRECT``, the rest through the page cache (see above).

    A frame's chunk handed over with ``keep`` is written while the next frame is made:
    with Linux AIO from the writer's thread (``_aio``; the file is then extended ahead of
    the writes, ``PREALLOCATE`` bytes at a time, and its logical size, HDF5's end of file,
    kept here), else on a thread of its own (``_io_thread``)."""

    PREALLOCATE = 64 * 2**20

    def __init__(self, path: os.PathLike | str, exclusive: bool = False):
        self.path = os.fspath(path)
        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | (os.O_EXCL if exclusive else os.O_TRUNC)
        self.fd: int | None = os.open(self.path, flags, 0o644)
        self._direct_bytes = 0  # written with O_DIRECT (synchronously)
        self.buffered_bytes = 0  # written through the page cache
        self._direct_fd: int | None = None
        self._direct_ok = True
        self._released = False
        self._pos = 0
        self._end = 0  # the logical size: what HDF5 wrote (a new, empty file)
        self._reserved = 0  # the size on disk, ahead of _end while writes are in flight
        # The owner of the memory of the chunk being written (set by the writer around
        # H5Dwrite_chunk): its write may then finish after write() returns.
        self.keep: object | None = None
        self.last_seq: int | None = None  # sequence number of the last deferred write
        self._deferred: AsyncWrites | DeferredWrites | None = None

    # -- the file-object interface the driver uses --------------------------------
    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence == os.SEEK_SET:
            self._pos = offset
        elif whence == os.SEEK_CUR:
            self._pos += offset
        else:
            self._pos = self._size() + offset
        return self._pos

    def tell(self) -> int:
        return self._pos

    def read(self, size: int = -1) -> bytes:
        if self._released:
            return b""
        if size < 0:
            size = max(self._size() - self._pos, 0)
        data = os.pread(self.fd, size, self._pos)
        self._pos += len(data)
        return data

    def readinto(self, buffer) -> int:
        if self._released:
            return 0
        n = os.preadv(self.fd, [buffer], self._pos)
        self._pos += n
        return n

    def write(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        size = view.nbytes
        if self._released:  # let go of after an error: nothing more reaches the disk
            self._pos += size
            return size
        end = self._pos + size
        if self._direct_ok and size >= MIN_BYTES and aligned(self._pos, view):
            if self.keep is not None:  # a frame's chunk: written while the next is made
                head = size - size % BLOCK
                if head < size:  # the last partial block, through the page cache now
                    self._write_buffered(self._pos + head, view[head:])
                self.last_seq = self._in_flight().submit(self._pos, view[:head], self.keep)
            else:
                self._write_direct(self._pos, view)
        else:
            self._write_buffered(self._pos, view)
        self._pos = end
        self._end = max(self._end, end)
        return size

    def _write_buffered(self, offset: int, view: memoryview) -> None:
        pwrite_all(self.fd, [view], offset)
        self.buffered_bytes += view.nbytes
        self._reserved = max(self._reserved, offset + view.nbytes)

    def _in_flight(self) -> AsyncWrites | DeferredWrites:
        if self._deferred is None:
            self._deferred = AsyncWrites.start(self._direct_descriptor(), self._reserve,
                                               self._write_direct) \
                or DeferredWrites(self._write_direct)
        return self._deferred

    def _direct_descriptor(self) -> int:
        if self._direct_fd is None:
            self._direct_fd = os.open(self.path, os.O_WRONLY | os.O_DIRECT | os.O_CLOEXEC)
        return self._direct_fd

    def _reserve(self, end: int) -> None:
        """The file at least ``end`` bytes long on disk (AIO writes inside it do not wait):
        ``PREALLOCATE`` more at a time, or just enough when the disk (or a file-size
        limit) has no more; raises OSError as a write there would."""
        if end <= self._reserved:
            return
        ahead = -(-max(end, self._reserved + self.PREALLOCATE) // BLOCK) * BLOCK
        try:
            fallocate(self.fd, self._reserved, ahead - self._reserved)
        except OSError as exc:
            if exc.errno in (errno.EOPNOTSUPP, errno.ENOSYS):  # (ext2/3): a sparse end
                os.ftruncate(self.fd, ahead)
            elif exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
                fallocate(self.fd, self._reserved, end - self._reserved)
                ahead = end
            else:
                raise
        self._reserved = ahead

    def _write_direct(self, offset: int, view: memoryview) -> None:
        """Whole blocks with O_DIRECT, the rest (or all, where the file system refuses
        O_DIRECT) through the page cache."""
        done = 0
        if self._direct_ok:
            try:
                done = write_blocks(self._direct_descriptor(), offset, view)
            except OSError as exc:
                if not refused(exc):
                    raise
                self._direct_ok = False  # the file system does not take it
                done = 0
            self._direct_bytes += done
        if done < view.nbytes:
            self._write_buffered(offset + done, view[done:])
        self._reserved = max(self._reserved, offset + view.nbytes)

    @property
    def direct_bytes(self) -> int:
        """Bytes written with O_DIRECT."""
        return self._direct_bytes + getattr(self._deferred, "direct_bytes", 0)

    # -- writes in flight ----------------------------------------------------------
    @property
    def failed(self) -> tuple[int, OSError] | None:
        """(sequence number of the first lost write, why) once a deferred write failed."""
        return self._deferred.failed if self._deferred is not None else None

    @property
    def done_seq(self) -> int:
        return self._deferred.done if self._deferred is not None else -1

    def wait(self) -> None:
        """Until the writes in flight are done (``failed`` tells how it went)."""
        if self._deferred is not None:
            self._deferred.wait()

    def truncate(self, size: int | None = None) -> int:
        """(HDF5 cuts the file to its end of allocation at every flush and at the close:
        what was allocated ahead goes then.)"""
        size = self._pos if size is None else size
        if not self._released:
            os.ftruncate(self.fd, size)
            self._end = self._reserved = size
        return size

    def flush(self) -> None:
        """(HDF5's flush: the data is with the kernel already.)"""

    def _size(self) -> int:
        return 0 if self._released else self._end

    # -- ours ---------------------------------------------------------------------
    def fileno(self) -> int | None:
        return self.fd

    def release(self) -> None:
        """Nothing more is written or read (a failed write or close: what is on disk
        stays as it is); the descriptors are closed."""
        self._released = True
        if self._deferred is not None:
            self._deferred.stop(drop=True)
        self.close()

    def close(self) -> None:
        """(After HDF5's close; writes still in flight are finished first.)"""
        if self._deferred is not None:
            self._deferred.stop()
        for name in ("fd", "_direct_fd"):
            fd = getattr(self, name)
            setattr(self, name, None)
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
