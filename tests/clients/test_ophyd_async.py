"""ophyd-async's epics.adcore detector and HDF writer, unmodified, against our IOCs."""

from __future__ import annotations

import asyncio
from urllib.parse import urlparse

import h5py
import numpy as np
import pytest
from system_setup import SIZE, P

from ioc.tools.sim import expected_pixels

pytest.importorskip("ophyd_async")


async def _fly(tmp_path, n: int):
    from ophyd_async.core import StaticFilenameProvider, StaticPathProvider, TriggerInfo
    from ophyd_async.epics.adcore import ADWriterFactory
    from ophyd_async.epics.adsimdetector import SimDetector

    provider = StaticPathProvider(StaticFilenameProvider("flyscan"), tmp_path)
    det = SimDetector(P, ADWriterFactory.hdf(provider), name="det")
    await det.connect(timeout=20)  # every signal, with ophyd-async's type rules
    await det.stage()
    await det.prepare(TriggerInfo(number_of_events=n, livetime=0.001, deadtime=0.019))
    start = await det.hdf.num_captured.get_value()
    seen = []

    def on_captured(reading):
        seen.append(reading[det.hdf.num_captured.name]["value"])

    det.hdf.num_captured.subscribe_reading(on_captured)
    await det.kickoff()
    await asyncio.wait_for(det.complete(), timeout=60)
    docs = [doc async for doc in det.collect_asset_docs()]
    det.hdf.num_captured.clear_sub(on_captured)
    first_uid = await det.driver.array_counter.get_value() - n + 1
    await det.unstage()
    from aioca import purge_channel_caches

    # aioca's channels outlive this event loop; later tests' IOCs must not wake them
    purge_channel_caches()
    return docs, seen, start, first_uid


def test_ophyd_async_fly_n_frames(ready, tmp_path):
    n = 6
    docs, seen, start, first_uid = asyncio.run(_fly(tmp_path, n))
    resources = [doc for name, doc in docs if name == "stream_resource"]
    data_resource = next(r for r in resources if r["parameters"]["dataset"] == "/entry/data/data")
    path = urlparse(data_resource["uri"]).path
    stream_datums = [doc for name, doc in docs if name == "stream_datum"]
    assert stream_datums and stream_datums[-1]["indices"]["stop"] == n
    # NumCaptured_RBV posted for every frame written
    assert [v for v in seen if v > start][: n] == list(range(start + 1, start + n + 1))
    with h5py.File(path) as f:
        data = f["/entry/data/data"]
        assert data.shape == (n, SIZE[1], SIZE[0])
        for i, frame in enumerate(data[()]):
            np.testing.assert_array_equal(frame, expected_pixels(first_uid + i, *SIZE))
        ids = f["/entry/instrument/NDAttributes/NDArrayUniqueId"][()].tolist()
        assert ids == list(range(first_uid, first_uid + n))
    assert ready.get("Capture_RBV") == "Done"
    assert ready.get("XMLFileName_RBV") == ""  # ophyd-async writes "" on every prepare


async def _array_port(tmp_path):
    from ophyd_async.core import StaticFilenameProvider, StaticPathProvider
    from ophyd_async.epics.adcore import ADWriterFactory
    from ophyd_async.epics.adsimdetector import SimDetector

    provider = StaticPathProvider(StaticFilenameProvider("port"), tmp_path)
    det = SimDetector(P, ADWriterFactory.hdf(provider), name="det")
    await det.connect(timeout=20)
    try:
        port = det.hdf.nd_array_port
        assert await port.get_value() == await det.driver.port_name.get_value() == "SIM1"
        await port.set("SIM1")  # the driver's port: accepted
        try:
            await port.set("NOSUCHPORT", timeout=5)
        except Exception:  # noqa: BLE001 - the IOC refuses it (ECA_PUTFAIL)
            pass
        return await port.get_value()
    finally:
        from aioca import purge_channel_caches

        purge_channel_caches()


def test_ophyd_async_nd_array_port(ready, tmp_path):
    """ophyd-async's nd_array_port: the driver's port is accepted, an unknown one refused."""
    assert asyncio.run(_array_port(tmp_path)) == "SIM1"  # NDArrayPort_RBV: unchanged
    assert "NOSUCHPORT" in ready.get("WriteMessage")  # and why
    assert ready.get("SourcePrefix_RBV") == P + "image1:"
