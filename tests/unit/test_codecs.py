"""Pre-compressed frames (NDPluginCodec) in the writer, and NTNDArrays turned into frames."""

from __future__ import annotations

import dataclasses
import struct

import h5py
import hdf5plugin  # noqa: F401  (reads LZ4, bitshuffle, Blosc chunks)
import numpy as np
import pytest
from helpers import attr, make_frame

from ioc.layout.model import default_layout
from ioc.ndarray import NDAttrSource, NDAttrType, placeholder
from ioc.sources.frames import frame_from_message, frame_message, parse_source
from ioc.sources.pva import ntndarray_frame
from ioc.tools.sim_pva import ntndarray_fields
from ioc.writer.codecs import CodecError, blosc_settings, chunk_bytes, decoded, encode
from ioc.writer.nexus import Compression, NexusWriter, WriterOptions
from ioc.writer.single_file import SingleFileWriter

SHAPE = (48, 64)


def noisy(uid: int) -> np.ndarray:
    rng = np.random.default_rng(uid)
    return (rng.poisson(50, SHAPE) + np.arange(SHAPE[1])).astype("<u2")


def compressed(uid: int, codec: str, **kw):
    frame = make_frame(uid, SHAPE)
    data = noisy(uid)
    return dataclasses.replace(frame, data=placeholder(data.shape, data.dtype),
                               codec=encode(data, codec, **kw)), data


@pytest.mark.parametrize("codec", ["lz4", "bslz4", "blosc"])
def test_decoded_gives_the_pixels_back(codec):
    frame, data = compressed(3, codec)
    assert frame.nbytes == data.nbytes and frame.compressed_size < data.nbytes
    out = decoded(frame)
    assert out.codec is None
    np.testing.assert_array_equal(out.data, data)


def test_corrupt_data_is_a_codec_error():
    frame, _ = compressed(3, "lz4")
    bad = dataclasses.replace(frame, codec=dataclasses.replace(
        frame.codec, payload=frame.codec.payload[: frame.codec.compressed_size // 2]))
    with pytest.raises(CodecError):
        decoded(bad)


def test_blosc_header_names_its_settings():
    _, data = compressed(1, "blosc")
    for compressor, shuffle in ((0, 0), (1, 1), (5, 2)):
        codec = encode(data, "blosc", blosc_compressor=compressor, blosc_shuffle=shuffle)
        assert blosc_settings(codec.payload) == (compressor, shuffle, 2)


@pytest.mark.parametrize("codec, compression", [("lz4", Compression.LZ4),
                                                ("bslz4", Compression.BSLZ4),
                                                ("blosc", Compression.BLOSC)])
def test_matching_codec_is_written_unchanged(tmp_path, codec, compression):
    options = WriterOptions(multi_frame=True, num_capture=0, compression=compression,
                            blosc_compressor=1, blosc_shuffle=1)
    frames = [compressed(uid, codec) for uid in (1, 2, 3)]
    with NexusWriter(tmp_path / "f.h5", default_layout(), frames[0][0], options) as writer:
        for frame, _ in frames:
            writer.write(frame)
    with h5py.File(tmp_path / "f.h5") as f:
        ds = f["/entry/data/data"]
        for i, (frame, data) in enumerate(frames):
            _, chunk = ds.id.read_direct_chunk((i, 0, 0))
            assert chunk == bytes(chunk_bytes(frame))
            assert chunk.endswith(frame.codec.payload.tobytes())
            np.testing.assert_array_equal(ds[i], data)


def test_chunk_framing_is_the_hdf5_filters_own():
    """What the LZ4 and bitshuffle filters write for the same pixels, byte for byte."""
    frame, data = compressed(5, "bslz4")
    with h5py.File("mem.h5", "w", driver="core", backing_store=False) as f:
        ds = f.create_dataset("d", data=data, chunks=data.shape, **hdf5plugin.Bitshuffle(cname="lz4"))
        assert ds.id.read_direct_chunk((0, 0))[1] == bytes(chunk_bytes(frame))
        frame, data = compressed(5, "lz4")
        ds = f.create_dataset("e", data=data, chunks=data.shape, **hdf5plugin.LZ4())
        _, chunk = ds.id.read_direct_chunk((0, 0))
        assert chunk[:16] == struct.pack(">QII", data.nbytes, data.nbytes, len(chunk) - 16)


@pytest.mark.parametrize("compression", [Compression.NONE, Compression.ZLIB, Compression.BSLZ4])
def test_other_codec_is_decompressed_and_written_as_configured(tmp_path, compression):
    options = WriterOptions(multi_frame=True, num_capture=0, compression=compression)
    frame, data = compressed(7, "lz4")
    with NexusWriter(tmp_path / "f.h5", default_layout(), frame, options) as writer:
        writer.write(frame)
    with h5py.File(tmp_path / "f.h5") as f:
        ds = f["/entry/data/data"]
        np.testing.assert_array_equal(ds[0], data)
        if compression is Compression.BSLZ4:
            assert ds.id.read_direct_chunk((0, 0, 0))[1] != bytes(chunk_bytes(frame))


def test_blosc_with_other_settings_is_recompressed(tmp_path):
    options = WriterOptions(multi_frame=True, num_capture=0, compression=Compression.BLOSC,
                            blosc_compressor=0, blosc_shuffle=2)
    frame, data = compressed(2, "blosc", blosc_compressor=1, blosc_shuffle=1)
    with NexusWriter(tmp_path / "f.h5", default_layout(), frame, options) as writer:
        writer.write(frame)
    with h5py.File(tmp_path / "f.h5") as f:
        ds = f["/entry/data/data"]
        assert ds.id.read_direct_chunk((0, 0, 0))[1] != frame.codec.payload.tobytes()
        assert blosc_settings(np.frombuffer(ds.id.read_direct_chunk((0, 0, 0))[1], "u1"))[:2] \
            == (0, 2)
        np.testing.assert_array_equal(ds[0], data)


def test_single_mode_fast_path_takes_precompressed_frames(tmp_path):
    writer = SingleFileWriter()
    options = WriterOptions()
    for uid in (1, 2, 3):
        frame, data = compressed(uid, "bslz4")
        writer.write(tmp_path / f"s{uid}.h5", default_layout(), frame, options, f"s{uid}.h5")
        with h5py.File(tmp_path / f"s{uid}.h5") as f:
            np.testing.assert_array_equal(f["/entry/data/data"][()], data)
            assert f["/entry/instrument/NDAttributes/NDArrayUniqueId"][()].tolist() == [uid]
    assert writer.fast_files == 2  # decompressed first, then patched into the template
    options = WriterOptions(compression=Compression.BSLZ4)
    frame, data = compressed(4, "bslz4")
    writer.write(tmp_path / "s4.h5", default_layout(), frame, options, "s4.h5")
    with h5py.File(tmp_path / "s4.h5") as f:
        ds = f["/entry/data/data"]
        assert ds.id.read_direct_chunk((0, 0))[1] == bytes(chunk_bytes(frame))
        np.testing.assert_array_equal(ds[()], data)


# -- NTNDArray <-> frames ---------------------------------------------------------------------

ATTRS = (attr("Counter", 7, NDAttrType.Int32), attr("Short", -3, NDAttrType.Int16),
         attr("Byte", 200, NDAttrType.UInt8), attr("Big", 2**40, NDAttrType.UInt64),
         attr("F", 1.5, NDAttrType.Float32), attr("D", 2.25, NDAttrType.Float64),
         attr("S", "text", NDAttrType.String, NDAttrSource.CONST, "desc", "src"),
         attr("U", None, NDAttrType.Undefined, NDAttrSource.EPICS_PV))


def ntndarray(frame):
    from p4p import Value
    from p4p.nt import NTNDArray

    return Value(NTNDArray.buildType(), ntndarray_fields(frame))


@pytest.mark.parametrize("codec", ["", "bslz4"])
def test_ntndarray_round_trip(codec):
    frame = make_frame(9, SHAPE, attrs=ATTRS, offset=(2, 3), binning=(1, 2), reverse=(1, 0))
    frame = dataclasses.replace(frame, timestamp=123.456789, epics_ts_sec=123,
                                epics_ts_nsec=456789000)
    if codec:
        frame = dataclasses.replace(frame, data=placeholder(SHAPE, frame.data.dtype),
                                    codec=encode(make_frame(9, SHAPE).data, codec))
    out = ntndarray_frame(ntndarray(frame))
    assert out.unique_id == 9 and out.data.shape == SHAPE and out.data.dtype == np.dtype("<u2")
    assert (out.offset, out.binning, out.reverse) == ((2, 3), (1, 2), (1, 0))
    assert out.epics_ts_sec == 123 and out.epics_ts_nsec == 456789000
    assert abs(out.timestamp - 123.456789) < 1e-6
    for a in ATTRS:
        b = out.attributes[a.name]
        assert (b.dtype, b.description, b.source, b.source_type) == \
            (a.dtype, a.description, a.source, a.source_type), a.name
        assert b.value == a.value, a.name
    np.testing.assert_array_equal(decoded(out).data, make_frame(9, SHAPE).data)
    assert out.codec_name == codec


def test_frame_message_round_trip_through_a_buffer():
    frame = make_frame(4, SHAPE, attrs=ATTRS, offset=(1, 1))
    buffer = bytearray(frame.data.tobytes())
    out, base = frame_from_message(buffer, frame_message(frame))
    np.testing.assert_array_equal(out.data, frame.data)
    assert not out.data.flags.writeable and base.base is not None
    assert out.attributes == frame.attributes and out.offset == (1, 1)
    frame, data = compressed(4, "lz4")
    out, _ = frame_from_message(bytearray(frame.codec.payload.tobytes()), frame_message(frame))
    np.testing.assert_array_equal(decoded(out).data, data)
    assert out.detached().codec.payload.base is None  # a copy, off the slot


def test_source_names():
    assert parse_source("13SIM1:image1:") == ("ca", "13SIM1:image1:")
    assert parse_source("ca://13SIM1:image1:") == ("ca", "13SIM1:image1:")
    assert parse_source("pva://13SIM1:Pva1:Image") == ("pva", "13SIM1:Pva1:Image")
    with pytest.raises(ValueError, match="unknown source transport"):
        parse_source("http://x")
