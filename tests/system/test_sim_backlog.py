"""The simulator bounds its own backlog and memory at any AcquirePeriod (issue 14, row 13):
at AcquirePeriod 0 with subscribers that lag, it used to queue every frame (12 GB in a
minute) and stop answering."""

from __future__ import annotations

import time

import psutil
from ioc_harness import Client, IOCProcess, wait_for

PREFIX = "BACKLOG:"


def test_sim_at_acquire_period_zero_stays_bounded_and_answers(ca_env, tmp_path):
    sim = IOCProcess(["sim", "--prefix", PREFIX, "--size", "1024", "1024", "--max-size", "1024",
                      "1024", "--backlog-mb", "64"], ca_env.server_env(0), tmp_path / "sim.log")
    client = Client()
    subs = []
    try:
        wait_for(lambda: client.get(PREFIX + "cam1:PortName_RBV"), 30, what="the simulator")
        process = psutil.Process(sim.proc.pid)
        received = []

        def slow(sub, response):  # a subscriber that cannot keep up
            received.append(1)
            time.sleep(0.02)

        for data_type in ("native", "time", "control", "status"):
            sub = client.pv(PREFIX + "image1:ArrayData").subscribe(data_type=data_type,
                                                                   data_count=0)
            sub.add_callback(slow)
            subs.append(sub)
        base = process.memory_info().rss
        client.put(PREFIX + "cam1:AcquirePeriod", 0.0)
        client.put(PREFIX + "cam1:ImageMode", "Continuous")
        client.put(PREFIX + "cam1:Acquire", 1, wait=False)
        peak, slowest = base, 0.0
        start = time.monotonic()
        while time.monotonic() - start < 8:
            t0 = time.monotonic()
            client.get(PREFIX + "cam1:ArrayCounter_RBV")
            slowest = max(slowest, time.monotonic() - t0)
            peak = max(peak, process.memory_info().rss)
            time.sleep(0.2)
        client.put(PREFIX + "cam1:Acquire", 0)
        made = client.get(PREFIX + "cam1:ArrayCounter_RBV")
        # 4 subscriptions x 64 MiB of queued frames, the frames in flight, and slack;
        # without the bounds: 4 x 200 frames of 2 MiB, growing for as long as it runs
        assert peak - base < 500 * 2**20, f"grew by {(peak - base) / 2**20:.0f} MiB"
        assert slowest < 3.0  # still answering
        assert made > 20 and received  # and still making and sending frames
    finally:
        for sub in subs:
            sub.clear()
        client.close()
        sim.stop()
