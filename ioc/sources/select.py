"""The source a name selects: ``ca://PREFIX`` (or a bare prefix) or ``pva://PVNAME``.

``TransportSource`` holds the transport's source and replaces it when a new name
(SourcePrefix) names the other transport; it is what runs in the receiver process, and
in the IOC itself with ``serve --receiver thread``.
"""

from __future__ import annotations

from collections.abc import Callable

from .frames import parse_source


class TransportSource:
    def __init__(self, spec: str, on_frame: Callable, *, pva_queue: int = 32, **kwargs):
        """``kwargs`` go to the transport's source (accepting, allocate, on_status,
        on_error, attributes; ``context`` only to the CA source)."""
        self.on_frame = on_frame
        self.pva_queue = pva_queue
        self.kwargs = kwargs
        self.transport: str | None = None
        self.source = None
        self._make(spec)

    def _make(self, spec: str) -> None:
        transport, name = parse_source(spec)
        kwargs = dict(self.kwargs)
        if transport == "pva":
            from .pva import PVAImageSource

            kwargs.pop("context", None)
            self.source = PVAImageSource(name, self.on_frame, queue_size=self.pva_queue,
                                         **kwargs)
        else:
            from .ca import CAImageSource

            if kwargs.get("allocate") is not None:  # the receiver process
                from . import _caproto_recv

                _caproto_recv.install()
            kwargs.pop("request_options", None)  # pvAccess only
            self.source = CAImageSource(name, self.on_frame, **kwargs)
        self.transport = transport

    @property
    def prefix(self) -> str:
        return self.source.prefix

    @property
    def connected(self) -> bool:
        return self.source.connected

    @property
    def skipped(self) -> int:
        return self.source.skipped

    @property
    def duplicates(self) -> int:
        return self.source.duplicates

    def start(self) -> None:
        self.source.start()

    def stop(self) -> None:
        self.source.stop()

    def set_prefix(self, spec: str) -> None:
        transport, name = parse_source(spec)
        if transport == self.transport:
            self.source.set_prefix(name)
            return
        self.source.stop()
        self._make(spec)
        self.source.start()

    def read_current(self, timeout: float = 2.0):
        return self.source.read_current(timeout)

    def latest_unique_id(self, timeout: float = 2.0) -> int | None:
        """The source's latest UniqueId (None where its transport cannot tell)."""
        method = getattr(self.source, "latest_unique_id", None)
        return method(timeout) if method is not None else None
