"""``nexus-writer-ioc bench``: measure this machine, disk and layout in one run.

Everything is measured in the same run and reported against a baseline (a naive
h5py writer building the layout's tree for every image, as the NeXus manual's
script does) and against the limits of this machine (Channel Access alone, the
disk's sequential write rate).  ``--quick`` is what the test suite runs;
``--soak SECONDS`` streams for that long and reports RSS and open files.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import h5py
import numpy as np

from ..layout.model import Layout, default_layout, load_layout
from ..ndarray import NDArray, NDAttribute, NDAttrSource, NDAttrType, file_attribute_list
from ..plugin.file_saver import FileSaver
from ..writer.nexus import Compression, NexusWriter, WriterOptions
from ..writer.single_file import SingleFileWriter
from ._caenv import (
    CAEnvironment,
    Client,
    IOCProcess,
    tree_fds,
    tree_memory,
    wait_for,
    wait_until_quiet,
)

PREFIX = "BENCH:"
ROUNDS = 3
WRITER = PREFIX + "HDF1:"


KEYS = ["test", "mode", "size", "dtype", "compression", "rate", "unit", "ms_per_item", "MB_s",
        "lost", "ratio", "note"]


@dataclass
class Report:
    """The rows, printed as they are measured (to ``out``: stdout for the table, stderr
    when stdout carries JSON), and progress lines on stderr while a row is measured."""

    rows: list[dict] = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    out: TextIO | None = None
    _header_done: bool = False

    def add(self, **row) -> dict:
        self.rows.append(row)
        if self.out is not None:
            self._clear_progress()
            if not self._header_done:
                print(" | ".join(KEYS), file=self.out)
                print(" | ".join("---" for _ in KEYS), file=self.out)
                self._header_done = True
            print(self.line(row), file=self.out, flush=True)
        return row

    def progress(self, message: str) -> None:
        """What is being measured now (stderr; one overwritten line on a terminal)."""
        if self.out is None:
            return
        if sys.stderr.isatty():
            sys.stderr.write(f"\r\033[K... {message}")
        else:
            sys.stderr.write(f"... {message}\n")
        sys.stderr.flush()

    def _clear_progress(self) -> None:
        if sys.stderr.isatty():
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()

    @staticmethod
    def line(row: dict) -> str:
        return " | ".join(_fmt(row.get(k, "")) for k in KEYS)

    def table(self) -> str:
        lines = [" | ".join(KEYS), " | ".join("---" for _ in KEYS)]
        lines += [self.line(row) for row in self.rows]
        return "\n".join(lines)


def _fmt(value) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def _frame(uid: int, shape: tuple[int, ...], dtype: str) -> NDArray:
    data = (np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape) + uid) \
        .astype(dtype)
    attrs = {
        "ColorMode": NDAttribute("ColorMode", 0, NDAttrType.Int32, "Color mode", "Driver"),
        "AcquireTime": NDAttribute("AcquireTime", 0.01, NDAttrType.Float64, "exposure",
                                   "BENCH:cam1:AcquireTime", NDAttrSource.EPICS_PV),
        "CameraModel": NDAttribute("CameraModel", "bench", NDAttrType.String, "model",
                                   "MODEL", NDAttrSource.PARAM),
    }
    return NDArray(data=data, unique_id=uid, timestamp=float(uid), epics_ts_sec=uid,
                   epics_ts_nsec=0, attributes=attrs)


# -- baseline: what a user writes by hand -----------------------------------------------

def naive_write(path: Path, layout: Layout, frame: NDArray) -> None:
    """One file, tree built with h5py's high-level API, as in the NeXus manual's script."""
    with h5py.File(path, "w") as f:
        def build(h5group, group):
            for a in group.attributes:
                if a.source == "constant":
                    h5group.attrs[a.name] = a.value
            for d in group.datasets:
                if d.source == "detector":
                    ds = h5group.create_dataset(d.name, data=frame.data)
                    for a in d.attributes:
                        if a.source == "constant":
                            ds.attrs[a.name] = a.value
                elif d.source == "constant":
                    h5group.create_dataset(d.name, data=d.value.encode())
            for child in group.groups:
                build(h5group.create_group(child.name), child)

        build(f, layout.root)
        default = layout.ndattr_default_group()
        target = f[default.path] if default is not None else f
        for name, attribute in file_attribute_list(frame).items():
            if name not in target:
                value = attribute.value
                target.create_dataset(name, data=[value.encode() if isinstance(value, str)
                                                  else value])
        for group in layout.iter_groups():
            for link in group.hardlinks:
                if link.target in f:
                    f[link.path] = f[link.target]


def _files_per_second(write, frames, directory: Path, budget: float) -> tuple[float, int]:
    """Mean seconds per file and files written, within a time budget."""
    start = time.perf_counter()
    n = 0
    for frame in frames:
        write(directory / f"f_{frame.unique_id:06d}.h5", frame)
        n += 1
        if time.perf_counter() - start > budget:
            break
    return (time.perf_counter() - start) / n, n


def bench_writers(report: Report, layout: Layout, shape, dtype: str, compression: Compression,
                  duration: float, work: Path) -> dict:
    frames = [_frame(uid, shape, dtype) for uid in range(1, 2001)]
    size = f"{shape[1]}x{shape[0]}"
    nbytes = frames[0].nbytes
    writers = {"baseline (naive h5py)": lambda p, f: naive_write(p, layout, f)}
    single, options = SingleFileWriter(), WriterOptions(compression=compression)
    writers["nexus-writer-ioc"] = lambda p, f: single.write(p, layout, f, options, str(p))
    # Alternating rounds, each after a sync (write-back of the previous round's files would
    # otherwise land in the next one); the median counts.  Files are deleted only when the
    # bench ends: ext4 skips inodes freed in the last minute when it allocates new ones, so
    # creating files right after deleting thousands measures the deletion (up to 4x slower).
    timings: dict[str, list[tuple[float, int]]] = {name: [] for name in writers}
    for round_ in range(ROUNDS):
        for name, write in writers.items():
            report.progress(f"writer alone, {size} {dtype}: {name}, round {round_ + 1} of "
                            f"{ROUNDS}")
            d = Path(tempfile.mkdtemp(dir=work))
            os.sync()
            timings[name].append(_files_per_second(write, frames, d, duration / ROUNDS))
    results = {}
    for name, runs in timings.items():
        per_file = statistics.median(t for t, _ in runs)
        results[name] = per_file
        report.add(test=f"writer alone: {name}", mode="1 file/image", size=size, dtype=dtype,
                   compression=("None" if name.startswith("baseline") else compression.name),
                   rate=1 / per_file, unit="files/s", ms_per_item=per_file * 1e3,
                   MB_s=nbytes / per_file / 1e6,
                   note=f"median of {ROUNDS} rounds: {', '.join(f'{t * 1e3:.2f}' for t, _ in runs)}"
                        f" ms/file ({sum(n for _, n in runs)} files)")
    ratio = results["baseline (naive h5py)"] / results["nexus-writer-ioc"]
    report.rows[-1]["ratio"] = ratio
    # multi-frame (Stream/Capture) files
    report.progress(f"writer alone, {size} {dtype}: multi-frame file for {duration:.1f} s")
    d = Path(tempfile.mkdtemp(dir=work))
    options = WriterOptions(multi_frame=True, num_capture=0, compression=compression)
    start = time.perf_counter()
    writer = NexusWriter(d / "stream.h5", layout, frames[0], options)
    n = 0
    for frame in frames:
        writer.write(frame)
        n += 1
        if time.perf_counter() - start > duration:
            break
    writer.close()
    per_frame = (time.perf_counter() - start) / n
    report.add(test="writer alone: nexus-writer-ioc", mode="multi-frame", size=size, dtype=dtype,
               compression=compression.name, rate=1 / per_frame, unit="frames/s",
               ms_per_item=per_frame * 1e3, MB_s=nbytes / per_frame / 1e6, note=f"{n} frames")
    shutil.rmtree(d)
    return {"single_file_ratio": ratio}


def bench_disk(report: Report, work: Path, megabytes: int) -> float:
    """Sequential write with fsync: the disk's own rate (MB/s)."""
    report.progress(f"disk: writing {megabytes} MB + fsync")
    path = work / "disk.bin"
    chunk = os.urandom(2 * 2**20)
    start = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        for _ in range(max(1, megabytes // 2)):
            os.write(fd, chunk)
        os.fsync(fd)
    finally:
        os.close(fd)
    elapsed = time.perf_counter() - start
    path.unlink()
    rate = max(1, megabytes // 2) * len(chunk) / elapsed / 1e6
    report.add(test="disk: sequential write + fsync", rate=rate, unit="MB/s", MB_s=rate,
               note=f"{megabytes} MB")
    return rate


# -- Channel Access and end to end ------------------------------------------------------------

PVA_SOURCE = f"pva://{PREFIX}Pva1:Image"
# The detector's CA server: caproto's (``sim``, queues 200 updates per client) or EPICS
# base's RSRV (``sim --ca-server rsrv``: what a real areaDetector IOC does to a client).
SERVER_LABEL = {"caproto": "sim", "rsrv": "RSRV stand-in"}


class Rig:
    """Simulator (+ optionally the writer) on private CA/PVA ports.  ``transport`` is the
    writer's source ("ca": image1:, "pva": Pva1:Image); ``sim_args`` more sim options
    (--codec, --noise); ``ca_server`` the simulator's CA server (``SERVER_LABEL``)."""

    def __init__(self, work: Path, shape, dtype: str, writer: bool, queue: int = 20,
                 transport: str = "ca", sim_args: tuple[str, ...] = (),
                 ca_server: str = "caproto"):
        self.env = CAEnvironment(2)
        self.env.apply_to_this_process()
        self.work = work
        logs = work / "logs"
        logs.mkdir(exist_ok=True)
        self.sim = IOCProcess(["sim", "--ca-server", ca_server, "--prefix", PREFIX,
                               "--size", str(shape[1]), str(shape[0]),
                               "--max-size", str(shape[1]), str(shape[0]), *sim_args],
                              self.env.server_env(0), logs / f"sim-{ca_server}.log").wait_serving()
        self.writer = None
        source = PVA_SOURCE if transport == "pva" else PREFIX + "image1:"
        if writer:
            self.writer = IOCProcess(["serve", "--prefix", WRITER, "--source",
                                      source, "--queue-size", str(queue)],
                                     self.env.server_env(1), logs / "writer.log")
        self.client = Client()
        self.cam = PREFIX + "cam1:"
        wait_for(lambda: self._get(self.cam + "PortName_RBV"), 30, what="the simulator")
        self.client.put(self.cam + "DataType", {"uint8": "UInt8", "uint16": "UInt16",
                                               "int16": "Int16", "uint32": "UInt32",
                                               "float32": "Float32"}[dtype])
        self.client.put(self.cam + "ImageMode", "Multiple")
        self.client.put(self.cam + "AcquireTime", 0.0)
        if writer:
            wait_for(lambda: self.client.get(WRITER + "SourceConnected_RBV") == "Connected", 30,
                     what="the writer")

    def _get(self, name):
        try:
            return self.client.get(name)
        except Exception:  # noqa: BLE001 - not up yet
            return None

    def acquire(self, n: int, rate: float) -> tuple[list[int], float]:
        """Acquire ``n`` frames at ``rate``; the ids made and the rate achieved (the
        simulator falls behind its period when the machine is saturated)."""
        first = self.client.get(self.cam + "ArrayCounter_RBV") + 1
        self.client.put(self.cam + "AcquirePeriod", 1.0 / rate)
        self.client.put(self.cam + "NumImages", n)
        start = time.perf_counter()
        self.client.put(self.cam + "Acquire", 1, wait=True, timeout=60 + 2 * n / rate)
        elapsed = time.perf_counter() - start
        ids = list(range(first, self.client.get(self.cam + "ArrayCounter_RBV") + 1))
        # the first frame comes one period after the start
        return ids, len(ids) / elapsed if elapsed > 0 else rate

    def close(self) -> None:
        self.client.close()
        if self.writer is not None:
            self.writer.stop()
        self.sim.stop()
        self.env.close()


class CPUMeter:
    """CPU time of named processes over a window, per frame: where the time goes; and of
    the threads of one of them (``threads_of``), by the names the writer gives them."""

    def __init__(self, threads_of: str = "", **processes):
        self.processes = processes  # name -> psutil.Process, or a callable giving a list
        self.threads_of = threads_of
        self._start: dict[str, float] = {}
        self._threads: dict[str, float] = {}
        self._preempted = 0

    def _seconds(self) -> dict[str, float]:
        import psutil

        out = {}
        for name, spec in self.processes.items():
            total = 0.0
            for p in (spec() if callable(spec) else [spec]):
                try:
                    t = p.cpu_times()
                    total += t.user + t.system
                except psutil.Error:
                    pass
            out[name] = total
        return out

    def _thread_seconds(self) -> tuple[dict[str, float], int]:
        """CPU seconds of ``threads_of``'s threads by name, and how often its threads were
        preempted so far (Linux: ``/proc/<pid>/task``)."""
        import psutil

        process = self.processes.get(self.threads_of)
        out: dict[str, float] = {}
        preempted = 0
        if process is None:
            return out, preempted
        try:
            threads = process.threads()
        except psutil.Error:
            return out, preempted
        for t in threads:
            task = Path(f"/proc/{process.pid}/task/{t.id}")
            try:  # (the writer names its threads, see ioc/_thread_names.py)
                name = "main" if t.id == process.pid else (task / "comm").read_text().strip()
                for line in (task / "status").read_text().splitlines():
                    if line.startswith("nonvoluntary_ctxt_switches:"):
                        preempted += int(line.split()[1])
            except (OSError, ValueError):
                continue
            out[name] = out.get(name, 0.0) + t.user_time + t.system_time
        return out, preempted

    def start(self) -> None:
        self._start = self._seconds()
        self._threads, self._preempted = self._thread_seconds()

    def per_frame(self, frames: int) -> str:
        end = self._seconds()
        text = ", ".join(f"{name} {(end[name] - self._start[name]) / max(frames, 1) * 1e3:.2f}"
                         for name in end) + " CPU ms/frame"
        seconds, preempted = self._thread_seconds()
        threads = {name: (value - self._threads.get(name, 0.0)) / max(frames, 1) * 1e3
                   for name, value in seconds.items()}
        busy = sorted(((ms, name) for name, ms in threads.items() if ms >= 0.01), reverse=True)
        if busy:
            # preempted: how often the other processes' threads took a core from the
            # writer's (each time its Python resumes from cold caches)
            text += f" ({self.threads_of}: " + ", ".join(f"{name} {ms:.2f}" for ms, name in busy) \
                + f"; preempted {max(preempted - self._preempted, 0) / max(frames, 1):.1f}/frame)"
        return text


def rate_search(rates, attempt, refine: int = 0) -> float:
    """The highest achieved rate with zero loss: ``attempt(rate)`` -> (lost, achieved)
    for each rate of ``rates`` until one loses frames, then ``refine`` bisections between
    the last that did not and the first that did.  Stops early when the simulator cannot
    reach the rate asked (the machine is saturated)."""
    best, good, bad = 0.0, 0.0, None
    for rate in rates:
        lost, achieved = attempt(rate)
        if lost:
            bad = rate
            break
        best, good = max(best, achieved), rate
        if achieved < 0.9 * rate:
            return best
    for _ in range(refine if bad is not None else 0):
        rate = round((good + bad) / 2)
        if rate in (good, bad):
            break
        lost, achieved = attempt(rate)
        if lost:
            bad = rate
        else:
            best, good = max(best, achieved), rate
    return best


def ca_ceiling(report: Report, work: Path, shape, dtype, rates, duration,
               refine: int = 0, transport: str = "ca", ca_server: str = "caproto") -> float:
    """Highest rate at which our receive path (the IOC's: a receiver process, frames in
    shared memory) gets every frame, with its own pixels, over ``transport`` ("ca" or
    "pva"); nothing is written.  Over PVA this is the PVA ceiling the end-to-end rows are
    measured against."""
    from ..sources.receiver import ProcessImageSource

    rig = Rig(work, shape, dtype, writer=False, transport=transport, ca_server=ca_server)
    received: list[int] = []
    mislabelled: list[int] = []

    def on_frame(frame) -> None:
        if not isinstance(frame, int):  # an id alone: received, but its pixels were not kept
            received.append(frame.unique_id)
            if frame.data.flat[0] != _first_pixel(frame.unique_id, dtype):
                mislabelled.append(frame.unique_id)

    source = ProcessImageSource(PVA_SOURCE if transport == "pva" else PREFIX + "image1:",
                                on_frame, queue_size=100)
    best = 0.0
    try:
        import psutil

        source.start()
        wait_for(lambda: source.connected, 30, what=f"{transport} source")
        cpu = CPUMeter(sim=psutil.Process(rig.sim.proc.pid),
                       receiver=psutil.Process(source.process.pid))
        def attempt(rate: float) -> tuple[int, float]:
            report.progress(f"{transport.upper()} transport alone: {rate:g} frames/s for "
                            f"{duration:g} s "
                            "(steps up until frames are lost, then bisects)")
            received.clear()
            mislabelled.clear()
            cpu.start()
            ids, achieved = rig.acquire(max(int(rate * duration), 5), rate)
            wait_until_quiet(lambda: len(received))
            lost = len(set(ids) - set(received)) + len(mislabelled)
            server = SERVER_LABEL[ca_server] if transport == "ca" else "sim"
            report.add(test=f"{transport.upper()} transport alone ({server} -> "
                            f"{transport.upper()} client)", size=f"{shape[1]}x{shape[0]}",
                       dtype=dtype, rate=achieved, unit="frames/s", lost=lost,
                       note=f"asked {rate}/s; received {len(received)}/{len(ids)}"
                            f"{_mislabelled_note(mislabelled)}; {cpu.per_frame(len(ids))}")
            return lost, achieved

        best = rate_search(rates, attempt, refine)
    finally:
        source.stop()
        rig.close()
    return best


def end_to_end(report: Report, work: Path, shape, dtype, rates, duration, mode: str,
               queue: int = 20, refine: int = 0, transport: str = "ca",
               codec: str = "", ca_server: str = "caproto") -> tuple[float, int]:
    """Highest rate with zero lost frames (every frame in the files, with its own pixels),
    sim -> writer IOC -> files; and peak RSS.  ``codec``: the simulator sends
    NDPluginCodec-compressed frames with realistic noise (PVA), written as they come (the
    writer's Compression is the codec)."""
    import psutil

    sim_args = ("--codec", codec, "--noise", "100") if codec else ()
    rig = Rig(work, shape, dtype, writer=True, queue=queue, transport=transport,
              sim_args=sim_args, ca_server=ca_server)
    out = work / f"e2e-{mode}-{transport}-{ca_server}"
    best, peak = 0.0, 0
    try:
        c = rig.client
        process = psutil.Process(rig.writer.proc.pid)
        cpu = CPUMeter(sim=psutil.Process(rig.sim.proc.pid),
                       receiver=lambda: process.children(recursive=True), ioc=process,
                       threads_of="ioc")
        for suffix, value in (("FilePath", str(out)), ("FileName", "bench"),
                              ("FileTemplate", "%s%s_%6.6d.h5"), ("CreateDirectory", -1),
                              ("AutoIncrement", "Yes"), ("EnableCallbacks", "Enable"),
                              ("Compression", {"": "None", "lz4": "LZ4", "bslz4": "BSLZ4",
                                               "blosc": "Blosc"}[codec])):
            c.put(WRITER + suffix, value)
        label = "end to end" if transport == "ca" else "end to end over PVA"
        if ca_server != "caproto" and transport == "ca":
            label += f" over {SERVER_LABEL[ca_server]}"
        label += f", {codec} frames" if codec else ""

        def attempt(rate: float) -> tuple[int, float]:
            nonlocal peak
            report.progress(f"{label} ({mode}): {rate:g} frames/s for {duration:g} s "
                            "(steps up until frames are lost, then bisects)")
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir(parents=True)
            c.put(WRITER + "FilePath", str(out))
            c.put(WRITER + "DroppedArrays", 0)
            skipped_before = c.get(WRITER + "SourceSkipped_RBV")
            n = max(int(rate * duration), 5)
            if mode == "single":
                c.put(WRITER + "FileWriteMode", "Single")
                c.put(WRITER + "AutoSave", "Yes")
            else:
                c.put(WRITER + "FileWriteMode", "Stream")
                c.put(WRITER + "NumCapture", 0)
                c.put(WRITER + "LazyOpen", "Yes")
                c.start_capture(WRITER)  # busy: completes at the end
            base_rss = tree_memory(process)
            peaks = [base_rss]
            done = threading.Event()
            sampler = threading.Thread(target=_sample_rss, args=(process, peaks, done),
                                       daemon=True)
            sampler.start()
            cpu.start()
            ids, achieved = rig.acquire(n, rate)
            wait_until_quiet(lambda: (c.get(WRITER + "UniqueId_RBV"), c.get(WRITER + "ArrayCounter_RBV"),
                             c.get(WRITER + "NumQueuedArrays")))
            wait_for(lambda: c.get(WRITER + "NumQueuedArrays") == 0, 120, what="queue drained")
            cpu_note = cpu.per_frame(len(ids))
            if mode == "single":
                c.put(WRITER + "AutoSave", "No")
            else:
                c.put(WRITER + "Capture", 0)
            done.set()
            sampler.join()
            # (noisy codec frames are not the plain pattern: their pixels are not checked)
            written, mislabelled = _written_ids(out, mode, dtype, check_pixels=not codec)
            lost = len(set(ids) - set(written)) + len(mislabelled)
            peak = max(peak, max(peaks) - base_rss)
            frame_bytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
            ratio = None
            if codec:  # the frames' own compression: what went over the wire and to disk
                ratio = frame_bytes / max(c.get(WRITER + "CompressedSize_RBV"), 1)
            report.add(test=f"{label} ({mode})", mode="Single+AutoSave" if mode == "single"
                       else "Stream", size=f"{shape[1]}x{shape[0]}", dtype=dtype, rate=achieved,
                       unit="frames/s", lost=lost, compression=codec or "None",
                       **({"ratio": ratio} if ratio is not None else {}),
                       MB_s=achieved * int(np.prod(shape)) * np.dtype(dtype).itemsize / 1e6,
                       note=f"asked {rate}/s; written {len(written)}/{len(ids)}, dropped "
                            f"{c.get(WRITER + 'DroppedArrays_RBV')}, source-skipped "
                            f"{c.get(WRITER + 'SourceSkipped_RBV') - skipped_before}"
                            f"{_mislabelled_note(mislabelled)}, "
                            f"memory +{(max(peaks) - base_rss) / 2**20:.0f} MiB; {cpu_note}")
            return lost, achieved

        best = rate_search(rates, attempt, refine)
    finally:
        rig.close()
        shutil.rmtree(out, ignore_errors=True)
    return best, peak


def bench_pva(report: Report, work: Path, shape, dtype, rates, duration, queue: int,
              refine: int, codec: str) -> dict:
    """The pvAccess rows: the PVA ceiling (sim -> receiver process, nothing written; before,
    between and after the others), end to end Single+AutoSave and Stream against it, and
    Stream of NDPluginCodec-compressed frames (with noise, so that the ratio is realistic)
    written as they come."""
    # The machine's speed drifts (a shared host: ±15-25 % within minutes, measured), and
    # the ceiling is bound by the simulator's CPU: each end-to-end row is compared with the
    # mean of the ceilings measured just before and just after it, every one listed.
    # (--quick: one ceiling, enough to show the rows work.)
    def ceiling_now() -> float:
        return ca_ceiling(report, work, shape, dtype, rates, duration, refine, transport="pva")

    first = ceiling_now()
    single, peak1 = end_to_end(report, work, shape, dtype, rates, duration, "single", queue,
                               refine, transport="pva")
    middle = ceiling_now() if refine else first
    stream, peak2 = end_to_end(report, work, shape, dtype, rates, duration, "stream", queue,
                               refine, transport="pva")
    last = ceiling_now() if refine else first
    single_ceiling, stream_ceiling = (first + middle) / 2, (middle + last) / 2
    result = {"pva_ceilings_fps": [first, middle, last],
              "pva_ceiling_fps": (first + middle + last) / 3,
              "pva_single_ceiling_fps": single_ceiling, "pva_stream_ceiling_fps": stream_ceiling,
              "pva_single_autosave_fps": single,
              "pva_stream_fps": stream,
              "pva_single_vs_ceiling": single / single_ceiling if single_ceiling else 0.0,
              "pva_stream_vs_ceiling": stream / stream_ceiling if stream_ceiling else 0.0,
              "pva_peak_rss_over_base_MiB": max(peak1, peak2) / 2**20}
    if codec != "none":
        compressed, _ = end_to_end(report, work, shape, dtype, rates, duration, "stream", queue,
                                   refine, transport="pva", codec=codec)
        ratios = [row["ratio"] for row in report.rows if row.get("compression") == codec
                  and "ratio" in row]
        result.update({f"pva_{codec}_stream_fps": compressed,
                       f"pva_{codec}_ratio": ratios[-1] if ratios else 0.0})
    # issue 12's acceptance (on a quiet machine): Stream >= 0.9, Single >= 0.8 of the ceiling
    result["pva_acceptance"] = (result["pva_stream_vs_ceiling"] >= 0.9
                                and result["pva_single_vs_ceiling"] >= 0.8)
    return result


def _sample_rss(process, peaks: list[int], done) -> None:
    while not done.is_set():
        try:
            peaks.append(tree_memory(process))
        except Exception:  # noqa: BLE001 - the process is gone
            return
        time.sleep(0.05)


def _first_pixel(uid: int, dtype: str):
    """Pixel (0, 0) of the simulator's frame ``uid``: the id, wrapped to the type."""
    dt = np.dtype(dtype)
    if dt.kind == "f":
        return dt.type(uid)
    return np.array(uid % (1 << (8 * dt.itemsize)), dtype=f"u{dt.itemsize}").view(dt)[()]


def _mislabelled_note(uids: list[int]) -> str:
    if not uids:
        return ""
    return f", MISLABELLED {len(uids)} (pixels of another frame, e.g. {uids[0]})"


def _written_ids(directory: Path, mode: str, dtype: str, check_pixels: bool = True
                 ) -> tuple[list[int], list[int]]:
    """The UniqueIds in the files, and those whose pixels are not that frame's."""
    ids: list[int] = []
    mislabelled: list[int] = []
    for path in sorted(directory.glob("*.h5")):
        with h5py.File(path, "r") as f:
            uids = [int(i) for i in f["/entry/instrument/NDAttributes/NDArrayUniqueId"][()]]
            ids.extend(uids)
            if not check_pixels:
                continue
            data = f["/entry/data/data"]
            firsts = data[0, 0] if data.ndim == 2 else data[:, 0, 0]
            for uid, first in zip(uids, np.atleast_1d(firsts), strict=True):
                if first != _first_pixel(uid, dtype):
                    mislabelled.append(uid)
    return ids, mislabelled


def soak(report: Report, work: Path, seconds: float, shape, dtype: str, rate: float,
         frames_per_file: int = 500, flood: float = 0.0, flood_rate: float = 1000.0) -> dict:
    """Stream files of ``frames_per_file`` frames for ``seconds``, with one refused put per
    second and, if ``flood``, ``flood_rate`` refused puts/s for ``flood`` seconds in the
    middle (from another process); reads are timed throughout from another client.
    Reports frames written or counted, read latency outside/inside/after the flood, and
    memory and open files at start and end."""
    import psutil

    from ._load import Flood, ReadProbe, RefusedPuts

    rig = Rig(work, shape, dtype, writer=True)
    out = work / "soak"
    out.mkdir()
    c = rig.client
    process = psutil.Process(rig.writer.proc.pid)
    for suffix, value in (("FilePath", str(out)), ("FileName", "soak"),
                          ("FileTemplate", "%s%s_%6.6d.h5"), ("FileWriteMode", "Stream"),
                          ("NumCapture", frames_per_file), ("LazyOpen", "Yes"),
                          ("EnableCallbacks", "Enable")):
        c.put(WRITER + suffix, value)
    c.put(rig.cam + "ImageMode", "Continuous")
    c.put(rig.cam + "AcquirePeriod", 1.0 / rate)
    first_uid = c.get(rig.cam + "ArrayCounter_RBV") + 1
    skipped_before = c.get(WRITER + "SourceSkipped_RBV")
    log_before = len(rig.writer.log())
    start = {"rss": tree_memory(process), "fds": tree_fds(process)}
    samples = []
    written = 0
    files = 0
    probe = ReadProbe(WRITER + "ArrayCounter_RBV")
    refuser = RefusedPuts(WRITER + "ZLevel", 99)  # "ZLevel must be 0-9"
    flooder = None
    flood_at = (seconds - flood) / 2 if flood else None
    try:
        probe.start()
        refuser.start()
        c.put(rig.cam + "Acquire", 1, wait=False)
        t0 = time.monotonic()
        while time.monotonic() - t0 < seconds:
            if flooder is None and flood_at is not None and time.monotonic() - t0 >= flood_at:
                flooder = Flood(WRITER + "ZLevel", 99, flood_rate, flood, rig.env.server_env(0))
            if c.get(WRITER + "Capture_RBV") == "Done":
                for path in sorted(out.glob("soak_*.h5")):
                    with h5py.File(path, "r") as f:
                        written += len(f["/entry/instrument/NDAttributes/NDArrayUniqueId"])
                    path.unlink()
                    files += 1
                c.start_capture(WRITER)  # busy: completes at the end
            samples.append((time.monotonic() - t0, tree_memory(process), tree_fds(process)))
            if len(samples) % 20 == 1:  # every ~10 s
                report.progress(f"soak: {samples[-1][0]:.0f} of {seconds:.0f} s, {files} files "
                                f"done, memory {samples[-1][1] / 2**20:.0f} MiB")
            time.sleep(0.5)
        if flooder is not None:
            flooder.wait()
        c.put(rig.cam + "Acquire", 0)
        time.sleep(1.0)
        c.put(WRITER + "Capture", 0)
        refuser.stop()
        probe.stop()
        last_uid = c.get(rig.cam + "ArrayCounter_RBV")
        for path in sorted(out.glob("soak_*.h5")):
            with h5py.File(path, "r") as f:
                written += len(f["/entry/instrument/NDAttributes/NDArrayUniqueId"])
            files += 1
        time.sleep(2 * FileSaver.IDLE_AFTER)  # idle: write-behind lets its held files go
        end = {"rss": tree_memory(process), "fds": tree_fds(process)}
        produced = last_uid - first_uid + 1
        # frames produced while no capture was armed (between files) are not lost
        dropped = c.get(WRITER + "DroppedArrays_RBV")
        skipped = c.get(WRITER + "SourceSkipped_RBV") - skipped_before
        log = rig.writer.log()[log_before:]
        reads = _read_windows(probe, t0, flooder)
        memory = _memory_windows(samples, t0, flooder)
        result = {"seconds": seconds, "rate": rate, "produced": produced, "written": written,
                  "files": files, "dropped": dropped, "ca_skipped": skipped,
                  "between_files": produced - written - dropped - skipped,
                  "rss_start_MiB": start["rss"] / 2**20, "rss_end_MiB": end["rss"] / 2**20,
                  "rss_max_MiB": max(s[1] for s in samples) / 2**20 if samples else 0,
                  "fds_start": start["fds"], "fds_end": end["fds"],
                  "fds_max": max(s[2] for s in samples) if samples else 0,
                  "refused_puts": refuser.sent + (flooder.sent if flooder else 0),
                  "flood_seconds": flood, "flood_sent": flooder.sent if flooder else 0,
                  "refusal_log_lines": sum("refused put" in line for line in log.splitlines()),
                  "tracebacks_in_log": log.count("Traceback"), "reads": reads,
                  "memory_MiB": memory}
        report.add(test=f"soak (Stream, files of {frames_per_file} frames)",
                   size=f"{shape[1]}x{shape[0]}", dtype=dtype, rate=rate, unit="frames/s",
                   lost=dropped,
                   note=f"{seconds:.0f}s: produced {produced}, written {written} in {files} "
                        f"files, CA-skipped {skipped}, between files "
                        f"{result['between_files']}; memory (PSS, IOC + receiver) "
                        f"{result['rss_start_MiB']:.0f}->"
                        f"{result['rss_end_MiB']:.0f} MiB (max {result['rss_max_MiB']:.0f}); "
                        f"FDs {start['fds']}->{end['fds']} (max {result['fds_max']}); memory "
                        + ", ".join(f"{k} {v:.0f}" for k, v in memory.items()) + " MiB")
        for window, stats in reads.items():
            report.add(test=f"soak: reads {window}", unit="s", rate=stats.get("max_s") or 0.0,
                       note=_read_note(stats))
        report.add(test="soak: refused puts", rate=result["refused_puts"], unit="puts",
                   note=f"1/s all along + flood {result['flood_sent']} in {flood:.0f} s; "
                        f"{result['refusal_log_lines']} log lines (rate-limited), "
                        f"{result['tracebacks_in_log']} tracebacks")
        return result
    finally:
        rig.close()


def _read_windows(probe, t0: float, flooder) -> dict:
    """Read latency before, during, in the 5 s after, and after the flood (or all along)."""
    end = float("inf")
    if flooder is None:
        return {"all along": probe.window(t0, end)}
    return {"before the flood": probe.window(t0, flooder.start),
            "during the flood": probe.window(flooder.start, flooder.end),
            "0-5 s after the flood": probe.window(flooder.end, flooder.end + 5),
            "after the flood": probe.window(flooder.end + 5, end)}


def _memory_windows(samples, t0: float, flooder) -> dict:
    """Largest PSS (MiB) before, during and after the flood: a flood must not leave memory
    behind."""
    def peak(start, end):
        values = [rss for t, rss, _ in samples if start <= t0 + t < end]
        return max(values) / 2**20 if values else 0.0

    if flooder is None:
        return {"max": peak(t0, float("inf"))}
    return {"max before the flood": peak(t0, flooder.start),
            "max during": peak(flooder.start, flooder.end),
            "max after": peak(flooder.end, float("inf"))}


def _read_note(stats: dict) -> str:
    if not stats.get("reads"):
        return "no reads"
    def f(x):
        return "-" if x is None else f"{x * 1e3:.0f} ms"
    return (f"{stats['reads']} reads: median {f(stats['median_s'])}, p99 {f(stats['p99_s'])}, "
            f"max {f(stats['max_s'])}, {stats['timeouts']} unanswered")


def bench_attribute_overhead(report: Report, work: Path) -> dict:
    """File size an NDAttribute adds to a multi-frame file: per attribute per file, for
    numbers and strings, few and many frames, NumCapture known or not (0)."""
    layout = default_layout()
    results = {}
    shape = (8, 8)
    for kind, dtype, value in (("float64", NDAttrType.Float64, 1.5),
                               ("string", NDAttrType.String, "a value")):
        for frames, num_capture in ((10, 0), (1000, 0), (1000, 1000)):
            sizes = []
            for count in (0, 50):
                attrs = {f"A{i}": NDAttribute(f"A{i}", value, dtype, "", "", NDAttrSource.PARAM)
                         for i in range(count)}
                path = work / f"attr_{kind}_{frames}_{num_capture}_{count}.h5"
                first = NDArray(data=np.zeros(shape, "u2"), unique_id=1, attributes=attrs)
                writer = NexusWriter(path, layout, first, WriterOptions(
                    multi_frame=True, num_capture=num_capture))
                for uid in range(1, frames + 1):
                    writer.write(NDArray(data=np.zeros(shape, "u2"), unique_id=uid,
                                         attributes=attrs))
                writer.close()
                sizes.append(path.stat().st_size)
                path.unlink()
            per_attribute = (sizes[1] - sizes[0]) / 50
            payload = frames * (256 if dtype is NDAttrType.String else 8)
            results[f"{kind}_{frames}_frames_numcapture_{num_capture}"] = per_attribute
            report.add(test="NDAttribute dataset size, per attribute per file",
                       mode=f"{frames} frames, NumCapture {num_capture}", dtype=kind,
                       rate=per_attribute / 1e3, unit="kB",
                       note=f"values {payload / 1e3:.1f} kB, overhead "
                            f"{(per_attribute - payload) / 1e3:.1f} kB; ADCore's chunk of "
                            f"{num_capture or 16384} values: "
                            f"{(num_capture or 16384) * payload / frames / 1e3:.0f} kB")
    return results


def bench_main(args: argparse.Namespace) -> int:
    import logging

    # frames the in-process CA source misses are counted in the report, not logged one by one
    logging.getLogger("ioc.sources").setLevel(logging.ERROR)
    if args.out is not None and not Path(args.out).is_dir():
        try:
            Path(args.out).mkdir(parents=True)
        except OSError as exc:
            print(f"bench: cannot create --out {args.out}: {exc}", file=sys.stderr)
            return 2
    work = Path(tempfile.mkdtemp(prefix="nexus-writer-bench-", dir=args.out))
    # rows go where the user reads them as they are measured; with --json, stdout is the
    # JSON document only, so the rows are echoed on stderr
    report = Report(out=sys.stderr if args.json else sys.stdout)
    layout = load_layout(args.layout) if args.layout else default_layout()
    x, y = args.size
    shape = (y, x)
    compression = Compression[args.compression.upper()]
    try:
        if getattr(args, "workers", ""):  # writer workers: their own rig (bench_workers)
            from .bench_workers import bench_workers, parse_counts

            report.summary.update(bench_workers(
                report, work, shape, args.dtype, parse_counts(args.workers),
                [20] if args.quick else [50, 100, 150, 200, 300, 400, 500, 600, 800, 1000],
                1.0 if args.quick else args.duration, args.queue_size, 0 if args.quick else 2))
        elif args.soak:
            report.summary["soak"] = soak(report, work, args.soak, (256, 256), "uint16",
                                          args.soak_rate, flood=args.soak_flood,
                                          flood_rate=args.soak_flood_rate)
        else:
            duration = 0.5 if args.quick else args.duration
            small = (64, 64) if args.quick else (256, 256)
            report.summary.update(bench_writers(report, layout, small, args.dtype, compression,
                                                duration, work))
            if not args.quick:
                bench_writers(report, layout, shape, args.dtype, compression, duration, work)
            report.summary["attribute_bytes_per_file"] = bench_attribute_overhead(report, work)
            disk = bench_disk(report, work, 64 if args.quick else 1024)
            frame_mb = x * y * np.dtype(args.dtype).itemsize / 1e6
            rates = [20, 50] if args.quick else [50, 100, 150, 200, 250, 300, 350, 400, 450, 500, 600,
                                                   700, 800, 1000]
            e2e_duration = 1.0 if args.quick else args.duration
            refine = 0 if args.quick else 2  # bisections after the first rate that loses
            queue = args.queue_size
            rss_budget = queue * x * y * np.dtype(args.dtype).itemsize + 64 * 2**20
            if args.transport in ("pva", "both"):
                # --quick (the test suite): one rate each, enough to show the rows work
                report.summary.update(bench_pva(report, work, shape, args.dtype,
                                                rates[:1] if args.quick else rates,
                                                e2e_duration, queue, refine, args.codec))
            if args.transport == "pva":
                return _print(args, report)
            ceiling = ca_ceiling(report, work, shape, args.dtype, rates, e2e_duration, refine)
            limit = min(ceiling, disk / frame_mb)
            single, peak1 = end_to_end(report, work, shape, args.dtype, rates, e2e_duration,
                                       "single", queue, refine)
            stream, peak2 = end_to_end(report, work, shape, args.dtype, rates, e2e_duration,
                                       "stream", queue, refine)
            if args.rsrv:
                # what a real areaDetector IOC's CA server (RSRV) does to the same path
                rsrv_rates = rates[:1] if args.quick else rates
                rsrv = ca_ceiling(report, work, shape, args.dtype, rsrv_rates, e2e_duration,
                                  refine, ca_server="rsrv")
                rsrv_single, peak3 = end_to_end(report, work, shape, args.dtype, rsrv_rates,
                                                e2e_duration, "single", queue, refine,
                                                ca_server="rsrv")
                rsrv_stream, peak4 = end_to_end(report, work, shape, args.dtype, rsrv_rates,
                                                e2e_duration, "stream", queue, refine,
                                                ca_server="rsrv")
                peak1 = max(peak1, peak3, peak4)
                report.summary.update({
                    "rsrv_ca_ceiling_fps": rsrv, "rsrv_single_autosave_fps": rsrv_single,
                    "rsrv_stream_fps": rsrv_stream,
                    "rsrv_single_vs_ceiling": rsrv_single / rsrv if rsrv else 0.0,
                    "rsrv_stream_vs_ceiling": rsrv_stream / rsrv if rsrv else 0.0,
                })
            report.summary.update({
                "disk_MB_s": disk, "ca_ceiling_fps": ceiling, "limit_fps": limit,
                "single_autosave_fps": single, "stream_fps": stream,
                "single_vs_limit": single / limit if limit else 0.0,
                "stream_vs_limit": stream / limit if limit else 0.0,
                "peak_rss_over_base_MiB": max(peak1, peak2) / 2**20,
                "rss_budget_MiB": rss_budget / 2**20, "queue_size": queue,
            })
    finally:
        report._clear_progress()
        shutil.rmtree(work, ignore_errors=True)
    return _print(args, report)


def _print(args: argparse.Namespace, report: Report) -> int:
    if args.json:
        print(json.dumps({"rows": report.rows, "summary": report.summary}, indent=2,
                         default=float))
    else:
        print()
        for key, value in report.summary.items():
            print(f"{key}: {_fmt(value) if not isinstance(value, dict) else value}")
    return 0


__all__ = ["bench_main", "naive_write"]
