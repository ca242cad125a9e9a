"""caproto PV classes with the semantics of ADCore's record types.

``BusyEnum``: a busy record, whose put completes when the action ends.  ``NamelessEnum``:
a bo record without state names.  No file I/O here.
"""

from __future__ import annotations

import asyncio
import contextvars

from caproto import ChannelType
from caproto._dbr import native_type
from caproto.server.server import PvpropertyEnum

# Set by a put handler (in the client's write task) when the put must complete later: the
# busy record's put-callback completes when this future is done (see BusyEnum).
_busy_until: contextvars.ContextVar[asyncio.Future | None] = contextvars.ContextVar(
    "busy_until", default=None)


def complete_put_when(done: asyncio.Future) -> None:
    """Called by a put handler of a busy record: complete the client's put when ``done``."""
    _busy_until.set(done)


class BusyEnum(PvpropertyEnum):
    """An ADCore busy record (Capture, WriteFile, FlushNow, ...): the put-callback completes
    when the action ends, not when it starts.

    WriteFile and FlushNow handlers wait for the saver to finish the action.  A Capture=1
    handler returns once capturing has started; only then, outside the PV's write and its
    handler, this client's write task waits for the future the handler left in
    ``_busy_until`` (the end of that capture).  caproto runs each client write as its own task, so the
    client's circuit goes on serving its other reads and writes meanwhile, and a
    ``Capture=0`` from any client (which ends the capture) completes every pending
    ``Capture=1`` put.
    """

    async def write_from_dbr(self, data, data_type, metadata, *, flags=0):
        token = _busy_until.set(None)
        try:
            await super().write_from_dbr(data, data_type, metadata, flags=flags)
            done = _busy_until.get()
        finally:
            _busy_until.reset(token)
        if done is not None:
            # shield: a client that disconnects must not cancel what others wait for
            await asyncio.shield(done)


def enum_index(data, data_type, enum_strings) -> int:
    """The state a client's put selects, decoded as EPICS base does for a bo record: a
    string names a state, else it is read as a number."""
    value = data[0] if len(data) else 0
    if native_type(data_type) == ChannelType.STRING:
        text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
        text = text.split("\0", 1)[0].strip()
        if text in enum_strings:
            return enum_strings.index(text)
        try:
            index = int(float(text))
        except ValueError:
            raise ValueError(f"{text!r} is not a state of this record") from None
    else:
        index = int(value)
    if not 0 <= index < len(enum_strings):
        raise ValueError(f"state {index} out of range 0-{len(enum_strings) - 1}")
    return index


class NamelessEnum(PvpropertyEnum):
    """A bo record without state names (ProcessPlugin, EmptyFreeList, PoolPollStats in
    ADCore): two empty enum strings on the wire, as EPICS base serves them.  caproto turns
    a written index into its enum string, which is "" for both states here, so the index
    is decoded from the client's data and handed to the put handler as an int."""

    async def write_from_dbr(self, data, data_type, metadata, *, flags=0):
        index = enum_index(data, data_type, self.enum_strings)
        return await self.write(index, flags=flags)

    async def verify_value(self, value):
        index = value if isinstance(value, int) else self.get_raw_value(value) or 0
        if self.putter is not None:
            result = await self.putter(self, index)
            if result is not None:
                index = int(result)
        return self.enum_strings[index]
