"""Stage 1: layout XML and NDAttributes XML -> immutable models (pure: no h5py, no EPICS)."""

from ._xml import LoadWarning, warnings_summary
from .model import (
    Attribute,
    Dataset,
    Group,
    HardLink,
    Layout,
    LayoutError,
    Placement,
    When,
    default_layout,
    load_layout,
    parse_constant,
)

__all__ = [
    "Attribute", "Dataset", "Group", "HardLink", "Layout", "LayoutError", "Placement",
    "LoadWarning", "When", "default_layout", "load_layout", "parse_constant", "warnings_summary",
]
