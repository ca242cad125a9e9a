"""The simulator, a pvAccess mirror with the data distributor, the coordinator IOC and N
writer workers, each a subprocess on the private loopback network."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
from ioc_harness import IOCProcess, wait_for
from system_setup import SIZE, P, Setup

from ioc.tools.sim import expected_pixels

MIRROR = P + "Pva1:Mirror"  # the mirror's channel: the simulator's Pva1:Image, distributed
# The driver's NDAttributes, carried by every NTNDArray (the master's NDAttribute datasets)
DRIVER_ATTRIBUTES = """<Attributes>
  <Attribute name="Counter" type="PARAM" source="ARRAY_COUNTER" datatype="INT"/>
  <Attribute name="Model" type="PARAM" source="MODEL" datatype="STRING"/>
  <Attribute name="Exposure" type="PARAM" source="ACQ_TIME" datatype="DOUBLE"/>
</Attributes>"""


def mirror_server() -> str | None:
    path = Path(sys.executable).parent / "pvapy-mirror-server"
    return str(path) if path.exists() else None


class MirrorProcess:
    """``pvapy-mirror-server`` re-serving Pva1:Image with pvapy's distributor plugin."""

    def __init__(self, env: dict, log: Path):
        self._log = open(log, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [mirror_server(), "--channel-map", f"({MIRROR},{P}Pva1:Image,pva,1000)"],
            env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._log.close()


@dataclass
class Cluster(Setup):
    mirror: MirrorProcess | None = None
    port: int = 0
    workers: dict[str, IOCProcess] = field(default_factory=dict)
    _count: int = 0

    # -- workers ----------------------------------------------------------------------
    def start_worker(self) -> str:
        name = f"w{self._count}"
        self._count += 1
        env = dict(os.environ)
        env.update(self.env.client_env())
        env["PYTHONUNBUFFERED"] = "1"
        self.workers[name] = IOCProcess(
            ["worker", "--coordinator", f"127.0.0.1:{self.port}", "--name", name,
             "--pva-queue", "200", "-v"], env, self.logs / f"{name}.log")
        return name

    def kill_worker(self, name: str) -> None:
        proc = self.workers.pop(name)
        os.killpg(proc.proc.pid, signal.SIGKILL)  # the worker and its receiver process
        proc.proc.wait(10)
        proc.stop()

    def ensure_workers(self, n: int) -> None:
        while len(self.workers) > n:
            name = sorted(self.workers)[-1]
            self.workers.pop(name).stop()
        while len(self.workers) < n:
            self.start_worker()
        wait_for(lambda: self.get("Workers_RBV") == n, 60, what=f"{n} workers connected")

    def ready(self, n: int, directory: Path) -> Cluster:
        """n workers receiving, the coordinator reset to a Stream into ``directory``."""
        self.ensure_workers(n)
        self.reset(directory)
        self.wait_receiving()
        return self

    def wait_receiving(self) -> None:
        """Every worker receives frames: acquire single frames until the readbacks the
        workers report follow the simulator (the mirror connects to it lazily)."""
        wait_for(lambda: self.get("SourceConnected_RBV") == "Connected", 60,
                 what="workers subscribed")
        self.cam_put("ImageMode", "Single")

        def through() -> bool:
            self.cam_put("Acquire", 1)
            time.sleep(0.3)
            return self.get("UniqueId_RBV") == self.cam_get("ArrayCounter_RBV")

        wait_for(through, 60, interval=0.5, what="frames reaching the workers")
        self.cam_put("ImageMode", "Multiple")

    def reset(self, directory: Path, name: str = "test") -> None:
        if self.get("Capture_RBV") != "Done":
            self.put("Capture", 0)
        for suffix, value in (
            ("FileWriteMode", "Stream"), ("AutoSave", "Yes"), ("NumCapture", 0),
            ("TempSuffix", ""), ("XMLFileName", ""), ("NDAttributesFile", ""),
            ("SWMRMode", "Off"), ("FilePath", str(directory)), ("FileName", name),
            ("FileNumber", 1), ("FileTemplate", "%s%s_%3.3d.h5"), ("AutoIncrement", "Yes"),
            ("QueueSize", 100), ("DroppedArrays", 0), ("StoreAttr", "Yes"),
        ):
            self.put(suffix, value)
        self.cam_put("NDAttributesFile", DRIVER_ATTRIBUTES)
        self.cam_put("SizeX", SIZE[0])
        self.cam_put("SizeY", SIZE[1])
        self.cam_put("DataType", "UInt16")

    # -- captures ---------------------------------------------------------------------
    def start_capture(self, mode: str, num_capture: int) -> None:
        self.put("FileWriteMode", mode)
        self.put("NumCapture", num_capture)
        self.put("Capture", 1)
        assert self.get("Capture_RBV") == "Capturing", self.get("WriteMessage")

    def start_acquisition(self, n: int, period: float) -> int:
        """Start n frames; the UniqueId of the first."""
        first = self.cam_get("ArrayCounter_RBV") + 1
        self.cam_put("AcquirePeriod", period)
        self.cam_put("NumImages", n)
        self.cam_put("Acquire", 1, wait=False)
        return first

    def wait_acquired(self, n: int, period: float) -> None:
        time.sleep(0.2)
        wait_for(lambda: self.cam_get("Acquire_RBV") == "Done", 60 + n * period * 3,
                 what="acquisition to end")

    def wait_done(self, timeout: float = 90) -> None:
        wait_for(lambda: self.get("Capture_RBV") == "Done" and self.get("WriteFile_RBV") == "Done",
                 timeout, what="capture and master file done")

    def master(self) -> Path:
        return Path(self.get("FullFileName_RBV"))


def expected_stack(uids) -> np.ndarray:
    """The frames the simulator sends as ``uids`` (mono UInt16), stacked."""
    ramp = expected_pixels(0, *SIZE).astype(np.int64)
    return ((ramp[None] + np.asarray(list(uids), np.int64)[:, None, None]) % 65536).astype("<u2")


def check_master(path: Path, uids: list[int], missing=frozenset(), attributes: bool = True,
                 nexus: bool = True) -> dict[str, list[int]]:
    """The master reads, through h5py (and nexusformat), every frame in UniqueId order
    equal to what the simulator sent, with its NDAttributes; frames in ``missing`` read as
    the fill value.  Returns each part's UniqueIds."""
    path = Path(path)
    with h5py.File(path) as f:
        data = f["/entry/data/data"]
        assert data.is_virtual
        assert data.shape == (len(uids), SIZE[1], SIZE[0])
        present = np.array([u not in missing for u in uids])
        expected = expected_stack(uids)
        expected[~present] = 0  # missing frames read as the fill value
        np.testing.assert_array_equal(data[()], expected)
        nd = f["/entry/instrument/NDAttributes"]
        ids = np.where(present, uids, 0)
        np.testing.assert_array_equal(nd["NDArrayUniqueId"][()], ids)
        if attributes:
            np.testing.assert_array_equal(nd["Counter"][()], ids)
            assert set(nd["Model"][()][present].tolist()) == {b"Basic simulator"}
        parts = f["/entry/writer_parts"]
        assert parts["missing_unique_ids"][()].tolist() == sorted(missing)
        shares = {}
        for name in parts:
            if name.startswith("part"):
                part = parts[name]
                shares[part.attrs["worker"].decode()] = part["unique_ids"][()].tolist()
                assert (path.parent / part.attrs["file_name"].decode()).exists()
    if nexus:
        from nexusformat.nexus import nxload

        root = nxload(str(path))
        try:
            frames = root["entry/data/data"]
            assert frames.shape == (len(uids), SIZE[1], SIZE[0])
            np.testing.assert_array_equal(frames.nxdata, expected)
            assert root["entry/instrument/NDAttributes/NDArrayUniqueId"].nxdata.tolist() == \
                [0 if u in missing else u for u in uids]
        finally:
            root.nxfile.close()
    return shares
