"""Load and probes for ``bench --soak``: reads timed throughout, one refused put per
second, and a flood of refused puts from another process."""

from __future__ import annotations

import statistics
import subprocess
import sys
import threading
import time

from ._caenv import Client

# Another process, so that the flood does not share this one's interpreter lock.
FLOODER = r"""
import sys, time
from caproto.threading.client import Context
(pv,) = Context().get_pvs(sys.argv[1], timeout=10)
pv.wait_for_connection(timeout=30)
value, rate, seconds = float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
sent, t0 = 0, time.monotonic()
while time.monotonic() - t0 < seconds:
    pv.write([value], wait=False)
    sent += 1
    pause = t0 + sent / rate - time.monotonic()
    if pause > 0:
        time.sleep(pause)
print(sent, time.monotonic() - t0, flush=True)
time.sleep(2)  # stays connected while the last replies come
"""


class ReadProbe(threading.Thread):
    """Reads ``pvname`` every ``interval`` seconds from a client of its own; records
    (time, seconds the read took, or None when it timed out)."""

    def __init__(self, pvname: str, interval: float = 0.1, timeout: float = 10.0):
        super().__init__(name="read-probe", daemon=True)
        self.pvname, self.interval, self.timeout = pvname, interval, timeout
        self.samples: list[tuple[float, float | None]] = []
        self._halt = threading.Event()
        self.client = Client()

    def run(self) -> None:
        pv = self.client.pv(self.pvname)
        while not self._halt.is_set():
            t0 = time.monotonic()
            try:
                pv.read(timeout=self.timeout)
                self.samples.append((t0, time.monotonic() - t0))
            except Exception:  # noqa: BLE001 - a read that did not come back counts
                self.samples.append((t0, None))
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join(self.timeout + 2)
        self.client.close()

    def window(self, start: float, end: float) -> dict:
        """Latency of the reads started in [start, end)."""
        taken = [lat for t, lat in self.samples if start <= t < end]
        answered = sorted(lat for lat in taken if lat is not None)
        if not taken:
            return {"reads": 0}
        p99 = answered[min(len(answered) - 1, int(0.99 * len(answered)))] if answered else None
        return {"reads": len(taken), "timeouts": len(taken) - len(answered),
                "median_s": statistics.median(answered) if answered else None,
                "p99_s": p99, "max_s": answered[-1] if answered else None}


class RefusedPuts(threading.Thread):
    """One put the IOC refuses every ``interval`` seconds (what a misconfigured script
    does all day); caproto's client does not complete refused puts, so none is waited for."""

    def __init__(self, pvname: str, value, interval: float = 1.0):
        super().__init__(name="refused-puts", daemon=True)
        self.pvname, self.value, self.interval = pvname, value, interval
        self.sent = 0
        self._halt = threading.Event()
        self.client = Client()

    def run(self) -> None:
        pv = self.client.pv(self.pvname)
        while not self._halt.wait(self.interval):
            try:
                pv.write([self.value], wait=False)
                self.sent += 1
            except Exception:  # noqa: BLE001 - counted by what was sent
                pass

    def stop(self) -> None:
        self._halt.set()
        self.join(5)
        self.client.close()


class Flood:
    """``rate`` refused puts per second for ``seconds``, from another process."""

    def __init__(self, pvname: str, value, rate: float, seconds: float, env: dict):
        self.start = time.monotonic()
        self.seconds = seconds
        self.proc = subprocess.Popen(
            [sys.executable, "-c", FLOODER, pvname, str(value), str(rate), str(seconds)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.sent = 0
        self.end = self.start + seconds

    def wait(self) -> None:
        out, _ = self.proc.communicate(timeout=self.seconds + 120)
        parts = out.split()
        if len(parts) >= 2:
            self.sent = int(parts[0])
            self.end = self.start + float(parts[1])
