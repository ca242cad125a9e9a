"""The simulator's NDPosPlugin stand-in: ``<P>Pos1:``, labelling frames with scan indices.

ADCore's NDPosPlugin (``NDPosPlugin.cpp``, ``NDPosPluginFileReader.cpp``,
``NDPosPlugin.template``) keeps a list of positions loaded from XML (``Filename``: a
file path, or the XML itself when the text contains ``<pos_layout>``)::

    <pos_layout><dimensions><dimension name="d0"/><dimension name="d1"/></dimensions>
      <positions><position d0="0" d1="0"/><position d0="0" d1="1"/>...</positions>
    </pos_layout>

While ``Running``, each frame it receives is checked against ``ExpectedID_RBV`` (which
``Running`` sets to ``IDStart`` and each labelled frame advances by ``IDDifference``):
a frame ahead of it skips the positions of the frames that never came (``Missing_RBV``),
a frame behind it is dropped (``Duplicate_RBV``); the frame then gets the next position's
values as Float64 NDAttributes named by the list's dimensions and is passed on.  In
``Discard`` mode a used position leaves the list (``Qty_RBV`` falls); in ``Keep`` mode
``Index_RBV`` advances and ``Reset`` rewinds it.  When the positions run out ``Running``
returns to Idle (it is a busy record: a put of 1 completes then).  Frames that arrive
while it is not running are not passed on.

Here the plugin sits between the driver (with Stats1's attributes) and ``Pva1:Image``:
while ``Pos1:EnableCallbacks`` is Enable, ``Pva1:Image`` gets its frames through it (as an
NDPluginPva whose NDArrayPort is the position plugin); while it is Disable, straight
from the driver.  ``image1:`` (Channel Access) always gets them from the driver.

One difference from ADCore: with ``IDName`` set, ADCore compares a variable that never
receives the attribute's value (a shadowed local in ``processCallbacks``), so every frame
reads as a duplicate and is dropped; here the attribute's value is used, as documented.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import re

from caproto import SkipWrite

from ..layout._xml import XMLInputError, XMLText, parse_secure
from ..ndarray import NDArray, NDAttribute, NDAttrSource, NDAttrType
from ..plugin.group import make_pvproperty
from ..plugin.pvtable import PV, Kind, boolean, long, pair, ro, rw, text, to_param, to_pv

log = logging.getLogger(__name__)

ADCORE_VERSION = "3.14.0"
MODES = ("Discard", "Keep")
DISCARD, KEEP = 0, 1
FILENAME_NELM = 1_000_000  # NDPosPlugin.template's Filename waveform
MAX_FILE_BYTES = 64 * 2**20  # a position file larger than this is refused (FileValid No)
MAX_POSITIONS = 1_000_000  # positions held at once (~300 bytes each); loads beyond are refused
INLINE_MARKER = "<pos_layout>"  # NDPosPluginFileReader: XML text rather than a path
DESCRIPTION = "Position of NDArray"
_NUMBER = re.compile(r"\s*[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def pos_table() -> tuple[PV, ...]:
    """NDPluginBase's records a client of the plugin connects to, and NDPosPlugin's."""
    t: list[PV] = []
    t += ro("PortName_RBV", Kind.STRING, "stringin", "POS1")
    t += ro("PluginType_RBV", Kind.STRING, "stringin", "NDPositionPlugin")
    t += ro("ADCoreVersion_RBV", Kind.STRING, "stringin", ADCORE_VERSION)
    t += ro("DriverVersion_RBV", Kind.STRING, "stringin", ADCORE_VERSION)
    t += pair("NDArrayPort", Kind.STRING, "stringout", "SIM1")
    t += long("NDArrayAddress", 0)
    t += boolean("EnableCallbacks", ("Disable", "Enable"), 0)
    t += boolean("ArrayCallbacks", ("Disable", "Enable"), 1)
    t += long("ArrayCounter", 0)
    t += ro("UniqueId_RBV", Kind.LONG, "longin", 0)
    t += ro("TimeStamp_RBV", Kind.DOUBLE, "ai", 0.0, precision=3)
    t += long("DroppedArrays", 0)
    t += long("QueueSize", 2)
    t += text("NDAttributesFile", nelm=16384)
    # NDPosPlugin.template
    t += text("Filename", nelm=FILENAME_NELM)
    t += ro("FileValid_RBV", Kind.ENUM, "bi", 0, enum_strings=("No", "Yes"))
    t += pair("Running", Kind.ENUM, "busy", 0, enum_strings=("Idle", "Running"))
    # bo records without state names (ZNAM/ONAM): their states read as their numbers
    t += rw("Reset", Kind.ENUM, "bo", 0, enum_strings=("0", "1"))
    t += rw("Delete", Kind.ENUM, "bo", 0, enum_strings=("0", "1"))
    t += pair("Mode", Kind.ENUM, "bo", DISCARD, enum_strings=MODES)
    t += ro("Qty_RBV", Kind.LONG, "longin", 0)
    t += ro("Index_RBV", Kind.LONG, "longin", 0)
    t += ro("Position_RBV", Kind.STRING, "stringin", "")
    t += long("Missing", 0)
    t += long("Duplicate", 0)
    t += ro("ExpectedID_RBV", Kind.LONG, "longin", 1)
    t += pair("IDName", Kind.STRING, "stringout", "")
    t += long("IDStart", 1)
    t += long("IDDifference", 1)
    return tuple(t)


# -- the position list -----------------------------------------------------------------
class PositionListError(ValueError):
    """The position list cannot be read (FileValid_RBV No)."""


def read_position_list(spec: str) -> list[dict[str, float]]:
    """The positions of ``spec`` (XML text holding ``<pos_layout>``, or a file path), as
    NDPosPluginFileReader reads them: every ``<dimension name=..>`` seen so far names a
    value each ``<position>`` must hold as a number; a position missing one, or holding
    something that does not start with a number, is skipped."""
    if INLINE_MARKER in spec:
        xml = XMLText(spec.encode("utf-8"), "<inline>", True)
    else:
        try:
            if os.path.getsize(spec) > MAX_FILE_BYTES:
                raise PositionListError(f"{spec}: larger than {MAX_FILE_BYTES} bytes")
            with open(spec, "rb") as fh:
                xml = XMLText(fh.read(MAX_FILE_BYTES + 1), spec, False)
        except OSError as exc:
            raise PositionListError(f"{spec or '(empty)'}: {exc.strerror or exc}") from None
    try:
        root = parse_secure(xml, XMLInputError).getroot()
    except XMLInputError as exc:
        raise PositionListError(str(exc)) from None
    dimensions: list[str] = []
    positions: list[dict[str, float]] = []
    for element in root.iter("dimension", "position"):
        if element.tag == "dimension":
            if element.get("name") is not None:
                dimensions.append(element.get("name"))
            continue
        if not element.attrib:
            continue
        values = {}
        for name in dimensions:
            match = _NUMBER.match(element.get(name) or "")
            if match is None:
                break
            values[name] = float(match.group())
        else:
            positions.append(dict(sorted(values.items())))  # a std::map: sorted by name
    return positions


class _Positions:
    """A list whose front is removed cheaply (Discard mode pops one per frame)."""

    def __init__(self) -> None:
        self._items: list[dict[str, float]] = []
        self._head = 0

    def __len__(self) -> int:
        return len(self._items) - self._head

    def __getitem__(self, index: int) -> dict[str, float]:
        return self._items[self._head + index]

    def extend(self, positions: list[dict[str, float]]) -> None:
        self._items.extend(positions)

    def pop_front(self) -> None:
        self._head += 1
        if self._head > 4096 and self._head * 2 > len(self._items):
            del self._items[:self._head]
            self._head = 0

    def clear(self) -> None:
        self._items, self._head = [], 0


# -- processCallbacks ------------------------------------------------------------------
class PositionLabeller:
    """NDPosPlugin's state and ``processCallbacks``, without PVs (``label`` per frame)."""

    def __init__(self) -> None:
        self.positions = _Positions()
        self.running = False
        self.mode = DISCARD
        self.index = 0
        self.expected_id = 1
        self.id_start = 1
        self.id_difference = 1
        self.id_name = ""
        self.missing = 0
        self.duplicate = 0
        self.current = ""

    def start(self, on: bool) -> None:
        """A write to Running (either value) re-arms ExpectedID at IDStart."""
        self.running = on
        self.expected_id = self.id_start

    def set_mode(self, mode: int) -> None:
        self.mode = mode
        self.index = 0

    def reset(self) -> None:
        self.index = 0
        self.current = ""

    def delete(self) -> None:
        self.reset()
        self.positions.clear()

    def append(self, positions: list[dict[str, float]]) -> None:
        if len(self.positions) + len(positions) > MAX_POSITIONS:
            raise PositionListError(f"more than {MAX_POSITIONS} positions held at once")
        self.positions.extend(positions)

    def _frame_id(self, unique_id: int, attributes) -> int | None:
        if not self.id_name:
            return unique_id
        attribute = attributes.get(self.id_name)
        if attribute is None or not attribute.defined or attribute.dtype is NDAttrType.String:
            log.error("Pos1: frame %d has no numeric NDAttribute %r for its id; stopped",
                      unique_id, self.id_name)
            return None
        return int(attribute.value)

    def label(self, unique_id: int, attributes) -> dict[str, float] | None:
        """The labels of a frame the plugin receives, or None if it is not passed on."""
        if not self.running:
            return None
        if self.index >= len(self.positions):
            self.running = False  # the end of the positions
            return None
        running = True
        frame_id = self._frame_id(unique_id, attributes)
        if frame_id is None:
            self.running = running = False
        skip = False
        if running and self.expected_id < frame_id:
            # Frames that never came: their positions are skipped, so that this one
            # still gets its own.
            log.warning("Pos1: expected id %d, received %d: frames missing",
                        self.expected_id, frame_id)
            if self.mode == DISCARD:
                while self.expected_id < frame_id and len(self.positions):
                    self.positions.pop_front()
                    self.expected_id += self.id_difference
                    self.missing += 1
                if not len(self.positions):
                    self.running = running = False
            else:
                while self.expected_id < frame_id and self.index < len(self.positions):
                    self.index += 1
                    self.expected_id += self.id_difference
                    self.missing += 1
                if self.index == len(self.positions):
                    self.running = running = False
        elif running and self.expected_id > frame_id:
            log.error("Pos1: expected id %d, received %d: duplicate dropped",
                      self.expected_id, frame_id)
            self.duplicate += 1
            skip = True
        labels = None
        if running and not skip:
            labels = self.positions[self.index]
            text = ",".join(f"{name}={value:g}" for name, value in labels.items())
            self.current = f"[{text}]"[:39]  # a stringin holds 39 characters
            if self.mode == DISCARD:
                self.positions.pop_front()  # ADCore erases the front, whatever the index
            else:
                self.index += 1
            self.expected_id += self.id_difference
        if not len(self.positions):
            self.running = False
        return labels


def labelled(frame: NDArray, labels: dict[str, float]) -> NDArray:
    """``frame`` with its position as NDPosPlugin attaches it (a name already on the frame
    is replaced, as NDAttributeList::add does)."""
    attributes = dict(frame.attributes)
    for name, value in labels.items():
        attributes[name] = NDAttribute(name, value, NDAttrType.Float64, DESCRIPTION,
                                       "NDPosPlugin", NDAttrSource.DRIVER)
    return dataclasses.replace(frame, attributes=attributes)


def _int32(value: int) -> int:
    return (value + 2**31) % 2**32 - 2**31


# -- the PV group ----------------------------------------------------------------------
def pos_group_class(group_class) -> type:
    """The ``Pos1:`` PVGroup class; ``group_class(name, table)`` makes the simulator's
    mirroring group (every ``_RBV`` follows its setpoint)."""

    table = pos_table()
    # Without EPICS record fields (VAL, DESC, SCAN, ... each): ~45 records of ~60 fields
    # would cost the simulator a second more to start, and nothing here uses them.
    lean = {}
    for pv in table:
        prop = make_pvproperty(pv)
        prop.pvspec = prop.pvspec._replace(record=None)
        lean[pv.suffix] = prop

    class SimPos(group_class("SimPosBase", table, lean)):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.labeller = PositionLabeller()
            self._idle = asyncio.Event()
            self._idle.set()

        async def group_write(self, instance, value):
            name = instance.pvspec.name
            lab = self.labeller
            if name == "Running":
                on = bool(to_param(self.table[name], value))
                lab.start(on)
                await self._publish()
                if on:
                    await self.post(Running=1)  # a busy record shows 1 until done
                    await self._idle.wait()
                    raise SkipWrite
                return value
            result = await super().group_write(instance, value)
            number = to_param(self.table[name], value) if name in self.table else value
            if name == "Filename":
                await self._load(number)
            elif name == "Mode":
                lab.set_mode(int(number))
            elif name == "Reset":
                lab.reset()
            elif name == "Delete":
                lab.delete()
            elif name == "IDStart":
                lab.id_start = int(number)
            elif name == "IDDifference":
                lab.id_difference = int(number)
            elif name == "IDName":
                lab.id_name = str(number)
            elif name == "Missing":
                lab.missing = int(number)
            elif name == "Duplicate":
                lab.duplicate = int(number)
            else:
                return result
            await self._publish()
            return result

        async def _load(self, spec: str) -> None:
            """Read the list off the event loop (a file, or up to 1 MB of XML), then
            append its positions (NDPosPlugin appends; Delete empties the list)."""
            loop = asyncio.get_running_loop()
            try:
                positions = await loop.run_in_executor(None, read_position_list, spec)
                self.labeller.append(positions)
            except PositionListError as exc:
                log.warning("Pos1:Filename: %s", exc)
                await self.set(FileValid_RBV=0)
                return
            await self.set(FileValid_RBV=1)

        async def _publish(self) -> None:
            lab = self.labeller
            if lab.running:
                self._idle.clear()
            values = dict(
                Running_RBV=int(lab.running), Qty_RBV=len(lab.positions),
                Index_RBV=lab.index, Position_RBV=lab.current,
                ExpectedID_RBV=_int32(lab.expected_id), Missing=_int32(lab.missing),
                Missing_RBV=_int32(lab.missing), Duplicate=_int32(lab.duplicate),
                Duplicate_RBV=_int32(lab.duplicate))
            if not lab.running:
                values["Running"] = 0
            # Without put handlers: this runs inside the handlers of Running, Missing, ...
            await self.post(**{k: v for k, v in values.items()
                               if self.attr_pvdb[k].value != to_pv(self.table[k], v)})
            if not lab.running:
                self._idle.set()

        async def label(self, frame: NDArray) -> NDArray | None:
            """A frame on its way to Pva1:Image: through the plugin while it is enabled
            (labelled, or None when not passed on), unchanged otherwise."""
            if not self.value("EnableCallbacks"):
                return frame
            counter = _int32(self.value("ArrayCounter") + 1)
            await self.post(ArrayCounter=counter, ArrayCounter_RBV=counter,
                            UniqueId_RBV=frame.unique_id, TimeStamp_RBV=frame.timestamp)
            was_running = self.labeller.running
            labels = self.labeller.label(frame.unique_id, frame.attributes)
            if was_running:
                await self._publish()
            return None if labels is None else labelled(frame, labels)

    return SimPos


__all__ = ["PositionLabeller", "PositionListError", "labelled", "pos_group_class", "pos_table",
           "read_position_list"]
