"""A FileSaver driven directly: the PV layer's parameters and posts, without CA.

For behaviour that needs frames carrying NDAttributes a CA source cannot deliver yet
(PositionMode labels): the same worker thread, queue and writer as the IOC's.
"""

from __future__ import annotations

import threading
from pathlib import Path

from ioc.ndarray import NDArray
from ioc.plugin.file_saver import FileSaver
from ioc.plugin.pvtable import PV_TABLE, to_param


class SaverHarness:
    """FileSaver + a parameter mapping seeded from the PV table, updated by its posts."""

    def __init__(self, directory: Path, **params):
        self.table = {pv.suffix: pv for pv in PV_TABLE}
        self.params = {pv.suffix: to_param(pv, pv.value) for pv in PV_TABLE}
        self.lock = threading.Lock()
        self.posted: list[dict] = []
        self.set(**{"FilePath": f"{directory}/", "FileName": "scan",
                    "FileTemplate": "%s%s_%3.3d.h5", "EnableCallbacks": 1, **params})
        self.saver = FileSaver(self.params, self.post, queue_size=100)
        self.saver.start()

    def set(self, **params) -> None:
        for suffix, value in params.items():
            self.params[suffix] = to_param(self.table[suffix], value)

    def post(self, **updates) -> None:
        with self.lock:
            self.posted.append(updates)
            for suffix, value in updates.items():
                if suffix in self.table:
                    self.params[suffix] = to_param(self.table[suffix], value)

    def command(self, name: str, timeout: float = 30.0, **args):
        return self.saver.submit(name, **args).result(timeout)

    def feed(self, frames: list[NDArray]) -> None:
        for frame in frames:
            assert self.saver.enqueue(frame), "queue full"
        self.command("sync")

    def close(self) -> None:
        self.saver.stop()

    def __enter__(self) -> SaverHarness:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
