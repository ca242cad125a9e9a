"""The README's main job: ``nexus-writer-ioc demo`` exits 0 and leaves N valid NeXus files;
what it prints is this run's files, the detector dataset at both of its paths, and the
operator commands as the README writes them (``caput -c -S`` for long strings)."""

from __future__ import annotations

import logging
import re
import subprocess
import sys

import h5py

from ioc.plugin.pvtable import BY_SUFFIX, Kind


def _demo(out, images: int) -> str:
    result = subprocess.run([sys.executable, "-m", "ioc.cli", "demo", "--images", str(images),
                             "--out", str(out), "--size", "64", "48"],
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def test_demo_writes_valid_nexus_files(tmp_path):
    from nexusformat.nexus.validate import logger, validate_file

    out = tmp_path / "out"
    stdout = _demo(out, 3)
    assert "Tree of demo_001.h5:" in stdout
    files = sorted(out.glob("demo_*.h5"))
    assert [f.name for f in files] == ["demo_001.h5", "demo_002.h5", "demo_003.h5"]
    logger.setLevel(logging.WARNING)
    for path in files:
        with h5py.File(path) as f:
            assert f["/entry/data/data"].shape == (48, 64)
            assert f["/entry/instrument/detector/description"][0] == b"Basic simulator"
        warnings, errors = validate_file(str(path))
        assert errors == 0
    # the hard-linked detector dataset is shown at both paths
    tree = stdout.split("Tree of demo_001.h5:")[1]
    assert re.search(r"\n    data  uint16\[48, 64\]", tree)  # /entry/data/data
    assert re.search(r"\n      data  = /entry/data/data \(hard link", tree)  # .../detector/data
    # the commands it shows are the README's: -c, and -S for the CHAR waveforms
    puts = [line.split() for line in stdout.splitlines() if line.strip().startswith("caput")]
    assert len(puts) >= 10
    for words in puts:
        suffix = words[-2].split(":")[-1]
        assert "-c" in words
        assert ("-S" in words) == (BY_SUFFIX[suffix].kind is Kind.CHAR), words

    # a second, shorter run into the same directory lists only its own files
    stdout = _demo(out, 2)
    listed = re.findall(r"^  (demo_\d+\.h5)  \d+ bytes", stdout, re.M)
    assert listed == ["demo_001.h5", "demo_002.h5"], stdout
    assert "1 other .h5 file there, from earlier runs, not shown" in stdout
