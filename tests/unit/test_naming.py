"""File name construction (C printf semantics) and CreateDirectory."""

from __future__ import annotations

import pytest

from ioc.plugin.naming import TemplateError, c_format, create_directories, normalise_file_path


@pytest.mark.parametrize(("template", "expected"), [
    ("%s%s_%3.3d.h5", "/data/scan_007.h5"),
    ("%s%s_%6.6d.h5", "/data/scan_000007.h5"),
    ("%s%s.h5", "/data/scan.h5"),  # surplus number ignored, as C does (ophyd-async)
    ("%s%s_%d.h5", "/data/scan_7.h5"),
    ("%s%s_%ld.h5", "/data/scan_7.h5"),  # length modifiers accepted
    ("%s%s_%05d%%.h5", "/data/scan_00007%.h5"),
    ("fixed.h5", "fixed.h5"),
    ("%s%s_%x.h5", "/data/scan_7.h5"),
])
def test_c_format(template, expected):
    assert c_format(template, "/data/", "scan", 7) == expected


@pytest.mark.parametrize("template", ["%d%s%s", "%s%s%d%d", "%*d"])
def test_c_format_errors(template):
    with pytest.raises(TemplateError):
        c_format(template, "/data/", "scan", 7)


def test_normalise_file_path():
    assert normalise_file_path("/data") == "/data/"
    assert normalise_file_path("/data/") == "/data/"
    assert normalise_file_path("") == ""


def test_create_directories(tmp_path):
    target = tmp_path / "a" / "b" / "c"
    assert create_directories(str(target), 0) is not None
    assert "3 missing" in create_directories(str(target), -2)
    assert not target.exists()
    assert create_directories(str(target), -3) is None
    assert target.is_dir()
    deeper = target / "d" / "e"
    assert create_directories(str(deeper), 1) is None  # everything below /
    assert deeper.is_dir()
    levels = len(tmp_path.parts)  # "/" counts as level 1
    assert "does not exist" in create_directories(str(tmp_path / "x" / "y"), levels + 1)
    assert create_directories(str(tmp_path / "x" / "y"), levels) is None
