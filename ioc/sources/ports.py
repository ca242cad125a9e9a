"""NDArrayPort: the port names this IOC knows, and the source each one selects.

In ADCore, NDArrayPort names the asyn port a plugin takes its arrays from; ophyd's
stage_sigs and ``source_plugin`` and ophyd-async's ``nd_array_port`` write and read
it.  Here a source is a Channel Access image plugin (or another transport), so the IOC
knows these names: the driver's port (``PortName_RBV`` under ``--cam``) for the default
source, and ``serve --port NAME=SOURCE`` for others.  Any other name is refused.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)


def parse_port(spec: str) -> tuple[str, str]:
    """``NAME=SOURCE`` (argparse type of ``serve --port``)."""
    name, sep, source = spec.partition("=")
    name, source = name.strip(), source.strip()
    if not sep or not name or not source:
        raise argparse.ArgumentTypeError(f"expected NAME=SOURCE, got {spec!r}")
    if len(name) > 39:
        raise argparse.ArgumentTypeError(f"port name {name!r} is longer than NDArrayPort "
                                         "holds (39 characters)")
    return name, source


class PortMap:
    """Port name -> source; the driver's port is learnt when the driver answers."""

    def __init__(self, default_source: str, named: dict[str, str] | None = None):
        self.default_source = default_source
        self.named = dict(named or {})
        self.driver_port = ""

    def source_of(self, name: str) -> str | None:
        if name in self.named:
            return self.named[name]
        if name and name == self.driver_port:
            return self.default_source
        return None

    def name_of(self, source: str) -> str:
        """The port name of a source ("" for a source set by SourcePrefix alone); the
        driver's port first for the default source."""
        if source == self.default_source and self.driver_port:
            return self.driver_port
        for name, named in self.named.items():
            if named == source:
                return name
        return ""

    def known(self) -> list[str]:
        names = [self.driver_port] if self.driver_port else []
        return names + [n for n in self.named if n not in names]

    def refusal(self, name: str) -> str:
        known = ", ".join(self.known()) or "none"
        return (f"NDArrayPort {name!r} is not a port this IOC knows (known: {known}; "
                "serve --port NAME=SOURCE adds one)")


def watch_driver_port(context, cam: str, on_port: Callable[[str], None]) -> list:
    """Follow ``<cam>PortName_RBV`` (the driver may start after us, or restart); returns
    what must be kept referenced (caproto holds callbacks weakly)."""
    (pv,) = context.get_pvs(cam + "PortName_RBV")

    def callback(sub, response) -> None:
        value = response.data[0] if len(response.data) else b""
        name = value.decode("latin-1") if isinstance(value, bytes) else str(value)
        if name:
            on_port(name)

    sub = pv.subscribe(data_type="native")
    sub.add_callback(callback)
    return [pv, sub, callback]


__all__ = ["PortMap", "parse_port", "watch_driver_port"]
