"""The writer's threads by name where the system shows threads (top -H, ps -L, /proc)."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest

from ioc._thread_names import NAME_BYTES, name_this_thread, named

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux's prctl")


def _system_name(native_id: int) -> str:
    return Path(f"/proc/self/task/{native_id}/comm").read_text().strip()


def _run_in_thread(target, name: str) -> str:
    seen = []

    def body():
        target()
        seen.append(_system_name(threading.get_native_id()))

    thread = threading.Thread(target=body, name=name)
    thread.start()
    thread.join(10)
    return seen[0]


def test_a_named_target_shows_its_python_name():
    assert _run_in_thread(named(lambda: None), "file-saver") == "file-saver"
    if sys.version_info < (3, 14):  # (from 3.14 on Python names the threads it starts)
        assert _run_in_thread(lambda: None, "unnamed") != "unnamed"


def test_long_names_are_cut_to_the_kernel_limit_and_explicit_names_win():
    assert _run_in_thread(name_this_thread, "a-very-long-thread-name") == \
        "a-very-long-thread-name"[:NAME_BYTES]
    assert _run_in_thread(lambda: name_this_thread("receiver"), "other") == "receiver"


def test_named_passes_arguments_and_the_result():
    result = []
    thread = threading.Thread(target=named(lambda a, b=0: result.append(a + b)), args=(2,),
                              kwargs={"b": 3}, name="adder")
    thread.start()
    thread.join(10)
    assert result == [5]
