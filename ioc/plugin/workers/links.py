"""The coordinator's end of the worker connections: accept, greet, watch, send.

Runs in the coordinator's own event loop.  A worker is *lost* when its connection closes
or when it has been silent for ``LOST_AFTER`` seconds (it sends a status every second);
the coordinator then hears about it once, through ``on_lost``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from .protocol import LOST_AFTER, MAX_LINE, PROTOCOL, ProtocolError, decode, encode

log = logging.getLogger(__name__)


@dataclass(eq=False)
class WorkerLink:
    """One connected worker."""

    id: int
    name: str
    host: str
    pid: int
    writer: asyncio.StreamWriter
    alive: bool = True
    last_heard: float = field(default_factory=time.monotonic)
    status: dict[str, Any] = field(default_factory=dict)
    dropped_seen: int = 0  # the worker's DroppedArrays total already added to ours

    @property
    def label(self) -> str:
        return f"{self.name} ({self.host})" if self.host not in self.name else self.name

    def send(self, message: dict[str, Any]) -> None:
        if not self.alive:
            return
        try:
            self.writer.write(encode(message))
        except (ConnectionError, RuntimeError) as exc:  # closing transport
            log.info("cannot send to %s: %s", self.label, exc)


class LinkServer:
    """Listens for workers; calls back into the coordinator (all in one event loop)."""

    def __init__(self, on_join: Callable[[WorkerLink, dict], Awaitable[str | None]],
                 on_message: Callable[[WorkerLink, dict], Awaitable[None]],
                 on_lost: Callable[[WorkerLink, str], Awaitable[None]]):
        self.on_join = on_join
        self.on_message = on_message
        self.on_lost = on_lost
        self.links: dict[int, WorkerLink] = {}
        self._ids = itertools.count()
        self._server: asyncio.AbstractServer | None = None
        self._watch: asyncio.Task | None = None

    async def start(self, host: str, port: int) -> tuple[str, int]:
        self._server = await asyncio.start_server(self._serve, host, port, limit=MAX_LINE + 1)
        self._watch = asyncio.get_running_loop().create_task(self._watchdog())
        return self._server.sockets[0].getsockname()[:2]

    async def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
        if self._server is not None:
            self._server.close()
        for link in list(self.links.values()):
            link.alive = False
            link.writer.close()

    def alive(self) -> list[WorkerLink]:
        return [link for link in self.links.values() if link.alive]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        link: WorkerLink | None = None
        why = "connection closed"
        try:
            hello = decode(await asyncio.wait_for(reader.readline(), 10.0))
            if hello.get("type") != "hello":
                raise ProtocolError(f"expected hello, got {hello.get('type')!r}")
            link = WorkerLink(next(self._ids), str(hello.get("name", ""))[:100] or str(peer),
                              str(hello.get("host", ""))[:100], int(hello.get("pid", 0)), writer)
            if hello.get("protocol") != PROTOCOL:
                refusal = (f"protocol {hello.get('protocol')} (version {hello.get('version')}); "
                           f"this coordinator speaks protocol {PROTOCOL}")
            else:
                self.links[link.id] = link
                refusal = await self.on_join(link, hello)
            if refusal:
                self.links.pop(link.id, None)
                writer.write(encode({"type": "refused", "message": refusal}))
                await writer.drain()
                log.warning("worker %s refused: %s", link.label, refusal)
                link = None
                return
            while True:
                line = await reader.readline()
                if not line:
                    break
                link.last_heard = time.monotonic()
                await self.on_message(link, decode(line))
        except (ProtocolError, ValueError, asyncio.LimitOverrunError) as exc:
            why = f"protocol error: {exc}"
        except asyncio.TimeoutError:
            why = "no hello within 10 s"
        except (ConnectionError, OSError) as exc:
            why = f"connection error: {exc}"
        finally:
            writer.close()
            if link is not None and link.alive:
                link.alive = False
                self.links.pop(link.id, None)
                await self.on_lost(link, why)

    async def _watchdog(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for link in list(self.links.values()):
                if link.alive and now - link.last_heard > LOST_AFTER:
                    link.alive = False
                    self.links.pop(link.id, None)
                    link.writer.close()
                    await self.on_lost(link, f"silent for {LOST_AFTER:.0f} s")
