"""What is left of a file after a failed write or close, and what to tell the operator.

A write error (disk full, a file-size limit, a vanished mount) can leave an HDF5 file
half-updated: its metadata may point at chunks that never reached the disk.  After the
writer has let go of it (``NexusWriter.release``: nothing more is written into it),
``recover`` opens it read-only, finds for every growing dataset the frames that can be
read back, and, when some cannot, shrinks the datasets to what can (the file is then
a valid file with fewer frames).  A file that cannot be opened at all is reported as
such; the caller removes it if it created it.

``describe_error`` turns h5py's messages (multi-line, with buffer addresses and
timestamps) into the cause an operator needs: "No space left on device".
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import h5py

__all__ = ["Recovered", "describe_error", "recover", "release"]

_HDF5_ERRNO = re.compile(r"errno = (\d+)")
_HDF5_MESSAGE = re.compile(r"error message = '([^']*)'")


def describe_error(exc: BaseException) -> str:
    """One line, the cause first: the system's words for an errno when there is one."""
    text = str(exc)
    number = getattr(exc, "errno", None)
    if not isinstance(number, int) or number <= 0:
        found = _HDF5_ERRNO.search(text)
        number = int(found.group(1)) if found else None
    if number:
        try:
            return os.strerror(number)
        except ValueError:
            pass
    found = _HDF5_MESSAGE.search(text)
    if found:
        return found.group(1)
    # h5py: "Unable to ... (details)"; keep the first clause, on one line
    line = " ".join(text.split())
    line = re.sub(r"\s*\((?:file (?:read|write) failed|time = ).*$", "", line)
    return line[:200] or type(exc).__name__


def release(file: h5py.File, fd: int | None = None) -> None:
    """Let go of an HDF5 file whose close failed, without touching what is on disk again.

    HDF5 keeps a file open when its close fails (h5py raises, the library retries at
    exit).  Its descriptor is pointed at /dev/null first, so those retries write nowhere
    and the descriptor no longer holds a deleted file's space; then it is closed."""
    if fd is None:
        try:
            fd = file.id.get_vfd_handle()
        except Exception:  # noqa: BLE001 - already closed, or another driver
            fd = None
    if not file.id.valid:
        return
    if isinstance(fd, int) and fd >= 0:
        try:
            null = os.open(os.devnull, os.O_RDWR)
            try:
                os.dup2(null, fd)
            finally:
                os.close(null)
        except OSError:
            pass
    for _ in range(3):  # each attempt lets go of what it can
        try:
            file.close()
        except Exception:  # noqa: BLE001 - writes go to /dev/null; nothing to report
            pass
        if not file.id.valid:
            break


@dataclass
class Recovered:
    frames: int  # frames readable in the file afterwards
    trimmed: bool  # datasets were shrunk to what can be read


def _readable_prefix(ds: h5py.Dataset) -> int:
    """How many leading elements along axis 0 can be read (binary search)."""
    n = ds.shape[0] if ds.shape else 0

    def ok(i: int) -> bool:
        try:
            ds[i]
            return True
        except Exception:  # noqa: BLE001 - any HDF5 read error
            return False

    if n == 0 or ok(n - 1) and _whole(ds):
        return n
    lo, hi = 0, n  # lo readable count, hi an upper bound
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if ok(mid - 1):
            lo = mid
        else:
            hi = mid - 1
    return lo


def _whole(ds: h5py.Dataset) -> bool:
    try:
        ds[()]
        return True
    except Exception:  # noqa: BLE001
        return False


def _walk(group: h5py.Group, prefix: str = ""):
    """(path, object or None) for everything below ``group``; None where the object
    cannot be read (its header lies beyond what reached the disk).  Hard links to an
    object already seen are skipped."""
    seen: set = set()
    stack = [(group, prefix)]
    while stack:
        current, base = stack.pop()
        try:
            names = list(current.keys())
        except Exception:  # noqa: BLE001
            continue
        for name in names:
            path = f"{base}/{name}"
            try:
                obj = current[name]
                key = obj.id.fileno, h5py.h5o.get_info(obj.id).addr \
                    if hasattr(h5py.h5o.get_info(obj.id), "addr") else path
            except Exception:  # noqa: BLE001
                yield path, None
                continue
            if key in seen:
                continue
            seen.add(key)
            yield path, obj
            if isinstance(obj, h5py.Group):
                stack.append((obj, path))


def _growing(obj) -> bool:
    return isinstance(obj, h5py.Dataset) and obj.chunks is not None and obj.ndim >= 1 \
        and (obj.maxshape[0] is None or obj.maxshape[0] > 0)


def recover(path: str | os.PathLike, detectors: list[str], per_frame: list[str] = (),
            marker: str | None = None) -> Recovered | None:
    """Make ``path`` readable with what it holds; None if it cannot be opened at all.

    ``detectors`` are the frames datasets (their readable frames are counted);
    ``per_frame`` datasets (NDAttribute values) are cut to the frames kept, so that a
    file never lists a UniqueId whose frame is not in it.  ``marker`` (the
    NDArrayUniqueId dataset, written last for each frame) bounds the frames kept with
    one detector dataset: a frame whose write failed half-way can look readable."""
    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            lengths: dict[str, tuple[int, int]] = {}
            unreadable: list[str] = []
            for name, obj in _walk(f):
                if obj is None:
                    unreadable.append(name)
                elif _growing(obj):
                    lengths[name] = (obj.shape[0], _readable_prefix(obj))
    except Exception:  # noqa: BLE001 - unreadable: not an HDF5 file any more
        return None
    detectors = [d if d.startswith("/") else f"/{d}" for d in detectors]
    frames = sum(lengths[d][1] for d in detectors if d in lengths)
    marker = marker if marker is None or marker.startswith("/") else f"/{marker}"
    if marker in lengths and len(detectors) == 1 and detectors[0] in lengths:
        frames = min(frames, lengths[marker][1])
        have, _ = lengths[detectors[0]]
        lengths[detectors[0]] = (have, frames)
    for name in per_frame:
        name = name if name.startswith("/") else f"/{name}"
        if name in lengths:
            have, keep = lengths[name]
            lengths[name] = (have, min(keep, frames))
    broken = {name: keep for name, (have, keep) in lengths.items() if keep < have}
    if broken or unreadable:
        try:
            f = h5py.File(path, "r+")
        except Exception:  # noqa: BLE001 - cannot be changed: report what can be read
            f = None
        if f is not None:
            try:
                for name in unreadable:  # links to objects that never reached the disk
                    del f[name]
                for name, keep in broken.items():
                    f[name].resize(keep, axis=0)
                f.close()
            except Exception:  # noqa: BLE001 - no room even for that
                release(f)
        try:
            with h5py.File(path, "r") as f:
                for name, obj in _walk(f):
                    if obj is None:
                        raise OSError(f"{name} unreadable")
                    if isinstance(obj, h5py.Dataset):
                        obj[()]
        except Exception:  # noqa: BLE001
            return Recovered(frames, False) if any(d in lengths for d in detectors) else None
    return Recovered(frames, bool(broken or unreadable))
