"""The ophyd acceptance (issue 12): unmodified ophyd (SingleTrigger + SimDetector +
HDF5Plugin_V34 + FileStoreHDF5IterativeWrite), 1024x1024 frames, 5 triggers then unstage,
20 runs: 100 frames in 20 files, none missing, in order.  (unstage puts Capture=0 the
moment the last Acquire completes: the frames still on their way must get in.)  Run over
CA (test_ophyd_stop.py) and over PVA (test_ophyd_stop_pva.py), each module with its
detector and writer on the session's ports."""

from __future__ import annotations

import h5py
import numpy as np
from ioc_harness import wait_for

from ioc.tools.sim import expected_pixels

RUNS, TRIGGERS, SIZE = 20, 5, (1024, 1024)


def make_detector(prefix: str, tmp_path):
    from ophyd import Component as Cpt
    from ophyd.areadetector import SimDetector, SingleTrigger
    from ophyd.areadetector.filestore_mixins import FileStoreHDF5IterativeWrite
    from ophyd.areadetector.plugins import HDF5Plugin_V34

    class HDF5PluginWithFileStore(HDF5Plugin_V34, FileStoreHDF5IterativeWrite):
        pass

    class SimDetectorWithHDF5(SingleTrigger, SimDetector):
        hdf1 = Cpt(HDF5PluginWithFileStore, "HDF1:", write_path_template=f"{tmp_path}/",
                   read_path_template=f"{tmp_path}/", root=str(tmp_path))

    det = SimDetectorWithHDF5(prefix, name="det")
    det.wait_for_connection(timeout=30)
    return det


def twenty_runs(s, prefix: str, tmp_path) -> None:
    """``s``: the Setup of a detector (``prefix``) and its writer (``prefix`` HDF1:)."""
    s.reset(tmp_path)
    s.cam_put("SizeX", SIZE[0])
    s.cam_put("SizeY", SIZE[1])
    s.cam_put("NumImages", 1)
    det = make_detector(prefix, tmp_path)
    det.hdf1.warmup()  # ophyd's own priming (the detector has made no frame yet)
    # (a 20 ms exposure: ophyd's trigger() returns None when acquisition ends before it
    # returns its status)
    det.cam.stage_sigs.update([("acquire_time", 0.02), ("acquire_period", 0.02)])
    # ophyd users re-wire plugins this way; the driver's port is known, so it is accepted
    det.hdf1.stage_sigs["nd_array_port"] = "SIM1"
    files = []
    for _ in range(RUNS):
        det.stage()
        path = det.hdf1.file_template.get() % (det.hdf1.file_path.get(),
                                               det.hdf1.file_name.get(),
                                               det.hdf1.file_number.get() - 1)
        uids = []
        for _ in range(TRIGGERS):
            status = det.trigger()
            if status is not None:
                status.wait(timeout=30)
            else:  # ophyd's race: the acquisition ended before trigger() returned
                wait_for(lambda: det.cam.acquire.get() == 0, 30)
            uids.append(det.cam.array_counter.get())
        docs = list(det.collect_asset_docs())
        assert [name for name, _ in docs].count("datum") == TRIGGERS
        det.unstage()
        files.append((path, uids))
    assert det.hdf1.source_plugin is det.cam  # ophyd's plugin graph: NDArrayPort names the cam
    written = 0
    for run, (path, uids) in enumerate(files):
        with h5py.File(path) as f:
            data = f["/entry/data/data"]
            ids = f["/entry/instrument/NDAttributes/NDArrayUniqueId"][()].tolist()
            assert ids == uids, f"run {run}: frames {sorted(set(uids) - set(ids))} missing"
            for frame, uid in zip(data, uids, strict=True):
                np.testing.assert_array_equal(frame, expected_pixels(uid, *SIZE))
        written += len(ids)
    assert written == RUNS * TRIGGERS
    assert s.get("DroppedArrays_RBV") == 0 and s.get("NDArrayPort_RBV") == "SIM1"
