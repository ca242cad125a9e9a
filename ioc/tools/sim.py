"""``nexus-writer-ioc sim``: a simulated areaDetector (``cam1:``, ``image1:``, ``Pva1:``,
``Stats1:``, ``Codec1:``, ``Pos1:``).

ADSimDetector-like, served by caproto (CA) and p4p (pvAccess).  Frames carry a
verifiable pattern: pixel (y, x) = (x + y + UniqueId) wrapped to the data type (plus a
fixed noise field with ``--noise``), so a test can check every pixel of every file.
``image1:`` posts in ADCore's order (dimensions when they change, ArrayData, then the
scalars); ``Pva1:Image`` posts the whole NDArray as an NTNDArray with the driver's and the
statistics plugin's NDAttributes (``sim_attributes``), compressed as NDPluginCodec does
with ``--codec``, labelled with scan indices by the NDPosPlugin stand-in ``Pos1:``
(``sim_pos``) while that is enabled.

The frames in flight are bounded: at any AcquirePeriod (0 included) the frame loop waits
while the CA server still holds ``max_in_flight`` frames it has not sent on, instead of
queueing them without bound; a subscriber that lags loses the oldest updates (counted by
its UniqueId gaps), as with a real detector IOC.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import time
import weakref

import numpy as np
from caproto import ChannelType, SkipWrite
from caproto.server import PVGroup, SubGroup, pvproperty

from .. import __version__
from ..ndarray import NDAttrType, NDDataType
from ..plugin.group import CharData, make_pvproperty, to_param, to_pv
from ..plugin.pvtable import (
    ATTRIBUTES_STATUS,
    COLOR_MODES,
    DATA_TYPES,
    NO_YES,
    PV,
    Kind,
    boolean,
    double,
    long,
    menu,
    pair,
    ro,
    text,
)
from .sim_attributes import frame_statistics, param_suffix

log = logging.getLogger(__name__)

EPICS_EPOCH = 631152000  # 1990-01-01 in POSIX seconds

DETECTOR_STATES = ("Idle", "Acquire", "Readout", "Correct", "Saving", "Aborting", "Error",
                   "Waiting", "Initializing", "Disconnected", "Aborted")
ARRAY_TYPES = {"CHAR": (ChannelType.CHAR, "i1"), "SHORT": (ChannelType.INT, "i2"),
               "LONG": (ChannelType.LONG, "i4"), "FLOAT": (ChannelType.FLOAT, "f4"),
               "DOUBLE": (ChannelType.DOUBLE, "f8")}


def _cam_table(max_x: int, max_y: int, size_x: int, size_y: int) -> tuple[PV, ...]:
    t: list[PV] = []
    for suffix, value in (("Manufacturer_RBV", "Simulated detector"),
                          ("Model_RBV", "Basic simulator"), ("SerialNumber_RBV", "Unknown"),
                          ("SDKVersion_RBV", __version__), ("FirmwareVersion_RBV", "Unknown"),
                          ("DriverVersion_RBV", __version__), ("ADCoreVersion_RBV", "3.14.0"),
                          ("PortName_RBV", "SIM1")):
        t += ro(suffix, Kind.STRING, "stringin", value)
    t += boolean("Acquire", ("Done", "Acquire"), rbv_strings=("Done", "Acquiring"))
    t += ro("AcquireBusy", Kind.ENUM, "bi", 0, enum_strings=("Done", "Acquiring"))
    t += ro("AcquireBusyCB", Kind.ENUM, "bi", 0, enum_strings=("Done", "Acquiring"))
    t += boolean("WaitForPlugins", NO_YES, 0)
    t += menu("ImageMode", ("Single", "Multiple", "Continuous"), 0)
    t += menu("TriggerMode", ("Internal", "External"), 0)
    t += long("NumImages", 1)
    t += ro("NumImagesCounter_RBV", Kind.LONG, "longin", 0)
    t += long("NumExposures", 1)
    t += ro("NumExposuresCounter_RBV", Kind.LONG, "longin", 0)
    t += double("AcquireTime", 0.001, precision=3, units="s")
    t += double("AcquirePeriod", 0.01, precision=3, units="s")
    t += ro("TimeRemaining_RBV", Kind.DOUBLE, "ai", 0.0, precision=3)
    t += double("Gain", 1.0)
    t += ro("MaxSizeX_RBV", Kind.LONG, "longin", max_x)
    t += ro("MaxSizeY_RBV", Kind.LONG, "longin", max_y)
    t += long("SizeX", size_x)
    t += long("SizeY", size_y)
    t += long("MinX", 0)
    t += long("MinY", 0)
    t += long("BinX", 1)
    t += long("BinY", 1)
    t += boolean("ReverseX", NO_YES, 0)
    t += boolean("ReverseY", NO_YES, 0)
    t += menu("DataType", DATA_TYPES, 3)
    t += menu("ColorMode", COLOR_MODES, 0)
    for suffix in ("ArraySizeX_RBV", "ArraySizeY_RBV", "ArraySizeZ_RBV", "ArraySize_RBV",
                   "ArraySize0_RBV", "ArraySize1_RBV", "ArraySize2_RBV", "NDimensions_RBV"):
        t += ro(suffix, Kind.LONG, "longin", 0)
    t += long("ArrayCounter", 0)
    t += ro("ArrayRate_RBV", Kind.DOUBLE, "calc", 0.0)
    t += boolean("ArrayCallbacks", ("Disable", "Enable"), 1)
    t += ro("DetectorState_RBV", Kind.ENUM, "mbbi", 0, enum_strings=DETECTOR_STATES)
    t += ro("StatusMessage_RBV", Kind.CHAR, "waveform", "", nelm=256)
    t += ro("UniqueId_RBV", Kind.LONG, "longin", 0)
    t += ro("TimeStamp_RBV", Kind.DOUBLE, "ai", 0.0)
    t += ro("Temperature_RBV", Kind.DOUBLE, "ai", 25.0)
    t += _ndattributes_pvs()
    t += menu("ShutterMode", ("None", "EPICS PV", "Detector output"), 0)
    return tuple(t)


def _ndattributes_pvs() -> list[PV]:
    """NDArrayBase's NDAttributes records (the driver's and every plugin's)."""
    t: list[PV] = []
    t += text("NDAttributesFile", nelm=16384)
    t += text("NDAttributesMacros", nelm=256)
    t += ro("NDAttributesStatus", Kind.ENUM, "mbbi", 0, enum_strings=ATTRIBUTES_STATUS)
    return t


CODEC_COMPRESSORS = ("None", "JPEG", "Blosc", "LZ4", "BSLZ4")  # NDCodec.template
CODEC_NAMES = {"Blosc": "blosc", "LZ4": "lz4", "BSLZ4": "bslz4"}


def _codec_table(compressor: int, blosc_compressor: int = 1, blosc_shuffle: int = 1,
                 blosc_level: int = 5) -> tuple[PV, ...]:
    """NDPluginCodec's settings (compress only): what Pva1:Image's frames are made with."""
    t: list[PV] = []
    t += ro("PortName_RBV", Kind.STRING, "stringin", "CODEC1")
    t += ro("PluginType_RBV", Kind.STRING, "stringin", "NDPluginCodec")
    t += boolean("EnableCallbacks", ("Disable", "Enable"), 1)
    t += menu("Mode", ("Compress", "Decompress"), 0)
    t += menu("Compressor", CODEC_COMPRESSORS, compressor)
    t += menu("BloscCompressor", ("BloscLZ", "LZ4", "LZ4HC", "SNAPPY", "ZLIB", "ZSTD"),
              blosc_compressor)
    t += long("BloscCLevel", blosc_level)
    t += menu("BloscShuffle", ("None", "Byte", "Bit"), blosc_shuffle)
    t += ro("CompFactor_RBV", Kind.DOUBLE, "ai", 1.0, precision=2)
    t += ro("CodecStatus", Kind.ENUM, "mbbi", 0, enum_strings=("Success", "Warning", "Error"))
    t += ro("CodecError", Kind.CHAR, "waveform", "", nelm=256)
    return tuple(t)


def _stats_table() -> tuple[PV, ...]:
    """What ophyd-async's NDStatsIO connects to (NDArrayBase + NDPluginBase + NDStats)."""
    t: list[PV] = []
    t += ro("PortName_RBV", Kind.STRING, "stringin", "STATS1")
    t += ro("PluginType_RBV", Kind.STRING, "stringin", "NDPluginStats")
    t += ro("ADCoreVersion_RBV", Kind.STRING, "stringin", "3.14.0")
    t += ro("DriverVersion_RBV", Kind.STRING, "stringin", __version__)
    t += ro("UniqueId_RBV", Kind.LONG, "longin", 0)
    for suffix in ("ArraySizeX_RBV", "ArraySizeY_RBV", "ArraySizeZ_RBV", "ArraySize0_RBV",
                   "ArraySize1_RBV", "ArraySize2_RBV"):
        t += ro(suffix, Kind.LONG, "longin", 0)
    t += ro("ColorMode_RBV", Kind.ENUM, "mbbi", 0, enum_strings=COLOR_MODES)
    t += ro("DataType_RBV", Kind.ENUM, "mbbi", 3, enum_strings=DATA_TYPES)
    t += long("ArrayCounter", 0)
    t += _ndattributes_pvs()
    t += pair("NDArrayPort", Kind.STRING, "stringout", "SIM1")
    t += boolean("EnableCallbacks", ("Disable", "Enable"), 1)
    t += long("NDArrayAddress", 0)
    t += long("QueueSize", 2)
    for name in ("ComputeStatistics", "ComputeCentroid", "ComputeProfiles", "ComputeHistogram"):
        t += boolean(name, NO_YES, 1 if name == "ComputeStatistics" else 0)
    t += long("BgdWidth", 0)
    t += double("CentroidThreshold", 1.0)
    t += long("CursorX", 0)
    t += long("CursorY", 0)
    t += long("HistSize", 256)
    t += double("HistMin", 0.0)
    t += double("HistMax", 255.0)
    t += ro("ProfileSizeX_RBV", Kind.LONG, "longin", 0)
    t += ro("ProfileSizeY_RBV", Kind.LONG, "longin", 0)
    for name in ("Total_RBV", "Net_RBV", "MeanValue_RBV", "Sigma_RBV", "MinValue_RBV",
                 "MaxValue_RBV"):
        t += ro(name, Kind.DOUBLE, "ai", 0.0)
    return tuple(t)


def _image_table(nelm: int) -> tuple[PV, ...]:
    t: list[PV] = []
    t += ro("PortName_RBV", Kind.STRING, "stringin", "Image1")
    t += ro("PluginType_RBV", Kind.STRING, "stringin", "NDPluginStdArrays")
    t += boolean("EnableCallbacks", ("Disable", "Enable"), 1)
    t += boolean("ArrayCallbacks", ("Disable", "Enable"), 1)
    t += long("NDimensions", 0)
    t += ro("Dimensions_RBV", Kind.LONG_ARRAY, "waveform", (0,) * 10, nelm=10)
    for i in range(10):
        t += ro(f"ArraySize{i}_RBV", Kind.LONG, "longin", 0)
    t += ro("DataType_RBV", Kind.ENUM, "mbbi", 3, enum_strings=DATA_TYPES)
    t += ro("ColorMode_RBV", Kind.ENUM, "mbbi", 0, enum_strings=COLOR_MODES)
    t += ro("UniqueId_RBV", Kind.LONG, "longin", 0)
    t += ro("TimeStamp_RBV", Kind.DOUBLE, "ai", 0.0, precision=3)
    t += ro("EpicsTSSec_RBV", Kind.LONG, "longin", 0)
    t += ro("EpicsTSNsec_RBV", Kind.LONG, "longin", 0)
    t += long("ArrayCounter", 0)
    t += ro("NDArrayPort_RBV", Kind.STRING, "stringin", "SIM1")
    t += ro("NDimensions_RBV", Kind.LONG, "longin", 0)
    del nelm
    return tuple(t)


class _Mirror(PVGroup):
    """Stores writes and mirrors them to ``_RBV`` (every ``_RBV`` follows its setpoint)."""

    table: dict[str, PV] = {}
    type_map = {**PVGroup.type_map, str: CharData}

    async def group_write(self, instance, value):
        suffix = instance.pvspec.name
        rbv = self.table.get(f"{suffix}_RBV")
        if rbv is not None:
            index = to_param(self.table[suffix], value)
            await self.attr_pvdb[rbv.suffix].write(to_pv(rbv, index))
        return value

    def value(self, suffix: str):
        return to_param(self.table[suffix], self.attr_pvdb[suffix].value)

    async def set(self, **values) -> None:
        for suffix, value in values.items():
            await self.attr_pvdb[suffix].write(to_pv(self.table[suffix], value))

    async def post(self, **values) -> None:
        """Per-frame values: written as they are (no put handlers, no checks: they are
        ours and there are many per frame)."""
        for suffix, value in values.items():
            await self.attr_pvdb[suffix].write(to_pv(self.table[suffix], value),
                                               verify_value=False)

    async def set_changed(self, **values) -> None:
        """Write only values that differ (monitors then post only on change, as ADCore's)."""
        for suffix, value in values.items():
            pv = self.attr_pvdb[suffix]
            new = to_pv(self.table[suffix], value)
            if pv.value != new:
                await pv.write(new)


def _group_class(name: str, table: tuple[PV, ...], extra: dict | None = None) -> type[_Mirror]:
    namespace = {pv.suffix: make_pvproperty(pv) for pv in table}
    namespace["table"] = {pv.suffix: pv for pv in table}
    namespace.update(extra or {})
    return type(name, (_Mirror,), namespace)


NOISE_SEED = 20260101  # the noise field is the same for every run: files stay checkable
# Frames the CA server may hold before it has handed them to its clients' queues: a few,
# so that at AcquirePeriod 0 the frame loop runs at the server's pace (not ahead of it).
MAX_IN_FLIGHT_FRAMES = 4
MAX_IN_FLIGHT_BYTES = 64 * 2**20


def noise_field(shape: tuple[int, ...], mean: float) -> np.ndarray:
    """The fixed Poisson noise added to every frame with ``--noise MEAN`` (int64)."""
    return np.random.default_rng(NOISE_SEED).poisson(mean, shape).astype(np.int64)


def build_sim_class(max_x: int = 1024, max_y: int = 1024, size_x: int = 256, size_y: int = 256,
                    array_type: str = "SHORT", noise: float = 0.0,
                    codec: str = "", blosc: tuple[int, int, int] = (1, 1, 5)) -> type[PVGroup]:
    ca_type, _ = ARRAY_TYPES[array_type]
    nelm = max_x * max_y * 3
    Cam = _group_class("SimCam", _cam_table(max_x, max_y, size_x, size_y))
    Image = _group_class("SimImage", _image_table(nelm), {
        "ArrayData": pvproperty(name="ArrayData", dtype=ca_type, value=[0], max_length=nelm,
                                read_only=True, record="waveform"),
    })
    Stats = _group_class("SimStats", _stats_table())
    names = {v: k for k, v in CODEC_NAMES.items()}
    Codec = _group_class("SimCodec", _codec_table(
        CODEC_COMPRESSORS.index(names.get(codec, "None")), *blosc))
    from .sim_pos import pos_group_class

    Pos = pos_group_class(_group_class)

    class SimDetector(PVGroup):
        cam = SubGroup(Cam, prefix="cam1:")
        image = SubGroup(Image, prefix="image1:")
        stats = SubGroup(Stats, prefix="Stats1:")
        codec = SubGroup(Codec, prefix="Codec1:")
        pos = SubGroup(Pos, prefix="Pos1:")  # NDPosPlugin, upstream of Pva1 when enabled

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._acquire = asyncio.Event()
            self._stop = asyncio.Event()
            self._done = asyncio.Event()
            self._busy = False
            self._ramps: dict[tuple, np.ndarray] = {}
            self._last_dims: tuple = ()
            self.wire_dtype = ARRAY_TYPES[array_type][1]
            self.noise = noise
            self.outputs = None  # sim_pva.SimFrames: NDAttributes, Pva1:Image
            self._in_flight = 0

        # -- what NDAttributes read: own PVs and parameters --------------------------------
        def own_pv(self, name: str) -> tuple | None:
            """(value, native NDAttrType) of one of our PVs, or None."""
            for group in (self.cam, self.image, self.stats):
                if name.startswith(group.prefix) and name[len(group.prefix):] in group.table:
                    pv = group.table[name[len(group.prefix):]]
                    value = group.value(pv.suffix)
                    native = {Kind.LONG: NDAttrType.Int32, Kind.DOUBLE: NDAttrType.Float64,
                              Kind.ENUM: NDAttrType.Int16, Kind.STRING: NDAttrType.String,
                              Kind.CHAR: NDAttrType.String}.get(pv.kind, NDAttrType.Int32)
                    if pv.kind is Kind.LONG_ARRAY:
                        value = value[0] if len(value) else None
                    return value, native
            return None

        def param(self, drvinfo: str):
            suffix = param_suffix(drvinfo)
            if suffix is None:
                return None
            for candidate in (suffix, suffix.removesuffix("_RBV")):
                if candidate in self.cam.table:
                    return self.cam.value(candidate)
            return None

        async def load_attributes(self, group, spec: str, macros: str) -> None:
            """A group's NDAttributesFile or NDAttributesMacros changed: read it again."""
            if self.outputs is None:
                return
            target = self.outputs.stats if group is self.stats else self.outputs.driver
            loop = asyncio.get_running_loop()
            status, message = await loop.run_in_executor(None, target.load, spec, macros)
            if message:
                log.warning("%sNDAttributesFile: %s", group.prefix, message)
            await group.set(NDAttributesStatus=status)

        # Acquire starts/stops the frame loop; other cam writes just mirror.
        async def acquire_write(self, value):
            """Acquire is a busy record: a put of 1 completes when acquisition ends."""
            on = to_param(self.cam.table["Acquire"], value)
            if not on:
                self._stop.set()
                return
            if self._busy:
                return
            self._busy = True
            self._done.clear()
            self._stop.clear()
            self._acquire.set()
            await self._done.wait()

        def frame(self, uid: int) -> tuple[np.ndarray, tuple[int, ...]]:
            """(pixels in numpy order, NDArray dims) of frame ``uid``."""
            cam = self.cam
            x = max(1, min(cam.value("SizeX"), cam.value("MaxSizeX_RBV")))
            y = max(1, min(cam.value("SizeY"), cam.value("MaxSizeY_RBV")))
            dtype = NDDataType(cam.value("DataType")).numpy
            color = cam.value("ColorMode")
            shape, dims = ((y, x, 3), (3, x, y)) if color == 2 else ((y, x), (x, y))
            key = (shape, dtype.str)
            ramp = self._ramps.get(key)
            if ramp is None:
                yy, xx = np.indices((y, x))
                ramp = (xx + yy).astype(np.int64)
                if color == 2:
                    ramp = ramp[..., None] + np.arange(3)
                if self.noise > 0:
                    ramp = ramp + noise_field(ramp.shape, self.noise)
                if dtype.kind in "iu":  # kept unsigned: adding the id then wraps natively
                    bits = 8 * dtype.itemsize
                    ramp = (ramp % (1 << bits)).astype(f"<u{dtype.itemsize}")
                self._ramps = {key: ramp}
            if dtype.kind in "iu":
                offset = ramp.dtype.type(uid % (1 << (8 * dtype.itemsize)))
                data = (ramp + offset).view(dtype)
            else:
                data = (ramp + uid).astype(dtype)
            return data, dims

        async def post_frame(self, uid: int) -> None:
            data, dims = self.frame(uid)
            image, cam = self.image, self.cam
            now = time.time()
            sec = int(now) - EPICS_EPOCH
            nsec = int((now % 1) * 1e9)
            # The driver's own parameters first (what PARAM attributes read), then the
            # plugin's: dimensions when they change, ArrayData, the scalars.
            size_z = dims[0] if len(dims) == 3 else 0
            padded = list(dims) + [0] * 3
            await cam.post(ArrayCounter=uid, ArrayCounter_RBV=uid, UniqueId_RBV=uid,
                           TimeStamp_RBV=now - EPICS_EPOCH)
            await cam.set_changed(ArraySizeX_RBV=dims[-2] if len(dims) == 3 else dims[0],
                                  ArraySizeY_RBV=dims[-1], ArraySizeZ_RBV=size_z,
                                  ArraySize_RBV=int(data.nbytes), ArraySize0_RBV=padded[0],
                                  ArraySize1_RBV=padded[1], ArraySize2_RBV=padded[2],
                                  NDimensions_RBV=len(dims))
            if dims != self._last_dims:  # dimensions first, only when they change
                padded = list(dims) + [0] * (10 - len(dims))
                await image.set(Dimensions_RBV=padded)
                await image.set_changed(**{f"ArraySize{i}_RBV": padded[i] for i in range(10)})
                self._last_dims = dims
            wire = data.reshape(-1)
            if wire.dtype != np.dtype(self.wire_dtype):
                wire = wire.view(self.wire_dtype) if wire.dtype.itemsize == \
                    np.dtype(self.wire_dtype).itemsize else wire.astype(self.wire_dtype)
            wire.flags.writeable = False  # lets caproto skip a copy
            await self._bound_in_flight(wire)
            await image.ArrayData.write(wire, verify_value=False)
            await image.post(UniqueId_RBV=uid, ArrayCounter_RBV=uid)
            await image.set_changed(NDimensions_RBV=len(dims),
                                    DataType_RBV=cam.value("DataType"),
                                    ColorMode_RBV=cam.value("ColorMode"))
            await image.post(TimeStamp_RBV=now - EPICS_EPOCH, EpicsTSSec_RBV=sec,
                             EpicsTSNsec_RBV=nsec)
            if self.outputs is not None:
                await self._post_outputs(uid, data, now - EPICS_EPOCH, sec, nsec)

        async def _post_outputs(self, uid, data, timestamp, sec, nsec) -> None:
            """Stats1 and Pva1:Image: the NDArray with its NDAttributes, as a whole."""
            statistics = None
            stats = self.stats
            if self.outputs.needs_statistics and stats.value("EnableCallbacks"):
                statistics = frame_statistics(data)
                await stats.post(UniqueId_RBV=uid, ArrayCounter=uid, ArrayCounter_RBV=uid,
                                Total_RBV=statistics["TOTAL"], Net_RBV=statistics["NET"],
                                MeanValue_RBV=statistics["MEAN_VALUE"],
                                Sigma_RBV=statistics["SIGMA_VALUE"],
                                MinValue_RBV=statistics["MIN_VALUE"],
                                MaxValue_RBV=statistics["MAX_VALUE"])
            cam, codec = self.cam, self.codec
            mono = data.ndim == 2
            geometry = dict(
                offset=(cam.value("MinX"), cam.value("MinY")) if mono else
                (0, cam.value("MinX"), cam.value("MinY")),
                binning=(cam.value("BinX"), cam.value("BinY")) if mono else
                (1, cam.value("BinX"), cam.value("BinY")),
                reverse=(cam.value("ReverseX"), cam.value("ReverseY")) if mono else
                (0, cam.value("ReverseX"), cam.value("ReverseY")))
            name, error = "", ""
            if codec.value("EnableCallbacks") and codec.value("Mode") == 0:
                choice = CODEC_COMPRESSORS[codec.value("Compressor")]
                name = CODEC_NAMES.get(choice, "")
                if choice == "JPEG":
                    error = "JPEG is not available in the simulator; frames sent uncompressed"
            frame = self.outputs.frame(
                uid, data, timestamp, sec, nsec, cam.value("ColorMode"), statistics, geometry,
                name, dict(blosc_compressor=codec.value("BloscCompressor"),
                           blosc_shuffle=codec.value("BloscShuffle"),
                           blosc_level=codec.value("BloscCLevel")))
            factor = frame.nbytes / frame.compressed_size if frame.compressed_size else 1.0
            frame = await self.pos.label(frame)
            if frame is not None:
                self.outputs.post(frame)
            await codec.set_changed(CompFactor_RBV=factor, CodecStatus=2 if error else 0,
                                    CodecError=error)

        async def _bound_in_flight(self, wire: np.ndarray) -> None:
            """Wait while the CA server holds frames worth MAX_IN_FLIGHT_BYTES that it has
            not sent on yet (at AcquirePeriod 0 it would otherwise queue without bound)."""
            limit = max(2, min(MAX_IN_FLIGHT_FRAMES, MAX_IN_FLIGHT_BYTES // max(wire.nbytes, 1)))
            while self._in_flight >= limit and not self._stop.is_set():
                await asyncio.sleep(0.001)
            owner = wire.base if wire.base is not None else wire
            self._in_flight += 1
            weakref.finalize(owner, self._landed)

        def _landed(self) -> None:
            self._in_flight -= 1

        async def run(self) -> None:
            cam = self.cam
            while True:
                await self._acquire.wait()
                self._acquire.clear()
                mode = cam.value("ImageMode")
                count = {0: 1, 1: max(cam.value("NumImages"), 1)}.get(mode, None)
                await cam.set(Acquire=1, Acquire_RBV=1, AcquireBusy=1, AcquireBusyCB=1,
                              DetectorState_RBV=1, NumImagesCounter_RBV=0)
                n = 0
                start = time.monotonic()
                while (count is None or n < count) and not self._stop.is_set():
                    period = max(cam.value("AcquirePeriod"), cam.value("AcquireTime"))
                    deadline = start + (n + 1) * period
                    delay = deadline - time.monotonic()
                    if delay > 0:
                        try:
                            await asyncio.wait_for(self._stop.wait(), delay)
                            break
                        except asyncio.TimeoutError:
                            pass
                    else:
                        await asyncio.sleep(0)
                    n += 1
                    uid = cam.value("ArrayCounter") + 1
                    if cam.value("ArrayCallbacks") and self.image.value("EnableCallbacks"):
                        await self.post_frame(uid)
                    else:
                        await cam.set(ArrayCounter=uid, ArrayCounter_RBV=uid)
                    await cam.post(NumImagesCounter_RBV=n)
                await cam.set(Acquire=0, Acquire_RBV=0, AcquireBusy=0, AcquireBusyCB=0,
                              DetectorState_RBV=0)
                self._busy = False
                self._done.set()

    async def reload_after(group, instance, value):
        result = await _Mirror.group_write(group, instance, value)
        name = instance.pvspec.name
        if name in ("NDAttributesFile", "NDAttributesMacros"):
            values = {n: group.value(n) for n in ("NDAttributesFile", "NDAttributesMacros")}
            values[name] = to_param(group.table[name], value)  # stored after this returns
            await group.parent.load_attributes(group, values["NDAttributesFile"],
                                               values["NDAttributesMacros"])
        return result

    async def stats_group_write(self, instance, value):
        return await reload_after(self, instance, value)

    async def cam_group_write(self, instance, value):
        if instance.pvspec.name in ("NDAttributesFile", "NDAttributesMacros"):
            return await reload_after(self, instance, value)
        if instance.pvspec.name == "Acquire":
            # Acquire_RBV is set by the frame loop; the put returns when acquisition ends.
            await self.parent.acquire_write(value)
            if to_param(self.table["Acquire"], value):
                raise SkipWrite  # the frame loop has set Acquire back to 0 already
            return value
        return await _Mirror.group_write(self, instance, value)

    Cam.group_write = cam_group_write
    Stats.group_write = stats_group_write
    return SimDetector


def sim_main(args: argparse.Namespace) -> int:
    from ..plugin import ca_server
    from ..plugin.ioc_logging import caproto_backlog_warning_dropped, configure

    configure(args.verbose, log.name)
    import signal

    from ..sources._malloc import keep_frame_buffers

    keep_frame_buffers()

    import caproto._constants as constants

    try:
        ca_server.server_port()  # EPICS_CAS_SERVER_PORT first, as EPICS base servers
    except ca_server.ServerPortError as exc:
        log.error("%s", exc)
        return 2

    # caproto keeps ~14 queued updates of a 1-Mpixel waveform per subscriber
    # unless told otherwise; a lagging client would then lose frames.
    if "CAPROTO_MIN_SUBSCRIPTION_BACKLOG" not in os.environ:
        constants.MIN_SUBSCRIPTION_BACKLOG = 200
    codec = "" if args.codec == "none" else args.codec
    cls = build_sim_class(*args.max_size, *args.size, array_type=args.array_type,
                          noise=args.noise, codec=codec,
                          blosc=(args.blosc_compressor, args.blosc_shuffle, args.blosc_level))
    with caproto_backlog_warning_dropped():  # it says "reduced"; the line below says why
        ioc = cls(prefix=args.prefix)
    if args.backlog_mb > 0:
        # Each ArrayData subscription keeps at most this many bytes of frames it has not
        # sent (caproto counts frames: one backlog for every size up to the largest frame).
        largest = ioc.image.ArrayData.max_length * np.dtype(ioc.wire_dtype).itemsize
        ioc.image.ArrayData.max_subscription_backlog = int(
            min(200, max(4, args.backlog_mb * 2**20 // max(largest, 1))))
    array = ioc.image.ArrayData
    log.info("simulated detector %scam1: + %simage1: (%d PVs), %dx%d (max %dx%d), ArrayData "
             "a %s waveform; its subscription backlog %d frames per client (caproto's own "
             "for %d elements: %d; CAPROTO_MIN_SUBSCRIPTION_BACKLOG, --backlog-mb)",
             args.prefix, args.prefix, len(ioc.pvdb), *args.size, *args.max_size,
             args.array_type, array.max_subscription_backlog, array.max_length,
             max(constants.SUBSCRIPTION_BACKLOG_WARN_THRESHOLD_ELEMENTS // array.max_length,
                 10))
    server = None
    if not args.no_pva:
        from .sim_pva import PvaImageServer

        server = PvaImageServer(args.prefix + "Pva1:Image")
        log.info("pvAccess: %s (NTNDArray%s), TCP port %s", server.name,
                 f", {codec}" if codec else "",
                 server.server.conf().get("EPICS_PVAS_SERVER_PORT", "?"))
    from .sim_pva import SimFrames

    ioc.outputs = SimFrames(ioc, server)
    if args.list_pvs:
        for name in ioc.pvdb:
            print(name)
        if server is not None:
            print(server.name)
        print("# end of PV list", flush=True)

    async def startup(context):
        log.info("Channel Access: TCP port %d, UDP search port %d, on %s", context.port,
                 context.ca_server_port, ", ".join(ca_server.interfaces()))
        asyncio.get_running_loop().create_task(ioc.run())

    def terminate(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    try:
        ca_server.run(ioc.pvdb, startup, interfaces=ca_server.interfaces())
    finally:
        if server is not None:
            server.close()
    return 0


__all__ = ["build_sim_class", "expected_pixels", "sim_main"]


def expected_pixels(uid: int, size_x: int, size_y: int, dtype: str = "<u2",
                    noise: float = 0.0) -> np.ndarray:
    """The image the simulator sends as frame ``uid`` (mono), for tests and checks."""
    dtype = np.dtype(dtype)
    yy, xx = np.indices((size_y, size_x))
    data = (xx + yy).astype(np.int64) + uid
    if noise > 0:
        data = data + noise_field(data.shape, noise)
    bits = 8 * dtype.itemsize
    return (data % (1 << bits)).astype(f"<u{dtype.itemsize}").view(dtype)
