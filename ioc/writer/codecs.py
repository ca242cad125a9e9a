"""Pre-compressed frames (NDPluginCodec): their chunk bytes, decompression, compression.

NDPluginCodec (ADCore R3-15) compresses a whole NDArray into one buffer:

* ``lz4``: one raw LZ4 block (``LZ4_compress_default``), no header;
* ``bslz4``: bitshuffle + LZ4 (``bshuf_compress_lz4``, default block size): the blocks,
  each with its 4-byte big-endian compressed size, no header;
* ``blosc``: a c-blosc 1 frame (self-describing: its 16-byte header names the
  compressor, shuffle and type size).

NDFileHDF5 writes such a frame with ``H5Dwrite_chunk`` into a dataset whose chunk is the
whole frame and whose filter is the matching HDF5 plugin, adding the framing that plugin
expects in front of the codec's bytes (HDF5 LZ4 filter 32004: uncompressed size as
u64 BE, block size as u32 BE, then each block's compressed size as u32 BE; bitshuffle
filter 32008: uncompressed size u64 BE, block size in bytes u32 BE; Blosc 32001: the
frame as it is).  ``chunk_bytes`` builds exactly that; the codec's bytes are never
recompressed.

Decompression uses the reference libraries, maintained and on PyPI as wheels: ``lz4``
(python-lz4, the LZ4 project's bindings), ``bitshuffle`` (the bitshuffle project's own
package, the code ADCore and hdf5plugin build), ``blosc`` (python-blosc, c-blosc 1, as
NDPluginCodec uses).  ``hdf5plugin`` decodes inside HDF5 but has no Python codec API.
"""

from __future__ import annotations

import dataclasses
import os
import struct

import numpy as np

from ..ndarray import Codec, NDArray

__all__ = ["CODECS", "CodecError", "blosc_settings", "chunk_bytes", "decoded", "encode"]

CODECS = ("lz4", "bslz4", "blosc")
BLOSC_NAMES = ("blosclz", "lz4", "lz4hc", "snappy", "zlib", "zstd")  # NDPluginCodec's order
# c-blosc 1 header: the compressor's format code (flags >> 5) -> BLOSC_NAMES index
_BLOSC_FORMATS = {0: 0, 1: 1, 2: 3, 3: 4, 4: 5}  # lz4 and lz4hc share format 1
_BSHUF_BLOCK_BYTES = 8192  # bitshuffle's default block: 8 KiB of elements (BSHUF_TARGET_BLOCK_SIZE_B)


# bitshuffle's wheel is built with OpenMP, whose worker threads spin while they wait: on a
# busy 2-core machine one 2 MiB frame took 69 ms of CPU to compress, 2.4 ms with one thread.
# Our processes are the parallelism (receiver, writer, detector): one thread each.  Only if
# the user has not chosen, and before bitshuffle loads its OpenMP runtime.
os.environ.setdefault("OMP_NUM_THREADS", "1")


class CodecError(ValueError):
    """A compressed frame that cannot be used (unknown codec, corrupt data)."""


def _bshuf_block_elements(itemsize: int) -> int:
    """bitshuffle's default block size in elements (``bshuf_default_block_size``)."""
    return max(128, (_BSHUF_BLOCK_BYTES // itemsize) // 8 * 8)


def _uncompressed_bytes(frame: NDArray) -> int:
    return int(frame.data.size) * frame.data.dtype.itemsize


def blosc_settings(payload: np.ndarray) -> tuple[int, int, int]:
    """(compressor index in BLOSC_NAMES, shuffle 0/1/2, type size) from a Blosc frame's
    header; lz4 and lz4hc cannot be told apart (both report lz4)."""
    if payload.size < 16:
        raise CodecError("Blosc frame shorter than its 16-byte header")
    flags, typesize = int(payload[2]), int(payload[3])
    shuffle = 2 if flags & 0x4 else (1 if flags & 0x1 else 0)
    compressor = _BLOSC_FORMATS.get(flags >> 5)
    if compressor is None:
        raise CodecError(f"Blosc frame with unknown compressor format {flags >> 5}")
    return compressor, shuffle, typesize


def chunk_bytes(frame: NDArray) -> bytes | memoryview:
    """The HDF5 chunk holding ``frame`` for the filter matching its codec (see above)."""
    codec = frame.codec
    payload = memoryview(np.ascontiguousarray(codec.payload)).cast("B")
    size = _uncompressed_bytes(frame)
    if codec.name == "blosc":
        return payload
    if codec.name == "lz4":
        if len(payload) >= size or size >= 2**31:
            # the filter stores a block of its full size raw, and sizes are 32-bit
            raise CodecError("LZ4 block as large as the frame: no HDF5 chunk for it")
        return struct.pack(">QII", size, size, len(payload)) + payload
    if codec.name == "bslz4":
        block = _bshuf_block_elements(frame.data.dtype.itemsize) * frame.data.dtype.itemsize
        return struct.pack(">QI", size, block) + payload
    raise CodecError(f"no HDF5 chunk format for codec {codec.name!r}")


def decoded(frame: NDArray) -> NDArray:
    """``frame`` with its pixels decompressed (a frame without codec is returned as is)."""
    codec = frame.codec
    if codec is None:
        return frame
    dtype, shape = frame.data.dtype, frame.data.shape
    size = _uncompressed_bytes(frame)
    payload = np.ascontiguousarray(codec.payload)
    try:
        if codec.name == "lz4":
            import lz4.block

            raw = lz4.block.decompress(payload, uncompressed_size=size)
            data = np.frombuffer(raw, dtype=dtype)
        elif codec.name == "bslz4":
            import bitshuffle

            data = bitshuffle.decompress_lz4(payload, (int(np.prod(shape)),), dtype)
        elif codec.name == "blosc":
            import blosc

            raw = blosc.decompress(payload.tobytes())
            data = np.frombuffer(raw, dtype=dtype)
        else:
            raise CodecError(f"unknown codec {codec.name!r} (known: {', '.join(CODECS)})")
    except CodecError:
        raise
    except Exception as exc:  # noqa: BLE001 - each library has its own error types
        raise CodecError(f"{codec.name} data of frame {frame.unique_id} cannot be "
                         f"decompressed: {exc}") from None
    if data.size * data.dtype.itemsize != size:
        raise CodecError(f"{codec.name} data of frame {frame.unique_id} decompresses to "
                         f"{data.size * data.dtype.itemsize} bytes, its dimensions need {size}")
    return dataclasses.replace(frame, data=data.reshape(shape), codec=None)


def encode(data: np.ndarray, name: str, *, blosc_compressor: int = 1, blosc_shuffle: int = 1,
           blosc_level: int = 5) -> Codec:
    """Compress ``data`` as NDPluginCodec does (for the simulator and tests)."""
    data = np.ascontiguousarray(data)
    if name == "lz4":
        import lz4.block

        raw = lz4.block.compress(data, store_size=False)
    elif name == "bslz4":
        import bitshuffle

        raw = bitshuffle.compress_lz4(data.reshape(-1)).tobytes()
    elif name == "blosc":
        import blosc

        shuffle = (blosc.NOSHUFFLE, blosc.SHUFFLE, blosc.BITSHUFFLE)[blosc_shuffle]
        raw = blosc.compress(data.tobytes(), typesize=data.dtype.itemsize, clevel=blosc_level,
                             shuffle=shuffle, cname=BLOSC_NAMES[blosc_compressor])
    else:
        raise CodecError(f"unknown codec {name!r} (known: {', '.join(CODECS)})")
    return Codec(name, np.frombuffer(raw, dtype=np.uint8))
