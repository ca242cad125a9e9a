"""Secure loading of the XML we accept from operators (layouts, NDAttributes).

Both files may come from any CA client on the network (a path, or the XML
text itself), so parsing refuses entity declarations (no billion laughs, no
external entities), never touches the network, caps the size like ADCore's
1 MiB layout buffer, and caps the nesting depth.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from lxml import etree

MAX_XML_BYTES = 1024 * 1024
MAX_XML_DEPTH = 64


@dataclass(frozen=True)
class LoadWarning:
    """Something in a layout or attributes file that is used differently than it reads
    (skipped, defaulted, merged), with the line it is on (1-based, when known)."""

    line: int | None
    message: str

    def __str__(self) -> str:
        return self.message if self.line is None else f"line {self.line}: {self.message}"


def warnings_summary(warnings, limit: int = 255) -> str:
    """One line for a status PV: "2 warnings: line 4: ...; line 9: ...", cut to ``limit``
    characters with a pointer to the full list."""
    if not warnings:
        return ""
    count = len(warnings)
    text = f"{count} warning{'s' if count > 1 else ''}: " + "; ".join(str(w) for w in warnings)
    if len(text) <= limit:
        return text
    tail = " ... (all: check-layout or the log)"
    return text[: limit - len(tail)].rstrip() + tail


class XMLInputError(ValueError):
    """Bad layout or attributes input; ``line`` is 1-based when known."""

    def __init__(self, message: str, *, source: str = "", line: int | None = None):
        self.message = message
        self.source = source
        self.line = line
        where = source or "<xml>"
        if line is not None:
            where = f"{where}:{line}"
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True)
class XMLText:
    text: bytes
    source: str  # a path, or "<inline>"
    inline: bool


def read_xml_input(
    spec: str, *, inline_marker: tuple[str, ...], error: type[XMLInputError],
    allowed_roots: tuple[Path, ...] = (),
) -> XMLText:
    """Return the XML bytes named by ``spec``: inline text when it contains
    one of ``inline_marker``, else a file path (read at most 1 MiB + 1)."""
    if any(marker in spec for marker in inline_marker):
        data = spec.encode("utf-8")
        if len(data) > MAX_XML_BYTES:
            raise error(f"inline XML is larger than {MAX_XML_BYTES} bytes", source="<inline>")
        return XMLText(data, "<inline>", True)
    path = Path(spec)
    if allowed_roots:
        real = Path(os.path.realpath(path))
        if not any(real == r or r in real.parents for r in allowed_roots):
            raise error("file is outside the allowed directories", source=spec)
    try:
        # O_NONBLOCK: a FIFO (or a device) must not hold the caller until someone writes
        # to it; only regular files are read.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        with open(fd, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fd).st_mode) and not stat.S_ISDIR(os.fstat(fd).st_mode):
                raise error("is not a regular file (a FIFO or a device?)", source=spec)
            data = fh.read(MAX_XML_BYTES + 1)
    except FileNotFoundError:
        raise error("file not found", source=spec) from None
    except IsADirectoryError:
        raise error("is a directory, not a file", source=spec) from None
    except OSError as exc:
        raise error(f"cannot be read: {exc.strerror}", source=spec) from None
    if len(data) > MAX_XML_BYTES:
        raise error(f"file is larger than {MAX_XML_BYTES} bytes", source=spec)
    return XMLText(data, spec, False)


def _parser() -> etree.XMLParser:
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_blank_text=False,
    )


def parse_secure(xml: XMLText, error: type[XMLInputError]) -> etree._ElementTree:
    """Parse, refusing DOCTYPE/entity declarations and absurd nesting."""
    try:
        tree = etree.ElementTree(etree.fromstring(xml.text, _parser()))
    except etree.XMLSyntaxError as exc:
        line = exc.lineno if exc.lineno else None
        msg = exc.msg or str(exc)
        raise error(f"XML syntax error: {msg}", source=xml.source, line=line) from None
    docinfo = tree.docinfo
    if docinfo.doctype or docinfo.internalDTD is not None:
        raise error(
            "DOCTYPE and entity declarations are not allowed", source=xml.source, line=1
        )
    for element in tree.getroot().iter():
        if isinstance(element, etree._Entity):
            raise error("entity references are not allowed", source=xml.source,
                        line=element.sourceline)
    _check_depth(tree.getroot(), xml, error)
    return tree


def _check_depth(root: etree._Element, xml: XMLText, error: type[XMLInputError]) -> None:
    stack = [(root, 1)]
    while stack:
        element, depth = stack.pop()
        if depth > MAX_XML_DEPTH:
            raise error(f"elements nested deeper than {MAX_XML_DEPTH} levels",
                        source=xml.source, line=element.sourceline)
        stack.extend((child, depth + 1) for child in element)
