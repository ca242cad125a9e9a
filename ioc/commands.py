"""The run-time sub-commands (serve, sim, demo): arguments here, code imported lazily
so that ``--help`` and ``check-layout`` stay fast."""

from __future__ import annotations

import importlib


def _lazy(module: str, function: str):
    return getattr(importlib.import_module(f"ioc.{module}"), function)


def add_serve_parser(sub) -> None:
    p = sub.add_parser("serve", help="run the NDFileHDF5-compatible writer IOC")
    p.add_argument("--prefix", default="13SIM1:HDF1:", help="our PV prefix")
    p.add_argument("--source", default="13SIM1:image1:",
                   help="where frames come from: ca://PREFIX (or PREFIX) for an NDStdArrays "
                   "plugin (<PREFIX>ArrayData, ...), or pva://PVNAME for an NDPluginPva "
                   "NTNDArray (e.g. pva://13SIM1:Pva1:Image)")
    p.add_argument("--pva-queue", type=int, default=32, metavar="N",
                   help="updates the pvAccess server keeps for us while we lag "
                   "(pvRequest queueSize; pva:// sources)")
    p.add_argument("--cam", default="", help="driver prefix, for PARAM attributes and PortName_RBV")
    p.add_argument("--layout", default="", help="initial XMLFileName (file or inline XML)")
    p.add_argument("--attributes", default="", help="initial NDAttributesFile")
    p.add_argument("--queue-size", type=int, default=20, help="initial QueueSize")
    p.add_argument("--allow-root", action="append", default=[], metavar="DIR",
                   help="only write files (and read layouts/attributes) below DIR; "
                   "repeatable; default: no restriction")
    p.add_argument("--receiver", choices=("process", "thread"), default="process",
                   help="receive images in a child process, frames in shared memory (default), "
                   "or in a thread of the IOC process")
    p.add_argument("--keep-page-cache", action="store_true",
                   help="leave written files in the page cache (default: write them back at "
                   "once and drop them from memory soon after: faster, steadier)")
    p.add_argument("--port", action="append", default=[], metavar="NAME=SOURCE",
                   type=lambda spec: _lazy("sources.ports", "parse_port")(spec),
                   help="an NDArrayPort name and the source it selects (e.g. "
                   "PROC1=13SIM1:image2:); repeatable.  The driver's PortName_RBV (--cam) "
                   "names the --source")
    p.add_argument("--list-pvs", action="store_true", help="print the PVs served, then serve")
    p.add_argument("--max-memory", type=float, default=None, metavar="MB",
                   help="memory for the frames the IOC holds (input queue and Capture "
                   "buffer), shown in PoolMaxMem; default: half of this machine's memory")
    p.add_argument("-v", "--verbose", action="count", default=0)
    w = p.add_argument_group(
        "writer workers", "with --workers-listen this IOC writes no frames itself: writer "
        "workers (nexus-writer-ioc worker) share the pvAccess stream through the data "
        "distributor and write part files; this IOC starts and stops them and writes the "
        "master file (virtual datasets)")
    w.add_argument("--workers-listen", default="", metavar="HOST:PORT",
                   help="accept writer workers on this TCP address (e.g. 0.0.0.0:5064x for "
                   "workers on other hosts; 127.0.0.1:PORT for this host only)")
    w.add_argument("--pva-channel", default="", metavar="PV",
                   help="the NTNDArray channel the workers read (default: --source pva://PV): the "
                   "detector IOC's Pva1:Image (EPICS >= 7.0.8: distributor built in) or a "
                   "pvapy-mirror-server channel in front of it")
    w.add_argument("--distributor", choices=("pydistributor", "distributor"),
                   default="pydistributor",
                   help="the server's distributor plugin: pydistributor (pvapy-mirror-server) "
                   "or distributor (pvDatabaseCPP, EPICS >= 7.0.8)")
    w.add_argument("--group", default="", help="distributor group name (default: --prefix)")
    w.add_argument("--updates", type=int, default=1, metavar="K",
                   help="consecutive frames each worker receives in turn (default 1)")
    w.add_argument("--distributor-extra", default="", metavar="OPTS",
                   help="more distributor options, e.g. 'set:S;mode:M' (pvDatabaseCPP)")
    p.set_defaults(func=lambda args: _lazy('server', 'serve_main')(args))


def add_worker_parser(sub) -> None:
    p = sub.add_parser("worker", help="write part files for a coordinator (serve --workers-listen)")
    p.add_argument("--coordinator", required=True, metavar="HOST:PORT",
                   help="the coordinator's --workers-listen address")
    p.add_argument("--name", default="", help="how the coordinator shows this worker "
                   "(default: HOST:PID)")
    p.add_argument("--allow-root", action="append", default=[], metavar="DIR",
                   help="only write part files below DIR; repeatable; default: no restriction")
    p.add_argument("--queue-size", type=int, default=None,
                   help="frames queued before dropping (default: the coordinator's QueueSize)")
    p.add_argument("--receiver", choices=("process", "thread"), default="process",
                   help="receive frames in a child process (shared memory; default) or a thread")
    p.add_argument("--pva-queue", type=int, default=32, metavar="N",
                   help="updates the pvAccess server keeps for this worker while it lags")
    p.add_argument("--keep-page-cache", action="store_true",
                   help="leave written files in the page cache")
    p.add_argument("-v", "--verbose", action="count", default=0)
    p.set_defaults(func=lambda args: _lazy('sources.worker', 'worker_main')(args))


def add_sim_parser(sub) -> None:
    p = sub.add_parser("sim", help="run a simulated areaDetector (cam1:, image1:, Stats1:, "
                       "Pva1:Image)")
    p.add_argument("--prefix", default="13SIM1:")
    p.add_argument("--max-size", type=int, nargs=2, default=(1024, 1024), metavar=("X", "Y"))
    p.add_argument("--size", type=int, nargs=2, default=(256, 256), metavar=("X", "Y"))
    p.add_argument("--array-type", choices=("CHAR", "SHORT", "LONG", "FLOAT", "DOUBLE"), default="SHORT",
                   help="CA type of image1:ArrayData (SHORT carries UInt16, as areaDetector)")
    p.add_argument("--codec", choices=("none", "lz4", "bslz4", "blosc"), default="none",
                   help="compress the frames of <prefix>Pva1:Image as NDPluginCodec does")
    p.add_argument("--blosc-compressor", type=int, default=1, choices=range(6),
                   help="--codec blosc: BloscLZ, LZ4, LZ4HC, SNAPPY, ZLIB, ZSTD (0-5)")
    p.add_argument("--blosc-shuffle", type=int, default=1, choices=range(3),
                   help="--codec blosc: no, byte or bit shuffle (0-2)")
    p.add_argument("--blosc-level", type=int, default=5, choices=range(10))
    p.add_argument("--noise", type=float, default=0.0, metavar="MEAN",
                   help="add a fixed Poisson noise field of this mean to every frame "
                   "(realistic compression ratios; pixels stay checkable)")
    p.add_argument("--backlog-mb", type=int, default=0, metavar="MB",
                   help="frames each image1:ArrayData subscriber may have queued, in MiB of "
                   "the largest frame (4 to 200 frames; default 200 frames); a subscriber that "
                   "lags further loses the oldest")
    p.add_argument("--no-pva", action="store_true",
                   help="do not serve <prefix>Pva1:Image over pvAccess")
    p.add_argument("--ca-server", choices=("caproto", "rsrv"), default="caproto",
                   help="Channel Access server: caproto's (queues 200 updates per client), "
                   "or EPICS base's RSRV through pythonSoftIOC (what a real IOC does to a "
                   "lagging client)")
    p.add_argument("--list-pvs", action="store_true")
    p.add_argument("-v", "--verbose", action="count", default=0)
    p.set_defaults(func=_sim_main)


def _sim_main(args):
    if args.ca_server == "rsrv":
        return _lazy("tools.rsrv_sim", "rsrv_main")(args)
    return _lazy("tools.sim", "sim_main")(args)


def add_demo_parser(sub) -> None:
    p = sub.add_parser("demo", help="simulated detector -> writer -> NeXus files, end to end")
    p.add_argument("--images", type=int, default=10, help="number of images to acquire")
    p.add_argument("--out", default="demo-output", help="directory for the files")
    p.add_argument("--size", type=int, nargs=2, default=(256, 256), metavar=("X", "Y"))
    p.set_defaults(func=lambda args: _lazy("tools.demo", "demo_main")(args))


def add_bench_parser(sub) -> None:
    p = sub.add_parser("bench", help="measure writer, CA and end-to-end rates on this machine")
    p.add_argument("--quick", action="store_true", help="a short run (what the tests run)")
    p.add_argument("--size", type=int, nargs=2, default=(1024, 1024), metavar=("X", "Y"))
    p.add_argument("--dtype", default="uint16", choices=("uint8", "uint16", "int16", "uint32",
                                                          "float32"))
    p.add_argument("--compression", default="none",
                   choices=("none", "zlib", "blosc", "bslz4", "lz4"))
    p.add_argument("--duration", type=float, default=3.0, help="seconds per measurement")
    p.add_argument("--queue-size", type=int, default=100,
                   help="the writer's QueueSize end to end (it absorbs file-system stalls; the "
                   "memory budget is QueueSize x frame size + 64 MiB)")
    p.add_argument("--layout", default="", help="layout to write (default: the default layout)")
    p.add_argument("--out", default=None, help="where to write (default: the temp directory)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--transport", choices=("ca", "pva", "both"), default="both",
                   help="end-to-end rows over Channel Access (image1:), pvAccess (Pva1:Image) "
                   "or both")
    p.add_argument("--codec", choices=("none", "lz4", "bslz4", "blosc"), default="bslz4",
                   help="PVA rows: also stream frames the simulator compresses with this codec "
                   "(with noise), reporting the compression ratio")
    p.add_argument("--no-rsrv", dest="rsrv", action="store_false",
                   help="skip the rows against the detector served by EPICS base's CA server "
                   "(RSRV, what a real areaDetector IOC does to a lagging client)")
    p.add_argument("--soak", type=float, default=0.0, metavar="SECONDS",
                   help="stream for this long; report RSS and open files at start and end")
    p.add_argument("--soak-rate", type=float, default=100.0, help="frames/s during --soak")
    p.add_argument("--soak-flood", type=float, default=0.0, metavar="SECONDS",
                   help="during --soak (which also makes one refused put per second): a flood "
                   "of refused puts for this long in the middle, reads timed throughout")
    p.add_argument("--soak-flood-rate", type=float, default=1000.0, metavar="PUTS_PER_S",
                   help="refused puts per second of --soak-flood")
    p.add_argument("--workers", default="", metavar="N,N,...",
                   help="instead: the aggregate end-to-end rate with N writer workers "
                   "(simulator -> pvapy-mirror-server -> workers -> master file) for each N, "
                   "and each part's CPU per frame, e.g. --workers 1,2,3")
    p.set_defaults(func=lambda args: _lazy("tools.bench", "bench_main")(args))


REGISTRY = [add_serve_parser, add_worker_parser, add_sim_parser, add_demo_parser, add_bench_parser]
