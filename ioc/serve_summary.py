"""What ``serve`` tells the operator: a start-up summary (one line per item), the
source's connection changes, and hints where a problem is usually fixed."""

from __future__ import annotations

import logging
import os
import threading
import time

log = logging.getLogger("ioc.server")

SOURCE_WAIT = 5.0  # s: the summary waits this long for the source to connect


def ca_search_hint(transport: str = "ca") -> str:
    """Where this process searches for PVs (Channel Access, or pvAccess for pva:// sources),
    and how to change it."""
    kind = "PVA" if transport == "pva" else "CA"
    addresses = os.environ.get(f"EPICS_{kind}_ADDR_LIST", "").strip()
    auto = os.environ.get(f"EPICS_{kind}_AUTO_ADDR_LIST", "YES").strip().upper() != "NO"
    where = (f"EPICS_{kind}_ADDR_LIST={addresses!r}" if addresses
             else f"EPICS_{kind}_ADDR_LIST unset")
    where += " and the broadcast addresses" if auto else \
        f" only (EPICS_{kind}_AUTO_ADDR_LIST=NO)"
    return (f"searched: {where}; put the detector IOC's host (or host:port) in "
            f"EPICS_{kind}_ADDR_LIST")


class SourceReport:
    """Logs the source's connection state when it changes (not the per-PV chatter)."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        self._connected: bool | None = None
        self._lock = threading.Lock()
        self.announced = False  # the start-up summary has been logged
        self._stopping = False

    def announce(self, connected: bool) -> None:
        """The summary has reported ``connected``; later changes are logged."""
        with self._lock:
            if not self._stopping:
                self._connected = connected
                self.announced = True

    def stop(self) -> None:
        """The IOC is stopping: its own disconnection is not news."""
        with self._lock:
            self.announced = False
            self._connected = None
            self._stopping = True

    def changed(self, connected: bool) -> None:
        with self._lock:
            if self._stopping or connected == self._connected:
                return
            self._connected = connected
            if not self.announced:
                return  # the summary says it
        if connected:
            log.info("source %s connected", self.prefix)
        else:
            log.warning("source %s disconnected: frames stop until it is back", self.prefix)


def source_line(spec: str, connected: bool, waited: float,
                receiver_pid: int | None) -> tuple[int, str]:
    from .sources.frames import parse_source

    if not spec:
        return logging.WARNING, "source: none (--source is empty): no frames will arrive"
    transport, name = parse_source(spec)
    if transport == "pva":
        what, pvs = "NDPluginPva NTNDArray over pvAccess", f"the PV {name}"
        question = "an NDPluginPva plugin serving this PV"
    else:
        what, pvs = "NDStdArrays over CA", f"{name}ArrayData and its size/type/UniqueId PVs"
        question = "its NDStdArrays plugin at this prefix"
    where = f"{what}, received in process {receiver_pid}" if receiver_pid else what
    if connected:
        return logging.INFO, f"source: {spec} ({where}): connected"
    return logging.WARNING, (
        f"source: {spec} ({where}): NOT connected after {waited:.0f} s ({pvs}); is the "
        f"detector IOC running with {question}? {ca_search_hint(transport)}")


def summary_lines(*, version: str, prefix: str, n_pvs: int, port: int, udp_port: int,
                  interfaces: list[str], beacons: list[str], params: dict, cam: str,
                  roots: tuple, driver_use: str = "") -> list[tuple[int, str]]:
    """The summary's fixed lines, from the PV values after start-up validation
    (``driver_use``: what ``cam`` is read for, when not by this process)."""
    lines = [(logging.INFO, f"nexus-writer-ioc {version}: serving {prefix} ({n_pvs} PVs, "
                            "NDFileHDF5 interface)"),
             (logging.INFO, f"Channel Access: TCP port {port}, UDP search port {udp_port}, on "
                            f"{', '.join(interfaces)}; beacons to "
                            f"{', '.join(beacons) or 'nowhere'}")]
    if cam:
        use = driver_use or f"PARAM attributes; NDArrayPort from {cam}PortName_RBV"
        lines.append((logging.INFO, f"driver: {cam} ({use})"))
    else:
        lines.append((logging.INFO, "driver: none (--cam not given: PARAM attributes are "
                                    "undefined, NaN)"))
    layout = params["XMLFileName"] or "default (XMLFileName empty)"
    if len(layout) > 120 or "\n" in layout:
        layout = "inline XML"
    if int(params["XMLValid_RBV"]):
        lines.append((logging.INFO, f"layout: {layout}: valid"))
    else:
        lines.append((logging.WARNING, f"layout: {layout}: INVALID: "
                                       f"{params['XMLErrorMsg_RBV']}"))
    attributes = params["NDAttributesFile"]
    message = params.get("NDAttributesMessage_RBV", "")
    if not attributes:
        lines.append((logging.INFO, "attributes: none (NDAttributesFile empty)"))
    elif int(params["NDAttributesStatus"]) == 0:
        shown = "inline XML" if "<" in attributes else attributes
        lines.append((logging.INFO, f"attributes: {shown}: OK" + (f" ({message})" if message
                                                                    else "")))
    else:
        lines.append((logging.WARNING, f"attributes: {attributes}: {message or 'error'}"))
    if roots:
        lines.append((logging.INFO, f"allowed roots: {', '.join(str(r) for r in roots)}"))
    else:
        lines.append((logging.WARNING, "allowed roots: any (no --allow-root: any CA client "
                                       "may make this IOC write files anywhere its user "
                                       "can)"))
    return lines


def wait_and_announce(fixed: list[tuple[int, str]], image, report: SourceReport,
                      receiver_pid: int | None, timeout: float = SOURCE_WAIT) -> bool:
    """Wait up to ``timeout`` for the source, then log the summary; whether connected."""
    start = time.monotonic()
    spec = report.prefix  # as given (ca://, pva:// or a bare CA prefix)
    while spec and not image.connected and time.monotonic() - start < timeout:
        time.sleep(0.05)
    connected = bool(spec) and image.connected
    lines = list(fixed)
    waited = time.monotonic() - start
    describe = getattr(image, "source_line", None)  # a source that says it itself
    lines.insert(2, describe(connected, waited) if describe is not None
                 else source_line(spec, connected, waited, receiver_pid))
    for level, text in lines:
        log.log(level, "%s", text)
    report.announce(connected)
    return connected


__all__ = ["SourceReport", "ca_search_hint", "source_line", "summary_lines",
           "wait_and_announce"]
