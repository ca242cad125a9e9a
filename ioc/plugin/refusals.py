"""Refused puts: the client gets the reason, the operator one short log line.

Every client write to a PV of the group goes through ``install``'s wrapper: a write
that fails, whether our put rules refuse it (``PutRefused``) or caproto cannot convert
the value (an enum state out of range, text for a number, invalid UTF-8), ends the
same way: WriteMessage says why, one WARNING line names the PV, the value and the
reason, and the client's put fails with ECA_PUTFAIL carrying the reason.  caproto's own
traceback for such writes is filtered out.  Log lines are rate-limited so that a client
flooding the IOC with bad puts cannot make logging its denial of service.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from caproto import AlarmSeverity, AlarmStatus, CaprotoError, ChannelAlarm, ChannelType
from caproto._data import ChannelEnum
from caproto._dbr import native_type

log = logging.getLogger("ioc.puts")

__all__ = ["PutRefused", "RefusalLog", "WriteNeutralAlarm", "install"]


class PutRefused(Exception):
    """A write ADCore would refuse: the client gets an error, the old value stays."""


# Errors a bad value makes caproto (or a conversion of ours) raise: refusals, not bugs.
EXPECTED = (PutRefused, CaprotoError, ValueError, TypeError, OverflowError, IndexError,
            UnicodeError)
NUMERIC = {ChannelType.INT, ChannelType.LONG, ChannelType.CHAR, ChannelType.FLOAT,
           ChannelType.DOUBLE, ChannelType.ENUM}


class RefusalLog:
    """At most ``burst`` lines per ``period`` seconds; the rest are counted and said in
    one line when the next period starts."""

    def __init__(self, burst: int = 20, period: float = 10.0, clock=time.monotonic):
        self.burst, self.period, self.clock = burst, period, clock
        self._start = float("-inf")
        self._logged = 0
        self._suppressed = 0

    def refused(self, pvname: str, value: str, reason: str) -> None:
        now = self.clock()
        if now - self._start >= self.period:
            if self._suppressed:
                log.warning("%d more refused puts in the last %.0f s were not logged one by one",
                            self._suppressed, now - self._start)
            self._start, self._logged, self._suppressed = now, 0, 0
        if self._logged < self.burst:
            self._logged += 1
            log.warning("refused put %s = %s: %s", pvname, value, reason)
        else:
            self._suppressed += 1


class WriteNeutralAlarm(ChannelAlarm):
    """The PVs' alarm, left alone by a refused write.  caproto raises MAJOR/WRITE on a
    failed write and publishes it to every PV sharing the alarm (all of a group's PVs:
    ~1.5 ms of record-field updates per refused put); EPICS base raises no alarm for a
    refused put."""

    async def write(self, *, status=None, severity=None, **kwargs):
        if status == AlarmStatus.WRITE and severity == AlarmSeverity.MAJOR_ALARM \
                and not kwargs:
            return None
        return await super().write(status=status, severity=severity, **kwargs)


def describe_value(data, data_type) -> str:
    """A short, printable form of what a client wrote."""
    try:
        if native_type(data_type) in (ChannelType.CHAR, ChannelType.STRING):
            raw = bytes(data) if not isinstance(data, (list, tuple)) else b"".join(
                d if isinstance(d, bytes) else bytes([int(d) & 0xFF]) for d in data)
            text = repr(raw.split(b"\0", 1)[0].decode("utf-8", "replace"))
        else:
            values = list(data)
            text = str(values[0]) if len(values) == 1 else str(values)
    except Exception:  # noqa: BLE001 - whatever it was, say something
        text = repr(data)
    return text if len(text) <= 80 else text[:77] + "..."


def check_enum(instance, data, data_type) -> None:
    """An enum state given as a number must exist (caproto stored -32768 as 32768, and
    every later read of the PV failed)."""
    if not isinstance(instance, ChannelEnum) or native_type(data_type) not in NUMERIC:
        return
    try:
        value = data[0]
    except (TypeError, IndexError):
        return
    states = len(instance.enum_strings)
    if not 0 <= value < states:
        raise ValueError(f"{value} is not a state of this record (0-{states - 1})")


def install(instances, publish: Callable[[str], Awaitable[None]],
            refusals: RefusalLog) -> None:
    """Wrap each PV's client-write entry point (``auth_write``)."""
    for instance in instances:
        instance.auth_write = _wrapped(instance, instance.auth_write, publish, refusals)
    logging.getLogger("caproto.circ").addFilter(_no_traceback_for_refusals)


def _wrapped(instance, original, publish, refusals):
    async def auth_write(hostname, username, data, data_type, metadata, **kwargs):
        try:
            check_enum(instance, data, data_type)
            return await original(hostname, username, data, data_type, metadata, **kwargs)
        except PutRefused as exc:
            reason, said = str(exc), True
        except EXPECTED as exc:
            reason, said = f"invalid value ({exc})", False
        except Exception as exc:  # noqa: BLE001 - a bug of ours: keep its traceback
            log.exception("put to %s failed", instance.pvname)
            reason, said = f"internal error: {type(exc).__name__}: {exc}", False
        reason = " ".join(reason.split())
        refusals.refused(instance.pvname, describe_value(data, data_type), reason)
        if not said:
            await publish(reason)
        raise PutRefused(reason) from None

    return auth_write


def _no_traceback_for_refusals(record: logging.LogRecord) -> bool:
    """caproto logs every failed write with a traceback; refusals are logged above."""
    return not (record.exc_info and isinstance(record.exc_info[1], PutRefused))
