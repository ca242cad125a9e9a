"""File names and directories the NDFile way (reference §1.1, §5.1).  Pure."""

from __future__ import annotations

import functools
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["FULL_NAME_BYTES", "NAME_MAX", "PathPolicy", "TemplateError", "c_format",
           "check_full_name", "create_directories", "find_unfinished", "normalise_file_path",
           "template_warnings", "temporary_name"]

# Linux limits: one path component (NAME_MAX) and a whole path (PATH_MAX incl. the NUL).
NAME_MAX = 255
PATH_MAX = 4096
# A full file name must also fit FullFileName_RBV (CHAR[512]) so that clients read it whole.
FULL_NAME_BYTES = 511
# The largest printf width or precision a file name can use: a field wider than a name
# can be is refused before it is formatted (a width of 10^8 took gigabytes).
MAX_FIELD = NAME_MAX
PARTIAL = ".partial"


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
    remaining = list(args)
    for literal, spec, conversion, text in _parsed(template):
        out.append(literal)
        if not conversion:  # the rest of the template
            break
        if conversion == "%":
            out.append("%")
            continue
        if not remaining:
            raise TemplateError(f"'{text}' has no argument (only path, name and "
                                "number are given)")
        arg = remaining.pop(0)
        if conversion in "diouxXc":
            if not isinstance(arg, int):
                raise TemplateError(f"'{text}' needs a number but gets {arg!r}")
            conversion = "d" if conversion in "iu" else conversion
            if conversion == "c":
                arg = _c_char(arg, text)
        elif conversion in "eEfFgG":
            if not isinstance(arg, (int, float)):
                raise TemplateError(f"'{text}' needs a number but gets {arg!r}")
        elif conversion == "s" and not isinstance(arg, str):
            arg = str(arg)
        try:
            out.append((spec + conversion) % arg)
        except (ValueError, OverflowError, TypeError) as exc:
            raise TemplateError(f"'{text}' cannot format {arg!r}: {exc}") from None
    return "".join(out)


@functools.lru_cache(maxsize=64)
def _parsed(template: str) -> tuple[tuple[str, str, str, str], ...]:
    """The template's conversions, once per template (Single mode names every file):
    (literal before, Python spec without the conversion, conversion, the text), the
    rest of the template last (a conversion of "")."""
    parts = []
    position = 0
    for match in _CONVERSION.finditer(template):
        flags, width, precision, _length, conversion = match.groups()
        text = match.group(0)
        if conversion != "%":
            if width == "*" or precision == "*":
                raise TemplateError(f"'{text}': '*' widths are not supported")
            for field in (width, precision):
                if field and int(field) > MAX_FIELD:
                    raise TemplateError(f"'{text}': width or precision {int(field)} is "
                                        f"larger than a file name can be ({MAX_FIELD})")
        spec = "%" + flags + (width or "") + (f".{precision}" if precision else "")
        parts.append((template[position:match.start()], spec, conversion, text))
        position = match.end()
    parts.append((template[position:], "", "", ""))
    return tuple(parts)


def _c_char(number: int, conversion: str) -> str:
    """``%c`` as C prints it (the low byte of the number), refused where it cannot be
    part of a file name."""
    byte = number & 0xFF
    if byte == 0 or byte == ord("/") or byte > 0x7F:
        raise TemplateError(f"'{conversion}' of {number} gives byte {byte:#04x}, which "
                            "cannot be part of a file name")
    return chr(byte)


def _utf8_len(text: str) -> int:
    return len(text.encode("utf-8", "surrogateescape"))


def check_full_name(name: str) -> str | None:
    """None if ``name`` can be created on Linux and read back whole from FullFileName_RBV,
    else why not (the cause first)."""
    if "\0" in name:
        return "the name contains a NUL character"
    if not name or name.endswith("/"):
        return "the name has no file part"
    size = _utf8_len(name)
    if size > FULL_NAME_BYTES:
        return (f"the full file name is {size} bytes; at most {FULL_NAME_BYTES} "
                "(FullFileName_RBV)")
    for part in name.split("/"):
        if _utf8_len(part) > NAME_MAX:
            return f"file name too long: '{part[:40]}...' is {_utf8_len(part)} bytes, " \
                   f"at most {NAME_MAX}"
    return None


def template_warnings(template: str, path: str, name: str, number: int) -> list[str]:
    """What a valid FileTemplate does that the operator may not mean (said in WriteMessage
    when it is written, and again when a file is opened)."""
    notes = []
    if not template:
        notes.append("FileTemplate is empty: no file name can be made")
        return notes
    marker_path, marker_name = "\x00P", "\x00N"
    try:
        probe = c_format(template, marker_path, marker_name, number)
    except TemplateError:
        return notes
    if marker_path not in probe:
        notes.append("FileTemplate leaves out FilePath (its first %s)")
    if marker_name not in probe:
        notes.append("FileTemplate leaves out FileName (its second %s)")
    if not path:
        notes.append("FilePath is empty")
    return notes


def temporary_name(final: Path, suffix: str) -> Path:
    """Where a file is written until it is closed: ``final`` + TempSuffix when one is
    set (ADCore), else a hidden name in the same directory, so that a reader never
    finds a half-written file under the final name.

    The hidden name adds 9 bytes; for a final name that leaves no room for them, the
    name is shortened (still unique: a digest of the full name) instead of failing."""
    if suffix:
        if "/" in suffix or "\0" in suffix:
            raise TemplateError(f"TempSuffix {suffix!r} must not contain '/'")
        name = final.name + suffix
        if _utf8_len(name) > NAME_MAX:
            raise TemplateError(f"file name too long with TempSuffix: {_utf8_len(name)} "
                                f"bytes, at most {NAME_MAX}")
        return final.with_name(name)
    hidden = f".{final.name}{PARTIAL}"
    if _utf8_len(hidden) <= NAME_MAX:
        return final.with_name(hidden)
    digest = hashlib.sha1(final.name.encode("utf-8", "surrogateescape")).hexdigest()[:12]
    keep = final.name.encode("utf-8", "surrogateescape")[: NAME_MAX - 30]
    short = keep.decode("utf-8", "ignore")
    return final.with_name(f".{short}~{digest}{PARTIAL}")


def find_unfinished(directory: str, limit: int = 100_000) -> list[str]:
    """Hidden ``.*.partial`` files in ``directory``: files a writer was killed while
    writing (or that another writer is writing now).  Looks at ``limit`` entries at most."""
    found = []
    try:
        with os.scandir(directory) as entries:
            for count, entry in enumerate(entries):
                if count >= limit:
                    break
                if entry.name.startswith(".") and entry.name.endswith(PARTIAL):
                    found.append(entry.name)
    except OSError:
        return []
    return sorted(found)


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
