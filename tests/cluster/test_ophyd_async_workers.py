"""Unmodified ophyd-async (prepare / kickoff / complete / collect) against the coordinator:
the StreamResource names the master file, which reads every frame and NDAttribute."""

from __future__ import annotations

import asyncio
from urllib.parse import urlparse

import h5py
import numpy as np
import pytest
from cluster_setup import SIZE, check_master
from system_setup import P

from ioc.tools.sim import expected_pixels

pytest.importorskip("ophyd_async")


async def _fly(directory, n: int):
    from ophyd_async.core import StaticFilenameProvider, StaticPathProvider, TriggerInfo
    from ophyd_async.epics.adcore import ADWriterFactory
    from ophyd_async.epics.adsimdetector import SimDetector

    provider = StaticPathProvider(StaticFilenameProvider("flyscan"), directory)
    det = SimDetector(P, ADWriterFactory.hdf(provider), name="det")
    await det.connect(timeout=20)
    await det.stage()
    await det.prepare(TriggerInfo(number_of_events=n, livetime=0.001, deadtime=0.009))
    first = await det.driver.array_counter.get_value() + 1
    await det.kickoff()
    await asyncio.wait_for(det.complete(), timeout=90)
    docs = [doc async for doc in det.collect_asset_docs()]
    await det.unstage()
    from aioca import purge_channel_caches

    purge_channel_caches()  # aioca's channels outlive this event loop
    return docs, first


def test_ophyd_async_flyscan_reads_the_master_file(two_workers, tmp_path):
    n = 200
    docs, first = asyncio.run(_fly(tmp_path, n))
    resources = [doc for name, doc in docs if name == "stream_resource"]
    data = next(r for r in resources if r["parameters"]["dataset"] == "/entry/data/data")
    path = urlparse(data["uri"]).path
    datums = [doc for name, doc in docs if name == "stream_datum"]
    assert datums and datums[-1]["indices"]["stop"] == n
    assert two_workers.get("Capture_RBV") == "Done"
    assert str(two_workers.master()) == path  # the file it was told about is the master
    uids = list(range(first, first + n))
    shares = check_master(path, uids)
    assert len(shares) == 2 and all(len(v) >= n // 2 - 5 for v in shares.values())
    with h5py.File(path) as f:
        for resource in resources:  # every dataset ophyd-async declared, one value per frame
            assert f[resource["parameters"]["dataset"]].shape[0] == n
        np.testing.assert_array_equal(f["/entry/data/data"][n - 1], expected_pixels(uids[-1], *SIZE))
