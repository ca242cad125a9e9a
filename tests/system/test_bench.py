"""``nexus-writer-ioc bench --quick`` runs and reports sane numbers (not speed targets),
printing each row as it is measured."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest

from ioc.tools.bench import KEYS, Report


@pytest.mark.timeout(660)
def test_bench_quick_runs_and_reports(tmp_path):
    out = tmp_path / "not" / "yet"  # bench creates it
    result = subprocess.run(
        [sys.executable, "-m", "ioc.cli", "bench", "--quick", "--size", "128", "128", "--json",
         "--out", str(out)], capture_output=True, text=True, timeout=600)
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
    # where the writer's time goes, by the names it gives its threads
    stream = next(row for row in report["rows"] if row["test"] == "end to end (stream)")
    assert "(ioc: " in stream["note"] and "file-saver" in stream["note"], stream["note"]
    assert "receiver-pipe" in stream["note"] and "/frame)" in stream["note"], stream["note"]
    # the pvAccess rows: the PVA ceiling, end to end against it, compressed frames
    assert summary["pva_ceiling_fps"] >= 10
    # each end-to-end row against the ceilings measured around it (--quick: one, three times)
    first, middle, last = summary["pva_ceilings_fps"]
    assert summary["pva_single_ceiling_fps"] == pytest.approx((first + middle) / 2)
    assert summary["pva_stream_vs_ceiling"] == pytest.approx(
        summary["pva_stream_fps"] / ((middle + last) / 2))
    assert summary["pva_single_autosave_fps"] >= 10 and summary["pva_stream_fps"] >= 10
    assert 1.5 < summary["pva_bslz4_ratio"] < 10  # ramp + Poisson noise, bitshuffle/LZ4
    assert {"PVA transport alone (sim -> PVA client)", "end to end over PVA (single)",
            "end to end over PVA (stream)", "end to end over PVA, bslz4 frames (stream)"} <= tests
    assert all(row["lost"] == 0 for row in report["rows"] if "PVA" in row["test"])
    assert out.is_dir() and list(out.iterdir()) == []  # created, cleaned up after itself
    # with --json the rows are echoed on stderr as they are measured, between progress lines
    lines = result.stderr.splitlines()
    rows = [i for i, line in enumerate(lines) if line.startswith(("writer alone", "disk:", "NDAttribute dataset size",
                                                                   "CA transport", "PVA transport",
                                                                   "end to end"))]
    progress = [i for i, line in enumerate(lines) if line.startswith("... ")]
    assert len(rows) == len(report["rows"]), result.stderr
    assert progress and rows[0] < progress[-1], "the first row came only at the end"
    assert any("frames/s for" in lines[i] for i in progress)  # the rate searches say where they are


def test_report_prints_each_row_when_added():
    out = io.StringIO()
    report = Report(out=out)
    report.add(test="disk: sequential write + fsync", rate=1234.5, unit="MB/s")
    first = out.getvalue().splitlines()
    assert first[0] == " | ".join(KEYS) and first[2].startswith("disk: sequential write")
    report.add(test="second", rate=1.0)
    assert out.getvalue().splitlines()[3].startswith("second")


def test_bench_says_when_out_cannot_be_created(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = subprocess.run([sys.executable, "-m", "ioc.cli", "bench", "--quick", "--out",
                             str(blocker / "sub")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "cannot create --out" in result.stderr and "Traceback" not in result.stderr
