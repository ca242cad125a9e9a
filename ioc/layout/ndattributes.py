"""NDAttributes XML -> attribute definitions.  Pure: no h5py, no EPICS.

Follows ``asynNDArrayDriver::readNDAttributesFile`` (reference §3.1): root
``<Attributes>``, one ``<Attribute>`` per value, types EPICS_PV, PARAM,
FUNCTION and CONST, EPICS-macLib-style ``$(NAME)`` substitution from an
``"A=x,B=y"`` string (the NDAttributesMacros PV) applied to the text first.

What ADCore refuses is refused here, at the same element: malformed XML, a
root other than ``<Attributes>``, an element without ``name`` or ``source``,
an unknown ``type`` or ``dbrtype``.  As in ADCore, the definitions read
before that element stay in use (``AttributesError.definitions``).  What
ADCore takes is taken, each oddity noted with its line in
``AttributeDefinitions.warnings``: any name (``det-sum``, ``8BitSelect``,
``ID RingCurrent``), a name defined again (the last definition wins), a
PARAM ``datatype`` other than INT/INT64/DOUBLE/STRING (the value stays
undefined: a float32 NaN dataset).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from pathlib import Path

from ..ndarray import NDAttribute, NDAttrSource, NDAttrType
from ._xml import LoadWarning, XMLInputError, XMLText, parse_secure, read_xml_input
from .model import is_hdf5_name

__all__ = [
    "AttributeDef", "AttributeDefinitions", "AttributesError", "AttributesStatus", "AttrKind",
    "DBR_TYPES", "PARAM_DATATYPES", "load_attributes", "parse_macros", "substitute_macros",
]


class AttributesStatus(enum.IntEnum):
    """NDAttributesStatus PV values (ADCore's mbbi strings, in order)."""

    OK = 0
    FILE_NOT_FOUND = 1
    XML_SYNTAX_ERROR = 2
    MACRO_ERROR = 3

    @property
    def label(self) -> str:
        return ATTRIBUTES_STATUS_LABELS[self]


ATTRIBUTES_STATUS_LABELS = (
    "Attributes file OK", "File not found", "XML syntax error", "Macro substitution error",
)


class AttributesError(XMLInputError):
    """The NDAttributes input is refused; ``status`` says which PV state applies and
    ``definitions`` holds those read before the refused element (ADCore keeps them)."""

    def __init__(self, message: str, *, source: str = "", line: int | None = None,
                 status: AttributesStatus = AttributesStatus.XML_SYNTAX_ERROR,
                 definitions: AttributeDefinitions | None = None):
        super().__init__(message, source=source, line=line)
        self.status = status
        self.definitions = definitions if definitions is not None else AttributeDefinitions()


class AttrKind(enum.Enum):
    EPICS_PV = "EPICS_PV"
    PARAM = "PARAM"
    FUNCTION = "FUNCTION"
    CONST = "CONST"

    @property
    def source_type(self) -> NDAttrSource:
        return {
            AttrKind.EPICS_PV: NDAttrSource.EPICS_PV,
            AttrKind.PARAM: NDAttrSource.PARAM,
            AttrKind.FUNCTION: NDAttrSource.FUNCT,
            AttrKind.CONST: NDAttrSource.CONST,
        }[self]


# dbrtype -> forced NDAttribute type; DBR_NATIVE (None) lets the PV's field type decide.
DBR_TYPES: dict[str, NDAttrType | None] = {
    "DBR_NATIVE": None,
    "DBR_STRING": NDAttrType.String,
    "DBR_CHAR": NDAttrType.Int8,
    "DBR_SHORT": NDAttrType.Int16,
    "DBR_INT": NDAttrType.Int16,
    "DBR_ENUM": NDAttrType.Int16,
    "DBR_LONG": NDAttrType.Int32,
    "DBR_FLOAT": NDAttrType.Float32,
    "DBR_DOUBLE": NDAttrType.Float64,
}

PARAM_DATATYPES: dict[str, NDAttrType] = {
    "INT": NDAttrType.Int32,
    "INT64": NDAttrType.Int64,
    "DOUBLE": NDAttrType.Float64,
    "STRING": NDAttrType.String,
}

_KNOWN_XML_ATTRIBUTES = {"name", "type", "source", "description", "dbrtype", "datatype", "addr",
                         "param"}
_STRTOL = re.compile(r"\s*([+-]?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)")


@dataclass(frozen=True)
class AttributeDef:
    """One ``<Attribute>`` of an NDAttributes file."""

    name: str
    kind: AttrKind
    source: str
    description: str = ""
    dbrtype: str = "DBR_NATIVE"  # EPICS_PV
    datatype: str = "INT"  # PARAM
    addr: int = 0  # PARAM
    param: str = ""  # FUNCTION
    line: int | None = None

    @property
    def forced_type(self) -> NDAttrType | None:
        """The NDAttribute type fixed by the file, or None if the source decides."""
        if self.kind is AttrKind.EPICS_PV:
            return DBR_TYPES[self.dbrtype]
        if self.kind is AttrKind.PARAM:
            # ADCore: any other datatype leaves the value undefined (never read).
            return PARAM_DATATYPES.get(self.datatype, NDAttrType.Undefined)
        if self.kind is AttrKind.CONST:
            return NDAttrType.String
        return None

    def constant(self) -> NDAttribute:
        """The NDAttribute of a CONST definition (its value is the source text)."""
        return NDAttribute(self.name, self.source, NDAttrType.String, self.description,
                           self.source, NDAttrSource.CONST)

    def undefined(self) -> NDAttribute:
        """ADCore's value for a source that cannot be read (e.g. PV not connected)."""
        return NDAttribute(self.name, None, NDAttrType.Undefined, self.description,
                           self.source, self.kind.source_type)

    def value(self, value: int | float | str, dtype: NDAttrType) -> NDAttribute:
        return NDAttribute(self.name, value, dtype, self.description, self.source,
                           self.kind.source_type)


class AttributeDefinitions(list):
    """The definitions of an attributes file, in ADCore's list order, with the notes
    about what was read differently than it is written (``warnings``)."""

    def __init__(self, definitions=(), warnings=()):
        super().__init__(definitions)
        self.warnings: list[LoadWarning] = list(warnings)


# -- macros ------------------------------------------------------------------

def parse_macros(text: str) -> dict[str, str]:
    """``"A=x,B=y"`` -> {"A": "x", "B": "y"} (EPICS macParseDefns, unquoted form)."""
    macros: dict[str, str] = {}
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if "=" not in part:
            raise AttributesError(f"macro definition {part!r} has no '='",
                                  status=AttributesStatus.MACRO_ERROR)
        name, value = part.split("=", 1)
        macros[name.strip()] = value.strip()
    return macros


_MACRO = re.compile(r"\$(?:\(([^()=]*)(?:=([^()]*))?\)|\{([^{}=]*)(?:=([^{}]*))?\})")


def substitute_macros(text: str, macros: dict[str, str], source: str = "") -> str:
    """Expand ``$(NAME)``, ``${NAME}`` and ``$(NAME=default)``; undefined -> error."""

    def expand(match: re.Match[str]) -> str:
        name = match.group(1) if match.group(1) is not None else match.group(3)
        default = match.group(2) if match.group(1) is not None else match.group(4)
        if name in macros:
            return macros[name]
        if default is not None:
            return default
        line = text.count("\n", 0, match.start()) + 1
        raise AttributesError(f"macro $({name}) is not defined", source=source, line=line,
                              status=AttributesStatus.MACRO_ERROR)

    return _MACRO.sub(expand, text)


# -- parsing -----------------------------------------------------------------

def load_attributes(spec: str | Path, macros: str = "", *,
                    allowed_roots: tuple[Path, ...] = ()) -> AttributeDefinitions:
    """Load NDAttributes from a file path or inline XML; ``""`` gives no attributes."""
    spec = str(spec)
    if not spec.strip():
        return AttributeDefinitions()
    try:
        xml = read_xml_input(spec, inline_marker=("<Attributes", "<?xml"),
                             error=AttributesError, allowed_roots=allowed_roots)
    except AttributesError as exc:
        if exc.message == "file not found":
            exc.status = AttributesStatus.FILE_NOT_FOUND
        raise
    if macros.strip():
        text = xml.text.decode("utf-8", errors="replace")
        text = substitute_macros(text, parse_macros(macros), xml.source)
        xml = XMLText(text.encode("utf-8"), xml.source, xml.inline)
    return parse_attributes(xml)


def _strtol(text: str) -> tuple[int, bool]:
    """C ``strtol(text, NULL, 0)`` (what ADCore reads ``addr`` with): the number, and
    whether the whole text was that number."""
    match = _STRTOL.match(text)
    if match is None:
        return 0, not text.strip()
    digits = match.group(2)
    base = 16 if digits[:2].lower() == "0x" else 8 if len(digits) > 1 and digits[0] == "0" else 10
    value = int(digits, base) * (-1 if match.group(1) == "-" else 1)
    return value, not text[match.end():].strip()


def parse_attributes(xml: XMLText) -> AttributeDefinitions:
    root = parse_secure(xml, AttributesError).getroot()
    by_name: dict[str, AttributeDef] = {}  # insertion order = ADCore's list order
    warnings: list[LoadWarning] = []

    def refuse(message: str, element) -> AttributesError:
        if by_name:
            several = len(by_name) > 1
            message += (f" ({len(by_name)} attribute{'s' if several else ''} defined before it "
                        f"stay{'' if several else 's'} in use, as in ADCore)")
        return AttributesError(message, source=xml.source, line=element.sourceline,
                               definitions=AttributeDefinitions(by_name.values(), warnings))

    def warn(element, message: str) -> None:
        warnings.append(LoadWarning(element.sourceline, message))

    if root.tag != "Attributes":
        raise refuse(f"root element is <{root.tag}>, expected <Attributes>", root)
    for element in root:
        if not isinstance(element.tag, str):
            continue
        definition = _definition(element, refuse, warn)
        if definition is None:
            continue
        earlier = by_name.pop(definition.name, None)
        if earlier is not None:
            warn(element, f"attribute {definition.name!r} is defined again (first on line "
                          f"{earlier.line}): this definition replaces it, as in ADCore")
        by_name[definition.name] = definition
    return AttributeDefinitions(by_name.values(), warnings)


def _definition(element, refuse, warn) -> AttributeDef | None:
    """One element's definition; None when it cannot be stored (noted)."""
    if element.tag != "Attribute":
        warn(element, f"element <{element.tag}> read as an <Attribute> (ADCore reads every "
                      "element inside <Attributes>)")
    name = element.get("name")
    if name is None:
        raise refuse(f"<{element.tag}> without a name", element)
    source = element.get("source")
    if source is None:
        raise refuse(f"attribute {name!r} has no source", element)
    kind_text = element.get("type", "EPICS_PV")
    try:
        kind = AttrKind(kind_text)
    except ValueError:
        raise refuse(f"attribute {name!r}: unknown type {kind_text!r} (expected EPICS_PV, "
                     "PARAM, FUNCTION or CONST)", element) from None
    dbrtype = element.get("dbrtype", "DBR_NATIVE")
    if kind is AttrKind.EPICS_PV and dbrtype not in DBR_TYPES:
        raise refuse(f"attribute {name!r}: unknown dbrtype {dbrtype!r}", element)
    for key in element.attrib:
        if not key.startswith("{") and key not in _KNOWN_XML_ATTRIBUTES:
            warn(element, f"attribute {name!r}: XML attribute {key}=\"{element.get(key)}\" is "
                          "not used (ignored)")
    if not name:
        warn(element, "attribute with an empty name: skipped (it cannot be stored)")
        return None
    if not is_hdf5_name(name):
        warn(element, f"attribute {name!r}: not an HDF5 name, so no dataset of its own (only "
                      "a layout dataset naming it stores it)")
    datatype = element.get("datatype", "INT")
    addr = 0
    if kind is AttrKind.PARAM:
        if datatype not in PARAM_DATATYPES:
            warn(element, f"attribute {name!r}: datatype {datatype!r} is not INT, INT64, DOUBLE "
                          "or STRING: its value stays undefined (NaN), as in ADCore")
        addr_text = element.get("addr", "0")
        addr, whole = _strtol(addr_text)
        if not whole:
            warn(element, f"attribute {name!r}: addr {addr_text!r} read as {addr}")
    return AttributeDef(
        name=name, kind=kind, source=source, description=element.get("description", ""),
        dbrtype=dbrtype, datatype=datatype, addr=addr, param=element.get("param", ""),
        line=element.sourceline,
    )
