"""Stage 2: layout model + frames -> NeXus HDF5 files (h5py; no EPICS)."""

from .nexus import (
    Compression,
    FrameMismatch,
    NexusWriter,
    WriterError,
    WriterOptions,
    available_compressions,
    write_single,
)
from .single_file import SingleFileWriter

__all__ = [
    "Compression", "FrameMismatch", "NexusWriter", "SingleFileWriter", "WriterError",
    "WriterOptions", "available_compressions", "write_single",
]
