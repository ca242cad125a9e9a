"""The frames of an open stream whose writes are still in flight (``_io_thread``).

Their chunks are in the file's index as soon as HDF5 has handed them over; if the disk
then refuses one (full, I/O error), those frames must leave the file again before
anything is reported or flushed, or the file would list frames it does not hold (a
chunk of zeros read back as a frame).  Used only for a plain stream into one frames
dataset (no extra dimensions, no PositionMode): the lost frames are then its last ones.
"""

from __future__ import annotations

import collections

from .recovery import describe_error


class FramesInFlight:
    def __init__(self, io, lost_error: type[Exception]):
        self.io = io  # _direct_io.DirectFile
        self.lost_error = lost_error
        self.seqs: collections.deque[int] = collections.deque()
        self.error: Exception | None = None

    def sent(self, seq: int | None) -> None:
        if seq is not None:
            self.seqs.append(seq)

    def check(self, writer) -> None:
        """Before the next frame: raise if a write in flight has failed (its frames are
        taken out of the file first)."""
        failed = self.io.failed
        if failed is None:
            done = self.io.done_seq
            while self.seqs and self.seqs[0] <= done:
                self.seqs.popleft()
            return
        raise self._take_back(writer, failed)

    def settle(self, writer) -> Exception | None:
        """Wait for every write in flight (before a flush or the close); the error to
        report when some failed (their frames taken out of the file), else None."""
        self.io.wait()
        failed = self.io.failed
        if failed is None:
            self.seqs.clear()
            return None
        return self._take_back(writer, failed)

    def _take_back(self, writer, failed) -> Exception:
        if self.error is None:
            first, exc = failed
            lost = sum(1 for seq in self.seqs if seq >= first)
            self.seqs.clear()
            if lost:
                writer.drop_last_frames(lost)
            self.error = self.lost_error(
                f"{describe_error(exc)}; the last {lost} frames handed to the disk did not "
                "reach it and are not in the file")
        return self.error
