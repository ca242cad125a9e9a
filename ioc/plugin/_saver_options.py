"""The file saver's settings for the next file: the WriterOptions the PVs say, the file's
name (FileNumber, templates, the path policy) and the layout (XMLFileName).

A mixin of ``FileSaver`` (``file_saver.py``): it reads the saver's ``params``, ``policy``
and ``user_paths``, keeps the options and layout caches the saver holds, and posts the
name and layout readbacks.  ``layout_status`` is also the PV layer's check of a new
XMLFileName.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from ..layout import warnings_summary
from ..layout.model import Layout, LayoutError, default_layout, load_layout
from ..writer.nexus import Compression, WriterOptions
from ._saver_common import INT32_MAX, NO_POLICY, SaverError, log
from .extra_dim_rules import extra_dims_of
from .naming import (
    PathPolicy,
    TemplateError,
    c_format,
    check_full_name,
    template_warnings,
    temporary_name,
)


def layout_status(spec: str, policy: PathPolicy = NO_POLICY) -> tuple[Layout | None, str]:
    """Load XMLFileName's layout: (layout, "" or its warnings) or (None, the error)."""
    if not spec.strip():
        return default_layout(), "Default layout selected"
    try:
        layout = load_layout(spec, allowed_roots=policy.roots)
    except LayoutError as exc:
        return None, str(exc)
    for warning in layout.warnings:
        log.warning("layout %s: %s", layout.source[:200], warning)
    return layout, warnings_summary(layout.warnings)


class _ReadRecorder(Mapping):
    """A read-only view of the parameters that notes which ones were read."""

    def __init__(self, params: Mapping[str, object]):
        self.params = params
        self.names: dict[str, None] = {}

    def __getitem__(self, name: str):
        self.names[name] = None
        return self.params[name]

    def __iter__(self):
        return iter(self.params)

    def __len__(self) -> int:
        return len(self.params)


def build_options(params: Mapping[str, object], multi_frame: bool) -> WriterOptions:
    """The WriterOptions the plugin's parameters (PV values by suffix) say."""
    p = params.__getitem__
    chunks = (p("NumColChunks"), p("NumRowChunks"), *(p(f"ChunkSize{i}") for i in range(2, 10)))
    num_capture = max(int(p("NumCapture")), 0)
    # NDFileHDF5::configureDims: the frame axis chunk is NumFramesChunks (at least 1,
    # at most NumCapture), and NumFramesFlush is raised to it.
    frames_chunk = max(int(p("NumFramesChunks")), 1)
    if num_capture > 0:
        frames_chunk = min(frames_chunk, num_capture)
    return WriterOptions(
        multi_frame=multi_frame, num_capture=num_capture,
        store_attributes=bool(p("StoreAttr")), store_performance=bool(p("StorePerform")),
        compression=Compression(p("Compression")), zlevel=p("ZLevel"),
        szip_pixels=p("SZipNumPixels"), blosc_compressor=p("BloscCompressor"),
        blosc_shuffle=p("BloscShuffle"), blosc_level=p("BloscLevel"),
        chunk_size_auto=bool(p("ChunkSizeAuto")), chunks=tuple(int(c) for c in chunks),
        frames_chunks=frames_chunk, fill_value=float(p("FillValue")),
        boundary_align=int(p("BoundaryAlign")),
        boundary_threshold=int(p("BoundaryThreshold")),
        ndattribute_chunk=max(int(p("NDAttributeChunk")), 0),
        swmr=bool(p("SWMRMode")) and multi_frame,
        flush_every=max(int(p("NumFramesFlush")), frames_chunk),
        extra_dims=extra_dims_of(params, multi_frame),
    )


class NamingAndOptions:
    """FileSaver's options, names and layout for the next file (see the module's docstring)."""

    # -- options ------------------------------------------------------------------
    def options(self, multi_frame: bool) -> WriterOptions:
        """The WriterOptions the PVs say now.  Built again only when one of the values it
        was built from has changed (a Single-mode run asks for them for every file)."""
        cached = self._options_cache
        if cached is not None:
            (was_multi, names, values), options = cached
            if was_multi == multi_frame and values == tuple(map(self.params.__getitem__, names)):
                return options
        read = _ReadRecorder(self.params)
        options = build_options(read, multi_frame)
        names = tuple(read.names)
        self._options_cache = ((multi_frame, names, tuple(map(self.params.__getitem__, names))),
                               options)
        return options

    # -- naming -------------------------------------------------------------------
    def _next_name(self, swmr: bool) -> tuple[Path, Path]:
        """Build the full name (FileNumber++ when AutoIncrement), as openFileBase does.

        Returns (name written while open, final name).  SWMR files are written under
        their final name: their readers open them while they grow.  A name that cannot
        be used is refused before FileNumber moves; once the name is made, the number is
        used even if the open then fails (ADCore's createFileName)."""
        number = int(self.p("FileNumber"))
        path, name = str(self.p("FilePath")), str(self.p("FileName"))
        template = str(self.p("FileTemplate"))
        auto = bool(self.p("AutoIncrement"))
        if auto and number >= INT32_MAX:
            raise SaverError(f"FileNumber {number} is the largest a 32-bit FileNumber holds: "
                             "AutoIncrement cannot go on; set FileNumber")
        try:
            full = c_format(template, path, name, number)
        except TemplateError as exc:
            raise SaverError(f"Invalid FileTemplate: {exc}") from None
        problem = check_full_name(full)
        if problem is None and not os.path.isabs(full):
            problem = (f"the name {full} is relative (FilePath empty or left out of "
                       f"FileTemplate): not writing into the IOC's working directory")
        if problem is None:
            problem = self.policy.check_file(full, path)
        if problem:
            raise SaverError(f"Error opening file: {problem}")
        final = Path(full)
        suffix = str(self.p("TempSuffix"))
        try:
            written = final if swmr and not suffix else temporary_name(final, suffix)
        except TemplateError as exc:
            raise SaverError(f"Error opening file: {exc}") from None
        if auto:
            self.post(FileNumber=number + 1, FileNumber_RBV=number + 1)
        self.post(FullFileName_RBV=full)
        self._warn_about_name(template, path, name, number)
        return written, final

    def _warn_about_name(self, template: str, path: str, name: str, number: int) -> None:
        # (the same for every number of one template: found once, not for every file)
        cached = self._notes_for
        if cached is not None and cached[0] == (template, path, name):
            notes = cached[1]
        else:
            notes = template_warnings(template, path, name, number)
            self._notes_for = ((template, path, name), notes)
        if notes and (template, path, name) not in self._warned:
            self._warned.add((template, path, name))
            log.warning("file name %r: %s", template, "; ".join(notes))
        self._name_notes = notes

    # -- layout -------------------------------------------------------------------
    def _layout(self) -> Layout:
        """The layout, verified again at each open as ADCore does; a file that has not
        changed (same name, size and mtime) is not parsed again."""
        spec = str(self.p("XMLFileName"))
        key: tuple = (spec,)
        if spec.strip() and "<?xml" not in spec:
            try:
                stat = self.user_paths.call("layout file", os.stat, spec)
                key = (spec, stat.st_mtime_ns, stat.st_size)
            except OSError:
                key = (spec, None)
        if self._layout_cache is not None and self._layout_cache[0] == key and key[-1] is not None:
            return self._layout_cache[1]
        try:
            layout, message = self.user_paths.call("layout file", layout_status, spec,
                                                   self.policy)
        except OSError as exc:
            layout, message = None, str(exc)
        if layout is not None:
            self._layout_cache = (key, layout)
        valid = layout is not None
        self.post(XMLValid_RBV=int(valid), XMLErrorMsg_RBV=message[:255])
        if layout is None:
            raise SaverError(message)
        return layout
