"""``nexus-writer-ioc serve --workers-listen HOST:PORT``: the NDFileHDF5 IOC as coordinator.

The same PV table and put rules as a writer that writes itself; the saver is the
``Coordinator`` and there is no image source here: the workers (``nexus-writer-ioc
worker --coordinator HOST:PORT``) read the frames, each its share, from the pvAccess
channel named by ``--pva-channel`` through the data distributor.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import signal

from ... import __version__
from ...layout.ndattributes import AttributesError, AttributesStatus, load_attributes
from ...writer.nexus import available_compressions
from ..file_saver import layout_status
from ..group import make_group_class, pv_listing
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


def build_coordinator(args: argparse.Namespace) -> tuple:
    import h5py

    channel = args.pva_channel or (args.source.split("://", 1)[-1] if args.source.startswith("pva://")
                                   else "")
    source = {"channel": channel, "cam": args.cam,
              "options": distributor_options(args.distributor, args.group or group_name(args.prefix),
                                             args.updates, extra=args.distributor_extra)}
    table = with_defaults(
        PluginType_RBV=f"NDFileHDF5 ver{h5py.version.hdf5_version}",
        PortName_RBV=PORT_NAME, ADCoreVersion_RBV="3.14.0", DriverVersion_RBV=__version__,
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
    return group, coordinator


def serve_coordinator(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING - 10 * min(args.verbose, 2),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    group, coordinator = build_coordinator(args)
    if not coordinator.source["channel"]:
        log.error("--workers-listen needs the channel the workers read: --pva-channel NAME "
                  "(or --source pva://NAME)")
        return 2
    if not args.allow_root:
        log.warning("no --allow-root given: any CA client may make this IOC write files "
                    "anywhere its user can write")
    if args.list_pvs:
        print("\n".join(pv_listing(args.prefix, tuple(group.table.values()))))
        print("# end of PV list", flush=True)

    async def startup(async_lib) -> None:
        loop = asyncio.get_running_loop()
        group.loop = loop
        await loop.run_in_executor(None, coordinator.start)
        log.warning("coordinating writer workers on %s:%d (nexus-writer-ioc worker "
                    "--coordinator HOST:%d); they read pva://%s with %s", *coordinator.address,
                    coordinator.address[1], coordinator.source["channel"],
                    coordinator.source["options"])
        loop.create_task(group.statistics_loop())
        await group.put_XMLFileName(group.params["XMLFileName"])
        await group._load_attributes(group.params["NDAttributesFile"],
                                     group.params["NDAttributesMacros"])

    def terminate(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    from caproto.server import run

    interfaces = os.environ.get("EPICS_CAS_INTF_ADDR_LIST", "0.0.0.0").split()
    try:
        run(group.pvdb, interfaces=interfaces, startup_hook=startup, log_pv_names=False)
    except KeyboardInterrupt:
        pass
    finally:
        coordinator.stop()
    return 0
