"""The simulator's NDPluginPva stand-in: ``<P>Pva1:Image``, one NTNDArray per frame.

Served by p4p's pvAccess server (pvxs).  Each update carries what ADCore's
``NTNDArrayConverter::fromArray`` puts in it: the pixels (or NDPluginCodec's compressed
bytes with ``codec.name``, ``codec.parameters`` = the uncompressed NDDataType,
``compressedSize``, ``uncompressedSize``), ``dimension[]`` (size, offset, fullSize,
binning, reverse), ``uniqueId``, ``dataTimeStamp`` (the NDArray timeStamp) and
``timeStamp`` (its epicsTS), both in POSIX seconds, and ``attribute[]`` with each
NDAttribute's typed value, descriptor, sourceType and source.

pvxs keeps at most the queue each subscriber asked for (``record[queueSize=N]``, 4 by
default) and shares one copy of a frame between subscribers; a lagging subscriber loses
the oldest updates, and sees them as UniqueId gaps.
"""

from __future__ import annotations

import logging

import numpy as np

from ..ndarray import NDArray, NDAttrSource, NDAttrType, NDDataType
from ..sources.pva import ATTR_CODES, POSIX_TIME_AT_EPICS_EPOCH, VALUE_FIELDS

log = logging.getLogger(__name__)

_SOURCE_TYPES = {NDAttrSource.DRIVER: 0, NDAttrSource.PARAM: 1, NDAttrSource.EPICS_PV: 2,
                 NDAttrSource.FUNCT: 3, NDAttrSource.CONST: 4}


def _stamp(seconds_epics: float) -> dict:
    whole = int(np.floor(seconds_epics))
    return {"secondsPastEpoch": whole + POSIX_TIME_AT_EPICS_EPOCH,
            "nanoseconds": int(round((seconds_epics - whole) * 1e9)) % 1_000_000_000}


def ntndarray_fields(frame: NDArray) -> dict:
    """The NTNDArray fields of ``frame`` (as p4p's ``Value`` takes them)."""
    dims = frame.dims
    offsets, binnings, reverses = frame.dim_offsets(), frame.dim_binnings(), frame.dim_reverses()
    attributes = []
    for a in frame.attributes.values():
        if a.dtype is NDAttrType.Undefined or a.value is None:
            value = None
        else:
            value = (ATTR_CODES[a.dtype], a.value)
        attributes.append({"name": a.name, "value": value, "descriptor": a.description,
                           "sourceType": _SOURCE_TYPES.get(a.source_type, 0),
                           "source": a.source})
    if frame.codec is not None:
        value = ("ubyteValue", frame.codec.payload)
        codec = {"name": frame.codec.name,
                 "parameters": ("i", int(NDDataType.from_numpy(frame.data.dtype)))}
    else:
        value = (VALUE_FIELDS[frame.data.dtype.char], frame.data.reshape(-1))
        codec = {"name": "", "parameters": None}
    return {
        "value": value, "codec": codec,
        "compressedSize": frame.compressed_size, "uncompressedSize": frame.nbytes,
        "uniqueId": int(frame.unique_id),
        "dataTimeStamp": _stamp(frame.timestamp),
        "timeStamp": {"secondsPastEpoch": frame.epics_ts_sec + POSIX_TIME_AT_EPICS_EPOCH,
                      "nanoseconds": frame.epics_ts_nsec},
        "dimension": [{"size": int(size), "offset": int(offsets[i]), "fullSize": int(size),
                       "binning": int(binnings[i]), "reverse": bool(reverses[i])}
                      for i, size in enumerate(dims)],
        "attribute": attributes,
    }


class PvaImageServer:
    """A pvAccess server with one NTNDArray PV."""

    def __init__(self, name: str):
        from p4p import Value
        from p4p.nt import NTNDArray
        from p4p.server import Server
        from p4p.server.thread import SharedPV

        self.name = name
        self._type = NTNDArray.buildType()
        self._value = Value
        self.pv = SharedPV(initial=Value(self._type, {}))
        self.server = Server(providers=[{name: self.pv}])

    def post(self, frame: NDArray) -> None:
        self.pv.post(self._value(self._type, ntndarray_fields(frame)))

    def close(self) -> None:
        self.server.stop()


class SimFrames:
    """What the simulated driver attaches to each frame and where it goes besides
    ``image1:``: the NDArray with the driver's and Stats1's NDAttributes (and ColorMode,
    as every ADCore driver adds), compressed with ``codec`` if asked, posted on
    ``<P>Pva1:Image``; Stats1's readbacks."""

    def __init__(self, detector, server: PvaImageServer | None):
        from .sim_attributes import AttributeSet

        self.detector = detector
        self.server = server
        factory = _ca_sampler
        self.driver = AttributeSet(detector.own_pv, detector.param, factory)
        self.stats = AttributeSet(detector.own_pv, detector.param, factory)

    @property
    def needs_statistics(self) -> bool:
        return self.driver.uses_statistics or self.stats.uses_statistics

    def frame(self, uid: int, data: np.ndarray, timestamp: float, sec: int, nsec: int,
              color: int, statistics: dict | None, geometry: dict, codec: str = "",
              blosc: dict | None = None) -> NDArray:
        """Frame ``uid`` as the driver hands it on (geometry: per-dimension offset,
        binning, reverse), compressed with ``codec`` as NDPluginCodec would."""
        from ..ndarray import NDAttribute, NDAttrSource

        params = {"ARRAY_COUNTER": uid, "UNIQUE_ID": uid, "TIME_STAMP": timestamp,
                  **(statistics or {})}
        attributes = {"ColorMode": NDAttribute("ColorMode", color, NDAttrType.Int32,
                                               "Color mode", "Driver", NDAttrSource.DRIVER)}
        attributes.update(self.driver.evaluate(params))
        attributes.update(self.stats.evaluate(params))
        if codec:
            from ..ndarray import placeholder
            from ..writer.codecs import encode

            compressed = encode(data, codec, **(blosc or {}))
            return NDArray(data=placeholder(data.shape, data.dtype), unique_id=uid,
                           timestamp=timestamp, epics_ts_sec=sec, epics_ts_nsec=nsec,
                           attributes=attributes, codec=compressed, **geometry)
        return NDArray(data=data, unique_id=uid, timestamp=timestamp, epics_ts_sec=sec,
                       epics_ts_nsec=nsec, attributes=attributes, **geometry)

    def post(self, frame: NDArray) -> None:
        if self.server is not None:
            self.server.post(frame)


def _ca_sampler():
    """Channel Access monitors for EPICS_PV attributes naming other IOCs' PVs."""
    from caproto.threading.client import Context

    from ..sources.ca import AttributeSampler

    return AttributeSampler(Context())
