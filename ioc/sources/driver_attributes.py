"""The driver's NDAttributesFile, evaluated on our side for Channel Access sources.

In the detector IOC the driver attaches the attributes of its own NDAttributesFile to
every frame, and NDFileHDF5 writes them.  NDStdArrays does not send attributes over CA,
so this follows ``<cam>NDAttributesFile`` and ``<cam>NDAttributesMacros``, loads the file
with the project's loader and samples the attributes for each frame as the plugin's own
file is sampled: EPICS_PV from a monitor of the PV, CONST as written, PARAM through the
driver-PV map (``ca.PARAM_PVS``), those describing the frame from the frame itself
(``frame_params``).  That is the CA approximation: the driver samples its PVs when it
makes the frame, we when the frame arrives.  pvAccess sources carry the real ones.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..layout.ndattributes import AttributesError, load_attributes
from ..ndarray import NDArray, NDAttribute
from .ca import AttributeSampler

log = logging.getLogger(__name__)

FILE, MACROS = "NDAttributesFile", "NDAttributesMacros"


def _text(data) -> str:
    """A CHAR waveform (or DBR_STRING) as text, up to the first NUL."""
    if len(data) and isinstance(data[0], bytes):
        return data[0].decode("latin-1")
    return bytes(np.asarray(data, dtype="u1")).split(b"\0")[0].decode("latin-1")


class DriverAttributes:
    """Follows the driver's NDAttributesFile; ``sample(frame)`` gives its attributes."""

    SETTLE = 0.2  # s: file and macros are often written together; load once

    def __init__(self, context, cam_prefix: str, on_message: Callable[[str], None],
                 allowed_roots: tuple[Path, ...] = ()):
        self.context = context
        self.cam_prefix = cam_prefix
        self.on_message = on_message
        self.allowed_roots = allowed_roots
        self.sampler = AttributeSampler(context, cam_prefix)
        self.values: dict[str, str | None] = {FILE: None, MACROS: None}
        self.message = ""
        self._changed = threading.Event()
        self._stop = threading.Event()
        self._subs: list = []
        self._callbacks: list = []  # strong references: caproto holds callbacks weakly
        self._loaded: tuple | None = None
        self._thread = threading.Thread(target=self._run, name="driver-attributes", daemon=True)

    def start(self) -> None:
        """Subscribe (never blocks on the network: the PVs connect when the driver is up)."""
        if not self.cam_prefix:
            return
        pvs = self.context.get_pvs(self.cam_prefix + FILE, self.cam_prefix + MACROS,
                                   timeout=None)
        for name, pv in zip((FILE, MACROS), pvs, strict=True):
            callback = self._make_callback(name)
            self._callbacks.append(callback)
            sub = pv.subscribe(data_type="native", data_count=0)
            sub.add_callback(callback)
            self._subs.append(sub)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._changed.set()
        for sub in self._subs:
            try:
                sub.clear()
            except Exception:  # noqa: BLE001 - the circuit may be gone already
                pass
        self.sampler.clear()

    def _make_callback(self, name: str):
        def callback(sub, response) -> None:
            self.values[name] = _text(response.data)
            self._changed.set()
        return callback

    def _run(self) -> None:
        """Loading waits for the attribute PVs to connect (AttributeSampler): not on
        caproto's callback thread."""
        while not self._stop.is_set():
            self._changed.wait()
            if self._stop.wait(self.SETTLE):
                return
            self._changed.clear()
            try:
                self.reload()
            except Exception:  # noqa: BLE001 - one bad file must not end the thread
                log.exception("loading the driver's NDAttributesFile")

    def reload(self) -> None:
        spec = self.values[FILE]
        if spec is None:
            return  # not connected yet
        macros = self.values[MACROS] or ""
        if (spec, macros) == self._loaded:
            return
        self._loaded = (spec, macros)
        where = f"{self.cam_prefix}{FILE}"
        try:
            definitions = load_attributes(spec, macros, allowed_roots=self.allowed_roots)
        except AttributesError as exc:
            # those read before the error stay, as in the driver (readNDAttributesFile)
            kept = list(getattr(exc, "definitions", None) or [])
            self.sampler.set_definitions(kept)
            what = (f"{len(kept)} read before the error kept" if kept
                    else "frames carry no driver attributes")
            self._report(f"{where}: {exc}; {what}")
            return
        notes = [str(w) for w in getattr(definitions, "warnings", ())]
        notes += self.sampler.set_definitions(definitions)
        n = len(definitions)
        message = (f"{where}: {n} attribute{'s' if n != 1 else ''} "
                   f"({', '.join(d.name for d in definitions)})") if definitions else ""
        if notes:
            message = "; ".join(([message] if message else []) + notes)
        self._report(message)

    def _report(self, message: str) -> None:
        self.message = message
        if message:
            log.info("%s", message)
        self.on_message(message)

    def sample(self, frame: NDArray | None = None) -> dict[str, NDAttribute]:
        return self.sampler.sample(frame)


__all__ = ["DriverAttributes"]
