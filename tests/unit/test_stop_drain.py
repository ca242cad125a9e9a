"""A stop loses no finished frame: the saver takes in the frames still in flight first."""

from __future__ import annotations

import threading
import time

import h5py
import numpy as np
from helpers import make_frame

from ioc.plugin.file_saver import CAPTURE, STREAM, FileSaver
from ioc.plugin.frame_queue import FrameQueue
from ioc.plugin.pvtable import PV_TABLE, to_param
from ioc.plugin.stop_drain import Arrivals, take_in_finished


def _deliver_later(saver_or_queue, arrivals: Arrivals, uids, delay: float) -> threading.Thread:
    """Frames arriving after the stop was asked for (as the network delivers them)."""
    def run():
        time.sleep(delay)
        for uid in uids:
            saver_or_queue.put_frame(make_frame(uid)) if isinstance(saver_or_queue, FrameQueue) \
                else saver_or_queue.enqueue(make_frame(uid))
            arrivals.note(uid)
            time.sleep(0.01)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_waits_for_frames_up_to_the_latest_and_leaves_later_ones():
    queue, arrivals, processed = FrameQueue(20), Arrivals(), []
    queue.put_frame(make_frame(1))
    arrivals.note(1)
    late = _deliver_later(queue, arrivals, [2, 3, 4, 5], delay=0.2)
    note = take_in_finished(queue, lambda f: processed.append(f.unique_id), arrivals,
                            lambda timeout: 3, "Capture=0", timeout=5.0)
    late.join()
    assert note is None
    assert processed == [1, 2, 3]  # frames 4 and 5 came after the stop: not taken
    assert queue.frames == 2


def test_shortfall_is_reported_with_the_bound():
    queue, arrivals, processed = FrameQueue(20), Arrivals(), []
    queue.put_frame(make_frame(7))
    arrivals.note(7)
    start = time.monotonic()
    message, is_error = take_in_finished(queue, lambda f: processed.append(f.unique_id), arrivals,
                                         lambda timeout: 10, "Capture=0", timeout=0.3)
    assert 0.3 <= time.monotonic() - start < 3
    assert processed == [7]
    assert is_error and "frames 8-10" in message and "0.3 s" in message


def test_dropped_frames_count_as_arrived():
    """A frame the queue could not take (DroppedArrays) is not waited for."""
    queue, arrivals = FrameQueue(20), Arrivals()
    arrivals.note(4)  # arrived as an id only
    start = time.monotonic()
    assert take_in_finished(queue, lambda f: None, arrivals, lambda t: 4, "x", 5.0) is None
    assert time.monotonic() - start < 1


def test_unreadable_source_is_said_not_waited_for():
    queue, arrivals = FrameQueue(20), Arrivals()
    message, is_error = take_in_finished(queue, lambda f: None, arrivals, lambda t: None, "WriteFile")
    assert not is_error and "could not be read" in message


def test_commands_queued_behind_keep_their_place():
    from ioc.plugin.frame_queue import Command

    queue = FrameQueue(5)
    command = Command("sync")
    queue.put_command(command)
    queue.put_frame(make_frame(1))
    assert queue.pop_frame_if(lambda f: True).unique_id == 1
    assert queue.get(timeout=0) is command


# -- the saver ---------------------------------------------------------------------------

class Posts(dict):
    def __call__(self, **updates):
        self.update(updates)


def _saver(tmp_path, mode: int) -> tuple[FileSaver, dict, Posts]:
    params = {pv.suffix: to_param(pv, pv.value) for pv in PV_TABLE}
    params.update(FilePath=f"{tmp_path}/", FileName="stop", FileTemplate="%s%s_%3.3d.h5",
                  FileNumber=1, AutoIncrement=1, FileWriteMode=mode, NumCapture=100,
                  AutoSave=1, LazyOpen=1, EnableCallbacks=1)
    posts = Posts()
    saver = FileSaver(params, posts, queue_size=20)
    saver.start()
    return saver, params, posts


def _ids(path) -> list[int]:
    with h5py.File(path) as f:
        data = f["/entry/data/data"][()]
        ids = f["/entry/instrument/NDAttributes/NDArrayUniqueId"][()].tolist()
    for frame, uid in zip(data, ids, strict=True):  # each frame's own pixels
        np.testing.assert_array_equal(frame, make_frame(uid).data)
    return ids


def test_stream_capture_off_takes_in_frames_in_flight(tmp_path):
    saver, params, posts = _saver(tmp_path, STREAM)
    saver.latest_unique_id = lambda timeout: 5
    try:
        saver.submit("capture", on=True).result(5)
        for uid in (1, 2):
            saver.enqueue(make_frame(uid))
            saver.arrived(uid)
        late = _deliver_later(saver, saver.arrivals, [3, 4, 5, 6], delay=0.3)
        saver.submit("capture", on=False).result(10)  # returns once the file is closed
        late.join()
        assert _ids(tmp_path / "stop_001.h5") == [1, 2, 3, 4, 5]  # 6: after the stop
        assert posts["Capture_RBV"] == 0 and posts.get("WriteStatus", 0) == 0
    finally:
        saver.stop()


def test_capture_mode_stop_buffers_frames_in_flight(tmp_path):
    saver, params, posts = _saver(tmp_path, CAPTURE)
    saver.latest_unique_id = lambda timeout: 3
    try:
        saver.submit("capture", on=True).result(5)
        late = _deliver_later(saver, saver.arrivals, [1, 2, 3, 4], delay=0.2)
        saver.submit("capture", on=False).result(10)
        late.join()
        saver.submit("write_file").result(10)
        assert _ids(tmp_path / "stop_001.h5") == [1, 2, 3]
    finally:
        saver.stop()


def test_stream_stop_shortfall_in_write_message(tmp_path):
    saver, params, posts = _saver(tmp_path, STREAM)
    saver.latest_unique_id = lambda timeout: 9
    saver.stop_timeout = 0.3
    try:
        saver.submit("capture", on=True).result(5)
        saver.enqueue(make_frame(1))
        saver.arrived(1)
        saver.submit("capture", on=False).result(10)
        assert _ids(tmp_path / "stop_001.h5") == [1]
        assert posts["WriteStatus"] == 1
        assert "frames 2-9" in posts["WriteMessage"] and "closed without them" in posts["WriteMessage"]
    finally:
        saver.stop()
