"""Running a caproto PV server: caproto's ``server.run``, except that the start-up hook
is given the server context, so that the IOC can say which port it bound."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable


def interfaces() -> list[str]:
    """The interfaces to serve on (``EPICS_CAS_INTF_ADDR_LIST``, default all)."""
    return os.environ.get("EPICS_CAS_INTF_ADDR_LIST", "0.0.0.0").split()


def run(pvdb: dict, startup: Callable[[object], Awaitable[None]]) -> None:
    """Serve ``pvdb`` until interrupted; ``startup(context)`` runs once the server's
    sockets are bound (``context.port`` is the TCP port it got)."""
    from caproto.asyncio.server import Context

    async def main() -> None:
        context = Context(pvdb, interfaces())
        # EPICS: a server's port is EPICS_CAS_SERVER_PORT, defaulting to
        # EPICS_CA_SERVER_PORT; caproto 1.3 reads only the latter (which is also the
        # default port this process's clients search).
        if os.environ.get("EPICS_CAS_SERVER_PORT", "").strip():
            context.ca_server_port = int(os.environ["EPICS_CAS_SERVER_PORT"])

        async def hook(async_lib) -> None:
            await startup(context)

        await context.run(log_pv_names=False, startup_hook=hook)

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass


def beacon_addresses() -> list[str]:
    """Where caproto's server sends beacons (host:port), as configured."""
    import caproto

    return [f"{host}:{port}" for host, port in caproto.get_beacon_address_list()]


__all__ = ["beacon_addresses", "interfaces", "run"]
