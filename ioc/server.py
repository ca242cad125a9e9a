"""``nexus-writer-ioc serve``: assemble PVs, file saver and CA source, and run."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from . import __version__
from .layout.ndattributes import AttributesError, AttributesStatus, load_attributes
from .plugin import ca_server
from .plugin.file_saver import FileSaver, layout_status
from .plugin.group import make_group_class, pv_listing
from .plugin.ioc_logging import configure as configure_logging
from .plugin.naming import PathPolicy
from .plugin.pvtable import with_defaults
from .serve_summary import SourceReport, ca_search_hint, summary_lines, wait_and_announce
from .writer.nexus import available_compressions

log = logging.getLogger(__name__)

PORT_NAME = "FileHDF1"


def build_ioc(prefix: str, source: str, cam: str = "", layout: str = "", attributes: str = "",
              queue_size: int = 20, allow_roots: tuple[str, ...] = (), receiver: str = "process",
              pva_queue: int = 32, max_memory: int | None = None,
              ports: dict[str, str] | None = None):
    """Create the PV group, the saver and the image source (not started).

    ``source`` is ``ca://PREFIX`` (or a bare PREFIX: an NDStdArrays plugin over Channel
    Access) or ``pva://PVNAME`` (an NDPluginPva NTNDArray).  ``receiver="process"``
    receives images in a child process (frames in shared memory); ``"thread"`` receives
    them in this process (one GIL for everything).  ``max_memory`` (bytes) bounds the
    frames held (queue and Capture buffer).  ``ports`` are the NDArrayPort names besides
    the driver's (``serve --port``)."""
    import h5py

    from .plugin.memory import default_limit
    from .sources.ca import AttributeSampler
    from .sources.driver_attributes import DriverAttributes
    from .sources.frames import parse_source
    from .sources.ports import PortMap
    from .sources.select import TransportSource

    parse_source(source)  # an unknown transport is refused before anything starts
    for name, spec in (ports or {}).items():
        try:
            parse_source(spec)
        except ValueError as exc:
            raise ValueError(f"--port {name}={spec}: {exc}") from None

    max_memory = max_memory or default_limit()
    port_map = PortMap(source, ports)

    table = with_defaults(
        PluginType_RBV=f"NDFileHDF5 ver{h5py.version.hdf5_version}",
        PortName_RBV=PORT_NAME, WriterVersion_RBV=__version__,
        QueueSize=queue_size, QueueSize_RBV=queue_size, QueueFree=queue_size,
        XMLFileName=layout, XMLFileName_RBV=layout,
        NDAttributesFile=attributes, SourcePrefix=source, SourcePrefix_RBV=source,
        PoolMaxMem=max_memory / 1e6,
        NDArrayPort=port_map.name_of(source), NDArrayPort_RBV=port_map.name_of(source),
    )
    group = make_group_class(table)(prefix=prefix, table=table)
    group.available_compressions = {int(c) for c in available_compressions()}
    policy = PathPolicy.from_dirs(allow_roots)
    group.policy = policy
    saver = FileSaver(group.params, group.post, queue_size, policy, memory_limit=max_memory,
                      user_paths=group.user_paths)
    saver.on_capture_end = group.on_capture_end  # completes pending Capture=1 puts
    group.saver = saver
    group.check_layout = lambda spec: layout_status(spec, policy)

    from caproto.threading.client import Context

    context = Context()
    sampler = AttributeSampler(context, cam)
    driver_attributes = DriverAttributes(
        context, cam, lambda message: group.post(DriverAttributesMessage_RBV=message[:255]),
        policy.roots) if cam else None

    report = SourceReport(source)

    def on_status(status: dict) -> None:
        if "connected" in status:
            group.post(SourceConnected_RBV=int(status["connected"]))
            report.changed(bool(status["connected"]))
        if "skipped" in status:
            group.post(SourceSkipped_RBV=status["skipped"])
        if "duplicates" in status:
            group.post(SourceDuplicates_RBV=status["duplicates"])
        if "message" in status:
            group.post(WriteMessage=str(status["message"])[:255])
        if "arrived" in status:  # came, but not used (see CAImageSource._not_used)
            saver.arrived(int(status["arrived"]))

    def on_error(message: str) -> None:
        count = int(group.params["InvalidFrames_RBV"]) + 1
        group.post(WriteMessage=message[:255], InvalidFrames_RBV=count)

    if receiver == "process":
        from .sources.receiver import ProcessImageSource

        image = ProcessImageSource(source, group.on_frame, on_status=on_status,
                                   on_error=on_error, attributes=sampler, queue_size=queue_size,
                                   pva_queue=pva_queue, driver_attributes=driver_attributes,
                                   driver_prefix=cam)
        group.on_queue_size = image.set_queue_size
    else:
        image = TransportSource(source, group.on_frame, pva_queue=pva_queue,
                                accepting=group.accepting, on_status=on_status,
                                on_error=on_error, attributes=sampler, context=context,
                                driver_attributes=driver_attributes, driver_prefix=cam)
    # a stop takes in the frames the source finished before it (plugin/stop_drain.py)
    saver.latest_unique_id = lambda timeout: image.latest_unique_id(timeout)

    def attributes_changed(definitions) -> None:
        # a Stream opened with the last frame records the new attributes (as ADCore)
        saver.submit("attributes_changed", values=sampler.sample(saver.last_frame),
                     names={d.name for d in definitions})

    def load(spec: str, macros: str) -> tuple[int, str]:
        try:
            definitions = load_attributes(spec, macros, allowed_roots=policy.roots)
        except AttributesError as exc:
            sampler.set_definitions(exc.definitions)  # those before the error, as ADCore
            attributes_changed(exc.definitions)
            return int(exc.status), str(exc)
        notes = [str(w) for w in definitions.warnings] + sampler.set_definitions(definitions)
        for note in notes:
            log.warning("NDAttributesFile %s: %s", spec[:200], note)
        attributes_changed(definitions)
        return int(AttributesStatus.OK), "; ".join(notes)

    def set_source(prefix_: str) -> None:
        try:
            parse_source(prefix_)
        except ValueError as exc:
            group.post(WriteMessage=str(exc)[:255])
            raise
        report.prefix = prefix_
        image.set_prefix(prefix_)
        port = port_map.name_of(prefix_)
        group.post(NDArrayPort=port, NDArrayPort_RBV=port)
        _prime_when_connected(image, prime, timeout=5.0)

    def select_port(name: str) -> str | None:
        """NDArrayPort written: switch to that port's source, or say why not."""
        new = port_map.source_of(name)
        if new is None:
            # the value it holds is accepted again (ophyd's unstage restores it)
            return None if name == group.params["NDArrayPort"] else port_map.refusal(name)
        if new != group.params["SourcePrefix"]:
            group.post(SourcePrefix=new, SourcePrefix_RBV=new)
            set_source(new)
        return None

    def on_driver_port(name: str) -> None:
        port_map.driver_port = name
        if group.params["SourcePrefix"] == port_map.default_source:
            group.post(NDArrayPort=name, NDArrayPort_RBV=name)

    def prime() -> None:
        frame = image.read_current()
        log.debug("priming from the source's current frame: %s",
                 "none" if frame is None else f"{frame.unique_id} {frame.data.shape}")
        if frame is not None:
            saver.submit("prime", frame=frame)

    sampler.on_message = lambda message: group.post(NDAttributesMessage_RBV=message[:255])
    group.on_attributes = load
    group.on_source_prefix = set_source
    group.on_array_port = select_port
    group.on_driver_port = on_driver_port  # these two start with the server (serve_main)
    group.driver_attributes = driver_attributes
    group.source_report = report
    return group, saver, image, context, cam, prime


def serve_main(args: argparse.Namespace) -> int:
    configure_logging(args.verbose, log.name)
    try:
        ca_server.server_port()
    except ca_server.ServerPortError as exc:
        log.error("%s", exc)
        return 2
    try:
        if getattr(args, "workers_listen", None):  # writer workers write the frames
            from .plugin.workers.serve import build_coordinator

            group, saver, image = build_coordinator(args)
            group.source_report = SourceReport(image.prefix)
            context = prime = None  # the workers read the frames and the driver
            cam, driver_use = "", "PARAM attributes, read by each writer worker"
        else:
            group, saver, image, context, cam, prime = _build_writer(args)
            driver_use = ""
    except ValueError as exc:  # an unknown source transport (--source, --port), ...
        log.error("%s", exc)
        return 2
    if args.list_pvs:
        print("\n".join(pv_listing(args.prefix, tuple(group.table.values()))))
        print("# end of PV list", flush=True)

    async def startup(ca_context) -> None:
        loop = asyncio.get_running_loop()
        group.loop = loop
        await loop.run_in_executor(None, saver.start)
        loop.create_task(group.statistics_loop())
        # Initial layout / attributes validation, as if written by an operator.
        await group.put_XMLFileName(group.params["XMLFileName"])
        await group._load_attributes(group.params["NDAttributesFile"],
                                     group.params["NDAttributesMacros"])
        if group.params["FilePath"]:
            await group.report_unfinished(str(group.params["FilePath"]))
        await loop.run_in_executor(None, image.start)
        if cam:
            from .sources.ports import watch_driver_port

            group.driver_port_watch = watch_driver_port(context, cam, group.on_driver_port)
            group.driver_attributes.start()
            loop.create_task(_default_port(group, context, cam))
        fixed = summary_lines(
            version=__version__, prefix=args.prefix, n_pvs=len(group.pvdb),
            port=ca_context.port, udp_port=ca_context.ca_server_port,
            interfaces=ca_server.interfaces(), beacons=ca_server.beacon_addresses(),
            params=dict(group.params), cam=cam or args.cam, roots=group.policy.roots,
            driver_use=driver_use)
        pid = getattr(getattr(image, "process", None), "pid", None)
        loop.run_in_executor(None, _announce_then_prime, fixed, image, group.source_report,
                             pid, prime)

    def terminate(*_):
        raise KeyboardInterrupt

    # SIGTERM, SIGINT and SIGHUP (the terminal or the session going away) end the server;
    # open files are closed (and renamed) below.
    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGHUP, terminate)
    # A file-size limit (RLIMIT_FSIZE) must give a write error, not kill the IOC.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        ca_server.run(group.pvdb, startup, interfaces=ca_server.interfaces())
    except KeyboardInterrupt:
        pass
    finally:
        group.source_report.stop()
        image.stop()
        if group.driver_attributes is not None:
            group.driver_attributes.stop()
        saver.stop()
    return 0


def _build_writer(args: argparse.Namespace) -> tuple:
    """This IOC writes the frames itself: build_ioc, after the process-wide settings."""
    from .sources._malloc import keep_frame_buffers
    from .writer import _write_behind

    keep_frame_buffers()
    _write_behind.set_enabled(not args.keep_page_cache)
    max_memory = int(args.max_memory * 1e6) if getattr(args, "max_memory", None) else None
    return build_ioc(args.prefix, args.source, args.cam, args.layout, args.attributes,
                     args.queue_size, tuple(args.allow_root), args.receiver, args.pva_queue,
                     max_memory, dict(args.port))


def _announce_then_prime(fixed, image, report, pid, prime, timeout: float = 10.0) -> None:
    """The start-up summary once the source is connected (or after a few seconds), then
    the readbacks primed from the source's current frame once it is connected."""
    import time

    start = time.monotonic()
    wait_and_announce(fixed, image, report, pid)
    if prime is not None:  # None: the writer workers read the frames, not this process
        _prime_when_connected(image, prime, timeout - (time.monotonic() - start), quiet=True)


def _prime_when_connected(image, prime, timeout: float = 10.0, quiet: bool = False) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not image.connected:
        time.sleep(0.05)
    if image.connected:
        prime()
    elif not quiet:
        from .sources.frames import parse_source

        log.warning("source %s not connected after %.0f s; readbacks not primed; %s",
                    image.prefix, timeout, ca_search_hint(parse_source(image.prefix)[0]))


async def _default_port(group, context, cam: str, patience: float = 60.0) -> None:
    """NDArrayPort defaults to the driver's PortName_RBV (read from --cam).  A driver that
    starts later than the writer is waited for (a warning with the hint after 5 s)."""
    loop = asyncio.get_running_loop()

    def read(timeout: float) -> str:
        (pv,) = context.get_pvs(cam + "PortName_RBV", timeout=timeout)
        value = pv.read(timeout=timeout).data[0]
        return value.decode() if isinstance(value, bytes) else str(value)

    deadline = loop.time() + patience
    warned = False
    while True:
        try:
            port = await loop.run_in_executor(None, read, 5.0)
            break
        except Exception as exc:  # noqa: BLE001 - the driver may not be up yet
            if not warned:
                reason = "no answer within 5 s" if isinstance(exc, TimeoutError) else exc
                log.warning("cannot read %sPortName_RBV (%s): NDArrayPort stays empty until "
                            "it answers, PARAM attributes are read once the driver "
                            "connects; %s", cam, reason, ca_search_hint())
                warned = True
            if loop.time() > deadline:
                return
    if warned:
        log.info("driver %s answered: NDArrayPort %s", cam, port)
    if port:
        group.on_driver_port(port)
