"""The run-time sub-commands (serve, sim, demo, bench): arguments here, code imported
lazily so that ``--help`` and ``check-layout`` stay fast."""

from __future__ import annotations

import argparse
import importlib


def _lazy(module: str, function: str):
    return getattr(importlib.import_module(f"ioc.{module}"), function)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Each option's help ends with its default (flags, counters and empty defaults
    excepted: their help says what absent means); epilogs keep their lines."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (not action.option_strings or "%(default)" in text or default is None
                or default is argparse.SUPPRESS or isinstance(default, bool)
                or default in ("", [], ()) or action.nargs == 0
                or isinstance(action, argparse._CountAction)):
            return text
        shown = " ".join(map(str, default)) if isinstance(default, (list, tuple)) else default
        return f"{text} (default: {str(shown).replace('%', '%%')})"


VERBOSE_HELP = ("more output: -v the IOC's own progress; -vv also per-PV connections and "
                "caproto's client and circuit events; -vvv caproto's protocol debugging "
                "(default: warnings and the start-up summary)")

SERVER_ENV = """\
  EPICS_CAS_SERVER_PORT, else EPICS_CA_SERVER_PORT   port served (5064)
  EPICS_CAS_INTF_ADDR_LIST       interfaces served (default: all)
  EPICS_CAS_BEACON_ADDR_LIST, EPICS_CAS_AUTO_BEACON_ADDR_LIST, EPICS_CAS_BEACON_PORT
                                 where beacons go (a CA repeater, 5065)"""

PRIVATE_ENV = """\
EPICS environment: not used. Both IOCs run on private loopback ports of their own
(each server its own port, beacons to a CA repeater on 127.0.0.1); nothing is sent
to another host and no other IOC is disturbed."""


def _parser(sub, name: str, help_: str, description: str, epilog: str):
    return sub.add_parser(name, help=help_, description=description, epilog=epilog,
                          formatter_class=HelpFormatter)


def add_serve_parser(sub) -> None:
    p = _parser(sub, "serve", "run the NDFileHDF5-compatible writer IOC", """\
The writer IOC: the NDFileHDF5 PVs under --prefix; frames read from the areaDetector
plugin at --source (NDStdArrays over Channel Access, or NDPluginPva over pvAccess); NeXus
HDF5 files written as the PVs say.
At start it prints a summary (prefix, PVs, port, source, layout, attributes, roots).""",
                f"""\
example:
  nexus-writer-ioc serve --prefix 13SIM1:HDF1: --source 13SIM1:image1: \\
      --cam 13SIM1:cam1: --allow-root /data

EPICS environment:
{SERVER_ENV}
  EPICS_CA_ADDR_LIST, EPICS_CA_AUTO_ADDR_LIST   where the source and driver PVs are
                                 searched (the detector IOC's host must be reachable)
  EPICS_PVA_ADDR_LIST, EPICS_PVA_AUTO_ADDR_LIST where a pva:// source is searched""")
    p.add_argument("--prefix", default="13SIM1:HDF1:", help="our PV prefix (P+R of ADCore)")
    p.add_argument("--source", default="13SIM1:image1:",
                   help="where frames come from: ca://PREFIX (or PREFIX) for an NDStdArrays "
                   "plugin (<PREFIX>ArrayData, ...), or pva://PVNAME for an NDPluginPva "
                   "NTNDArray (e.g. pva://13SIM1:Pva1:Image); empty: no source")
    p.add_argument("--pva-queue", type=int, default=32, metavar="N",
                   help="updates the pvAccess server keeps for us while we lag "
                   "(pvRequest queueSize; pva:// sources)")
    p.add_argument("--cam", default="",
                   help="driver prefix: PARAM attributes are read from its PVs and "
                   "NDArrayPort defaults to its PortName_RBV (default: none: PARAM "
                   "attributes are undefined, NaN)")
    p.add_argument("--layout", default="", metavar="FILE",
                   help="initial XMLFileName: a layout file or inline XML (default: empty: "
                   "the default layout)")
    p.add_argument("--attributes", default="", metavar="FILE",
                   help="initial NDAttributesFile: a file or inline XML (default: empty: "
                   "no plugin attributes)")
    p.add_argument("--queue-size", type=int, default=20, metavar="N",
                   help="initial QueueSize (frames)")
    p.add_argument("--allow-root", action="append", default=[], metavar="DIR",
                   help="only write files (and read layouts/attributes) below DIR; "
                   "repeatable (default: no restriction)")
    p.add_argument("--receiver", choices=("process", "thread"), default="process",
                   help="receive images in a child process, frames in shared memory, or "
                   "in a thread of the IOC process")
    p.add_argument("--keep-page-cache", action="store_true",
                   help="leave written files in the page cache (default: frames of 256 KiB "
                   "or more go to local disks with O_DIRECT, the rest is written back at "
                   "once and dropped from memory soon after: faster, steadier)")
    p.add_argument("--port", action="append", default=[], metavar="NAME=SOURCE",
                   type=lambda spec: _lazy("sources.ports", "parse_port")(spec),
                   help="an NDArrayPort name and the source it selects (e.g. "
                   "PROC1=13SIM1:image2:); repeatable.  The driver's PortName_RBV (--cam) "
                   "names the --source")
    p.add_argument("--list-pvs", action="store_true",
                   help="print one line per PV (name, CA type, element count, access, enum "
                   "strings), then '# end of PV list', and serve on")
    p.add_argument("--max-memory", type=float, default=None, metavar="MB",
                   help="memory for the frames the IOC holds (input queue and Capture "
                   "buffer), shown in PoolMaxMem (default: half of this machine's memory)")
    p.add_argument("-v", "--verbose", action="count", default=0, help=VERBOSE_HELP)
    w = p.add_argument_group(
        "writer workers", "with --workers-listen this IOC writes no frames itself: writer "
        "workers (nexus-writer-ioc worker) share the pvAccess stream through the data "
        "distributor and write part files; this IOC starts and stops them and writes the "
        "master file (virtual datasets)")
    w.add_argument("--workers-listen", default="", metavar="HOST:PORT",
                   help="accept writer workers on this TCP address (e.g. 0.0.0.0:5064x for "
                   "workers on other hosts; 127.0.0.1:PORT for this host only; default: none, "
                   "this IOC writes the frames)")
    w.add_argument("--pva-channel", default="", metavar="PV",
                   help="the NTNDArray channel the workers read (default: --source pva://PV): the "
                   "detector IOC's Pva1:Image (EPICS >= 7.0.8: distributor built in) or a "
                   "pvapy-mirror-server channel in front of it")
    w.add_argument("--distributor", choices=("pydistributor", "distributor"),
                   default="pydistributor",
                   help="the server's distributor plugin: pydistributor (pvapy-mirror-server) "
                   "or distributor (pvDatabaseCPP, EPICS >= 7.0.8)")
    w.add_argument("--group", default="",
                   help="distributor group name (default: empty: --prefix)")
    w.add_argument("--updates", type=int, default=1, metavar="K",
                   help="consecutive frames each worker receives in turn")
    w.add_argument("--distributor-extra", default="", metavar="OPTS",
                   help="more distributor options, e.g. 'set:S;mode:M' (pvDatabaseCPP)")
    p.set_defaults(func=lambda args: _lazy('server', 'serve_main')(args))


def add_worker_parser(sub) -> None:
    p = _parser(sub, "worker", "write part files for a coordinator (serve --workers-listen)",
                """\
A writer worker: connects to a coordinator (serve --workers-listen), reads its share of
the pvAccess stream through the data distributor and writes part files; the coordinator
starts and stops it and writes the master file.""", """\
example:
  nexus-writer-ioc worker --coordinator 10.0.0.5:50640 --allow-root /data

EPICS environment:
  EPICS_PVA_ADDR_LIST, EPICS_PVA_AUTO_ADDR_LIST   where the distributor's channel is
                                 searched (the detector or mirror server must be reachable)""")
    p.add_argument("--coordinator", required=True, metavar="HOST:PORT",
                   help="the coordinator's --workers-listen address")
    p.add_argument("--name", default="", help="how the coordinator shows this worker "
                   "(default: HOST:PID)")
    p.add_argument("--allow-root", action="append", default=[], metavar="DIR",
                   help="only write part files below DIR; repeatable (default: no "
                   "restriction)")
    p.add_argument("--queue-size", type=int, default=None, metavar="N",
                   help="frames queued before dropping (default: the coordinator's QueueSize)")
    p.add_argument("--receiver", choices=("process", "thread"), default="process",
                   help="receive frames in a child process (shared memory) or a thread")
    p.add_argument("--pva-queue", type=int, default=32, metavar="N",
                   help="updates the pvAccess server keeps for this worker while it lags")
    p.add_argument("--keep-page-cache", action="store_true",
                   help="leave written files in the page cache (no O_DIRECT frames)")
    p.add_argument("-v", "--verbose", action="count", default=0, help=VERBOSE_HELP)
    p.set_defaults(func=lambda args: _lazy('sources.worker', 'worker_main')(args))


def add_sim_parser(sub) -> None:
    p = _parser(sub, "sim", "run a simulated areaDetector (cam1:, image1:, Stats1:, "
                "Pva1:Image)", """\
A simulated areaDetector: the driver's PVs under <prefix>cam1:, an NDStdArrays plugin
under <prefix>image1:, a stats plugin under <prefix>Stats1: and an NDPluginPva NTNDArray
<prefix>Pva1:Image over pvAccess. Acquire sends frames whose pixels are
(x + y + UniqueId), so every pixel of every file can be checked.""", f"""\
example (the writer on 5064, this detector on 5074, both on this machine):
  EPICS_CAS_SERVER_PORT=5074 nexus-writer-ioc sim --prefix 13SIM1: --size 1024 1024

EPICS environment:
{SERVER_ENV}
  EPICS_PVAS_SERVER_PORT, EPICS_PVAS_BROADCAST_PORT, EPICS_PVAS_INTF_ADDR_LIST
                                 the pvAccess server (Pva1:Image)
  CAPROTO_MIN_SUBSCRIPTION_BACKLOG   ArrayData updates queued per client (200)""")
    p.add_argument("--prefix", default="13SIM1:",
                   help="prefix of the detector's PVs (cam1:, image1:, Stats1:, Pva1:Image "
                   "below it)")
    p.add_argument("--size", type=int, nargs=2, default=(256, 256), metavar=("X", "Y"),
                   help="image size at start (cam1:SizeX, SizeY)")
    p.add_argument("--max-size", type=int, nargs=2, default=(1024, 1024), metavar=("X", "Y"),
                   help="sensor size (cam1:MaxSizeX_RBV, MaxSizeY_RBV); image1:ArrayData "
                   "holds up to X*Y*3 elements")
    p.add_argument("--array-type", choices=("CHAR", "SHORT", "LONG", "FLOAT", "DOUBLE"),
                   default="SHORT",
                   help="CA type of image1:ArrayData (SHORT carries UInt16, as areaDetector)")
    p.add_argument("--codec", choices=("none", "lz4", "bslz4", "blosc"), default="none",
                   help="compress the frames of <prefix>Pva1:Image as NDPluginCodec does")
    p.add_argument("--blosc-compressor", type=int, default=1, choices=range(6), metavar="0-5",
                   help="--codec blosc: BloscLZ, LZ4, LZ4HC, SNAPPY, ZLIB, ZSTD (0-5)")
    p.add_argument("--blosc-shuffle", type=int, default=1, choices=range(3), metavar="0-2",
                   help="--codec blosc: no, byte or bit shuffle (0-2)")
    p.add_argument("--blosc-level", type=int, default=5, choices=range(10), metavar="0-9",
                   help="--codec blosc: compression level (0-9)")
    p.add_argument("--noise", type=float, default=0.0, metavar="MEAN",
                   help="add a fixed Poisson noise field of this mean to every frame "
                   "(realistic compression ratios; pixels stay checkable)")
    p.add_argument("--backlog-mb", type=int, default=0, metavar="MB",
                   help="frames each image1:ArrayData subscriber may have queued, in MiB of "
                   "the largest frame (4 to 200 frames); a subscriber that lags further "
                   "loses the oldest (default: %(default)s: 200 frames)")
    p.add_argument("--no-pva", action="store_true",
                   help="do not serve <prefix>Pva1:Image over pvAccess")
    p.add_argument("--ca-server", choices=("caproto", "rsrv"), default="caproto",
                   help="Channel Access server: caproto's (queues 200 updates per client), "
                   "or EPICS base's RSRV through pythonSoftIOC (what a real IOC does to a "
                   "lagging client)")
    p.add_argument("--list-pvs", action="store_true",
                   help="print the PV names served, then '# end of PV list', and serve on")
    p.add_argument("-v", "--verbose", action="count", default=0, help=VERBOSE_HELP)
    p.set_defaults(func=_sim_main)


def _sim_main(args):
    if args.ca_server == "rsrv":
        return _lazy("tools.rsrv_sim", "rsrv_main")(args)
    return _lazy("tools.sim", "sim_main")(args)


def add_demo_parser(sub) -> None:
    p = _parser(sub, "demo", "simulated detector -> writer -> NeXus files, end to end", """\
Starts the simulator and the writer, configures the writer over Channel Access as an
operator would (printing the caput commands), acquires N images (one NeXus file each),
lists this run's files and prints the tree of the first, then stops both IOCs.""", f"""\
example:
  nexus-writer-ioc demo --images 5 --out demo-output

{PRIVATE_ENV}""")
    p.add_argument("--images", type=int, default=10, metavar="N", help="number of images (files) to write")
    p.add_argument("--out", default="demo-output", metavar="DIR", help="directory for the files (created)")
    p.add_argument("--size", type=int, nargs=2, default=(256, 256), metavar=("X", "Y"),
                   help="image size of the simulated detector")
    p.set_defaults(func=lambda args: _lazy("tools.demo", "demo_main")(args))


def add_bench_parser(sub) -> None:
    p = _parser(sub, "bench", "measure writer, CA and end-to-end rates on this machine", """\
Measures this machine, disk and layout in one run: a naive h5py writer (the baseline) and
ours, the disk, Channel Access alone, and simulator -> writer IOC -> files (Single+AutoSave
and Stream), stepping the rate up until frames are lost. Each row is printed as it is
measured; progress lines go to stderr.""", f"""\
examples:
  nexus-writer-ioc bench --size 1024 1024 --duration 3
  nexus-writer-ioc bench --quick --json --out /data/bench > bench.json
  nexus-writer-ioc bench --soak 300 --soak-rate 100

{PRIVATE_ENV}""")
    p.add_argument("--quick", action="store_true",
                   help="a short run, what the tests run: writer rows at 64x64, 0.5 s; rates "
                   "20 and 50 frames/s for 1 s; no bisection")
    p.add_argument("--size", type=int, nargs=2, default=(1024, 1024), metavar=("X", "Y"),
                   help="frame size of the CA and end-to-end rows and of the second writer "
                   "rows (the first writer rows are 256x256)")
    p.add_argument("--dtype", default="uint16", choices=("uint8", "uint16", "int16", "uint32",
                                                          "float32"),
                   help="pixel type of every row")
    p.add_argument("--compression", default="none",
                   choices=("none", "zlib", "blosc", "bslz4", "lz4"),
                   help="compression of the writer-alone rows (ours; the baseline writes "
                   "uncompressed)")
    p.add_argument("--duration", type=float, default=3.0, metavar="S", help="seconds per measurement")
    p.add_argument("--queue-size", type=int, default=100, metavar="N",
                   help="the writer's QueueSize end to end (it absorbs file-system stalls; the "
                   "memory budget is QueueSize x frame size + 64 MiB)")
    p.add_argument("--layout", default="", metavar="FILE",
                   help="layout the writer rows write (default: empty: the default layout)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="directory to write in, created if missing; the bench's files are "
                   "deleted at the end (default: the system's temporary directory)")
    p.add_argument("--json", action="store_true",
                   help="print the rows and summary as JSON on stdout (rows also on stderr "
                   "as they are measured)")
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
                   help="instead of the measurements: stream files of 500 frames (256x256 "
                   "uint16) this long; report memory and open files at start and end; one "
                   "refused put per second (default: %(default)s: no soak)")
    p.add_argument("--soak-rate", type=float, default=100.0, metavar="FPS",
                   help="frames/s during --soak")
    p.add_argument("--soak-flood", type=float, default=0.0, metavar="SECONDS",
                   help="during --soak: a flood of refused puts for this long in the middle, "
                   "reads timed throughout (default: %(default)s: no flood)")
    p.add_argument("--soak-flood-rate", type=float, default=1000.0, metavar="PUTS_PER_S",
                   help="refused puts per second of --soak-flood")
    p.add_argument("--workers", default="", metavar="N,N,...",
                   help="instead: the aggregate end-to-end rate with N writer workers "
                   "(simulator -> pvapy-mirror-server -> workers -> master file) for each N, "
                   "and each part's CPU per frame, e.g. --workers 1,2,3")
    p.set_defaults(func=lambda args: _lazy("tools.bench", "bench_main")(args))


REGISTRY = [add_serve_parser, add_worker_parser, add_sim_parser, add_demo_parser, add_bench_parser]
