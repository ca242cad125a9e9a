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
from ._xml import XMLInputError, XMLText, parse_secure, read_xml_input

__all__ = [
    "Attribute", "Dataset", "Group", "HardLink", "Layout", "LayoutError", "Placement",
    "When", "default_layout", "load_layout", "parse_constant",
]


class LayoutError(XMLInputError):
    """The layout cannot be used: unreadable, malformed, or against the schema."""


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
    warnings: tuple[str, ...] = field(default=(), compare=False)

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
        default = self.ndattr_default_group()
        if default is not None:
            return Placement(default.path, name, When.FRAME)
        if self.auto_ndattr_default:
            return Placement("/", name, When.FRAME)
        return None

    def place_ndattributes(self, names: Sequence[str]) -> dict[str, Placement | None]:
        return {name: self.place_ndattribute(name) for name in names}


def _join(group: str, name: str) -> str:
    return f"/{name}" if group == "/" else f"{group}/{name}"


# -- constants ---------------------------------------------------------------

def parse_constant(value: str, type_: str | None) -> int | float | str | list[int] | list[float]:
    """A constant's value: int/float (comma lists give lists) or the string."""
    if type_ in (None, "string"):
        return value
    convert = int if type_ == "int" else float
    parts = [p.strip() for p in value.split(",")]
    numbers = [convert(p) for p in parts]
    return numbers if len(numbers) > 1 else numbers[0]


# -- parsing -----------------------------------------------------------------

@cache
def _schema() -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(str(layout_file("hdf5_layout.xsd"))))


_BAD_NAME = re.compile(r"^$|/|^\.{1,2}$")


def _is_inline(spec: str) -> bool:
    # ADCore's rule: the string is XML text when it contains "<?xml".
    return "<?xml" in spec


def load_layout(spec: str | Path, *, allowed_roots: tuple[Path, ...] = ()) -> Layout:
    """Load a layout from a file path, or from inline XML (contains ``<?xml``)."""
    spec = str(spec)
    xml = read_xml_input(spec, inline_marker=("<?xml",), error=LayoutError,
                         allowed_roots=allowed_roots)
    return parse_layout(xml)


def parse_layout(xml: XMLText) -> Layout:
    tree = parse_secure(xml, LayoutError)
    schema = _schema()
    if not schema.validate(tree):
        entry = schema.error_log.filter_from_errors()[0]
        message = re.sub(r"^Element '([^']*)'", r"element <\1>", entry.message)
        raise LayoutError(f"schema: {message}", source=xml.source, line=entry.line)
    return _Builder(xml.source).build(tree.getroot())


def default_layout() -> Layout:
    """The layout used when XMLFileName is empty (``layouts/default.xml``)."""
    return _default_layout_cached()


@cache
def _default_layout_cached() -> Layout:
    return load_layout(layout_file("default.xml"))


def _bool(value: str | None) -> bool:
    return value is not None and value.strip() in ("true", "1")


class _Builder:
    def __init__(self, source: str):
        self.source = source
        self.warnings: list[str] = []

    def error(self, message: str, element: etree._Element) -> LayoutError:
        return LayoutError(message, source=self.source, line=element.sourceline)

    def warn(self, message: str, element: etree._Element) -> None:
        self.warnings.append(f"line {element.sourceline}: {message}")

    def build(self, root: etree._Element) -> Layout:
        auto = root.get("auto_ndattr_default")
        destination = None
        for element in root:
            if element.tag == "global":
                destination = element.get("ndattribute")
        top = self.group(root, name="", path="/")
        return Layout(
            root=top,
            data_destination=destination,
            auto_ndattr_default=not (auto is not None and auto.strip() in ("false", "0")),
            source=self.source,
            warnings=tuple(self.warnings),
        )

    def group(self, element: etree._Element, *, name: str, path: str) -> Group:
        groups: list[Group] = []
        datasets: list[Dataset] = []
        links: list[HardLink] = []
        attributes: list[Attribute] = []
        names: dict[str, int | None] = {}
        for child in element:
            if not isinstance(child.tag, str) or child.tag == "global":
                continue  # comments, processing instructions
            if child.tag == "attribute":
                self.add_attribute(attributes, child)
                continue
            child_name = child.get("name")
            if _BAD_NAME.search(child_name):
                raise self.error(f"invalid {child.tag} name {child_name!r}", child)
            if child_name in names:
                raise self.error(
                    f"duplicate name {child_name!r} in {path} (first used on line "
                    f"{names[child_name]})", child)
            names[child_name] = child.sourceline
            child_path = f"/{child_name}" if path == "/" else f"{path}/{child_name}"
            if child.tag == "group":
                groups.append(self.group(child, name=child_name, path=child_path))
            elif child.tag == "dataset":
                datasets.append(self.dataset(child, child_path))
            elif child.tag == "hardlink":
                target = child.get("target")
                if not target.startswith("/"):
                    raise self.error(f"hardlink target {target!r} must be an absolute path",
                                     child)
                links.append(HardLink(child_name, child_path, target, child.sourceline))
        return Group(
            name=name, path=path, ndattr_default=_bool(element.get("ndattr_default")),
            attributes=tuple(attributes), groups=tuple(groups), datasets=tuple(datasets),
            hardlinks=tuple(links), line=element.sourceline,
        )

    def add_attribute(self, attributes: list[Attribute], element: etree._Element) -> None:
        name = element.get("name")
        if any(a.name == name for a in attributes):
            # ADCore keeps the first and ignores the second; so do we, loudly.
            self.warn(f"duplicate attribute {name!r} ignored", element)
            return
        source = element.get("source")
        type_ = element.get("type")
        value = element.get("value", "")
        when = When.OPEN
        if source == "ndattribute":
            if not element.get("ndattribute"):
                raise self.error(f"attribute {name!r}: source=\"ndattribute\" needs an "
                                 "ndattribute=\"...\"", element)
            when = When.CLOSE if element.get("when") == "OnFileClose" else When.OPEN
        else:
            self.check_constant(value, type_, element)
        attributes.append(Attribute(name, source, value, type_, element.get("ndattribute", ""),
                                    when, element.sourceline))

    def dataset(self, element: etree._Element, path: str) -> Dataset:
        source = element.get("source")
        ndattribute = element.get("ndattribute", "")
        type_ = element.get("type")
        value = element.get("value", "")
        when = When.FRAME
        if source == "ndattribute" and ndattribute:
            when = {"OnFileOpen": When.OPEN, "OnFileClose": When.CLOSE}.get(
                element.get("when", ""), When.FRAME)
        if source == "constant":
            self.check_constant(value, type_, element)
        attributes: list[Attribute] = []
        for child in element:
            if isinstance(child.tag, str):
                self.add_attribute(attributes, child)
        return Dataset(
            name=element.get("name"), path=path, source=source, value=value, type=type_,
            ndattribute=ndattribute, when=when, det_default=_bool(element.get("det_default")),
            attributes=tuple(attributes), line=element.sourceline,
        )

    def check_constant(self, value: str, type_: str | None, element: etree._Element) -> None:
        try:
            parse_constant(value, type_)
        except ValueError:
            raise self.error(f"value {value!r} is not a valid {type_} (or comma-separated "
                             f"list of {type_}s)", element) from None
