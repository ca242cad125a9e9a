"""``nexus-writer-ioc sim``: a simulated areaDetector (``cam1:`` + ``image1:``).

ADSimDetector-like, served by caproto.  Frames carry a verifiable pattern:
pixel (y, x) = (x + y + UniqueId) wrapped to the data type, so a test can
check every pixel of every file.  ``image1:`` posts in ADCore's order
(dimensions when they change, ArrayData, then the scalars).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import time

import numpy as np
from caproto import ChannelType, SkipWrite
from caproto.server import PVGroup, SubGroup, pvproperty

from .. import __version__
from ..ndarray import NDDataType
from ..plugin.group import CharData, make_pvproperty, to_param, to_pv
from ..plugin.pvtable import (
    COLOR_MODES,
    DATA_TYPES,
    NO_YES,
    PV,
    Kind,
    boolean,
    double,
    long,
    menu,
    ro,
    text,
)

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
    t += text("NDAttributesFile", nelm=2048)
    t += menu("ShutterMode", ("None", "EPICS PV", "Detector output"), 0)
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


def build_sim_class(max_x: int = 1024, max_y: int = 1024, size_x: int = 256, size_y: int = 256,
                    array_type: str = "SHORT") -> type[PVGroup]:
    ca_type, _ = ARRAY_TYPES[array_type]
    nelm = max_x * max_y * 3
    Cam = _group_class("SimCam", _cam_table(max_x, max_y, size_x, size_y))
    Image = _group_class("SimImage", _image_table(nelm), {
        "ArrayData": pvproperty(name="ArrayData", dtype=ca_type, value=[0], max_length=nelm,
                                read_only=True, record="waveform"),
    })

    class SimDetector(PVGroup):
        cam = SubGroup(Cam, prefix="cam1:")
        image = SubGroup(Image, prefix="image1:")

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._acquire = asyncio.Event()
            self._stop = asyncio.Event()
            self._done = asyncio.Event()
            self._busy = False
            self._ramps: dict[tuple, np.ndarray] = {}
            self._last_dims: tuple = ()
            self.wire_dtype = ARRAY_TYPES[array_type][1]

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
            await cam.set(ArrayCounter=uid, ArrayCounter_RBV=uid, UniqueId_RBV=uid,
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
            await image.ArrayData.write(wire)
            await image.set(UniqueId_RBV=uid, ArrayCounter_RBV=uid)
            await image.set_changed(NDimensions_RBV=len(dims),
                                    DataType_RBV=cam.value("DataType"),
                                    ColorMode_RBV=cam.value("ColorMode"))
            await image.set(TimeStamp_RBV=now - EPICS_EPOCH, EpicsTSSec_RBV=sec,
                            EpicsTSNsec_RBV=nsec)

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
                    await cam.set(NumImagesCounter_RBV=n)
                await cam.set(Acquire=0, Acquire_RBV=0, AcquireBusy=0, AcquireBusyCB=0,
                              DetectorState_RBV=0)
                self._busy = False
                self._done.set()

    async def cam_group_write(self, instance, value):
        if instance.pvspec.name == "Acquire":
            # Acquire_RBV is set by the frame loop; the put returns when acquisition ends.
            await self.parent.acquire_write(value)
            if to_param(self.table["Acquire"], value):
                raise SkipWrite  # the frame loop has set Acquire back to 0 already
            return value
        return await _Mirror.group_write(self, instance, value)

    Cam.group_write = cam_group_write
    return SimDetector


def sim_main(args: argparse.Namespace) -> int:
    from ..plugin import ca_server
    from ..plugin.ioc_logging import caproto_backlog_warning_dropped, configure

    configure(args.verbose, log.name)
    import signal

    from ..sources._malloc import keep_frame_buffers

    keep_frame_buffers()

    import caproto._constants as constants

    # caproto keeps ~14 queued updates of a 1-Mpixel waveform per subscriber
    # unless told otherwise; a lagging client would then lose frames.
    if "CAPROTO_MIN_SUBSCRIPTION_BACKLOG" not in os.environ:
        constants.MIN_SUBSCRIPTION_BACKLOG = 200
    cls = build_sim_class(*args.max_size, *args.size, array_type=args.array_type)
    with caproto_backlog_warning_dropped():  # it says "reduced"; the line below says why
        ioc = cls(prefix=args.prefix)
    array = ioc.image.ArrayData
    log.info("simulated detector %scam1: + %simage1: (%d PVs), %dx%d (max %dx%d), ArrayData "
             "a %s waveform; its subscription backlog %d frames per client (caproto's own "
             "for %d elements: %d; CAPROTO_MIN_SUBSCRIPTION_BACKLOG)",
             args.prefix, args.prefix, len(ioc.pvdb), *args.size, *args.max_size,
             args.array_type, array.max_subscription_backlog, array.max_length,
             max(constants.SUBSCRIPTION_BACKLOG_WARN_THRESHOLD_ELEMENTS // array.max_length,
                 10))
    if args.list_pvs:
        for name in ioc.pvdb:
            print(name)
        print("# end of PV list", flush=True)

    async def startup(context):
        log.info("Channel Access: TCP port %d, UDP search port %d, on %s", context.port,
                 context.ca_server_port, ", ".join(ca_server.interfaces()))
        asyncio.get_running_loop().create_task(ioc.run())

    def terminate(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    ca_server.run(ioc.pvdb, startup)
    return 0


__all__ = ["build_sim_class", "expected_pixels", "sim_main"]


def expected_pixels(uid: int, size_x: int, size_y: int, dtype: str = "<u2") -> np.ndarray:
    """The image the simulator sends as frame ``uid`` (mono), for tests and checks."""
    dtype = np.dtype(dtype)
    yy, xx = np.indices((size_y, size_x))
    data = (xx + yy).astype(np.int64) + uid
    bits = 8 * dtype.itemsize
    return (data % (1 << bits)).astype(f"<u{dtype.itemsize}").view(dtype)
