"""``nexus-writer-ioc worker``: one writer worker of a coordinator (``serve --workers-listen``).

The worker connects to the coordinator (and reconnects when it restarts), learns from it
which pvAccess channel to read and which distributor group to join, and then receives its
share of the frames: the detector IOC's data distributor (pvDatabaseCPP, EPICS >= 7.0.8)
or a ``pvapy-mirror-server`` in front of it hands each group member K consecutive frames
in turn.  Frames arrive in the receiver process (shared memory, as for ``serve``), go
through the part saver's queue into the worker's part file, and every step is reported to
the coordinator.  When it cannot write, or loses the coordinator, the worker leaves the
group, so that the distributor gives its share to the others.
"""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import threading
import time

from .. import __version__
from ..ndarray import NDArray
from ..plugin.file_saver import NO_POLICY
from ..plugin.naming import PathPolicy
from ..plugin.workers.part_saver import PartSaver
from ..plugin.workers.protocol import (
    HEARTBEAT,
    PROTOCOL,
    LineReader,
    ProtocolError,
    encode,
    identity,
    parse_address,
)

log = logging.getLogger(__name__)

RECONNECT_EVERY = 2.0  # s
_COMMANDS = {"start", "begin", "stop", "write", "discard", "flush"}


class Refused(Exception):
    """The coordinator does not accept this worker (the message says why)."""


class Worker:
    def __init__(self, coordinator: tuple[str, int], *, name: str = "",
                 policy: PathPolicy = NO_POLICY, queue_size: int | None = None,
                 receiver: str = "process", pva_queue: int = 32):
        self.coordinator = coordinator
        self.hello = {"type": "hello", "protocol": PROTOCOL, "version": __version__,
                      **identity(name)}
        self.receiver = receiver
        self.pva_queue = pva_queue
        self.sampler = None  # the coordinator's NDAttributesFile PVs (made when needed)
        self.cam = ""
        self.fixed_queue = queue_size is not None  # else: the coordinator's QueueSize
        self.saver = PartSaver(self._send, policy=policy, queue_size=queue_size or 20,
                               worker=self.hello["name"], leave_group=self.leave_group)
        self.source = None
        self.channel = ""
        self.connected_source = False
        self.lost_frames = 0  # frames the receiver could not hand over (no free slot)
        self._sock: socket.socket | None = None
        self._send_lock = threading.Lock()
        self._sampler_lock = threading.Lock()
        self._stopping = threading.Event()

    # -- the coordinator connection ------------------------------------------------------
    def _send(self, message: dict) -> None:
        with self._send_lock:
            sock = self._sock
            if sock is None:
                return
            try:
                sock.sendall(encode(message))
            except OSError as exc:
                log.info("cannot send %s to the coordinator: %s", message.get("type"), exc)

    def run(self) -> int:
        self.saver.start()
        try:
            while not self._stopping.is_set():
                try:
                    sock = socket.create_connection(self.coordinator, timeout=5.0)
                except OSError as exc:
                    log.info("coordinator %s:%d not reachable: %s", *self.coordinator, exc)
                    self._stopping.wait(RECONNECT_EVERY)
                    continue
                try:
                    self._session(sock)
                except Refused as exc:
                    log.error("the coordinator refused this worker: %s", exc)
                    return 2
                except (OSError, ProtocolError) as exc:
                    log.error("coordinator connection: %s", exc)
                finally:
                    if self._stopping.is_set():
                        self.saver.stop()  # the part closes; "closed" still reaches the coordinator
                    with self._send_lock:
                        self._sock = None
                    sock.close()
                if not self._stopping.is_set():
                    log.error("coordinator lost; the part file is closed, the group left")
                    self.leave_group()
                    self.saver.submit("abort")
                    self._stopping.wait(RECONNECT_EVERY)
            return 0
        finally:
            self.saver.stop()
            if self.source is not None:
                self.source.stop()

    def stop(self) -> None:
        self._stopping.set()
        with self._send_lock:
            if self._sock is not None:
                try:  # ends the read loop; what the part saver still sends goes out
                    self._sock.shutdown(socket.SHUT_RD)
                except OSError:
                    pass

    def _session(self, sock: socket.socket) -> None:
        sock.settimeout(None)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._send_lock:
            self._sock = sock
        self._send(self.hello)
        reader = LineReader(sock)
        welcome = reader.read()
        if welcome is None:
            raise OSError("the coordinator closed the connection")
        if welcome["type"] == "refused":
            raise Refused(welcome.get("message", ""))
        log.warning("joined the coordinator %s:%d as %s", *self.coordinator, welcome.get("label"))
        self._resize_queue(int(welcome.get("queue_size", 20)))
        self._join(welcome.get("source") or {})
        beat = threading.Thread(target=self._heartbeat, args=(sock,), daemon=True,
                                name="heartbeat")
        beat.start()
        while True:
            message = reader.read()
            if message is None:
                return
            kind = message.pop("type")
            if kind == "resize_queue":
                self._resize_queue(int(message.get("size", 20)))
            elif kind in _COMMANDS:
                self.saver.submit(kind, **message)
            elif kind == "attributes":
                threading.Thread(target=self._set_attributes, args=(message,), daemon=True,
                                 name="attributes").start()
            if kind == "start":
                self.join_group()  # a worker that failed before rejoins for a new capture

    def _sampler(self):
        """The coordinator's NDAttributesFile PVs, sampled into each frame (CA client)."""
        with self._sampler_lock:
            if self.sampler is None:
                from caproto.threading.client import Context

                from .ca import AttributeSampler

                self.sampler = AttributeSampler(Context(), self.cam)
            return self.sampler

    def _resize_queue(self, size: int) -> None:
        if self.fixed_queue:
            return
        self.saver.queue.capacity = max(size, 1)
        if self.source is not None and hasattr(self.source, "set_queue_size"):
            self.source.set_queue_size(size)

    def _set_attributes(self, message: dict) -> None:
        """The coordinator's NDAttributesFile: sampled into every frame received."""
        from ..layout.ndattributes import AttributesError, load_attributes

        definitions = []
        if message.get("xml"):
            try:
                definitions = load_attributes(message["xml"], str(message.get("macros", "")))
            except AttributesError as exc:
                log.error("NDAttributesFile from the coordinator: %s", exc)
        if not definitions and self.sampler is None:
            return  # nothing to sample: no CA client needed
        notes = self._sampler().set_definitions(definitions)
        for note in notes:
            log.warning("NDAttributesFile: %s", note)

    def _heartbeat(self, sock: socket.socket) -> None:
        while self._sock is sock and not self._stopping.is_set():
            source = self.source
            self._send({"type": "status", "connected": bool(source and source.connected),
                        "dropped": self.saver.dropped + self.lost_frames,
                        "skipped": getattr(source, "skipped", 0) if source else 0,
                        "queued": self.saver.queue.frames, "last": self.saver.last})
            time.sleep(HEARTBEAT)

    # -- the source and the distributor group ------------------------------------------------
    def _join(self, config: dict) -> None:
        channel = str(config.get("channel", ""))
        options = {str(k): str(v) for k, v in (config.get("options") or {}).items()}
        if self.source is not None and (channel != self.channel or
                                        options != self.source.request_options):
            self.source.stop()
            self.source = None
        self.channel = channel
        self.cam = str(config.get("cam", ""))
        if not channel:
            log.error("the coordinator names no pvAccess channel (serve --pva-channel)")
            return
        if self.source is None:
            self.source = self._make_source(channel, options)
            self.source.start()
        else:
            self.join_group()
        log.warning("reading pva://%s with %s", channel, options or "no distributor")

    def _make_source(self, channel: str, options: dict):
        spec = f"pva://{channel}"
        if self.receiver == "thread":
            from .pva import PVAImageSource

            return PVAImageSource(channel, self._on_frame, on_status=self._on_status,
                                  on_error=self._on_error, accepting=lambda: self.saver.queue.free > 0,
                                  queue_size=self.pva_queue, request_options=options,
                                  attributes=self._sampler())
        from .receiver import ProcessImageSource

        source = ProcessImageSource(spec, self._on_frame, on_status=self._on_status,
                                    on_error=self._on_error, queue_size=self.saver.queue.capacity,
                                    pva_queue=self.pva_queue, request_options=options,
                                    attributes=self._sampler())
        return source

    def join_group(self) -> None:
        if self.source is not None and self.channel and not self.source.prefix.endswith(self.channel):
            self.source.set_prefix(self._spec(self.channel))

    def leave_group(self) -> None:
        """Unsubscribe: the distributor then hands this worker's share to the others."""
        if self.source is not None and self.source.prefix.endswith(self.channel):
            try:
                self.source.set_prefix(self._spec(""))
            except Exception as exc:  # noqa: BLE001 - the receiver may be restarting
                log.error("cannot leave the distributor group: %s", exc)

    def _spec(self, channel: str) -> str:
        return channel if self.receiver == "thread" else f"pva://{channel}"

    def _on_frame(self, frame: NDArray | int) -> None:
        if isinstance(frame, int):
            self.lost_frames += 1
        else:
            self.saver.enqueue(frame)

    def _on_status(self, status: dict) -> None:
        if "message" in status:
            log.warning("%s", status["message"])

    def _on_error(self, message: str) -> None:
        log.warning("%s", message)


def worker_main(args: argparse.Namespace) -> int:
    from ..plugin.ioc_logging import configure

    configure(args.verbose, log.name)  # -v, -vv, -vvv as serve and sim
    from ..sources._malloc import keep_frame_buffers
    from ..writer import _write_behind

    keep_frame_buffers()
    _write_behind.set_enabled(not args.keep_page_cache)
    try:
        address = parse_address(args.coordinator)
    except ValueError as exc:
        log.error("--coordinator: %s", exc)
        return 2
    worker = Worker(address, name=args.name, policy=PathPolicy.from_dirs(args.allow_root),
                    queue_size=args.queue_size, receiver=args.receiver, pva_queue=args.pva_queue)

    def terminate(*_):
        worker.stop()

    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGINT, terminate)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a file-size limit gives a write error
    return worker.run()
