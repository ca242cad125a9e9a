"""``nexus-writer-ioc serve --workers-listen HOST:PORT``: the NDFileHDF5 IOC as coordinator.

The same PV table, put rules and start-up (``ioc.server.serve_main``) as a writer that
writes itself; the saver is the ``Coordinator`` and there is no image source here: the
workers (``nexus-writer-ioc worker --coordinator HOST:PORT``) read the frames, each its
share, from the pvAccess channel named by ``--pva-channel`` through the data distributor.
"""

from __future__ import annotations

import argparse
import logging
import re

from ... import __version__
from ...layout.ndattributes import AttributesError, AttributesStatus, load_attributes
from ...writer.nexus import available_compressions
from ..file_saver import layout_status
from ..group import make_group_class
from ..naming import PathPolicy
from ..pvtable import with_defaults
from .coordinator import Coordinator
from .protocol import parse_address

log = logging.getLogger(__name__)

PORT_NAME = "FileHDF1"
DISTRIBUTORS = ("pydistributor", "distributor")  # pvapy-mirror-server, pvDatabaseCPP


def distributor_options(plugin: str, group: str, updates: int, trigger: str = "uniqueId",
                        extra: str = "") -> dict[str, str]:
    """The pvRequest plugin option each worker subscribes with: K consecutive updates
    (``trigger``: a new frame is a new uniqueId) to each member of ``group`` in turn."""
    text = f"group:{group};updates:{max(int(updates), 1)};trigger:{trigger}"
    if extra:
        text += f";{extra.strip(';')}"
    return {plugin: text}


def group_name(prefix: str) -> str:
    """A distributor group name from the PV prefix (the option syntax uses ':' and ';')."""
    return re.sub(r"[^A-Za-z0-9_]+", "_", prefix).strip("_") or "writers"


class WorkersSource:
    """The image source as ``serve`` sees it when the writer workers read the frames:
    nothing to start or stop here (the coordinator, started as the saver, accepts the
    workers); connected once workers are connected and every one reads the channel."""

    process = None  # no receiver process

    def __init__(self, coordinator: Coordinator, params):
        self.coordinator = coordinator
        self.params = params
        self.prefix = f"pva://{coordinator.source['channel']}"

    @property
    def connected(self) -> bool:
        return int(self.params["Workers_RBV"]) > 0 and bool(int(self.params["SourceConnected_RBV"]))

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def source_line(self, connected: bool, waited: float) -> tuple[int, str]:
        """The start-up summary's source line: the channel and the workers reading it."""
        ((plugin, option),) = self.coordinator.source["options"].items()
        port = self.coordinator.address[1]
        what = (f"source: {self.prefix} (NDPluginPva NTNDArray over pvAccess, read by the "
                f"writer workers through the {plugin} plugin, {option}); workers connect to "
                f"{self.coordinator.address[0]}:{port}")
        workers = int(self.params["Workers_RBV"])
        if connected:
            return logging.INFO, f"{what}: {workers} connected, reading it"
        if not workers:
            return logging.WARNING, (
                f"{what}: no writer worker connected after {waited:.0f} s; nothing is written "
                f"until one is (start each: nexus-writer-ioc worker --coordinator HOST:{port})")
        return logging.WARNING, (
            f"{what}: {workers} connected, not all reading it after {waited:.0f} s; is the "
            "detector IOC (or pvapy-mirror-server) serving this PV with the distributor? "
            "(the workers search with their own EPICS_PVA_ADDR_LIST)")


def build_coordinator(args: argparse.Namespace) -> tuple:
    """The PV group, the coordinator (its saver) and the ``WorkersSource`` for ``serve``
    (not started); ValueError for arguments that cannot work."""
    import h5py

    channel = args.pva_channel or (args.source.split("://", 1)[-1] if args.source.startswith("pva://")
                                   else "")
    if not channel:
        raise ValueError("--workers-listen needs the channel the workers read: --pva-channel "
                         "NAME (or --source pva://NAME)")
    source = {"channel": channel, "cam": args.cam,
              "options": distributor_options(args.distributor, args.group or group_name(args.prefix),
                                             args.updates, extra=args.distributor_extra)}
    table = with_defaults(
        PluginType_RBV=f"NDFileHDF5 ver{h5py.version.hdf5_version}",
        PortName_RBV=PORT_NAME, WriterVersion_RBV=__version__,
        QueueSize=args.queue_size, QueueSize_RBV=args.queue_size, QueueFree=args.queue_size,
        XMLFileName=args.layout, XMLFileName_RBV=args.layout, NDAttributesFile=args.attributes,
        SourcePrefix=f"pva://{channel}", SourcePrefix_RBV=f"pva://{channel}",
    )
    group = make_group_class(table)(prefix=args.prefix, table=table)
    group.available_compressions = {int(c) for c in available_compressions()}
    policy = PathPolicy.from_dirs(tuple(args.allow_root))
    group.policy = policy
    coordinator = Coordinator(group.params, group.post, args.queue_size, policy,
                              listen=parse_address(args.workers_listen), source=source)
    coordinator.on_capture_end = group.on_capture_end  # completes pending Capture=1 puts
    group.saver = coordinator
    group.check_layout = lambda spec: layout_status(spec, policy)
    group.on_queue_size = coordinator.set_queue_size

    def load(spec: str, macros: str) -> tuple[int, str]:
        """Checked here; the workers sample the attributes for their frames."""
        try:
            definitions = load_attributes(spec, macros, allowed_roots=policy.roots)
        except AttributesError as exc:
            coordinator.set_attributes("", "")
            return int(exc.status), str(exc)
        coordinator.set_attributes(spec, macros)
        note = f"{len(definitions)} attributes, sampled by each writer worker" if definitions else ""
        return int(AttributesStatus.OK), note

    def set_source(spec: str) -> None:
        group.post(WriteMessage="SourcePrefix: the writer workers read --pva-channel; "
                   "restart the coordinator to change it")

    group.on_attributes = load
    group.on_source_prefix = set_source
    group.driver_attributes = None  # the workers sample the driver's attributes
    return group, coordinator, WorkersSource(coordinator, group.params)
