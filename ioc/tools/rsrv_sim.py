"""``nexus-writer-ioc sim --ca-server rsrv``: the simulated detector served by EPICS base.

The same detector as ``sim`` (``cam1:`` + ``image1:``, the same PVs and the same pixel
pattern, see ``sim.expected_pixels``), but its Channel Access server is EPICS base's own
(RSRV, run in this process by pythonSoftIOC), so clients see what a real areaDetector
IOC does to them.  The difference that matters: RSRV queues a few updates per
subscription for a client that lags and replaces the rest, and an array update is a
reference to the record, read when it is sent (a lagging client may get a later frame's
pixels).  caproto's server queues 200 updates in ``sim`` and hides both.

Modelled on ADSimDetector with an NDStdArrays plugin that has its own queue
(BlockingCallbacks=No): the driver makes a frame, hands it to ``image1``'s queue, then
posts its own parameters (ArrayCounter_RBV, ...); ``image1`` posts in ADCore's order
(dimensions when they change, ArrayData, then UniqueId_RBV, the type/colour scalars and
the timestamps, reference §4.3).  ``cam1:Acquire`` behaves like the busy record: a put
of 1 completes when the acquisition ends; a put of 0 stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time

import numpy as np

from ..ndarray import NDDataType
from ..plugin.pvtable import PV, Kind, ro, text
from .sim import ARRAY_TYPES, EPICS_EPOCH, _cam_table, _image_table

log = logging.getLogger(__name__)

IMAGE_QUEUE = 20  # frames NDStdArrays holds before it drops (NDStdArraysConfigure's queueSize)
STOP_POLL = 0.05  # s: how often a waiting acquisition looks at Acquire


def _extra_cam_pvs(table: tuple[PV, ...]) -> tuple[PV, ...]:
    """The driver's NDAttributes PVs, where the shared table does not have them yet."""
    have = {pv.suffix for pv in table}
    extra: list[PV] = []
    if "NDAttributesMacros" not in have:
        extra += text("NDAttributesMacros", nelm=1024)
    if "NDAttributesStatus" not in have:
        extra += ro("NDAttributesStatus", Kind.ENUM, "mbbi", 0,
                    enum_strings=("Attributes file OK", "File not found", "XML syntax error",
                                  "Macro substitution error"))
    return table + tuple(extra)


class Records:
    """pythonSoftIOC records made from PV specs: setpoints mirror into their ``_RBV``.

    Readbacks are output records too, processed synchronously when the driver posts a
    value (pythonSoftIOC's input records are processed later by EPICS' callback thread
    and read the newest value then: a value set twice before that would be posted twice
    as the second, an artefact no asyn driver has).  Clients see the same CA types."""

    def __init__(self, builder, prefix: str, table: tuple[PV, ...], special: dict):
        # one record per suffix, the last spec winning (as in a caproto PVGroup's namespace)
        self.specs = {pv.suffix: pv for pv in table}
        self.prefix = prefix
        self.records: dict[str, object] = {}
        for pv in self.specs.values():
            if pv.suffix in special:
                self.records[pv.suffix] = special[pv.suffix](pv)
            else:
                self.records[pv.suffix] = make_record(builder, prefix + pv.suffix, pv,
                                                      self._mirror(pv.suffix))

    def _mirror(self, suffix: str):
        def on_update(value) -> None:
            readback = self.records.get(f"{suffix}_RBV")
            if readback is not None:
                readback.set(value)
        return on_update

    def __getitem__(self, suffix: str):
        return self.records[suffix]

    def value(self, suffix: str):
        return self.records[suffix].get()

    def set(self, **values) -> None:
        """Post values now, in this order (setpoints are updated without their on_update)."""
        for suffix, value in values.items():
            self.records[suffix].set(value, process=not self.specs[suffix].writable)


def make_record(builder, name: str, pv: PV, on_update=None):
    """A record for ``pv`` with its CA type, enum strings and length (see ``Records``)."""
    kw = {"on_update": on_update, "always_update": True} if pv.writable else {}
    if pv.kind is Kind.ENUM:
        strings, value = pv.enum_strings, int(pv.value)
        if len(strings) == 2:
            return builder.boolOut(name, ZNAM=strings[0], ONAM=strings[1], initial_value=value,
                                   **kw)
        return builder.mbbOut(name, *strings, initial_value=value, **kw)
    if pv.kind is Kind.LONG:
        return builder.longOut(name, initial_value=int(pv.value), **kw)
    if pv.kind is Kind.DOUBLE:
        return builder.aOut(name, initial_value=float(pv.value), PREC=pv.precision,
                            EGU=pv.units or None, **kw)
    if pv.kind is Kind.STRING:
        return builder.stringOut(name, initial_value=str(pv.value), **kw)
    if pv.kind is Kind.CHAR:
        return builder.longStringOut(name, initial_value=str(pv.value), length=pv.nelm, **kw)
    if pv.kind is Kind.LONG_ARRAY:
        return builder.WaveformOut(name, datatype=np.int32, length=pv.nelm,
                                   initial_value=np.asarray(pv.value, dtype=np.int32))
    raise ValueError(f"no record for {pv}")


class Pattern:
    """The simulator's pixels: (x + y + UniqueId) wrapped to the type (``expected_pixels``)."""

    def __init__(self):
        self._key: tuple | None = None
        self._ramp: np.ndarray | None = None

    def frame(self, uid: int, x: int, y: int, dtype: np.dtype, color: int):
        """(pixels in numpy order, NDArray dims)."""
        shape, dims = ((y, x, 3), (3, x, y)) if color == 2 else ((y, x), (x, y))
        key = (shape, dtype.str)
        if key != self._key:
            yy, xx = np.indices((y, x))
            ramp = (xx + yy).astype(np.int64)
            if color == 2:
                ramp = ramp[..., None] + np.arange(3)
            if dtype.kind in "iu":  # unsigned, so that adding the id wraps natively
                ramp = (ramp % (1 << (8 * dtype.itemsize))).astype(f"<u{dtype.itemsize}")
            self._key, self._ramp = key, ramp
        if dtype.kind in "iu":
            offset = self._ramp.dtype.type(uid % (1 << (8 * dtype.itemsize)))
            return (self._ramp + offset).view(dtype), dims
        return (self._ramp + uid).astype(dtype), dims


def post_array(record, data: np.ndarray) -> None:
    """Post ``data`` through the waveform ``record`` now, in this thread.  pythonSoftIOC's
    ``set()`` copies the array and lets EPICS' callback thread process the record later
    (reading whatever array was set last by then); here the record gets this frame's
    array, processed at once: one copy (into the record), at a few hundred frames/s."""
    from softioc import alarm, fields, imports

    device = record.__dict__.get("_RecordWrapper__device")
    if device is None or not isinstance(getattr(device, "_value", None), tuple):
        record.set(data)  # another pythonSoftIOC: its own way
        return
    data.flags.writeable = False
    device._value = (data, alarm.NO_ALARM, alarm.NO_ALARM, None)
    imports.db_put_field_process(device._name + ".PROC", fields.DBF_UCHAR, _ONE.ctypes.data,
                                 1, True)


_ONE = np.ones(1, np.uint8)


class ImagePlugin:
    """NDStdArrays with its own queue: posts each frame in ADCore's order."""

    def __init__(self, records: Records, wire_dtype: str):
        self.records = records
        self.wire_dtype = np.dtype(wire_dtype)
        self.queue: asyncio.Queue = asyncio.Queue(IMAGE_QUEUE)
        self.counter = 0
        self.dropped = 0
        self._dims: tuple = ()

    def offer(self, item) -> None:
        if not self.records.value("EnableCallbacks"):
            return
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.dropped += 1
            log.warning("image1: queue full, frame %d dropped (%d so far)", item[0], self.dropped)

    async def run(self) -> None:
        while True:
            uid, data, dims, data_type, color, sec, nsec = await self.queue.get()
            r = self.records
            self.counter += 1
            if dims != self._dims:  # dimensions first, only when they change
                padded = list(dims) + [0] * (10 - len(dims))
                r.set(Dimensions_RBV=padded, **{f"ArraySize{i}_RBV": padded[i] for i in range(10)})
                self._dims = dims
            wire = data.reshape(-1)
            if wire.dtype != self.wire_dtype:
                wire = wire.view(self.wire_dtype) if wire.dtype.itemsize == \
                    self.wire_dtype.itemsize else wire.astype(self.wire_dtype)
            post_array(r["ArrayData"], wire)
            r.set(UniqueId_RBV=uid, ArrayCounter_RBV=self.counter, NDimensions_RBV=len(dims),
                  DataType_RBV=data_type, ColorMode_RBV=color, TimeStamp_RBV=sec + nsec / 1e9,
                  EpicsTSSec_RBV=sec, EpicsTSNsec_RBV=nsec)
            await asyncio.sleep(0)  # the driver's next frame may be due


class Detector:
    """The driver: ``cam1:Acquire`` runs the acquisition in the dispatcher's event loop."""

    def __init__(self, cam: Records, image: ImagePlugin):
        self.cam = cam
        self.image = image
        self.pattern = Pattern()
        self.counter = 0
        self.busy = False

    def set_counter(self, value) -> None:
        self.counter = int(value)
        self.cam.set(ArrayCounter_RBV=self.counter)

    def stopped(self) -> bool:
        return self.cam["Acquire"].get_field("VAL") == "Done"

    async def acquire(self, value) -> None:
        """on_update of Acquire (a blocking record: the put completes when we return)."""
        if not int(value) or self.busy:
            return  # a stop: the running acquisition sees Acquire=Done
        self.busy = True
        cam = self.cam
        try:
            mode = cam.value("ImageMode")
            count = {0: 1, 1: max(int(cam.value("NumImages")), 1)}.get(int(mode))
            cam.set(Acquire_RBV=1, DetectorState_RBV=1, NumImagesCounter_RBV=0)
            loop = asyncio.get_running_loop()
            start = loop.time()
            n = 0
            while count is None or n < count:
                period = max(float(cam.value("AcquirePeriod")), float(cam.value("AcquireTime")))
                deadline = start + (n + 1) * period
                while (delay := deadline - loop.time()) > 0 and not self.stopped():
                    await asyncio.sleep(min(delay, STOP_POLL))
                if self.stopped():
                    break
                n += 1
                self._frame(n)
                await asyncio.sleep(0)
        finally:
            # Acquire reads Done again (as a busy record does), before Acquire_RBV says
            # so: a client that puts Acquire=1 as soon as it sees Done must not be undone.
            # Its put waits for this one to complete, then processes the record again.
            self.busy = False
            cam.set(Acquire=0)
            cam.set(Acquire_RBV=0, DetectorState_RBV=0)

    def _frame(self, n: int) -> None:
        """One frame: to the image plugin, then the driver's parameters (simDetector's
        order: doCallbacks before callParamCallbacks)."""
        cam = self.cam
        self.counter += 1
        uid = self.counter
        x = max(1, min(int(cam.value("SizeX")), int(cam.value("MaxSizeX_RBV"))))
        y = max(1, min(int(cam.value("SizeY")), int(cam.value("MaxSizeY_RBV"))))
        data_type, color = int(cam.value("DataType")), int(cam.value("ColorMode"))
        now = time.time()
        sec, nsec = int(now) - EPICS_EPOCH, int((now % 1) * 1e9)
        dims = (3, x, y) if color == 2 else (x, y)
        if cam.value("ArrayCallbacks"):
            data, dims = self.pattern.frame(uid, x, y, NDDataType(data_type).numpy, color)
            self.image.offer((uid, data, dims, data_type, color, sec, nsec))
        itemsize = NDDataType(data_type).numpy.itemsize
        cam.set(ArrayCounter=uid, ArrayCounter_RBV=uid, NumImagesCounter_RBV=n,
                UniqueId_RBV=uid, TimeStamp_RBV=sec + nsec / 1e9,
                ArraySizeX_RBV=dims[-2] if len(dims) == 3 else dims[0], ArraySizeY_RBV=dims[-1],
                ArraySizeZ_RBV=dims[0] if len(dims) == 3 else 0,
                ArraySize_RBV=int(np.prod(dims)) * itemsize)


def _load_driver_attributes(cam: Records) -> None:
    """The driver checks its NDAttributesFile as ADCore's does (status PV); over CA the
    attributes themselves are evaluated by the client (the writer's CA source)."""
    from ..layout.ndattributes import AttributesError, load_attributes

    try:
        load_attributes(str(cam.value("NDAttributesFile")), str(cam.value("NDAttributesMacros")))
        status = 0
    except AttributesError as exc:
        log.warning("NDAttributesFile: %s", exc)
        status = int(exc.status)
    cam.set(NDAttributesStatus=status)


def build(prefix: str, max_x: int, max_y: int, size_x: int, size_y: int, array_type: str):
    """Create the records (before iocInit); returns the detector and its image plugin."""
    from softioc import builder

    builder.SetSimpleRecordNames(prefix, "")
    ca_type, wire_dtype = ARRAY_TYPES[array_type]
    del ca_type
    nelm = max_x * max_y * 3
    holder: dict[str, object] = {}

    def acquire(pv: PV):
        return builder.boolOut("cam1:" + pv.suffix, ZNAM="Done", ONAM="Acquire", initial_value=0,
                               on_update=lambda v: holder["detector"].acquire(v), blocking=True,
                               always_update=True)

    def counter(pv: PV):
        return builder.longOut("cam1:" + pv.suffix, initial_value=0, always_update=True,
                               on_update=lambda v: holder["detector"].set_counter(v))

    def attributes(pv: PV):
        def on_update(value) -> None:
            if f"{pv.suffix}_RBV" in holder["cam"].specs:
                holder["cam"].set(**{f"{pv.suffix}_RBV": value})
            _load_driver_attributes(holder["cam"])
        return make_record(builder, "cam1:" + pv.suffix, pv, on_update)

    cam_table = _extra_cam_pvs(_cam_table(max_x, max_y, size_x, size_y))
    cam = Records(builder, "cam1:", cam_table,
                  {"Acquire": acquire, "ArrayCounter": counter, "NDAttributesFile": attributes,
                   "NDAttributesMacros": attributes})
    holder["cam"] = cam
    image_table = _image_table(nelm)
    image = Records(builder, "image1:", image_table, {})
    # an input record (I/O Intr, as NDStdArrays'), processed by post_array
    image.records["ArrayData"] = builder.WaveformIn("image1:ArrayData", datatype=wire_dtype,
                                                    length=nelm)
    image.specs["ArrayData"] = PV("ArrayData", Kind.LONG_ARRAY, "waveform", writable=False)
    plugin = ImagePlugin(image, wire_dtype)
    detector = Detector(cam, plugin)
    holder["detector"] = detector
    return detector, plugin


def rsrv_main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING - 10 * min(args.verbose, 2))
    pva_only = [name for name, value in (("--codec", getattr(args, "codec", "none") != "none"),
                                         ("--noise", getattr(args, "noise", 0.0)),
                                         ("--backlog-mb", getattr(args, "backlog_mb", 0)))
                if value]
    if pva_only:
        print(f"sim --ca-server rsrv: {', '.join(pva_only)} apply to the caproto simulator "
              "(this stand-in serves Channel Access only, through EPICS base's server)",
              file=sys.stderr)
        return 2
    from softioc import asyncio_dispatcher, builder, softioc

    dispatcher = asyncio_dispatcher.AsyncioDispatcher()
    detector, plugin = build(args.prefix, *args.max_size, *args.size, args.array_type)
    builder.LoadDatabase()
    # No pvAccess server: this stand-in is about RSRV (and must not announce itself
    # on other networks).
    softioc.iocInit(dispatcher, enable_pva=False)
    asyncio.run_coroutine_threadsafe(plugin.run(), dispatcher.loop)
    # RSRV's port: EPICS_CAS_SERVER_PORT, else EPICS_CA_SERVER_PORT, else 5064
    port = os.environ.get("EPICS_CAS_SERVER_PORT") or os.environ.get("EPICS_CA_SERVER_PORT")
    print(f"Channel Access: TCP port {port or 5064} (EPICS base RSRV), serving "
          f"{args.prefix}cam1: + {args.prefix}image1:", flush=True)
    if args.list_pvs:
        names = [args.prefix + "cam1:" + s for s in detector.cam.records] + \
            [args.prefix + "image1:" + s for s in plugin.records.records]
        print("\n".join(names))
        print("# end of PV list", flush=True)
    softioc.non_interactive_ioc()
    return 0


__all__ = ["rsrv_main"]
