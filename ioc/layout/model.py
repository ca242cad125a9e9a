"""ADCore layout XML -> an immutable layout model.  Pure: no h5py, no EPICS.

Semantics follow ADCore's ``NDFileHDF5LayoutXML.cpp`` / ``NDFileHDF5.cpp``
(reference ``ndfilehdf5-behaviour.md`` §2), with the deliberate differences
listed in the README ("Differences from NDFileHDF5").  ADCore keeps children
in ``std::map``s, so wherever ADCore searches "first", we search in
alphabetical order: a group's own datasets, then its subgroups, depth first.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from lxml import etree

from .._resources import layout_file
from ._xml import LoadWarning, XMLInputError, XMLText, parse_secure, read_xml_input

__all__ = [
    "Attribute", "Dataset", "Group", "HardLink", "Layout", "LayoutError", "Placement",
    "When", "default_layout", "is_hdf5_name", "load_layout", "parse_constant", "parse_numbers",
    "schema_errors",
]


class LayoutError(XMLInputError):
    """The layout cannot be used: unreadable, malformed, unsafe, or without a tree."""


class When(enum.Enum):
    OPEN = "OnFileOpen"
    FRAME = "OnFrame"
    CLOSE = "OnFileClose"


@dataclass(frozen=True)
class Attribute:
    """An HDF5 attribute on a group, dataset or the root."""

    name: str
    source: str  # "constant" | "ndattribute"
    value: str = ""
    type: str | None = None  # "int" | "float" | "string"; None = not given
    ndattribute: str = ""
    when: When = When.OPEN
    line: int | None = None


@dataclass(frozen=True)
class Dataset:
    name: str
    path: str
    source: str | None  # "detector" | "ndattribute" | "constant" | None
    value: str = ""
    type: str | None = None
    ndattribute: str = ""
    when: When = When.FRAME
    det_default: bool = False
    attributes: tuple[Attribute, ...] = ()
    line: int | None = None


@dataclass(frozen=True)
class HardLink:
    name: str
    path: str
    target: str
    line: int | None = None


@dataclass(frozen=True)
class Group:
    name: str
    path: str
    ndattr_default: bool = False
    attributes: tuple[Attribute, ...] = ()
    groups: tuple[Group, ...] = ()
    datasets: tuple[Dataset, ...] = ()
    hardlinks: tuple[HardLink, ...] = ()
    line: int | None = None

    def sorted_groups(self) -> list[Group]:
        return sorted(self.groups, key=lambda g: g.name)

    def sorted_datasets(self) -> list[Dataset]:
        return sorted(self.datasets, key=lambda d: d.name)


@dataclass(frozen=True)
class Placement:
    """Where one NDAttribute's dataset goes."""

    group: str  # absolute group path
    name: str
    when: When
    dataset: Dataset | None = None  # the layout dataset naming it, if any

    @property
    def path(self) -> str:
        return _join(self.group, self.name)


@dataclass(frozen=True)
class Layout:
    root: Group
    data_destination: str | None = None  # NDAttribute named by detector_data_destination
    auto_ndattr_default: bool = True
    source: str = "<inline>"
    warnings: tuple[LoadWarning, ...] = field(default=(), compare=False)

    # -- searches, in ADCore's (alphabetical, depth-first) order --------------
    def iter_groups(self) -> Iterator[Group]:
        def walk(group: Group) -> Iterator[Group]:
            yield group
            for child in group.sorted_groups():
                yield from walk(child)
        return walk(self.root)

    def iter_datasets(self) -> Iterator[Dataset]:
        for group in self.iter_groups():
            yield from group.sorted_datasets()

    def detector_datasets(self) -> list[Dataset]:
        return [d for d in self.iter_datasets() if d.source == "detector"]

    def default_detector(self) -> Dataset:
        """det_default="true" first; else the alphabetically first full path."""
        detectors = self.detector_datasets()
        if not detectors:
            raise LayoutError("No detector datasets found", source=self.source)
        for dataset in detectors:
            if dataset.det_default:
                return dataset
        return min(detectors, key=lambda d: d.path)

    def ndattr_default_group(self) -> Group | None:
        for group in self.iter_groups():
            if group.ndattr_default:
                return group
        return None

    def ndattribute_datasets(self, name: str) -> list[Dataset]:
        """Every layout dataset fed by NDAttribute ``name``, in search order."""
        return [
            d for d in self.iter_datasets()
            if d.source == "ndattribute" and d.ndattribute == name
        ]

    def performance_location(self) -> tuple[str, str] | None:
        """(group path, dataset name) of the performance dataset (§2.8), or None."""
        for group in self.iter_groups():
            if group.name != "performance":
                continue
            for dataset in group.datasets:
                if dataset.name == "timestamp" and dataset.source != "ndattribute":
                    return group.path, "timestamp"
        default = self.ndattr_default_group()
        if default is not None:
            return default.path, "timestamp"
        if self.auto_ndattr_default:
            return "/", "timestamp"
        return None

    def is_performance_dataset(self, dataset: Dataset) -> bool:
        location = self.performance_location()
        return location is not None and dataset.path == _join(*location)

    def place_ndattribute(self, name: str) -> Placement | None:
        """Where NDAttribute ``name`` is written (§2.6 steps 1-4), or None."""
        named = self.ndattribute_datasets(name)
        if named:
            dataset = named[0]
            group = dataset.path.rsplit("/", 1)[0] or "/"
            return Placement(group, dataset.name, dataset.when, dataset)
        if not is_hdf5_name(name):
            return None  # HDF5 cannot create it (ADCore's H5Dcreate fails the same way)
        default = self.ndattr_default_group()
        if default is not None:
            return Placement(default.path, name, When.FRAME)
        if self.auto_ndattr_default:
            return Placement("/", name, When.FRAME)
        return None

    def place_ndattributes(self, names: Sequence[str]) -> dict[str, Placement | None]:
        return {name: self.place_ndattribute(name) for name in names}


def is_hdf5_name(name: str) -> bool:
    """Whether ``name`` can name one HDF5 object in a group (no "/", not "." or "..")."""
    return bool(name) and "/" not in name and name not in (".", "..")


def _join(group: str, name: str) -> str:
    return f"/{name}" if group == "/" else f"{group}/{name}"


# -- constants ---------------------------------------------------------------

# What C++ ``std::stringstream >> int`` / ``>> double`` take (ADCore parses constants so).
_INT_TOKEN = re.compile(r"\s*([+-]?\d+)")
_FLOAT_TOKEN = re.compile(r"\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)")
_INT32 = (-(2**31), 2**31 - 1)


def parse_numbers(value: str, type_: str) -> tuple[list[int] | list[float], str]:
    """The numbers ADCore reads from a constant's value, and the text it ignores.

    ADCore reads numbers one after the other, skipping one ``,`` after each
    (spaces also separate them), and stops at the first thing that is not a
    number: ``"1,2,x"`` gives ``[1, 2]`` and ``"x"`` gives nothing."""
    token = _INT_TOKEN if type_ == "int" else _FLOAT_TOKEN
    numbers: list = []
    position = 0
    while True:
        match = token.match(value, position)
        if match is None:
            break
        if type_ == "int":
            number = int(match.group(1))
            if not _INT32[0] <= number <= _INT32[1]:
                break  # the stream fails on overflow
        else:
            number = float(match.group(1))
        numbers.append(number)
        position = match.end()
        if value.startswith(",", position):
            position += 1
    return numbers, value[position:].strip()


def parse_constant(value: str, type_: str | None) -> int | float | str | list[int] | list[float]:
    """A constant's value: int/float (several numbers give a list) or the string.
    Raises ValueError when an int/float value holds no number at all."""
    if type_ not in ("int", "float"):
        return value
    numbers, _ = parse_numbers(value, type_)
    if not numbers:
        raise ValueError(f"no {type_} in {value!r}")
    return numbers if len(numbers) > 1 else numbers[0]


# -- loading -----------------------------------------------------------------

def load_layout(spec: str | Path, *, allowed_roots: tuple[Path, ...] = ()) -> Layout:
    """Load a layout from a file path, or from inline XML (contains ``<?xml``, ADCore's
    rule).  Oddities come back in ``Layout.warnings``; LayoutError only for what ADCore
    cannot use either (unreadable, malformed XML, no ``<group>``) or what is unsafe."""
    spec = str(spec)
    xml = read_xml_input(spec, inline_marker=("<?xml",), error=LayoutError,
                         allowed_roots=allowed_roots)
    return parse_layout(xml)


def parse_layout(xml: XMLText) -> Layout:
    from ._builder import build_layout  # the builder imports this module's classes

    return build_layout(parse_secure(xml, LayoutError), xml.source)


def default_layout() -> Layout:
    """The layout used when XMLFileName is empty (``layouts/default.xml``)."""
    return _default_layout_cached()


@cache
def _default_layout_cached() -> Layout:
    return load_layout(layout_file("default.xml"))


def schema_errors(spec: str | Path) -> list[LoadWarning]:
    """Where a layout departs from the layout schema (``layouts/hdf5_layout.xsd``: ADCore's
    XSD with our root extensions).  Advice only (``check-layout --strict``): ADCore
    itself never validates against its schema."""
    xml = read_xml_input(str(spec), inline_marker=("<?xml",), error=LayoutError)
    tree = parse_secure(xml, LayoutError)
    schema = _schema()
    if schema.validate(tree):
        return []
    return [LoadWarning(entry.line, re.sub(r"^Element '([^']*)'", r"element <\1>", entry.message))
            for entry in schema.error_log.filter_from_errors()]


@cache
def _schema() -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(str(layout_file("hdf5_layout.xsd"))))
