"""File names and directories the NDFile way (reference §1.1, §5.1).  Pure."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["PathPolicy", "TemplateError", "c_format", "create_directories",
           "normalise_file_path", "temporary_name"]


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


def temporary_name(final: Path, suffix: str) -> Path:
    """Where a file is written until it is closed: ``final`` + TempSuffix when one is
    set (ADCore), else a hidden name in the same directory, so that a reader never
    finds a half-written file under the final name."""
    if suffix:
        return final.with_name(final.name + suffix)
    return final.with_name(f".{final.name}.partial")


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


@dataclass(frozen=True)
class PathPolicy:
    """Where files may be written and layouts read (``serve --allow-root``).

    With no roots everything is allowed (ADCore's behaviour).  Paths are compared
    after resolving symlinks and ``..``.
    """

    roots: tuple[Path, ...] = ()

    @classmethod
    def from_dirs(cls, dirs) -> PathPolicy:
        return cls(tuple(Path(os.path.realpath(d)) for d in dirs))

    def _inside(self, path: Path, base: Path) -> bool:
        return path == base or base in path.parents

    def allows(self, path: str | Path) -> bool:
        if not self.roots:
            return True
        real = Path(os.path.realpath(path))
        return any(self._inside(real, root) for root in self.roots)

    def check_directory(self, directory: str) -> str | None:
        if self.allows(directory):
            return None
        return (f"{directory} is outside the allowed directories "
                f"({', '.join(str(r) for r in self.roots)})")

    def check_file(self, file: str | Path, directory: str) -> str | None:
        """None if ``file`` may be written, else why not (escapes FilePath or the roots)."""
        if not self.roots:
            return None
        real = Path(os.path.realpath(file))
        base = Path(os.path.realpath(directory)) if directory else None
        if base is None or not self._inside(real, base):
            return f"{file} is not inside FilePath {directory}"
        return self.check_directory(str(real.parent))
