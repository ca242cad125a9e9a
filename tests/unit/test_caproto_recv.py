"""The receiver's linear-time caproto parser yields exactly the original's commands."""

import random

import numpy as np
import pytest
from caproto import CLIENT, ChannelType, EventAddResponse, VirtualCircuit

from ioc.sources import _caproto_recv


def _stream() -> bytes:
    """A server's byte stream: images of 2 MiB interleaved with small scalar updates."""
    out = []
    for uid in range(1, 6):
        image = (np.arange(2**20, dtype=">i2") + uid).astype(">i2")
        out.append(bytes(EventAddResponse(image, ChannelType.INT, image.size, 1, 1)))
        for sub in range(2, 12):
            out.append(bytes(EventAddResponse([uid * sub], ChannelType.LONG, 1, 1, sub)))
    return b"".join(out)


def _parse(data: bytes, sizes: list[int]) -> list[tuple]:
    circuit = VirtualCircuit(CLIENT, ("127.0.0.1", 5064), 0)
    parsed, position = [], 0
    for size in sizes:
        commands, _ = circuit.recv(data[position:position + size])
        position += size
        for c in commands:
            parsed.append((type(c).__name__, c.subscriptionid, np.asarray(c.data).tobytes()))
    return parsed


@pytest.mark.parametrize("chunking", ["one buffer", "64 KiB", "random"])
def test_same_commands_as_caproto(chunking):
    data = _stream()
    rng = random.Random(7)
    if chunking == "one buffer":
        sizes = [len(data)]
    elif chunking == "64 KiB":
        sizes = [65536] * (len(data) // 65536 + 1)
    else:
        sizes = []
        while sum(sizes) < len(data):
            sizes.append(rng.choice([1, 7, 16, 100, 4096, 300_000, 3_000_000]))
    original = _parse(data, sizes)
    _caproto_recv.install()
    try:
        patched = _parse(data, sizes)
    finally:
        _caproto_recv.uninstall()
    assert len(original) == 5 * 11
    assert patched == original


def test_disconnect_is_reported():
    _caproto_recv.install()
    try:
        circuit = VirtualCircuit(CLIENT, ("127.0.0.1", 5064), 0)
        commands, _ = circuit.recv(b"")
    finally:
        _caproto_recv.uninstall()
    assert list(commands) == [_caproto_recv.DISCONNECTED]
