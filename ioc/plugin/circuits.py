"""The Channel Access server's circuits, with a bound on the writes each client has in flight
(``ca_server.Context`` uses them).

caproto's server starts a task for every write it reads from a client and goes on
reading: a client sending puts faster than they are handled (a script in a loop, a
fuzzer, 135 000 puts in 10 s) piles up tasks without limit, and every other client's
read waits behind them (4-9 s at ~100 refused puts/s before this bound; over 10 minutes
after a 10 s burst).  Here each circuit has at most ``MAX_WRITES_IN_FLIGHT`` write tasks;
when they are all busy, that circuit's command loop waits, its bounded command queue
fills, the server stops reading its socket, and TCP makes the client wait.  Other
clients' reads go on being answered.
"""

from __future__ import annotations

import asyncio

from caproto.asyncio.server import VirtualCircuit
from caproto.server.common import DisconnectedCircuit

__all__ = ["BoundedWritesCircuit"]


class BoundedWritesCircuit(VirtualCircuit):
    # enough for busy records waiting (Capture=1 until the capture ends) and for any
    # client's normal burst of puts; small enough that one event-loop pass stays short
    MAX_WRITES_IN_FLIGHT = 32

    async def _start_write_task(self, handle_write):
        slots = self.__dict__.get("_write_slots")
        if slots is None:
            slots = self._write_slots = asyncio.Semaphore(self.MAX_WRITES_IN_FLIGHT)
        await slots.acquire()  # this client's next command waits for a free slot

        async def write() -> None:
            try:
                await handle_write()
            except DisconnectedCircuit:
                pass  # the client left before its reply: nobody to tell
            finally:
                slots.release()

        self.tasks.create(write())
