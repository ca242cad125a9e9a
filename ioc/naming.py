"""File names and directories the NDFile way (reference §1.1, §5.1).  Pure."""

from __future__ import annotations

import os
import re
from pathlib import Path

__all__ = ["TemplateError", "c_format", "create_directories", "normalise_file_path"]


class TemplateError(ValueError):
    pass


# One printf conversion: %[flags][width][.precision][length]conversion
_CONVERSION = re.compile(r"%([-+ #0]*)(\d+|\*)?(?:\.(\d+|\*))?(hh|h|ll|l|L|q|j|z|t)?([diouxXeEfFgGcs%])")


def c_format(template: str, *args: object) -> str:
    """``snprintf(template, args...)`` with C's rules where Python's differ:
    surplus arguments are ignored, length modifiers (``%ld``) are accepted.

    NDFile calls it with (FilePath, FileName, FileNumber); ``%s%s_%3.3d.h5``
    gives ``/data/scan_007.h5``.  A conversion that does not fit its argument
    (``%d`` for the path) is an error rather than C's undefined behaviour.
    """
    out: list[str] = []
    position = 0
    remaining = list(args)
    for match in _CONVERSION.finditer(template):
        out.append(template[position:match.start()])
        position = match.end()
        flags, width, precision, _length, conversion = match.groups()
        if conversion == "%":
            out.append("%")
            continue
        if width == "*" or precision == "*":
            raise TemplateError(f"'{match.group(0)}': '*' widths are not supported")
        if not remaining:
            raise TemplateError(f"'{match.group(0)}' has no argument (only path, name and "
                                "number are given)")
        arg = remaining.pop(0)
        spec = "%" + flags + (width or "") + (f".{precision}" if precision else "")
        if conversion in "diouxXc":
            if not isinstance(arg, int):
                raise TemplateError(f"'{match.group(0)}' needs a number but gets {arg!r}")
            conversion = "d" if conversion in "iu" else conversion
        elif conversion in "eEfFgG":
            if not isinstance(arg, (int, float)):
                raise TemplateError(f"'{match.group(0)}' needs a number but gets {arg!r}")
        elif conversion == "s" and not isinstance(arg, str):
            arg = str(arg)
        out.append((spec + conversion) % arg)
    out.append(template[position:])
    return "".join(out)


def normalise_file_path(path: str) -> str:
    """FilePath as NDFile stores it: with a trailing separator (empty stays empty)."""
    if path and not path.endswith("/"):
        return path + "/"
    return path


def create_directories(path: str, depth: int) -> str | None:
    """Apply CreateDirectory to ``path``; return None on success, else why not.

    0: never create.  Negative -n: create at most n missing trailing
    directories.  Positive n: the first n levels (``/`` is level 1) must
    exist, every deeper missing one is created.
    """
    target = Path(path)
    if target.is_dir() or depth == 0:
        return None if target.is_dir() else "directory does not exist"
    levels = [target, *target.parents][::-1]  # "/", "/a", "/a/b", ...
    missing = [level for level in levels if not level.is_dir()]
    if depth < 0 and len(missing) > -depth:
        return (f"{len(missing)} missing directories, CreateDirectory={depth} allows "
                f"{-depth}")
    if depth > 0:
        for level in levels[:depth]:
            if not level.is_dir():
                return f"{level} does not exist (CreateDirectory={depth} assumes it)"
    try:
        for level in missing:
            os.mkdir(level)
    except OSError as exc:
        return f"cannot create {exc.filename}: {exc.strerror}"
    return None
