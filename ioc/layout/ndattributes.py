"""NDAttributes XML -> attribute definitions.  Pure: no h5py, no EPICS.

Follows ``asynNDArrayDriver::readNDAttributesFile`` (reference §3.1): root
``<Attributes>``, one ``<Attribute>`` per value, types EPICS_PV, PARAM,
FUNCTION and CONST, EPICS-macLib-style ``$(NAME)`` substitution from an
``"A=x,B=y"`` string (the NDAttributesMacros PV) applied to the text first.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from pathlib import Path

from ..ndarray import NDAttribute, NDAttrSource, NDAttrType
from ._xml import XMLInputError, XMLText, parse_secure, read_xml_input

__all__ = [
    "AttributeDef", "AttributesError", "AttributesStatus", "AttrKind", "DBR_TYPES",
    "PARAM_DATATYPES", "load_attributes", "parse_macros", "substitute_macros",
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
    """The NDAttributes input is unusable; ``status`` says which PV state applies."""

    def __init__(self, message: str, *, source: str = "", line: int | None = None,
                 status: AttributesStatus = AttributesStatus.XML_SYNTAX_ERROR):
        super().__init__(message, source=source, line=line)
        self.status = status


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
            return PARAM_DATATYPES[self.datatype]
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

def _is_inline(spec: str) -> bool:
    return "<Attributes" in spec or "<?xml" in spec


def load_attributes(spec: str | Path, macros: str = "", *,
                    allowed_roots: tuple[Path, ...] = ()) -> list[AttributeDef]:
    """Load NDAttributes from a file path or inline XML; ``""`` gives no attributes."""
    spec = str(spec)
    if not spec.strip():
        return []
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


def parse_attributes(xml: XMLText) -> list[AttributeDef]:
    root = parse_secure(xml, AttributesError).getroot()

    def error(message: str, element) -> AttributesError:
        return AttributesError(message, source=xml.source, line=element.sourceline)

    if root.tag != "Attributes":
        raise error(f"root element is <{root.tag}>, expected <Attributes>", root)
    result: list[AttributeDef] = []
    seen: dict[str, int | None] = {}
    for element in root:
        if not isinstance(element.tag, str):
            continue
        if element.tag != "Attribute":
            raise error(f"unexpected element <{element.tag}> (expected <Attribute>)", element)
        name = element.get("name")
        if not name:
            raise error("<Attribute> without a name", element)
        if "/" in name or name in (".", ".."):  # ADCore takes any other name ("det-sum")
            raise error(f"attribute name {name!r} cannot name an HDF5 dataset", element)
        if name in seen:
            raise error(f"attribute {name!r} is defined twice (first on line {seen[name]})",
                        element)
        seen[name] = element.sourceline
        kind_text = element.get("type", "EPICS_PV")
        try:
            kind = AttrKind(kind_text)
        except ValueError:
            raise error(f"attribute {name!r}: unknown type {kind_text!r} (expected EPICS_PV, "
                        "PARAM, FUNCTION or CONST)", element) from None
        source = element.get("source")
        if source is None:
            raise error(f"attribute {name!r} has no source", element)
        dbrtype = element.get("dbrtype", "DBR_NATIVE")
        if kind is AttrKind.EPICS_PV and dbrtype not in DBR_TYPES:
            raise error(f"attribute {name!r}: unknown dbrtype {dbrtype!r}", element)
        datatype = element.get("datatype", "INT")
        if kind is AttrKind.PARAM and datatype not in PARAM_DATATYPES:
            raise error(f"attribute {name!r}: unknown datatype {datatype!r} (expected INT, "
                        "INT64, DOUBLE or STRING)", element)
        try:
            addr = int(element.get("addr", "0"))
        except ValueError:
            raise error(f"attribute {name!r}: addr must be an integer", element) from None
        result.append(AttributeDef(
            name=name, kind=kind, source=source, description=element.get("description", ""),
            dbrtype=dbrtype, datatype=datatype, addr=addr, param=element.get("param", ""),
            line=element.sourceline,
        ))
    return result
