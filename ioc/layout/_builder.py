"""Layout XML tree -> ``Layout``, by the rules of ADCore's streaming parser.

ADCore (``LayoutXML::process_node`` in NDFileHDF5LayoutXML.cpp) reads the
document element by element in document order and acts only on ``group``,
``dataset``, ``attribute``, ``global``, ``hardlink`` and ``hdf5_layout``.
Every other element is transparent (what it contains is read as if it were
not there) and the root element's name is never looked at, so ``<xml>``,
``<hdf_layout>`` or a bare ``<group>`` all work as the root.  The tree starts
at the first ``<group>``; a ``<group>`` or ``<dataset>`` that was created
holds what follows until its end tag.  Unknown values fall back to ADCore's
defaults; an item ADCore cannot write (an ``<attribute>`` with an unknown
``source``, an ndattribute one without ``ndattribute=``) is left out.

Each such case is kept as a ``LoadWarning`` (with its line) on the layout, so
the operator sees it in XMLErrorMsg_RBV, the log and ``check-layout``.

Where ADCore's own result is corrupt, the obvious intent is written instead
(README, "Differences from NDFileHDF5"): ADCore drops a repeated or nameless
group/dataset but still counts its end tag, which moves every later element
into the wrong group.  Here a repeated group's content is merged into the
first group of that name, a repeated dataset is left out with its attributes,
and a nameless group or dataset is transparent.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from lxml import etree

from ._xml import LoadWarning
from .model import (
    Attribute,
    Dataset,
    Group,
    HardLink,
    Layout,
    LayoutError,
    When,
    is_hdf5_name,
    parse_numbers,
)

__all__ = ["build_layout"]

# The XML attributes ADCore reads, per element.
KNOWN_XML_ATTRIBUTES = {
    "hdf5_layout": {"auto_ndattr_default"},
    "group": {"name", "ndattr_default"},
    "dataset": {"name", "source", "ndattribute", "when", "value", "type", "det_default"},
    "attribute": {"name", "source", "value", "type", "ndattribute", "when"},
    "hardlink": {"name", "target"},
    "global": {"name", "ndattribute"},
}
DATASET_SOURCES = ("detector", "ndattribute", "constant")
CONSTANT_TYPES = ("int", "float", "string")
DATA_DESTINATION = "detector_data_destination"


@dataclass
class _DatasetNode:
    name: str
    path: str
    line: int | None
    source: str | None = None
    value: str = ""
    type: str | None = None
    ndattribute: str = ""
    when: When = When.FRAME
    det_default: bool = False
    attributes: dict[str, Attribute] = field(default_factory=dict)

    def freeze(self) -> Dataset:
        return Dataset(self.name, self.path, self.source, self.value, self.type,
                       self.ndattribute, self.when, self.det_default,
                       tuple(self.attributes.values()), self.line)


@dataclass
class _GroupNode:
    name: str
    path: str
    line: int | None
    ndattr_default: bool = False
    attributes: dict[str, Attribute] = field(default_factory=dict)
    children: dict[str, _GroupNode | _DatasetNode] = field(default_factory=dict)
    links: dict[str, HardLink] = field(default_factory=dict)

    def child_path(self, name: str) -> str:
        return f"/{name}" if self.path == "/" else f"{self.path}/{name}"

    def freeze(self) -> Group:
        groups = tuple(c.freeze() for c in self.children.values() if isinstance(c, _GroupNode))
        datasets = tuple(c.freeze() for c in self.children.values()
                         if isinstance(c, _DatasetNode))
        return Group(self.name, self.path, self.ndattr_default, tuple(self.attributes.values()),
                     groups, datasets, tuple(self.links.values()), self.line)


Context = _GroupNode | _DatasetNode | None  # None: before the first <group>


def _tag(element: etree._Element) -> str:
    """The element's name as ADCore's reader sees it (prefix:local, or local)."""
    qname = etree.QName(element)
    return qname.localname if element.prefix is None else f"{element.prefix}:{qname.localname}"


def _is_bool_value(value: str | None) -> bool:
    return value in (None, "true", "false")


class _Builder:
    def __init__(self, source: str):
        self.source = source
        self.warnings: list[LoadWarning] = []
        # "/": holds root-level attributes (our extension) and, once the tree has
        # started, the top-level groups (ADCore's Root).
        self.root = _GroupNode("", "/", None)
        self.started = False
        self.auto_ndattr_default = True
        self.globals: dict[str, str] = {}

    def warn(self, element: etree._Element, message: str) -> None:
        self.warnings.append(LoadWarning(element.sourceline, message))

    # -- traversal ---------------------------------------------------------------
    def children(self, element: etree._Element, context: Context) -> None:
        for child in element:
            if isinstance(child.tag, str):  # not a comment or processing instruction
                self.element(child, context)

    def element(self, element: etree._Element, context: Context) -> None:
        if context is None and self.started:
            context = self.root  # once the tree exists, ADCore never returns to "no tree"
        tag = _tag(element)
        handler = getattr(self, f"on_{tag}", None) if tag in KNOWN_XML_ATTRIBUTES else None
        if handler is None:
            if element.getparent() is not None:  # the root's name is reported in build()
                self.warn(element, f"unknown element <{tag}> ignored (its content is read)")
            self.children(element, context)
            return
        self.check_xml_attributes(element, tag)
        handler(element, context)

    def check_xml_attributes(self, element: etree._Element, tag: str) -> None:
        for key in element.attrib:
            if key.startswith("{"):
                continue  # xmlns / xsi:schemaLocation hints
            if key not in KNOWN_XML_ATTRIBUTES[tag]:
                self.warn(element, f"<{tag}> XML attribute {key}=\"{element.get(key)}\" is not "
                                   "used (ignored)")

    # -- elements ------------------------------------------------------------------
    def on_hdf5_layout(self, element: etree._Element, context: Context) -> None:
        value = element.get("auto_ndattr_default")
        if value == "false":
            self.auto_ndattr_default = False
        elif value not in (None, "true"):
            self.warn(element, f"auto_ndattr_default=\"{value}\" is neither \"true\" nor "
                               "\"false\": ignored (true), as ADCore does")
        self.children(element, context)

    def on_global(self, element: etree._Element, context: Context) -> None:
        name, value = element.get("name"), element.get("ndattribute")
        if name is None or value is None:
            self.warn(element, "<global> needs name=\"...\" and ndattribute=\"...\": ignored")
        else:
            if name != DATA_DESTINATION:
                self.warn(element, f"<global name=\"{name}\">: only \"{DATA_DESTINATION}\" "
                                   "has a meaning; ignored")
            self.globals[name] = value
        self.children(element, context)

    def on_group(self, element: etree._Element, context: Context) -> None:
        name = element.get("name")
        if name is None:
            self.warn(element, "<group> without name: ignored (its content goes to the "
                               "enclosing group)")
            self.children(element, context)
            return
        if isinstance(context, _DatasetNode):
            self.warn(element, f"group {name!r} inside dataset {context.path}: ignored with "
                               "its content")
            return
        if context is None:
            self.started = True  # ADCore creates its tree at the first named <group>
            context = self.root
        if not is_hdf5_name(name):
            self.warn(element, f"group name {name!r} cannot be an HDF5 name: ignored with its "
                               "content (HDF5 cannot create it)")
            return
        existing = context.children.get(name)
        if isinstance(existing, _GroupNode):
            self.warn(element, f"group {existing.path} appears again (first on line "
                               f"{existing.line}): its content is merged into the first")
            group = existing
        elif isinstance(existing, _DatasetNode):
            self.warn(element, f"group {name!r}: {existing.path} is a dataset already (line "
                               f"{existing.line}): ignored with its content")
            return
        else:
            self.drop_clashing_link(context, name, element)
            group = _GroupNode(name, context.child_path(name), element.sourceline)
            context.children[name] = group
        value = element.get("ndattr_default")
        if value == "true":
            group.ndattr_default = True
        elif not _is_bool_value(value):
            self.warn(element, f"ndattr_default=\"{value}\" is not \"true\": ignored, as ADCore "
                               "does")
        self.children(element, group)

    def on_dataset(self, element: etree._Element, context: Context) -> None:
        name = element.get("name")
        if name is None:
            self.warn(element, "<dataset> without name: ignored (its attributes go to the "
                               "enclosing element)")
            self.children(element, context)
            return
        if context is None:
            self.warn(element, f"dataset {name!r} before the first <group>: ignored, as ADCore "
                               "does")
            self.children(element, context)
            return
        if context is self.root:
            self.warn(element, f"dataset {name!r} outside any group: ADCore never creates it; "
                               "ignored")
            return
        if isinstance(context, _DatasetNode):
            self.warn(element, f"dataset {name!r} inside dataset {context.path}: ignored with "
                               "its content")
            return
        if not is_hdf5_name(name):
            self.warn(element, f"dataset name {name!r} cannot be an HDF5 name: ignored")
            return
        existing = context.children.get(name)
        if existing is not None:
            kind = "group" if isinstance(existing, _GroupNode) else "dataset"
            self.warn(element, f"dataset {name!r}: {existing.path} is a {kind} already (line "
                               f"{existing.line}): this one is ignored with its attributes")
            return
        self.drop_clashing_link(context, name, element)
        dataset = _DatasetNode(name, context.child_path(name), element.sourceline)
        self.dataset_source(dataset, element)
        context.children[name] = dataset
        self.children(element, dataset)

    def dataset_source(self, dataset: _DatasetNode, element: etree._Element) -> None:
        source = element.get("source")
        if source in DATASET_SOURCES:
            dataset.source = source
        elif source is not None:
            self.warn(element, f"dataset {dataset.path}: source=\"{source}\" is not detector, "
                               "ndattribute or constant: the dataset is not created")
        elif not (dataset.name == "timestamp" and dataset.path.endswith("/performance/timestamp")):
            self.warn(element, f"dataset {dataset.path} has no source=\"...\": it is not created")
        det_default = element.get("det_default")
        if det_default == "true":
            dataset.det_default = True
            if dataset.source != "detector":
                self.warn(element, f"dataset {dataset.path}: det_default on a dataset that is "
                                   "not source=\"detector\": ignored")
        elif not _is_bool_value(det_default):
            self.warn(element, f"det_default=\"{det_default}\" is not \"true\": ignored, as "
                               "ADCore does")
        if dataset.source == "ndattribute":
            dataset.ndattribute = element.get("ndattribute", "")
            when = element.get("when")
            if not dataset.ndattribute:
                performance = dataset.path.endswith("/performance/timestamp")
                self.warn(element, f"dataset {dataset.path}: source=\"ndattribute\" without "
                                   "ndattribute=\"...\": it is never created" +
                                   ("; performance data go where unplaced NDAttributes go, "
                                    "as in ADCore" if performance else ""))
            elif when == "OnFileOpen":
                dataset.when = When.OPEN
            elif when == "OnFileClose":
                dataset.when = When.CLOSE
            elif when not in (None, "OnFrame", "OnFileWrite"):
                self.warn(element, f"dataset {dataset.path}: when=\"{when}\" is not OnFileOpen "
                                   "or OnFileClose: written every frame (ADCore's default)")
        elif dataset.source == "constant":
            dataset.type = self.constant_type(element, dataset.path)
            dataset.value = element.get("value", "")
            if not self.constant_ok(element, dataset.value, dataset.type, dataset.path):
                dataset.source = None  # not created

    def on_attribute(self, element: etree._Element, context: Context) -> None:
        self.add_attribute(element, self.root if context is None else context)
        self.children(element, context)  # not a container: its content belongs to `context`

    def add_attribute(self, element: etree._Element, target: _GroupNode | _DatasetNode) -> None:
        """Root-level attributes (before or after the first group) go on "/" (our
        extension; ADCore drops them)."""
        name = element.get("name")
        where = target.path
        if name is None:
            self.warn(element, f"<attribute> without name on {where}: ignored")
            return
        label = f"attribute {where}@{name}"
        if name in target.attributes:
            self.warn(element, f"{label} appears again (first on line "
                               f"{target.attributes[name].line}): the first is kept, as ADCore "
                               "does")
            return
        source = element.get("source")
        if source == "ndattribute":
            ndattribute = element.get("ndattribute", "")
            if not ndattribute:
                self.warn(element, f"{label}: source=\"ndattribute\" without ndattribute=\"...\":"
                                   " not written (ADCore finds no such NDAttribute)")
                return
            when = element.get("when")
            if when not in (None, "OnFileOpen", "OnFileClose"):
                self.warn(element, f"{label}: when=\"{when}\" is not OnFileOpen or OnFileClose:"
                                   " written at open (ADCore's default)")
            attribute = Attribute(name, source, element.get("value", ""), element.get("type"),
                                  ndattribute, When.CLOSE if when == "OnFileClose" else When.OPEN,
                                  element.sourceline)
        elif source == "constant":
            type_ = self.constant_type(element, label)
            value = element.get("value", "")
            if not self.constant_ok(element, value, type_, label):
                return
            attribute = Attribute(name, source, value, type_, element.get("ndattribute", ""),
                                  When.OPEN, element.sourceline)
        else:
            what = "no source=\"...\"" if source is None else f"source=\"{source}\""
            self.warn(element, f"{label}: {what} is not constant or ndattribute: not written "
                               "(ADCore logs \"unknown type\")")
            return
        target.attributes[name] = attribute

    def on_hardlink(self, element: etree._Element, context: Context) -> None:
        self.add_hardlink(element, context)
        self.children(element, context)  # not a container: its content belongs to `context`

    def add_hardlink(self, element: etree._Element, context: Context) -> None:
        name, target = element.get("name"), element.get("target")
        if name is None or target is None:
            self.warn(element, "<hardlink> needs name=\"...\" and target=\"...\": ignored")
            return
        if not isinstance(context, _GroupNode) or context is self.root:
            where = "inside a dataset" if isinstance(context, _DatasetNode) else "outside any group"
            self.warn(element, f"hard link {name!r} {where}: ignored (ADCore never creates it)")
            return
        if not is_hdf5_name(name):
            self.warn(element, f"hard link name {name!r} cannot be an HDF5 name: ignored")
            return
        existing = context.children.get(name) or context.links.get(name)
        if existing is not None:
            self.warn(element, f"hard link {context.child_path(name)}: the name is used already "
                               f"(line {existing.line}): ignored")
            return
        # ADCore creates links from the file: a relative target starts at the root.
        absolute = target if target.startswith("/") else f"/{target}"
        context.links[name] = HardLink(name, context.child_path(name), absolute,
                                       element.sourceline)

    def drop_clashing_link(self, group: _GroupNode, name: str, element: etree._Element) -> None:
        """A group/dataset named like an earlier hard link: ADCore creates the object and
        then fails to make the link."""
        link = group.links.pop(name, None)
        if link is not None:
            self.warn(element, f"{link.path} is also a hard link (line {link.line}): the link "
                               "is not created")

    # -- constants -------------------------------------------------------------------
    def constant_type(self, element: etree._Element, label: str) -> str | None:
        type_ = element.get("type")
        if type_ is None or type_ in CONSTANT_TYPES:
            return type_
        self.warn(element, f"{label}: type=\"{type_}\" is not int, float or string: written as "
                           "a string, as ADCore does")
        return "string"

    def constant_ok(self, element: etree._Element, value: str, type_: str | None,
                    label: str) -> bool:
        if type_ not in ("int", "float"):
            return True
        numbers, rest = parse_numbers(value, type_)
        if not numbers:
            self.warn(element, f"{label}: value \"{value}\" holds no {type_}: not written "
                               "(ADCore writes an empty array)")
            return False
        if rest:
            self.warn(element, f"{label}: value \"{value}\": \"{rest}\" is not a {type_} list; "
                               f"only {numbers if len(numbers) > 1 else numbers[0]} is written, "
                               "as ADCore does")
        return True

    # -- result ------------------------------------------------------------------------
    def build(self, tree: etree._ElementTree) -> Layout:
        root = tree.getroot()
        tag = _tag(root)
        if tag not in ("hdf5_layout", "group"):
            self.warn(root, f"root element <{tag}> is not <hdf5_layout>: its name is ignored, "
                            "as ADCore does")
        self.element(root, None)
        if not self.started:
            raise LayoutError("no <group> element: there is no tree to write (ADCore: "
                              "\"Unable to create the Root tree\")", source=self.source,
                              line=root.sourceline)
        layout = Layout(root=self.root.freeze(),
                        data_destination=self.globals.get(DATA_DESTINATION),
                        auto_ndattr_default=self.auto_ndattr_default, source=self.source)
        if not layout.detector_datasets():
            self.warn(root, "no source=\"detector\" dataset: files cannot be opened with this "
                            "layout (ADCore: \"No detector datasets found\")")
        return replace(layout, warnings=tuple(self.warnings))


def build_layout(tree: etree._ElementTree, source: str) -> Layout:
    return _Builder(source).build(tree)
