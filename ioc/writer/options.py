"""What the NDFileHDF5 PVs say about a file, as the writer takes it: ``WriterOptions``,
the Compression choices (HDF5 filters, hdf5plugin's codecs), chunk sizes, and the writer's
errors.  h5py only, no EPICS."""

from __future__ import annotations

import enum
import socket
from dataclasses import dataclass

import h5py
import numpy as np

from .. import __version__
from .extra_dims import ExtraDims

__all__ = [
    "ATTRIBUTE_CHUNK_BYTES", "BLOSC_COMPRESSORS", "BLOSC_SHUFFLES", "COMPRESSION_LABELS",
    "Compression", "CompressionUnavailable", "FrameMismatch", "MAX_ATTRIBUTE_CHUNK",
    "MAX_CHUNK_BYTES", "WriterError", "WriterOptions", "attribute_chunk",
    "available_compressions", "compression_kwargs", "effective_chunks",
]


class Compression(enum.IntEnum):
    """The Compression PV's values, in ADCore's order."""

    NONE = 0
    NBIT = 1
    SZIP = 2
    ZLIB = 3
    BLOSC = 4
    BSLZ4 = 5
    LZ4 = 6
    JPEG = 7


COMPRESSION_LABELS = ("None", "N-bit", "szip", "zlib", "Blosc", "BSLZ4", "LZ4", "JPEG")
BLOSC_COMPRESSORS = ("BloscLZ", "LZ4", "LZ4HC", "SNAPPY", "ZLIB", "ZSTD")
BLOSC_SHUFFLES = ("None", "Byte", "Bit")


class WriterError(RuntimeError):
    """The file could not be opened, written or closed as asked."""


class CompressionUnavailable(WriterError):
    pass


class FrameMismatch(WriterError):
    """A frame whose shape or type differs from the frame the file was opened with."""


@dataclass(frozen=True)
class WriterOptions:
    """What the NDFileHDF5 PVs say about the file to write."""

    multi_frame: bool = False  # False: Single mode, no frame axis
    num_capture: int = 1  # frame-axis maxshape; 0 = unlimited
    store_attributes: bool = True  # StoreAttr
    store_performance: bool = True  # StorePerform
    compression: Compression = Compression.NONE
    zlevel: int = 6
    szip_pixels: int = 16
    blosc_compressor: int = 0  # index into BLOSC_COMPRESSORS
    blosc_shuffle: int = 1  # index into BLOSC_SHUFFLES
    blosc_level: int = 5
    chunk_size_auto: bool = True
    chunks: tuple[int, ...] = ()  # per NDArray dim: NumColChunks, NumRowChunks, ChunkSize2..
    frames_chunks: int = 1  # NumFramesChunks
    fill_value: float = 0.0
    boundary_align: int = 0  # BoundaryAlign (bytes; 0: HDF5's default placement)
    boundary_threshold: int = 65536  # BoundaryThreshold: objects this large are aligned
    ndattribute_chunk: int = 0  # NDAttributeChunk; 0 = automatic
    swmr: bool = False
    flush_every: int = 0  # NumFramesFlush (SWMR)
    extra_dims: ExtraDims = ExtraDims()  # NumExtraDims, ExtraDim*, PositionMode, Pos*, DimAtt
    hostname: str = socket.gethostname()
    creator: str = f"nexus-writer-ioc {__version__}"


# -- compression -------------------------------------------------------------

def _szip_encodes() -> bool:
    try:
        info = h5py.h5z.get_filter_info(h5py.h5z.FILTER_SZIP)
    except Exception:  # noqa: BLE001 - filter not compiled in at all
        return False
    return bool(info & h5py.h5z.FILTER_CONFIG_ENCODE_ENABLED)


def available_compressions() -> set[Compression]:
    available = {Compression.NONE, Compression.ZLIB}
    if _szip_encodes():
        available.add(Compression.SZIP)
    try:
        import hdf5plugin  # noqa: F401  (registers Blosc, Bitshuffle, LZ4 with HDF5)

        available |= {Compression.BLOSC, Compression.BSLZ4, Compression.LZ4}
    except ImportError:
        pass
    return available


def compression_kwargs(options: WriterOptions, dtype: np.dtype) -> dict:
    """h5py ``create_dataset`` keywords for the Compression PVs, or raise."""
    kind = Compression(options.compression)
    if kind not in available_compressions():
        raise CompressionUnavailable(
            f"Compression {COMPRESSION_LABELS[kind]} is not available in this writer "
            f"(available: {', '.join(COMPRESSION_LABELS[c] for c in sorted(available_compressions()))})"
        )
    if kind is Compression.NONE:
        return {}
    if kind is Compression.ZLIB:
        return {"compression": "gzip", "compression_opts": int(min(max(options.zlevel, 0), 9))}
    if kind is Compression.SZIP:
        pixels = int(options.szip_pixels) if options.szip_pixels % 2 == 0 else 16
        return {"compression": "szip", "compression_opts": ("nn", min(max(pixels, 2), 32))}
    import hdf5plugin

    if kind is Compression.LZ4:
        return dict(hdf5plugin.LZ4())
    if kind is Compression.BSLZ4:
        return dict(hdf5plugin.Bitshuffle(cname="lz4"))
    cname = BLOSC_COMPRESSORS[options.blosc_compressor].lower()
    shuffle = (hdf5plugin.Blosc.NOSHUFFLE, hdf5plugin.Blosc.SHUFFLE,
               hdf5plugin.Blosc.BITSHUFFLE)[options.blosc_shuffle]
    return dict(hdf5plugin.Blosc(cname=cname, clevel=int(min(max(options.blosc_level, 0), 9)),
                                 shuffle=shuffle))


def effective_chunks(dims: tuple[int, ...], options: WriterOptions) -> tuple[int, ...]:
    """Chunk size per NDArray dim (fastest first), as ADCore computes it at open:
    the user's value clipped to the dim, or the whole dim when ChunkSizeAuto is
    on or the value is < 1."""
    result = []
    for i, size in enumerate(dims):
        want = options.chunks[i] if i < len(options.chunks) else 0
        if options.chunk_size_auto or want < 1:
            result.append(size)
        else:
            result.append(min(want, size))
    return tuple(result)


# HDF5 refuses chunks of 4 GiB or more; a chunk is also a buffer the library allocates.
MAX_CHUNK_BYTES = 2**32 - 1
# Automatic NDAttribute chunks: at most this many bytes, so that a file holds what it
# records (ADCore's chunk of NumCapture or 16384 values is allocated whole: 4 MiB per
# string attribute per file, ADCore#603).  Fewer when fewer frames are expected.
ATTRIBUTE_CHUNK_BYTES = 16 * 1024
MAX_ATTRIBUTE_CHUNK = 65536  # NDAttributeChunk's upper bound (values)


def attribute_chunk(options: WriterOptions, itemsize: int) -> int:
    """Chunk length of an NDAttribute dataset: NDAttributeChunk when set (bounded),
    else 1 in Single mode, else the frames expected (NumCapture) up to
    ATTRIBUTE_CHUNK_BYTES of values."""
    if options.ndattribute_chunk > 0:
        return min(options.ndattribute_chunk, MAX_ATTRIBUTE_CHUNK)
    if not options.multi_frame:
        return 1
    most = max(1, ATTRIBUTE_CHUNK_BYTES // max(itemsize, 1))
    return min(options.num_capture, most) if options.num_capture > 0 else most
