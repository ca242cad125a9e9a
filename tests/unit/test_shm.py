"""Shared-memory slots: mapped without holding a descriptor, unmapped with their last array."""

from __future__ import annotations

import gc
import os

import numpy as np

from ioc.sources._shm import map_shared, new_slot


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def mapped(name: str) -> int:
    with open("/proc/self/maps") as maps:
        return sum(name in line for line in maps)


def test_many_slots_cost_no_descriptors_and_share_their_bytes():
    before = open_fds()
    slots = []
    for i in range(300):
        fd, writable = new_slot(f"test-shm-{i}", 8192)
        try:
            readable = map_shared(fd, 8192, writable=False)
        finally:
            os.close(fd)
        np.frombuffer(writable, dtype=np.uint16)[:] = i
        slots.append(readable)
    assert open_fds() == before
    for i, readable in enumerate(slots):
        view = np.frombuffer(readable, dtype=np.uint16)
        assert (view == i).all()  # what one mapping wrote, the other sees


def test_unmapped_when_the_last_array_goes():
    fd, mapping = new_slot("test-shm-lifetime", 4096)
    os.close(fd)
    array = np.frombuffer(mapping, dtype=np.uint8).reshape(64, 64)[1:]
    del mapping
    gc.collect()
    assert mapped("test-shm-lifetime") == 1  # the array keeps it
    array[0, 0] = 7
    assert array[0, 0] == 7
    del array
    gc.collect()
    assert mapped("test-shm-lifetime") == 0
