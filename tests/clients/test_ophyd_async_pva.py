"""ophyd-async, unmodified, with the driver's and Stats1's NDAttributes, the writer IOC
reading the detector over pvAccess: every dataset the StreamResource declares exists with
one value per frame, equal to what the simulator attached to that frame."""

from __future__ import annotations

from urllib.parse import urlparse

import h5py
import numpy as np
import pytest
from system_setup import SIZE, P

from ioc.tools.sim import expected_pixels

pytest.importorskip("ophyd_async")


def test_ophyd_async_ndattributes_and_stats_sum_over_pva(pva_ready, tmp_path):
    import bluesky.plans as bp
    from bluesky import RunEngine
    from ophyd_async.core import StaticFilenameProvider, StaticPathProvider, init_devices
    from ophyd_async.epics.adcore import (
        ADWriterFactory,
        NDAttributeDataType,
        NDAttributeParam,
        NDAttributePv,
        NDAttributePvDbrType,
        NDStatsIO,
        setup_ndattributes,
        setup_ndstats_sum,
    )
    from ophyd_async.epics.adsimdetector import SimDetector

    n = 5
    provider = StaticPathProvider(StaticFilenameProvider("pvascan"), tmp_path)
    RE = RunEngine({}, call_returns_result=True)
    docs: list[tuple[str, dict]] = []
    RE.subscribe(lambda name, doc: docs.append((name, doc)))
    try:
        with init_devices(timeout=20):
            det = SimDetector(P, ADWriterFactory.hdf(provider),
                              plugins={"stats": NDStatsIO(P + "Stats1:")})
        RE(setup_ndattributes(det.driver, [
            NDAttributeParam(name="det-counter", param="ARRAY_COUNTER",
                             datatype=NDAttributeDataType.INT, description="frame counter"),
            NDAttributePv(name="det-period", signal=det.driver.acquire_period,
                          dbrtype=NDAttributePvDbrType.DBR_DOUBLE),
        ]))
        RE(setup_ndstats_sum(det))
        first = pva_ready.cam_get("ArrayCounter_RBV") + 1
        RE(bp.count([det], num=n))
        period = pva_ready.cam_get("AcquirePeriod_RBV")
    finally:
        from aioca import purge_channel_caches

        # aioca's channels outlive this loop; later tests' IOCs must not wake them
        RE.loop.call_soon_threadsafe(purge_channel_caches)
    resources = [doc for name, doc in docs if name == "stream_resource"]
    declared = {r["parameters"]["dataset"]: r for r in resources}
    assert {"/entry/data/data", "/entry/instrument/NDAttributes/det-counter",
            "/entry/instrument/NDAttributes/det-period",
            "/entry/instrument/NDAttributes/det-sum"} <= set(declared)
    uids = list(range(first, first + n))
    expected = {
        "/entry/instrument/NDAttributes/det-counter": uids,
        "/entry/instrument/NDAttributes/det-period": [period] * n,
        "/entry/instrument/NDAttributes/det-sum":
            [float(expected_pixels(uid, *SIZE).astype(np.float64).sum()) for uid in uids],
    }
    data_keys = {key: info for name, doc in docs if name == "descriptor"
                 for key, info in doc["data_keys"].items()}
    paths = {urlparse(r["uri"]).path for r in resources}
    assert len(paths) == 1
    with h5py.File(paths.pop()) as f:
        for dataset, resource in declared.items():
            assert dataset in f, dataset
            values = f[dataset][()]
            assert len(values) == n, dataset  # one value per frame
            declared_dtype = np.dtype(data_keys[resource["data_key"]]["dtype_numpy"])
            assert values.dtype == declared_dtype, dataset
        for dataset, values in expected.items():
            assert f[dataset][()].tolist() == values, dataset
        assert f["/entry/instrument/NDAttributes/NDArrayUniqueId"][()].tolist() == uids
        for i, uid in enumerate(uids):
            np.testing.assert_array_equal(f["/entry/data/data"][i], expected_pixels(uid, *SIZE))
