"""ophyd's own area-detector classes, unmodified, against the simulator + writer IOC."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from ophyd_acceptance import make_detector
from system_setup import SIZE, P, W

from ioc.tools.sim import expected_pixels

ophyd = pytest.importorskip("ophyd")


def _run_once(det, n_triggers: int):
    det.stage()
    # what ophyd's resource document will point at
    path = det.hdf1.file_template.get() % (det.hdf1.file_path.get(), det.hdf1.file_name.get(),
                                           det.hdf1.file_number.get() - 1)
    uids = []
    for _ in range(n_triggers):
        status = det.trigger()
        status.wait(timeout=30)
        uids.append(det.cam.array_counter.get())
    docs = list(det.collect_asset_docs())
    det.unstage()
    return path, uids, docs


def test_ophyd_stage_trigger_unstage_twice(ready, tmp_path):
    ready.put("AutoSave", "No")
    det = make_detector(P, tmp_path)
    det.hdf1.warmup()  # ophyd's own priming: one frame so ArraySize*_RBV are non-zero
    for n_triggers in (3, 2):
        path, uids, docs = _run_once(det, n_triggers)
        kinds = [name for name, _ in docs]
        assert "resource" in kinds and kinds.count("datum") == n_triggers
        resource = next(doc for name, doc in docs if name == "resource")
        assert resource["spec"] == "AD_HDF5"
        with h5py.File(path) as f:  # where the AD_HDF5 handler reads
            data = f["/entry/data/data"]
            assert data.shape == (n_triggers, SIZE[1], SIZE[0])
            for frame, uid in zip(data[()], uids, strict=True):
                np.testing.assert_array_equal(frame, expected_pixels(uid, *SIZE))
        assert ready.get("Capture_RBV") == "Done"
    assert ready.client.get(W + "FileWriteMode_RBV") == "Single"  # restored by unstage
