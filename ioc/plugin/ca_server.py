"""Run a caproto Channel Access server the way EPICS base servers read their environment.

EPICS base servers take their UDP search and TCP port from ``EPICS_CAS_SERVER_PORT``,
falling back to ``EPICS_CA_SERVER_PORT``; caproto 1.3 reads only ``EPICS_CA_SERVER_PORT``.
Setting ``EPICS_CA_SERVER_PORT`` for the server would also move the default port this
process's own CA *clients* search (the image source, the attribute sampler), so the server
port is set on the server context alone.  The start-up hook may be given the server context,
so that the IOC can say which port it bound.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Mapping

from caproto.asyncio.server import Context as _Context

from .circuits import BoundedWritesCircuit


class ServerPortError(ValueError):
    """EPICS_CAS_SERVER_PORT / EPICS_CA_SERVER_PORT is not a port number."""


def server_port(environ: Mapping[str, str] = os.environ) -> int | None:
    """The CA server port the environment asks for, or None (caproto's default, 5064)."""
    for name in ("EPICS_CAS_SERVER_PORT", "EPICS_CA_SERVER_PORT"):
        text = environ.get(name, "").strip()
        if not text:
            continue
        try:
            port = int(text)
        except ValueError:
            raise ServerPortError(f"{name}={text!r} is not a port number") from None
        if not 0 < port < 65536:
            raise ServerPortError(f"{name}={port} is not a port number (1-65535)")
        return port
    return None


def interfaces() -> list[str]:
    """The interfaces to serve on (``EPICS_CAS_INTF_ADDR_LIST``, default all)."""
    return os.environ.get("EPICS_CAS_INTF_ADDR_LIST", "0.0.0.0").split()


def beacon_addresses() -> list[str]:
    """Where caproto's server sends beacons (host:port), as configured."""
    import caproto

    return [f"{host}:{port}" for host, port in caproto.get_beacon_address_list()]


class Context(_Context):
    """caproto's asyncio server context, on the port EPICS base would use, with the writes
    each client has in flight bounded (``circuits``)."""

    CircuitClass = BoundedWritesCircuit

    def __init__(self, pvdb, interfaces=None):
        super().__init__(pvdb, interfaces)
        port = server_port()
        if port is not None:
            self.ca_server_port = port  # UDP searches, and the first TCP port tried


def run(pvdb, startup: Callable[[Context], Awaitable[None]] | None = None, *,
        interfaces=None, startup_hook=None, log_pv_names: bool = False) -> None:
    """``caproto.server.run`` (asyncio) with ``EPICS_CAS_SERVER_PORT`` honoured; returns on
    KeyboardInterrupt, as caproto's does.  ``startup(context)`` runs once the sockets are
    bound (``context.port`` is the TCP port it got); ``startup_hook(async_lib)`` is
    caproto's form."""
    server_port()  # a bad value is reported before anything starts

    async def serve() -> None:
        context = Context(pvdb, interfaces)
        hook = startup_hook
        if startup is not None:
            async def hook(async_lib) -> None:
                await startup(context)
        await context.run(log_pv_names=log_pv_names, startup_hook=hook)

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass


__all__ = ["Context", "ServerPortError", "beacon_addresses", "interfaces", "run",
           "server_port"]
