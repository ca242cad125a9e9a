"""The simulator + writer pair used by the system tests."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from ioc_harness import CAEnvironment, Client, IOCProcess, wait_for, wait_until_quiet

P = "TST:"
W = P + "HDF1:"
CAM = P + "cam1:"
SIZE = (40, 30)  # X, Y


@dataclass
class Setup:
    client: Client
    env: CAEnvironment
    sim: IOCProcess
    writer: IOCProcess
    logs: Path

    def put(self, suffix: str, value, **kw):
        if suffix == "Capture" and value in (1, "Capture") and not kw:
            return self.client.start_capture(W)  # a busy record: completes at the end
        return self.client.put(W + suffix, value, **kw)

    def put_refused(self, suffix: str, value) -> None:
        """A write the IOC refuses (ECA_PUTFAIL; caproto's client never completes such a
        put, so do not wait for it), then a round trip so that it has been handled."""
        self.client.put(W + suffix, value, wait=False)
        time.sleep(0.2)
        self.get("WriteMessage")

    def get(self, suffix: str, **kw):
        return self.client.get(W + suffix, **kw)

    def cam_put(self, suffix: str, value, **kw):
        return self.client.put(CAM + suffix, value, **kw)

    def cam_get(self, suffix: str, **kw):
        return self.client.get(CAM + suffix, **kw)

    def reset(self, directory: Path, name: str = "test") -> None:
        """Writer back to a known state (no file open)."""
        if self.get("Capture_RBV") != "Done":
            self.put("Capture", 0)
        for suffix, value in (
            ("PositionMode", "Off"), ("NumExtraDims", 0), ("DimAttDatasets", "No"),
            ("ExtraDimSizeN", 1), ("ExtraDimSizeX", 1), ("ExtraDimSizeY", 1),
            ("FileWriteMode", "Single"), ("AutoSave", "No"), ("NumCapture", 1),
            ("LazyOpen", "No"), ("TempSuffix", ""), ("XMLFileName", ""),
            ("NDAttributesMacros", ""), ("NDAttributesFile", ""), ("CreateDirectory", 0),
            ("FilePath", str(directory)), ("FileName", name), ("FileNumber", 1),
            ("FileTemplate", "%s%s_%3.3d.h5"), ("AutoIncrement", "Yes"),
            ("EnableCallbacks", "Enable"), ("QueueSize", 20), ("DroppedArrays", 0),
            ("ArrayCounter", 0), ("Compression", "None"), ("StoreAttr", "Yes"),
            ("StorePerform", "Yes"), ("MinCallbackTime", 0.0),
        ):
            self.put(suffix, value)
        self.cam_put("ImageMode", "Multiple")
        self.cam_put("AcquirePeriod", 0.02)
        self.cam_put("SizeX", SIZE[0])
        self.cam_put("SizeY", SIZE[1])
        self.cam_put("DataType", "UInt16")

    def slow_writer(self, queue_size: int) -> None:
        """Single+AutoSave of 512x512 frames with zlib level 9: a writer slower than the
        simulator can send, so that its queue fills."""
        self.put("QueueSize", queue_size)
        self.put("AutoSave", "Yes")
        self.put("Compression", "zlib")
        self.put("ZLevel", 9)
        self.cam_put("SizeX", 512)
        self.cam_put("SizeY", 512)

    def acquire(self, n: int, period: float = 0.02, settle: bool = True) -> list[int]:
        """Acquire n frames; return their UniqueIds once the writer has processed them."""
        first = self.cam_get("ArrayCounter_RBV") + 1
        self.cam_put("AcquirePeriod", period)
        self.cam_put("NumImages", n)
        self.cam_put("Acquire", 1, wait=False)
        time.sleep(0.1)
        wait_for(lambda: self.cam_get("Acquire_RBV") == "Done", 30 + n * period * 2,
                 what="acquisition to end")
        last = self.cam_get("ArrayCounter_RBV")
        if settle:
            self.settle(last)
        return list(range(first, last + 1))

    def settle_counts(self, timeout: float = 120.0) -> None:
        """Wait until every frame in flight (CA buffers, the queue) has been handled:
        the counters stop changing and the queue is empty."""
        def counts():
            return (self.get("DroppedArrays_RBV"), self.get("ArrayCounter_RBV"),
                    self.get("SourceSkipped_RBV"), self.get("NumQueuedArrays"))

        if not wait_until_quiet(counts, 1.5, timeout) or self.get("NumQueuedArrays"):
            raise TimeoutError("frame counters did not settle")

    def settle(self, last_uid: int, timeout: float = 30.0) -> None:
        wait_for(lambda: self.get("UniqueId_RBV") == last_uid and self.get("NumQueuedArrays") == 0,
                 timeout, what=f"writer to process frame {last_uid}")
        time.sleep(0.2)
