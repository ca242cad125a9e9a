"""How the coordinator (the IOC clients drive) and its writer workers talk.

One TCP connection per worker, opened by the worker; JSON objects, one per line, each
with a ``type``.  The coordinator never waits on a worker inside caproto's event loop:
it has a thread and event loop of its own (``coordinator.py``).

Worker -> coordinator:

* ``hello``: name, host, pid, version, protocol;
* ``status`` (every second; also the heartbeat): source connected, frames received,
  dropped (queue full), skipped (UniqueId gaps), the last frame's description;
* ``started``: capture id, ``seen`` = the highest UniqueId received before the start;
* ``opened``: the part file is open (its final name);
* ``progress``: capture id, ``uids`` written since the last report (in write order),
  ``durable`` = frames flushed to the file so far, ``stage`` (``stream``, ``buffer``
  for Capture mode's memory buffer, ``write`` while a buffer is written);
* ``closed``: the part is closed under its final name (frames, warnings);
* ``failed``: the part could not be opened or written (the message); the worker has left
  the distributor group so that the others receive its share.

Coordinator -> worker:

* ``welcome``: the worker's number and label, the pvAccess channel and distributor
  options to subscribe with, and the capture under way (a ``start`` and ``begin``), if any;
* ``refused``: why the worker is not accepted (then the connection closes);
* ``start``: capture id, mode (``stream``/``capture``), part number, final part name
  (Stream), the PV values the file depends on, the layout XML;
* ``begin``: frames with UniqueId above ``after`` belong to the capture;
* ``stop``: Stream: close the part now; Capture: stop buffering;
* ``write``: Capture mode: write the buffered frames up to UniqueId ``upto`` to ``final``;
* ``discard``: drop the Capture buffer; ``flush``: flush the part file now.
"""

from __future__ import annotations

import json
import os
import socket
from typing import Any

PROTOCOL = 1
MAX_LINE = 16 * 2**20  # bytes: a progress message of ~1M UniqueIds
HEARTBEAT = 1.0  # s between status messages
LOST_AFTER = 6.0  # s without any message: the worker is taken as lost


class ProtocolError(ValueError):
    """A message that is not valid JSON, too long, or without a type."""


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def decode(line: bytes) -> dict[str, Any]:
    if len(line) > MAX_LINE:
        raise ProtocolError(f"message of {len(line)} bytes (at most {MAX_LINE})")
    try:
        message = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"not a JSON message: {exc}") from None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise ProtocolError("a message must be an object with a 'type'")
    return message


def parse_address(text: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """``host:port``, ``:port`` or ``port`` -> (host, port)."""
    host, _, port = text.rpartition(":")
    try:
        number = int(port)
    except ValueError:
        raise ValueError(f"{text!r}: expected HOST:PORT") from None
    if not 0 < number < 65536:
        raise ValueError(f"{text!r}: port out of range")
    return (host.strip("[]") or default_host), number


def json_params(params: dict[str, Any]) -> dict[str, Any]:
    """The PV values a part file depends on, JSON-ready (tuples become lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in params.items()
            if isinstance(v, (int, float, str, tuple, list))}


def identity(name: str = "") -> dict[str, Any]:
    host = socket.gethostname()
    return {"name": name or f"{host}:{os.getpid()}", "host": host, "pid": os.getpid()}


class LineReader:
    """Splits a byte stream into bounded lines (for the worker's blocking socket)."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self._buffer = bytearray()

    def read(self) -> dict[str, Any] | None:
        """The next message; None when the peer closed the connection."""
        while True:
            end = self._buffer.find(b"\n")
            if end >= 0:
                line = bytes(self._buffer[:end])
                del self._buffer[:end + 1]
                return decode(line)
            if len(self._buffer) > MAX_LINE:
                raise ProtocolError(f"message longer than {MAX_LINE} bytes")
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                return None
            self._buffer += chunk
