"""The README's main job: ``nexus-writer-ioc demo`` exits 0 and leaves N valid NeXus files."""

from __future__ import annotations

import logging
import subprocess
import sys

import h5py


def test_demo_writes_valid_nexus_files(tmp_path):
    from nexusformat.nexus.validate import logger, validate_file

    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "ioc.cli", "demo", "--images", "3",
                             "--out", str(out), "--size", "64", "48"],
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Tree of the first file:" in result.stdout
    files = sorted(out.glob("demo_*.h5"))
    assert [f.name for f in files] == ["demo_001.h5", "demo_002.h5", "demo_003.h5"]
    logger.setLevel(logging.WARNING)
    for path in files:
        with h5py.File(path) as f:
            assert f["/entry/data/data"].shape == (48, 64)
            assert f["/entry/instrument/detector/description"][0] == b"Basic simulator"
        warnings, errors = validate_file(str(path))
        assert errors == 0
