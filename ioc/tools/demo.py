"""``nexus-writer-ioc demo``: a simulated detector feeding the writer, files on disk.

Starts the simulator and the writer as two IOCs on private CA ports (nothing
else on the machine is disturbed), configures the writer over Channel Access
the way an operator would, acquires N images (one NeXus file each), prints
the files and the tree of the first, and stops both IOCs.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from pathlib import Path

from .._resources import layout_file
from ..plugin.pvtable import BY_SUFFIX, Kind
from ._caenv import CAEnvironment, Client, IOCProcess, wait_for

PREFIX = "DEMO:"
WRITER = PREFIX + "HDF1:"


def print_tree(path: Path) -> None:
    """The file's groups, datasets and attributes.  A dataset reached by two paths (a
    hard link, e.g. /entry/data/data and /entry/instrument/detector/data) is shown at
    both: h5py's ``visititems`` would show only the first."""
    import h5py

    with h5py.File(path, "r") as f:
        print(f"{path.name}")
        _print_attributes(f, "  ")
        _print_group(f, "", {})


def _print_group(group, indent: str, seen: dict) -> None:
    import h5py

    for name in group:
        obj = group.get(name)
        if obj is None:  # a dangling soft or external link
            print(f"{indent}{name}  -> {group.get(name, getlink=True)!r}")
            continue
        if obj.id in seen:
            print(f"{indent}{name}  = {seen[obj.id]} (hard link: the same "
                  f"{'dataset' if isinstance(obj, h5py.Dataset) else 'group'})")
            continue
        seen[obj.id] = obj.name
        if isinstance(obj, h5py.Dataset):
            print(f"{indent}{name}  {obj.dtype}{list(obj.shape)}{_small_value(obj)}")
            _print_attributes(obj, indent + "  ")
        else:
            cls = _text(obj.attrs.get("NX_class", ""))
            print(f"{indent}{name}:{cls}" if cls else f"{indent}{name}")
            _print_attributes(obj, indent + "  ")
            _print_group(obj, indent + "  ", seen)


def _small_value(dataset) -> str:
    import numpy as np

    if dataset.size > 4 or dataset.dtype.kind == "V":
        return ""
    data = dataset[()]
    return " = " + (repr(data.tolist()) if isinstance(data, np.ndarray) else repr(data))


def _print_attributes(obj, indent: str) -> None:
    for key, value in obj.attrs.items():
        if key == "NX_class":
            continue
        value = value.tolist() if hasattr(value, "tolist") else value
        print(f"{indent}@{key} = {_text(value)!r}")


def _text(value):
    return value.decode() if isinstance(value, bytes) else value


def _caput_hint(pv: str, value) -> str:
    """The command an operator would type (README: ``caput -c``, ``-S`` for CHAR PVs)."""
    suffix = pv.split(":")[-1]
    spec = BY_SUFFIX.get(suffix)
    string = spec is not None and spec.kind is Kind.CHAR
    return f"caput -c{' -S' if string else ''} {pv} {shlex.quote(str(value))}"


def run_files(out: Path, name: str, first: int, count: int, since: float) -> list[Path]:
    """The files this run wrote: FileNumber first..first+count-1 by the demo's template,
    each modified after ``since`` (a previous run's files are not this run's)."""
    files = [out / f"{name}_{n:03d}.h5" for n in range(first, first + count)]
    return [path for path in files if path.is_file() and path.stat().st_mtime >= since]


def demo_main(args: argparse.Namespace) -> int:
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    env = CAEnvironment(2)
    env.apply_to_this_process()
    logs = Path(tempfile.mkdtemp(prefix="nexus-writer-ioc-demo-"))
    size_x, size_y = args.size
    print(f"Starting the simulated detector ({PREFIX}cam1:, {PREFIX}image1:) and the writer "
          f"({WRITER}) on private CA ports {env.ports} (loopback; logs in {logs})")
    sim = IOCProcess(["sim", "--prefix", PREFIX, "--size", str(size_x), str(size_y)],
                     env.server_env(0), logs / "sim.log").wait_serving()
    writer = IOCProcess(["serve", "--prefix", WRITER, "--source", PREFIX + "image1:",
                         "--cam", PREFIX + "cam1:"], env.server_env(1), logs / "writer.log")
    client = Client()
    status = 1
    started = time.time() - 1.0  # file times have a coarse clock on some file systems
    try:
        wait_for(lambda: client.get(WRITER + "SourceConnected_RBV") == "Connected", 30,
                 what="the writer to connect to the simulator")
        print("Configuring the writer over Channel Access, as these commands would "
              "(README, \"Using it from the command line\"):")
        settings = [
            ("FilePath", f"{out}/"), ("FileName", "demo"), ("FileTemplate", "%s%s_%3.3d.h5"),
            ("FileNumber", 1), ("AutoIncrement", "Yes"), ("FileWriteMode", "Single"),
            ("AutoSave", "Yes"), ("XMLFileName", str(layout_file("nexus_demo.xml"))),
            ("NDAttributesMacros", f"P={PREFIX}"),
            ("NDAttributesFile", str(layout_file("demo_attributes.xml"))),
            ("EnableCallbacks", "Enable"),
        ]
        for suffix, value in settings:
            client.put(WRITER + suffix, value)
            print(f"  {_caput_hint(WRITER + suffix, value)}")
        for check in ("FilePathExists_RBV", "XMLValid_RBV", "NDAttributesStatus"):
            print(f"  caget {WRITER}{check}    # -> {client.get(WRITER + check)}")
        client.put(PREFIX + "cam1:ImageMode", "Multiple")
        client.put(PREFIX + "cam1:NumImages", args.images)
        client.put(PREFIX + "cam1:AcquirePeriod", 0.05)
        print(f"Acquiring {args.images} images of {size_x}x{size_y} UInt16:")
        client.put(PREFIX + "cam1:Acquire", "Acquire", wait=False)
        deadline = time.monotonic() + 30 + args.images * 0.2
        written = 0
        tty = sys.stdout.isatty()
        while time.monotonic() < deadline:
            # AutoIncrement: FileNumber goes up by one for each file written
            written = client.get(WRITER + "FileNumber_RBV") - 1
            if tty:
                bar = "#" * int(30 * written / max(args.images, 1))
                sys.stdout.write(f"\r  [{bar:<30}] {written}/{args.images} files")
                sys.stdout.flush()
            if written >= args.images:
                break
            time.sleep(0.1)
        print(("\n" if tty else "") + f"  {written} of {args.images} files written")
        message = client.get(WRITER + "WriteMessage")
        if client.get(WRITER + "WriteStatus") != "Write OK":
            print(f"Write error: {message}")
        files = run_files(out, "demo", 1, args.images, started)
        print(f"Files of this run in {out}:")
        for path in files:
            print(f"  {path.name}  {path.stat().st_size} bytes")
        others = len(set(out.glob("*.h5")) - set(files))
        if others:
            print(f"  ({others} other .h5 file{'s' if others > 1 else ''} there, from earlier "
                  "runs, not shown)")
        if written >= args.images and len(files) == args.images:
            print(f"\nTree of {files[0].name}:")
            print_tree(files[0])
            status = 0
        else:
            print(f"Only {len(files)} of {args.images} files were written (logs in {logs})")
    finally:
        client.close()
        writer.stop()
        sim.stop()
        env.close()
    print("Both IOCs stopped.")
    return status
