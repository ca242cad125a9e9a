"""``bench --workers`` runs the deployed chain and reports rates and CPU per part."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from cluster_setup import mirror_server


def test_bench_workers_quick(tmp_path):
    if mirror_server() is None:
        pytest.skip("pvapy-mirror-server not installed (pip install pvapy)")
    result = subprocess.run(
        [sys.executable, "-m", "ioc.cli", "bench", "--workers", "2", "--quick", "--size", "64",
         "64", "--json", "--out", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    summary = report["summary"]
    assert set(summary["workers_fps"]) == {"2"}
    assert all(fps >= 10 for fps in summary["workers_fps"].values())
    assert set(summary["worker_cpu_ms_per_frame"]["2"]) == {"w0", "w1"}
    rows = [row for row in report["rows"] if row["test"].startswith("writer workers")]
    assert len(rows) == 1 and rows[0]["lost"] == 0
    assert "w1" in rows[0]["note"] and "ms/frame of its" in rows[0]["note"]
    assert list(tmp_path.iterdir()) == []  # cleaned up
