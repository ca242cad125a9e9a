"""``nexus-writer-ioc check-layout``: show the tree a layout produces, and what is wrong.

Pure (no h5py): it reasons on the layout model with the same placement rules
the writer uses, so what it prints is what the writer will do.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..layout.model import Attribute, Group, Layout, When, is_hdf5_name
from ..layout.ndattributes import AttributeDef
from ..ndarray import BUILTIN_DESCRIPTIONS

# NeXus naming rule (datarules): validators flag names outside it.
_NEXUS_NAME = re.compile(r"^[a-zA-Z0-9_]([a-zA-Z0-9_.]*[a-zA-Z0-9_])?$")
WRITER_ROOT_ATTRIBUTES = ("file_name", "file_time", "creator", "HDF5_Version", "h5py_version")
DETECTOR_ATTRIBUTES = ("NDArrayNumDims", "NDArrayDimOffset", "NDArrayDimBinning",
                       "NDArrayDimReverse")
TIMING = {When.OPEN: "at open", When.FRAME: "per frame", When.CLOSE: "at close"}


@dataclass
class Entry:
    path: str
    kind: str  # group | dataset | link
    text: str
    attributes: list[str] = field(default_factory=list)


@dataclass
class Report:
    objects: dict[str, Entry] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def add(self, path: str, kind: str, text: str) -> None:
        self.objects[path] = Entry(path, kind, text)

    def add_attr(self, path: str, text: str) -> None:
        self.objects[path].attributes.append(text)

    def render(self) -> str:
        lines: list[str] = []
        for path in sorted(self.objects, key=lambda p: [c for c in p.split("/") if c]):
            entry = self.objects[path]
            label = {"group": "", "dataset": "  [dataset]", "link": "  [hard link]"}[entry.kind]
            lines.append(f"{path}{label}  {entry.text}".rstrip())
            lines.extend(f"    {text}" for text in entry.attributes)
        if self.warnings:
            lines.append("")
            lines.extend(f"warning: {w}" for w in self.warnings)
        if self.errors:
            lines.append("")
            lines.extend(f"error: {e}" for e in self.errors)
        return "\n".join(lines)


def _attr_text(attribute: Attribute) -> str:
    if attribute.source == "constant":
        kind = attribute.type or "string"
        return f"@{attribute.name} = {attribute.value!r} (constant {kind}, at open)"
    return (f"@{attribute.name} <- NDAttribute {attribute.ndattribute} "
            f"({TIMING[attribute.when]}, only with StoreAttr=Yes)")


def _at(line: int | None) -> str:
    return "" if line is None else f"line {line}: "


def check(layout: Layout, attributes: list[AttributeDef] | None = None) -> Report:
    """The tree ``layout`` gives with ``attributes``' NDAttributes; warnings carry the
    layout line they are about (the loader's first, in line order)."""
    report = Report()
    report.warnings.extend(str(w) for w in layout.warnings)
    report.warnings.extend(f"attributes file {w}" for w in getattr(attributes, "warnings", ()))

    # Which NDAttributes will frames carry: the writer's four, ColorMode from the
    # driver, and the attributes file's.
    known: dict[str, str] = {n: "built-in, per frame" for n in BUILTIN_DESCRIPTIONS}
    known["ColorMode"] = "from the driver on every frame"
    for definition in attributes or []:
        known[definition.name] = f"{definition.kind.value} {definition.source}"

    try:
        default_detector = layout.default_detector().path
    except Exception as exc:  # noqa: BLE001 - LayoutError: no detector dataset
        report.errors.append(f"{exc.message if hasattr(exc, 'message') else exc}: files "
                             "cannot be opened with this layout")
        default_detector = None

    placements = {name: layout.place_ndattribute(name) for name in known}
    placed_paths = {p.path: name for name, p in placements.items() if p is not None}
    perf = layout.performance_location()
    perf_path = None if perf is None else (f"/{perf[1]}" if perf[0] == "/" else
                                           f"{perf[0]}/{perf[1]}")

    # -- the tree ---------------------------------------------------------------
    exists: set[str] = set()

    def walk(group: Group) -> None:
        exists.add(group.path)
        text = "(root)" if group.path == "/" else ""
        if group.ndattr_default:
            text += "  ndattr_default: unplaced NDAttributes land here"
        report.add(group.path, "group", text.strip())
        if group.path != "/" and not any(a.name == "NX_class" for a in group.attributes):
            report.warnings.append(f"{_at(group.line)}{group.path}: group has no NX_class "
                                   "attribute (NeXus validators report an error)")
        for attribute in group.attributes:
            report.add_attr(group.path, _attr_text(attribute))
        if group.path == "/":
            for name in WRITER_ROOT_ATTRIBUTES:
                report.add_attr("/", f"@{name} (written by the writer unless set above)")
        if group.ndattr_default:
            report.add_attr(group.path, "@hostname (written by the writer)")
        for dataset in group.sorted_datasets():  # hard links are listed last, below
            if layout.is_performance_dataset(dataset):
                continue  # listed below with the performance dataset
            if dataset.source == "detector":
                role = "default destination" if dataset.path == default_detector else \
                    "receives frames routed to it"
                report.add(dataset.path, "dataset", f"detector frames, per frame ({role})")
                for attr_name in DETECTOR_ATTRIBUTES:
                    report.add_attr(dataset.path, f"@{attr_name} (written by the writer)")
                exists.add(dataset.path)
            elif dataset.source == "constant":
                kind_text = dataset.type or "string"
                report.add(dataset.path, "dataset", f"constant {kind_text} {dataset.value!r}, at open")
                exists.add(dataset.path)
            elif dataset.source == "ndattribute":
                # (without ndattribute="...": never created, said by the loader)
                if dataset.ndattribute and placed_paths.get(dataset.path) is None:
                    report.warnings.append(
                        f"{_at(dataset.line)}{dataset.path}: NDAttribute "
                        f"{dataset.ndattribute!r} is not known (not built-in, not in the "
                        "attributes file); created only if frames carry it")
                continue  # listed with the NDAttributes below
            else:
                continue  # no (usable) source: never created, said by the loader
            for attribute in dataset.attributes:
                report.add_attr(dataset.path, _attr_text(attribute))
                if attribute.name == "NX_class":
                    report.warnings.append(f"{_at(attribute.line)}{dataset.path}: NX_class on a "
                                           "dataset (e.g. \"SDS\") is not NeXus; validators "
                                           "reject it")
        for child in group.sorted_groups():
            walk(child)

    walk(layout.root)

    # -- NDAttribute datasets ---------------------------------------------------
    for name, origin in known.items():
        placement = placements[name]
        duplicates = layout.ndattribute_datasets(name)
        if len(duplicates) > 1:
            report.warnings.append(
                f"{_at(duplicates[1].line)}NDAttribute {name!r} is named by "
                f"{len(duplicates)} datasets "
                f"({', '.join(d.path for d in duplicates)}); only {duplicates[0].path} is "
                "created")
        if placement is None:
            why = ("its name cannot be an HDF5 dataset name" if not is_hdf5_name(name) else
                   "auto_ndattr_default=\"false\" and no dataset names it")
            report.warnings.append(f"NDAttribute {name!r} is not stored ({why})")
            continue
        if placement.path in exists:
            report.warnings.append(f"NDAttribute {name!r}: {placement.path} is already used "
                                   "by the layout; it will not be stored")
            continue
        if placement.group == "/" and placement.dataset is None:
            report.warnings.append(f"NDAttribute {name!r} lands in the file root / (the "
                                   "layout has no ndattr_default group)")
        exists.add(placement.path)
        how = "named by the layout" if placement.dataset is not None else "default group"
        report.add(placement.path, "dataset", f"NDAttribute {name} ({origin}), {TIMING[placement.when]}; "
                                    f"{how}; only with StoreAttr=Yes")
        if placement.dataset is not None:
            for attribute in placement.dataset.attributes:
                report.add_attr(placement.path, _attr_text(attribute))
    for definition in attributes or []:
        if definition.kind.value == "FUNCTION":
            report.warnings.append(f"NDAttribute {definition.name!r}: FUNCTION attributes run "
                                   "inside the driver; this IOC cannot evaluate them (skipped)")

    if perf_path is not None:
        exists.add(perf_path)
        report.add(perf_path, "dataset", "performance timestamps (n, 5), at close; only with "
                                    "StorePerform=Yes")
    else:
        report.warnings.append("performance data are not stored (no performance/timestamp "
                               "dataset, no ndattr_default group, auto_ndattr_default=false)")

    # -- hard links, made last ----------------------------------------------------
    def links(group: Group):
        yield from group.hardlinks
        for child in group.groups:
            yield from links(child)

    for link in links(layout.root):
        report.add(link.path, "link", f"-> {link.target}")
        if link.target not in exists:
            report.warnings.append(f"{_at(link.line)}hard link {link.path} -> {link.target}: "
                                   "the target will not exist; the link will not be created")
        exists.add(link.path)

    if layout.data_destination:
        report.add_attr("/", f"frames are routed by NDAttribute "
                                    f"{layout.data_destination!r} (detector_data_destination)")

    # -- names NeXus validators flag ----------------------------------------------
    for path in sorted(exists):
        name = path.rsplit("/", 1)[-1]
        if name and not _NEXUS_NAME.match(name) or len(name) > 63:
            report.warnings.append(f"{path}: name {name!r} is not a valid NeXus name "
                                   "(validators flag it)")
    return report
