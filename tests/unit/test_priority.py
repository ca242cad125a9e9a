"""serve --writer-nice: the file writer's thread, and the threads it starts, run nicer
than the rest of the IOC (the receiving threads keep the process's priority)."""

from __future__ import annotations

import os
import threading

import pytest
from saver_harness import SaverHarness

from ioc.commands import WRITER_NICE
from ioc.writer import _priority

pytestmark = pytest.mark.skipif(not hasattr(os, "setpriority"), reason="no setpriority")


def _nice(tid: int) -> int:
    return os.getpriority(os.PRIO_PROCESS, tid)


@pytest.fixture
def writer_nice():
    yield _priority.set_writer_nice
    _priority.set_writer_nice(WRITER_NICE)


def test_a_thread_and_the_threads_it_starts_are_lowered(writer_nice):
    writer_nice(7)
    seen = {}

    def child():
        seen["child"] = _nice(threading.get_native_id())

    def writer():
        before = _nice(threading.get_native_id())
        _priority.lower_this_thread()
        seen["writer"] = _nice(threading.get_native_id()) - before
        t = threading.Thread(target=child)
        t.start()
        t.join()

    base = _nice(threading.get_native_id())
    t = threading.Thread(target=writer)
    t.start()
    t.join()
    assert seen["writer"] == max(7 - base, 0)
    assert seen["child"] == max(base, 7)
    assert _nice(threading.get_native_id()) == base  # the caller's own is untouched


def test_the_file_savers_thread_runs_at_the_writer_nice(tmp_path, writer_nice):
    writer_nice(4)
    base = _nice(threading.get_native_id())
    with SaverHarness(tmp_path) as harness:
        tid = harness.saver._thread.native_id
        assert _nice(tid) == max(base, 4)
    writer_nice(0)
    with SaverHarness(tmp_path) as harness:
        assert _nice(harness.saver._thread.native_id) == base  # 0: as the process


def test_out_of_range_values_are_bounded(writer_nice):
    writer_nice(99)
    assert _priority.writer_nice() == 19
    writer_nice(-5)
    assert _priority.writer_nice() == 0
