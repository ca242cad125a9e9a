"""Linear-time command parsing for caproto's client circuits (receiver process only).

caproto 1.3's ``VirtualCircuit.recv`` appends what the socket holds to a buffer,
then takes one command at a time and *copies the rest of the buffer* after each
(``data[total_size:]`` on a bytearray).  Harmless for small PVs; for images it is
quadratic in the backlog: when a receiver falls a few 2 MiB frames behind (another
process took the CPU for a moment), each of the ~11 commands per frame copies
megabytes, the receiver falls further behind and never recovers (measured: the
receiver at 100 % CPU, mostly page faults, at 400 frames/s of 1 Mpixel).

``install()`` replaces that method with one that walks the buffer with an offset
(``read_from_bytestream`` on a memoryview slices without copying) and copies only
the incomplete tail, once.  Commands keep zero-copy views of the buffer as before.
Only the receiver process installs it; ``tests/unit/test_caproto_recv.py`` checks it
parses exactly what the original does.
"""

from __future__ import annotations

from collections import deque

from caproto import _circuit
from caproto._commands import read_from_bytestream
from caproto._utils import DISCONNECTED, NEED_DATA

_original = _circuit.VirtualCircuit.recv


def _recv(self, *buffers):
    commands: deque = deque()
    if sum(len(b) for b in buffers) == 0:
        self.log.debug("Circuit disconnected")
        commands.append(DISCONNECTED)
        return commands, 0
    self._data += b"".join(buffers)
    view = memoryview(self._data)
    offset = 0
    num_bytes_needed = 0
    while True:
        rest, command, num_bytes_needed = read_from_bytestream(view[offset:], self.their_role)
        if command is NEED_DATA:
            break
        commands.append(command)
        offset = len(view) - len(rest)
    del rest
    if offset:
        # the parsed commands keep views of the old buffer; start a new one with the tail
        self._data = bytearray(view[offset:])
    del view
    return commands, num_bytes_needed


def install() -> None:
    _circuit.VirtualCircuit.recv = _recv


def uninstall() -> None:
    _circuit.VirtualCircuit.recv = _original
