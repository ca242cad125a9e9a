"""Console logging of the IOC processes (``serve``, ``sim``): levels, timestamps, and
caproto's beacon errors reduced to one line.

Verbosity (``-v`` counts):

* 0: warnings, plus the process's own start-up summary and state changes (``summary``
  logger at INFO);
* 1 (``-v``): this package's progress (INFO);
* 2 (``-vv``): this package's details, per-PV connections, and caproto's connection
  events (clients, circuits, channels);
* 3 (``-vvv``): everything, caproto's protocol debugging included.
"""

from __future__ import annotations

import contextlib
import logging

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure(verbose: int, summary: str) -> None:
    """Set up the root handler and the levels for ``verbose``; ``summary`` names the
    logger whose INFO lines are shown at every verbosity (the start-up summary)."""
    verbose = max(0, int(verbose))
    logging.basicConfig(level=logging.DEBUG if verbose >= 3 else logging.WARNING,
                        format=FORMAT)
    if verbose < 3:
        logging.getLogger("ioc").setLevel({0: logging.WARNING, 1: logging.INFO}
                                          .get(verbose, logging.DEBUG))
        logging.getLogger("caproto").setLevel(logging.INFO if verbose == 2
                                              else logging.WARNING)
    if verbose < 2:
        logging.getLogger(summary).setLevel(logging.INFO)
    quiet_beacon_errors()
    quiet_late_answers()


class _BeaconErrors(logging.Filter):
    """caproto's server logs an ERROR with a traceback for every beacon it cannot send,
    advising variables that may well be set already.  Beacons go to the CA repeater
    (``EPICS_CAS_BEACON_PORT``, 5065); with none listening on a unicast address the
    kernel refuses them, which is normal for a soft IOC started without ``caRepeater``:
    clients still find the IOC by searching.  Each (address, error) is reported once,
    in one line: INFO for a refused beacon, WARNING for anything else."""

    def __init__(self):
        super().__init__()
        self._seen: set[tuple[str, str]] = set()
        self._log = logging.getLogger("ioc.beacons")

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith("Failed to send beacon"):
            return True
        error = record.exc_info[1] if record.exc_info else None
        cause = error.__cause__ if error is not None and error.__cause__ else error
        address = _address(record.args[0] if record.args else "?")
        key = (address, type(cause).__name__)
        if key not in self._seen:
            self._seen.add(key)
            if isinstance(cause, ConnectionRefusedError):
                self._log.info("no CA repeater listening at %s: beacons are not forwarded "
                               "(normal without caRepeater; clients find this IOC by "
                               "search)", address)
            else:
                self._log.warning("cannot send CA beacons to %s: %s (set "
                                  "EPICS_CAS_BEACON_ADDR_LIST and "
                                  "EPICS_CAS_AUTO_BEACON_ADDR_LIST=NO to choose where "
                                  "they go); not repeated", address, cause)
        return False


def _address(value) -> str:
    if isinstance(value, tuple) and len(value) == 2:
        return f"{value[0]}:{value[1]}"
    return str(value)


_FILTER = _BeaconErrors()


class _DropBacklogWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("PV %r with up to %d elements")


@contextlib.contextmanager
def caproto_backlog_warning_dropped():
    """While PVs are created: drop caproto's warning that a large array's subscription
    backlog was "reduced" (it is reduced from caproto's 1000 to the
    ``CAPROTO_MIN_SUBSCRIPTION_BACKLOG`` the caller chose, which may well be a raise over
    caproto's own choice for that size); the caller logs the backlog it uses."""
    drop = _DropBacklogWarning()
    handlers = logging.getLogger().handlers
    for handler in handlers:
        handler.addFilter(drop)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(drop)


class _LateAnswers(logging.Filter):
    """caproto's client logs a WARNING with a traceback when a server's answer arrives
    for a channel the client has just closed (an unsubscribe crossing an update on the
    wire).  Nothing is lost, the channel is gone: one DEBUG line instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if (str(record.msg).startswith("Invalid command") and error is not None
                and "States.CLOSED" in str(error)):
            logging.getLogger("ioc.ca").debug("an answer for a closed channel ignored: %s",
                                              error)
            return False
        return True


_LATE = _LateAnswers()


def quiet_late_answers() -> None:
    """Install the closed-channel filter on caproto's client logger (idempotent)."""
    logger = logging.getLogger("caproto.circ")
    if _LATE not in logger.filters:
        logger.addFilter(_LATE)


def quiet_beacon_errors() -> None:
    """Install the beacon filter on caproto's server logger (idempotent)."""
    logger = logging.getLogger("caproto.ctx")
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)


__all__ = ["FORMAT", "caproto_backlog_warning_dropped", "configure", "quiet_beacon_errors",
           "quiet_late_answers"]
