"""check-layout's dry run of the shapes (extra dimensions), through the console script."""

from __future__ import annotations

import subprocess
import sys


def run(*args):
    return subprocess.run([sys.executable, "-m", "ioc.cli", "check-layout", "default", *args],
                          capture_output=True, text=True, timeout=60)


def test_scan_shapes_from_pv_values():
    result = run("--frame", "64", "48", "--extra-dims", "3", "4", "2", "--dim-att-datasets",
                 "--frames-chunks", "2", "--extra-dim-chunks", "9", "2")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "NumExtraDims 2, ExtraDimSizeN 2, ExtraDimSizeX 4, ExtraDimSizeY 3, NumCapture 24" \
        in out
    assert "/entry/instrument/detector/data: at open (1, 1, 1, 48, 64), (3, 4, 2, 48, 64) " \
        "after 24 frames; maxshape (3, 4, 2, 48, 64), chunks (3, 2, 2, 48, 64)" in out
    assert "frames are placed in arrival order, N -> X -> Y (N fastest)" in out
    assert "NDAttribute datasets (DimAttDatasets): up to (3, 4, 2, 1, 1), maxshape " \
        "(None, None, None, 1, 1), chunks (3, 4, 2, 1, 1)" in out


def test_partial_capture_and_single_mode():
    out = run("--frame", "10", "8", "--extra-dims", "2", "3", "4", "--num-capture", "5").stdout
    assert "(1, 2, 4, 8, 10) after 5 frames" in out  # the bounding box of 5 positions
    out = run("--frame", "10", "8", "--extra-dims", "2", "3", "--mode", "single",
              "--dim-att-datasets").stdout
    assert "detector datasets: (8, 10) (one image per file; Single mode forces NumExtraDims" \
        in out
    assert "NDAttribute datasets: (1, 1)" in out


def test_position_mode_and_refused_sizes():
    out = run("--frame", "10", "8", "--extra-dims", "3", "4", "--position-mode",
              "--num-capture", "0").stdout
    assert "(3, 4, 8, 10) when every position is labelled" in out
    assert "placed by the NDAttributes named by PosNameDimN/X" in out
    result = run("--frame", "10", "8", "--extra-dims", "3", "0")
    assert result.returncode == 1
    assert "extra dimension sizes must be greater than 0" in result.stderr
