"""Single mode: one frame, one file, through the template writer (``SingleFileWriter``);
files that need no h5py are written by ``SinglePipeline`` while the next is prepared.

A mixin of ``FileSaver`` (``file_saver.py``): ``single`` and ``pipeline`` are the saver's;
names, options and layout come from ``NamingAndOptions``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from ..ndarray import NDArray
from ._saver_common import SaverError, cause_of


class SingleMode:
    """FileSaver's Single-mode files (see the module's docstring)."""

    def _write_single(self, frame: NDArray, done: Callable[[], None] | None = None) -> bool | None:
        """One frame, one file (Single mode), through the template writer: True when
        written, False when refused or failed (said in WriteMessage); with ``done``, None
        when the pipeline writes it (and calls ``done`` after).  A file that needs h5py is
        written here, after the files in flight."""
        try:
            self._ok()
            if self.p("NumExtraDims"):  # ADCore: a Single-mode open forces NumExtraDims to 0
                self.post(NumExtraDims=0, NumExtraDims_RBV=0)
            options = self.options(multi_frame=False)
            written, final = self._next_name(swmr=False)
            try:
                layout = self._layout()
            except SaverError as exc:
                raise SaverError(f"Error opening file: {exc} ({final.name})") from None
            self._post_chunking(frame, options)
            t0 = time.perf_counter()
            write, fast = self.single.prepare(written, layout, frame, options, str(final),
                                              exclusive=written != final)
            notes = list(self._name_notes)
            if fast and done is not None:
                self.pipeline.submit(write, lambda warnings, error: self._complete_single(
                    warnings, error, written, final, frame.nbytes, t0, notes, done))
                return None
            # here, after the files in flight (h5py's file makes the template they use)
            self.pipeline.wait()
            try:
                warnings, error = write(), None
            except Exception as exc:  # noqa: BLE001 - h5py raises more than OSError
                warnings, error = None, exc
            return self._complete_single(warnings, error, written, final, frame.nbytes, t0,
                                         notes)
        except SaverError as exc:
            self._error(str(exc))
            return False

    def _complete_single(self, warnings: list[str] | None, error: BaseException | None,
                         written: Path, final: Path, nbytes: int, t0: float,
                         notes: list[str], done: Callable[[], None] | None = None) -> bool:
        """A Single file written (or not: the writer removed what it created), in order:
        name it, say so, then ``done`` (the frame's readbacks).  Whether it was written."""
        try:
            if error is not None:
                raise SaverError(f"Error writing file: {cause_of(error)} ({final.name})")
            self._single_written(written, final, nbytes, t0, list(warnings) + notes)
            return True
        except SaverError as exc:
            self._error(str(exc))
            return False
        finally:
            if done is not None:
                done()

    def _single_written(self, written: Path, final: Path, nbytes: int, t0: float,
                        warnings: list[str]) -> None:
        if written != final:
            try:
                os.replace(written, final)
            except OSError as exc:
                raise SaverError(f"Error renaming file: {cause_of(exc)} ({written.name} -> "
                                 f"{final.name})") from None
        runtime = time.perf_counter() - t0
        speed = nbytes * 8 / 2**20 / runtime if runtime > 0 else 0.0
        self.post(RunTime=runtime, IOSpeed=speed)
        if warnings:
            self.post(WriteMessage=f"Written with warnings: {warnings[0]}"[:255])
        self.post(NumCaptured_RBV=1)
