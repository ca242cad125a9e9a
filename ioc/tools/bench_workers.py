"""``nexus-writer-ioc bench --workers 1,2,3``: the aggregate end-to-end rate with N writer
workers, and the CPU each part costs per frame.

The chain is the deployed one, on this machine: the simulator's ``Pva1:Image`` ->
``pvapy-mirror-server`` (the distributor) -> N workers (each a receiver process and a
writer process) -> part files; the coordinator (``serve --workers-listen``) starts and
stops them and writes the master file.  For each N, the highest rate at which every frame
reaches the master file is searched as for the single writer (``bench.rate_search``), and
each process's CPU time is divided by the frames it handled: a worker's CPU per frame of
its part says how many frames one core writes, from which a many-core writer host can be
projected (until the network, the distributor or the disk limits).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np

from ._caenv import CAEnvironment, Client, IOCProcess, free_port, wait_for, wait_until_quiet
from .bench import PREFIX, Report, rate_search

COORDINATOR = PREFIX + "HDF1:"
MIRROR = PREFIX + "Pva1:Mirror"


def mirror_command() -> list[str] | None:
    path = Path(sys.executable).parent / "pvapy-mirror-server"
    return [str(path)] if path.exists() else None


class WorkersRig:
    """Simulator, mirror, coordinator and workers on a private loopback network."""

    def __init__(self, work: Path, shape, dtype: str, queue: int):
        self.env = CAEnvironment(3)
        self.env.apply_to_this_process()
        self.work = work
        self.logs = work / "logs"
        self.logs.mkdir(exist_ok=True)
        self.sim = IOCProcess(["sim", "--prefix", PREFIX, "--size", str(shape[1]), str(shape[0]),
                               "--max-size", str(shape[1]), str(shape[0])],
                              self.env.server_env(0), self.logs / "sim.log").wait_serving()
        self._mirror_log = open(self.logs / "mirror.log", "ab")  # noqa: SIM115
        self.mirror = subprocess.Popen(
            [*mirror_command(), "--channel-map", f"({MIRROR},{PREFIX}Pva1:Image,pva,1000)"],
            env=self.env.server_env(2), stdout=self._mirror_log, stderr=subprocess.STDOUT,
            start_new_session=True)
        self.port = free_port()
        self.coordinator = IOCProcess(
            ["serve", "--prefix", COORDINATOR, "--workers-listen", f"127.0.0.1:{self.port}",
             "--pva-channel", MIRROR, "--queue-size", str(queue)],
            self.env.server_env(1), self.logs / "coordinator.log")
        self.workers: list[IOCProcess] = []
        self.client = Client()
        self.cam = PREFIX + "cam1:"
        wait_for(lambda: self._get(self.cam + "PortName_RBV"), 30, what="the simulator")
        wait_for(lambda: self._get(COORDINATOR + "Workers_RBV") == 0, 30, what="the coordinator")
        c = self.client
        c.put(self.cam + "DataType", {"uint8": "UInt8", "uint16": "UInt16", "int16": "Int16",
                                      "uint32": "UInt32", "float32": "Float32"}[dtype])
        c.put(self.cam + "AcquireTime", 0.0)

    def _get(self, name):
        try:
            return self.client.get(name)
        except Exception:  # noqa: BLE001 - not up yet
            return None

    def set_workers(self, n: int) -> None:
        """Exactly n fresh workers, each receiving."""
        for worker in self.workers:
            worker.stop()
        self.workers = []
        env = dict(os.environ)
        env.update(self.env.client_env())
        for i in range(n):
            self.workers.append(IOCProcess(
                ["worker", "--coordinator", f"127.0.0.1:{self.port}", "--name", f"w{i}",
                 "--pva-queue", "100"], env, self.logs / f"w{i}-of-{n}.log"))
        c = self.client
        try:
            wait_for(lambda: c.get(COORDINATOR + "Workers_RBV") == n, 120, what=f"{n} workers")
            wait_for(lambda: c.get(COORDINATOR + "SourceConnected_RBV") == "Connected", 120,
                     what="the workers subscribed")
        except TimeoutError as exc:
            tails = "\n".join(f"--- {p.log_path.name}:\n{p.log()[-1500:]}" for p in self.workers)
            raise RuntimeError(f"{exc}; {c.get(COORDINATOR + 'WorkersMessage_RBV')}\n{tails}") from None
        c.put(self.cam + "ImageMode", "Single")

        def through() -> bool:
            c.put(self.cam + "Acquire", 1)
            time.sleep(0.3)
            return c.get(COORDINATOR + "UniqueId_RBV") == c.get(self.cam + "ArrayCounter_RBV")

        wait_for(through, 60, interval=0.5, what="frames reaching the workers")
        c.put(self.cam + "ImageMode", "Multiple")

    def close(self) -> None:
        self.client.close()
        for worker in self.workers:
            worker.stop()
        self.coordinator.stop()
        if self.mirror.poll() is None:
            self.mirror.send_signal(signal.SIGINT)
            try:
                self.mirror.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.mirror.pid, signal.SIGKILL)
        self._mirror_log.close()
        self.sim.stop()


def cpu_seconds(processes: dict) -> dict[str, float]:
    """User + system CPU seconds of each named process tree so far."""
    import psutil

    out = {}
    for name, spec in processes.items():
        total = 0.0
        for p in spec():
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.Error:
                pass
        out[name] = total
    return out


def _master_uids(path: Path) -> dict[str, list[int]]:
    """Each part's UniqueIds (by worker), as the master file lists them."""
    with h5py.File(path, "r") as f:
        parts = f["/entry/writer_parts"]
        return {parts[k].attrs["worker"].decode(): parts[k]["unique_ids"][()].tolist()
                for k in parts if k.startswith("part")}


def bench_workers(report: Report, work: Path, shape, dtype: str, counts, rates,
                  duration: float, queue: int, refine: int) -> dict:
    import psutil

    if mirror_command() is None:
        raise SystemExit("bench --workers needs pvapy-mirror-server (pip install pvapy)")
    rig = WorkersRig(work, shape, dtype, queue)
    c = rig.client
    frame_bytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    summary: dict = {"workers_fps": {}, "worker_cpu_ms_per_frame": {}}
    try:
        for n in counts:
            rig.set_workers(n)
            processes = {name: psutil.Process(pid) for name, pid in (
                ("sim", rig.sim.proc.pid), ("mirror", rig.mirror.pid),
                ("coordinator", rig.coordinator.proc.pid),
                *((f"w{i}", p.proc.pid) for i, p in enumerate(rig.workers)))}
            # a worker is its process and its receiver process
            trees = {name: (lambda p=p: [p, *p.children(recursive=True)])
                     for name, p in processes.items()}
            per_part: dict[str, float] = {}
            # what each process costs doing nothing (heartbeats, polls): not per frame
            idle0, t0 = cpu_seconds(trees), time.perf_counter()
            time.sleep(2.0)
            idle1, t1 = cpu_seconds(trees), time.perf_counter()
            idle = {k: (idle1[k] - idle0[k]) / (t1 - t0) for k in trees}

            def attempt(rate: float, n=n, trees=trees, per_part=per_part,
                        idle=idle) -> tuple[int, float]:
                out = work / f"workers-{n}"
                shutil.rmtree(out, ignore_errors=True)
                out.mkdir(parents=True)
                for suffix, value in (("FilePath", str(out)), ("FileName", "bench"),
                                      ("FileTemplate", "%s%s_%6.6d.h5"), ("FileWriteMode", "Stream"),
                                      ("NumCapture", 0), ("DroppedArrays", 0)):
                    c.put(COORDINATOR + suffix, value)
                c.start_capture(COORDINATOR)  # Capture is a busy record
                frames = max(int(rate * duration), 10)
                before, t_before = cpu_seconds(trees), time.perf_counter()
                first = c.get(rig.cam + "ArrayCounter_RBV") + 1
                c.put(rig.cam + "AcquirePeriod", 1.0 / rate)
                c.put(rig.cam + "NumImages", frames)
                start = time.perf_counter()
                c.put(rig.cam + "Acquire", 1, wait=True, timeout=60 + 3 * frames / rate)
                elapsed = time.perf_counter() - start
                last = c.get(rig.cam + "ArrayCounter_RBV")
                achieved = (last - first + 1) / elapsed if elapsed > 0 else rate
                try:
                    wait_for(lambda: c.get(COORDINATOR + "UniqueId_RBV") >= last, 10,
                             interval=0.1, what="the last frame at a worker")
                except TimeoutError:  # frames lost on the way: the master counts them
                    wait_until_quiet(lambda: (c.get(COORDINATOR + "UniqueId_RBV"),
                                              c.get(COORDINATOR + "NumCaptured_RBV")), 2.0, 60)
                time.sleep(1.5)  # the workers' last progress reports
                after = cpu_seconds(trees)
                window = time.perf_counter() - t_before
                busy = {k: max(after[k] - before[k] - idle[k] * window, 0.0) for k in trees}
                c.put(COORDINATOR + "Capture", 0, timeout=120)
                ids = set(range(first, last + 1))
                shares = _master_uids(Path(c.get(COORDINATOR + "FullFileName_RBV")))
                written = {u for share in shares.values() for u in share} & ids
                lost = len(ids) - len(written)
                parts = []
                for label, share in sorted(shares.items()):
                    name = label.split()[0]
                    ms = busy[name] / max(len(share), 1) * 1e3
                    per_part[name] = ms
                    parts.append(f"{name} {ms:.2f} ms/frame of its {len(share)}")
                others = ", ".join(f"{k} {busy[k] / max(len(ids), 1) * 1e3:.2f}"
                                   for k in ("sim", "mirror", "coordinator"))
                report.add(test=f"writer workers: {n} (sim -> mirror -> workers -> master)",
                           mode="Stream", size=f"{shape[1]}x{shape[0]}", dtype=dtype,
                           rate=achieved, unit="frames/s", lost=lost,
                           MB_s=achieved * frame_bytes / 1e6,
                           note=f"asked {rate}/s; in the master {len(written)}/{len(ids)}, "
                                f"missing {c.get(COORDINATOR + 'MissingFrames_RBV')}; CPU above "
                                f"idle: {'; '.join(parts)}; {others} ms/frame")
                shutil.rmtree(out, ignore_errors=True)
                return lost, achieved

            best = rate_search(rates, attempt, refine)
            summary["workers_fps"][n] = best
            summary["worker_cpu_ms_per_frame"][n] = dict(per_part)
        one = summary["workers_fps"].get(min(counts)) or 0.0
        summary["scaling_vs_fewest"] = {n: (fps / one if one else 0.0)
                                        for n, fps in summary["workers_fps"].items()}
        cpu_ms = [ms for parts in summary["worker_cpu_ms_per_frame"].values()
                  for ms in parts.values()]
        if cpu_ms:
            summary["frames_per_core_per_s"] = 1e3 / float(np.median(cpu_ms))
    finally:
        rig.close()
    return summary


def parse_counts(text: str) -> list[int]:
    counts = sorted({int(part) for part in text.split(",") if part.strip()})
    if not counts or counts[0] < 1:
        raise ValueError(f"--workers {text!r}: counts of 1 or more, e.g. 1,2,3")
    return counts
