"""The simulator's NDAttributes, evaluated per frame as ADCore's driver and plugins do.

``<P>cam1:NDAttributesFile`` (+ ``NDAttributesMacros``) names the driver's attributes
and ``<P>Stats1:NDAttributesFile`` the statistics plugin's (asynNDArrayDriver::
readNDAttributesFile, then getAttributes at each frame):

* ``PARAM``: one of the simulator's own parameters, with the value it has for that frame
  (ARRAY_COUNTER and UNIQUE_ID are the frame's id, TIME_STAMP its time); the statistics
  plugin's parameters (TOTAL, NET, MEAN_VALUE, SIGMA_VALUE, MIN_VALUE, MAX_VALUE) are
  computed from the frame's pixels;
* ``EPICS_PV``: the simulator's own PVs are read as the frame is made; other PVs through
  Channel Access monitors (their latest value, as ADCore's PVAttribute);
* ``CONST``: the text; ``FUNCTION``: not available in the simulator (undefined).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

from ..layout.ndattributes import (
    AttributeDef,
    AttributesError,
    AttributesStatus,
    AttrKind,
    load_attributes,
)
from ..ndarray import NDAttribute, NDAttrType
from ..sources.ca import PARAM_PVS

log = logging.getLogger(__name__)

STATS_PARAMS = ("TOTAL", "NET", "MEAN_VALUE", "SIGMA_VALUE", "MIN_VALUE", "MAX_VALUE")


def frame_statistics(data: np.ndarray) -> dict[str, float]:
    """NDPluginStats' basic statistics of a frame (no background: NET = TOTAL)."""
    values = np.asarray(data, dtype=np.float64)
    total = float(values.sum())
    return {"TOTAL": total, "NET": total, "MEAN_VALUE": float(values.mean()),
            "SIGMA_VALUE": float(values.std()), "MIN_VALUE": float(values.min()),
            "MAX_VALUE": float(values.max())}


def _convert(value, dtype: NDAttrType):
    if value is None or dtype is NDAttrType.Undefined:
        return None
    if dtype is NDAttrType.String:
        return str(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    if dtype.numpy.kind == "f":
        return np.asarray(number).astype(dtype.numpy).item()
    return np.asarray(int(number)).astype(dtype.numpy).item()


class AttributeSet:
    """One NDAttributes file (a driver's or a plugin's), evaluated per frame.

    ``own_pv(name)`` gives (value, native NDAttrType) of one of the simulator's PVs, or
    None; ``param(drvinfo)`` the value of one of its parameters, or None."""

    def __init__(self, own_pv: Callable[[str], tuple | None],
                 param: Callable[[str], object | None], ca_sampler_factory=None):
        self.own_pv = own_pv
        self.param = param
        self.ca_sampler_factory = ca_sampler_factory
        self.definitions: list[AttributeDef] = []
        self._sampler = None
        self.uses_statistics = False

    def load(self, spec: str, macros: str) -> tuple[int, str]:
        """(NDAttributesStatus, message) after reading the file (or inline XML)."""
        try:
            definitions = load_attributes(spec, macros)
        except AttributesError as exc:
            self.definitions = []
            self.uses_statistics = False
            return int(exc.status), str(exc)
        foreign = [d for d in definitions
                   if d.kind is AttrKind.EPICS_PV and self.own_pv(d.source) is None]
        notes = []
        if foreign and self.ca_sampler_factory is not None:
            if self._sampler is None:
                self._sampler = self.ca_sampler_factory()
            notes = self._sampler.set_definitions(foreign)
        elif self._sampler is not None:
            self._sampler.set_definitions([])
        self.definitions = definitions
        self.uses_statistics = any(d.kind is AttrKind.PARAM and d.source in STATS_PARAMS
                                   for d in definitions)
        return int(AttributesStatus.OK), "; ".join(notes)

    def evaluate(self, frame_params: dict[str, object]) -> dict[str, NDAttribute]:
        """The attributes of one frame; ``frame_params`` are that frame's own parameter
        values (ARRAY_COUNTER, UNIQUE_ID, TIME_STAMP, statistics)."""
        out: dict[str, NDAttribute] = {}
        sampled = self._sampler.sample() if self._sampler is not None and self.definitions else {}
        for d in self.definitions:
            if d.kind is AttrKind.CONST:
                out[d.name] = d.constant()
            elif d.kind is AttrKind.PARAM:
                value = frame_params.get(d.source)
                if value is None:
                    value = self.param(d.source)
                dtype = d.forced_type
                value = _convert(value, dtype)
                out[d.name] = d.undefined() if value is None else d.value(value, dtype)
            elif d.kind is AttrKind.EPICS_PV:
                own = self.own_pv(d.source)
                if own is None:
                    out[d.name] = sampled.get(d.name, d.undefined())
                    continue
                value, native = own
                dtype = d.forced_type or native
                value = _convert(value, dtype)
                out[d.name] = d.undefined() if value is None else d.value(value, dtype)
            else:
                out[d.name] = d.undefined()
        return out


def param_suffix(drvinfo: str) -> str | None:
    """The driver PV showing an ADCore parameter (ARRAY_COUNTER -> ArrayCounter_RBV)."""
    return PARAM_PVS.get(drvinfo)
