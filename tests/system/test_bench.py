"""``nexus-writer-ioc bench --quick`` runs and reports sane numbers (not speed targets)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


@pytest.mark.timeout(660)
def test_bench_quick_runs_and_reports(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "ioc.cli", "bench", "--quick", "--size", "128", "128", "--json",
         "--out", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    summary = report["summary"]
    assert summary["single_file_ratio"] > 1.0  # the template writer beats the naive writer
    assert summary["disk_MB_s"] > 0
    assert summary["ca_ceiling_fps"] >= 20
    assert summary["single_autosave_fps"] >= 20 and summary["stream_fps"] >= 20
    # achieved rates (frames / elapsed) of the same asked rate differ by a few per mille
    assert 0 < summary["single_vs_limit"] <= 1.05 and 0 < summary["stream_vs_limit"] <= 1.05
    assert 0 <= summary["peak_rss_over_base_MiB"] < summary["rss_budget_MiB"]
    tests = {row["test"] for row in report["rows"]}
    assert {"writer alone: baseline (naive h5py)", "writer alone: nexus-writer-ioc",
            "disk: sequential write + fsync", "CA transport alone (sim -> CA client)",
            "end to end (single)", "end to end (stream)",
            "CA transport alone (RSRV stand-in -> CA client)",
            "end to end over RSRV stand-in (single)",
            "end to end over RSRV stand-in (stream)"} <= tests
    # against EPICS base's server too (one low rate here; bench searches the rate)
    assert summary["rsrv_ca_ceiling_fps"] >= 15 and summary["rsrv_stream_fps"] >= 15
    for row in report["rows"]:
        assert "MISLABELLED" not in row.get("note", "")  # pixels checked against their ids
    # the pvAccess rows: the PVA ceiling, end to end against it, compressed frames
    assert summary["pva_ceiling_fps"] >= 10
    assert summary["pva_single_autosave_fps"] >= 10 and summary["pva_stream_fps"] >= 10
    assert 1.5 < summary["pva_bslz4_ratio"] < 10  # ramp + Poisson noise, bitshuffle/LZ4
    assert {"PVA transport alone (sim -> PVA client)", "end to end over PVA (single)",
            "end to end over PVA (stream)", "end to end over PVA, bslz4 frames (stream)"} <= tests
    assert all(row["lost"] == 0 for row in report["rows"] if "PVA" in row["test"])
    assert list(tmp_path.iterdir()) == []  # it cleans up after itself
