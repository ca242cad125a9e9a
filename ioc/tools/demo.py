"""``nexus-writer-ioc demo``: a simulated detector feeding the writer, files on disk.

Starts the simulator and the writer as two IOCs on private CA ports (nothing
else on the machine is disturbed), configures the writer over Channel Access
the way an operator would, acquires N images (one NeXus file each), prints
the files and the tree of the first, and stops both IOCs.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from .._resources import layout_file
from ._caenv import CAEnvironment, Client, IOCProcess, wait_for

PREFIX = "DEMO:"
WRITER = PREFIX + "HDF1:"


def print_tree(path: Path) -> None:
    import h5py
    import numpy as np

    def show(name: str, obj) -> None:
        depth = name.count("/")
        indent = "  " * depth
        label = name.rsplit("/", 1)[-1]
        if isinstance(obj, h5py.Dataset):
            value = ""
            if obj.size <= 4 and obj.dtype.kind != "V":
                data = obj[()]
                value = " = " + (repr(data.tolist()) if isinstance(data, np.ndarray)
                                 else repr(data))
            print(f"{indent}{label}  {obj.dtype}{list(obj.shape)}{value}")
        else:
            cls = obj.attrs.get("NX_class", b"")
            cls = cls.decode() if isinstance(cls, bytes) else cls
            print(f"{indent}{label}:{cls}" if cls else f"{indent}{label}")
        for key, value in obj.attrs.items():
            if key == "NX_class":
                continue
            if isinstance(value, bytes):
                value = value.decode()
            print(f"{indent}  @{key} = {value!r}" if not hasattr(value, "tolist")
                  else f"{indent}  @{key} = {value.tolist()!r}")

    with h5py.File(path, "r") as f:
        print(f"{path.name}")
        for key, value in f.attrs.items():
            print(f"  @{key} = {value.decode() if isinstance(value, bytes) else value!r}")
        f.visititems(lambda name, obj: show(name, obj))


def demo_main(args: argparse.Namespace) -> int:
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    env = CAEnvironment(2)
    env.apply_to_this_process()
    logs = Path(tempfile.mkdtemp(prefix="nexus-writer-ioc-demo-"))
    size_x, size_y = args.size
    print(f"Starting the simulated detector ({PREFIX}cam1:, {PREFIX}image1:) and the writer "
          f"({WRITER}) on private CA ports {env.ports}")
    sim = IOCProcess(["sim", "--prefix", PREFIX, "--size", str(size_x), str(size_y)],
                     env.server_env(0), logs / "sim.log")
    writer = IOCProcess(["serve", "--prefix", WRITER, "--source", PREFIX + "image1:",
                         "--cam", PREFIX + "cam1:"], env.server_env(1), logs / "writer.log")
    client = Client()
    status = 1
    try:
        wait_for(lambda: client.get(WRITER + "SourceConnected_RBV") == "Connected", 30,
                 what="the writer to connect to the simulator")
        print("Configuring the writer over Channel Access:")
        settings = [
            ("FilePath", str(out)), ("FileName", "demo"), ("FileTemplate", "%s%s_%3.3d.h5"),
            ("FileNumber", 1), ("AutoIncrement", "Yes"), ("FileWriteMode", "Single"),
            ("AutoSave", "Yes"), ("XMLFileName", str(layout_file("nexus_demo.xml"))),
            ("NDAttributesMacros", f"P={PREFIX}"),
            ("NDAttributesFile", str(layout_file("demo_attributes.xml"))),
            ("EnableCallbacks", "Enable"),
        ]
        for suffix, value in settings:
            client.put(WRITER + suffix, value)
            print(f"  caput {WRITER}{suffix} {value!r}")
        for check in ("FilePathExists_RBV", "XMLValid_RBV", "NDAttributesStatus"):
            print(f"  caget {WRITER}{check} -> {client.get(WRITER + check)}")
        client.put(PREFIX + "cam1:ImageMode", "Multiple")
        client.put(PREFIX + "cam1:NumImages", args.images)
        client.put(PREFIX + "cam1:AcquirePeriod", 0.05)
        start_count = client.get(WRITER + "ArrayCounter_RBV")
        print(f"Acquiring {args.images} images of {size_x}x{size_y} UInt16:")
        client.put(PREFIX + "cam1:Acquire", "Acquire", wait=False)
        deadline = time.monotonic() + 30 + args.images * 0.2
        written = 0
        while time.monotonic() < deadline:
            written = client.get(WRITER + "ArrayCounter_RBV") - start_count
            bar = "#" * int(30 * written / max(args.images, 1))
            sys.stdout.write(f"\r  [{bar:<30}] {written}/{args.images} files")
            sys.stdout.flush()
            if written >= args.images:
                break
            time.sleep(0.1)
        print()
        message = client.get(WRITER + "WriteMessage")
        if client.get(WRITER + "WriteStatus") != "Write OK":
            print(f"Write error: {message}")
        files = sorted(out.glob("demo_*.h5"))
        print(f"Files in {out}:")
        for path in files[-args.images:]:
            print(f"  {path.name}  {path.stat().st_size} bytes")
        if written >= args.images and files:
            print("\nTree of the first file:")
            print_tree(files[-args.images])
            status = 0
        else:
            print(f"Only {written} of {args.images} files were written (logs in {logs})")
    finally:
        client.close()
        writer.stop()
        sim.stop()
    print("Both IOCs stopped.")
    return status
