"""Calls on operator-given paths run with a timeout, off the caller's thread, and a path
that never answers cannot pile up threads (README "Failure behaviour")."""

from __future__ import annotations

import asyncio
import os
import threading
import time

import pytest

from ioc.plugin.refusals import RefusalLog
from ioc.plugin.user_paths import UserPathError, UserPaths


def read_fifo(path):
    with open(path, "rb") as f:  # blocks until someone opens the FIFO for writing
        return f.read()


@pytest.fixture
def fifo(tmp_path):
    path = tmp_path / "fifo"
    os.mkfifo(path)
    yield path
    # let the stuck readers go
    for _ in range(8):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
            os.close(fd)
        except OSError:
            break


def test_a_call_that_blocks_times_out_and_is_counted(fifo):
    paths = UserPaths(timeout=0.3, max_stuck=2)
    assert paths.call("stat", os.stat, fifo).st_size == 0  # a quick call: its result
    t0 = time.monotonic()
    with pytest.raises(UserPathError, match="no answer within 0 s"):
        paths.call("layout file", read_fifo, fifo)
    assert time.monotonic() - t0 < 2
    assert paths.stuck == 1
    with pytest.raises(UserPathError):
        asyncio.run(paths.run("attributes file", read_fifo, fifo))
    assert paths.stuck == 2
    t0 = time.monotonic()
    with pytest.raises(UserPathError, match="2 earlier file-system calls have not returned"):
        paths.call("FilePath", os.stat, fifo)  # refused at once
    assert time.monotonic() - t0 < 0.1
    fd = os.open(fifo, os.O_WRONLY)  # the path answers: the stuck calls end
    os.close(fd)
    deadline = time.monotonic() + 5
    while paths.stuck and time.monotonic() < deadline:
        time.sleep(0.01)
    assert paths.stuck == 0
    assert paths.call("stat", os.stat, fifo) is not None
    assert all(t.daemon for t in threading.enumerate() if t.name.startswith("user-path"))


def test_errors_of_the_call_reach_the_caller(tmp_path):
    paths = UserPaths(timeout=5)
    with pytest.raises(FileNotFoundError):
        paths.call("stat", os.stat, tmp_path / "missing")
    with pytest.raises(FileNotFoundError):
        asyncio.run(paths.run("stat", os.stat, tmp_path / "missing"))


def test_refusal_lines_are_rate_limited(caplog):
    now = [0.0]
    log = RefusalLog(burst=3, period=10.0, clock=lambda: now[0])
    with caplog.at_level("WARNING", logger="ioc.puts"):
        for _ in range(50):
            log.refused("P:NumCapture", "-1", "NumCapture must not be negative")
            now[0] += 0.1
        now[0] = 20.0
        log.refused("P:NumCapture", "-2", "NumCapture must not be negative")
    lines = [r.getMessage() for r in caplog.records]
    assert lines[:3] == ["refused put P:NumCapture = -1: NumCapture must not be negative"] * 3
    assert "47 more refused puts" in lines[3]
    assert lines[4].endswith("= -2: NumCapture must not be negative")
    assert len(lines) == 5
