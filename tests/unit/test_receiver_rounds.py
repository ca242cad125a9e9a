"""The IOC's side of the receiver pipe (``ioc/sources/receiver.py``): what the pipe holds is
taken in and handed on in order, in rounds, with pauses between them."""

from __future__ import annotations

import contextlib
import multiprocessing
import threading
import time

import numpy as np

from helpers import make_frame
from ioc.sources import receiver
from ioc.sources.frames import frame_message
from ioc.sources.receiver import ProcessImageSource, _Pacing


class Recorder:
    def __init__(self):
        self.sent = []

    def send(self, message):
        self.sent.append(message)


@contextlib.contextmanager
def reading(source: ProcessImageSource, slot: np.ndarray):
    """``source``'s pipe reader on a thread, its slot 0 being ``slot``; yields the child's
    end of the pipe (the reader has ended, or was given 5 s, when the block is left)."""
    source._maps = {0: memoryview(slot.view(np.uint8))}
    source._sender = Recorder()
    ours, theirs = multiprocessing.Pipe(duplex=True)
    reader = threading.Thread(target=source._read, args=(ours, source._generation))
    reader.start()
    try:
        yield theirs
        reader.join(5)
        assert not reader.is_alive()
    finally:
        theirs.close()
        ours.close()


def test_pacing_pauses_longest_for_few_frames_and_shorter_for_many(monkeypatch):
    slept = []
    monkeypatch.setattr(receiver.time, "sleep", slept.append)
    pacing = _Pacing()
    now = time.monotonic()
    pacing.pause(now, 1)
    assert slept[-1] > _Pacing.LONGEST * 0.5  # (less the time since ``now``)
    pacing.pause(time.monotonic(), 20)  # many frames a round: shorter rounds
    assert abs(pacing.seconds - _Pacing.LONGEST * _Pacing.FRAMES / 20) < 1e-9
    pacing.pause(time.monotonic(), _Pacing.FRAMES)  # as many as aimed at: kept
    assert abs(pacing.seconds - _Pacing.LONGEST * _Pacing.FRAMES / 20) < 1e-9
    for _ in range(5):  # fewer again: back to the longest
        pacing.pause(time.monotonic(), 1)
    assert pacing.seconds == _Pacing.LONGEST
    count = len(slept)
    pacing.pause(time.monotonic() - 1.0, 1)  # a round that took longer: no pause
    assert len(slept) == count
    for _ in range(50):
        pacing.pause(time.monotonic(), 1000)
    assert pacing.seconds == _Pacing.SHORTEST


def test_a_round_hands_on_frames_and_ids_in_order_then_the_status():
    """Frames, an id alone (a frame the child had no slot for) and a status, sent at once:
    handed on in the order sent, the status after the frames before it; the child's end
    shows the source disconnected."""
    events = []
    source = ProcessImageSource(
        "pva://X", lambda f: events.append(("frame", f if isinstance(f, int) else f.unique_id,
                                            None if isinstance(f, int) else f.data.copy())),
        on_status=lambda status: events.append(("status", status)))
    frames = [make_frame(uid, shape=(8, 8), dtype="u2") for uid in (1, 2, 4)]
    slot = np.zeros(8 * 8, dtype="u2")
    slot[:] = np.arange(64)
    with reading(source, slot) as theirs:
        for message in (("frame", 0, frame_message(frames[0])), ("frame", 0, frame_message(frames[1])),
                        ("uid", 3), ("frame", 0, frame_message(frames[2])),
                        ("status", {"connected": True}), ("stopped",)):
            theirs.send(message)
    assert [e[:2] for e in events] == [("frame", 1), ("frame", 2), ("frame", 3), ("frame", 4),
                                       ("status", {"connected": True}),
                                       ("status", {"connected": False})]  # (ended)
    assert events[0][2].tolist() == np.arange(64).reshape(8, 8).tolist()  # the slot's pixels


def test_frames_sent_during_a_pause_are_handed_on_together(monkeypatch):
    """After a round, the reader pauses: frames arriving meanwhile (here 0.1 s apart) are
    handed on in one go after it, not one by one."""
    monkeypatch.setattr(_Pacing, "LONGEST", 0.4)
    handed = []
    source = ProcessImageSource("pva://X", lambda f: handed.append((f.unique_id, time.monotonic())))
    slot = np.zeros(64, dtype="u2")
    with reading(source, slot) as theirs:
        theirs.send(("frame", 0, frame_message(make_frame(1, shape=(8, 8), dtype="u2"))))
        deadline = time.monotonic() + 5
        while not handed and time.monotonic() < deadline:
            time.sleep(0.005)
        for uid in (2, 3):  # during the pause that follows the first round
            theirs.send(("frame", 0, frame_message(make_frame(uid, shape=(8, 8), dtype="u2"))))
            time.sleep(0.1)
        theirs.send(("stopped",))
    assert [uid for uid, _ in handed] == [1, 2, 3]
    assert handed[2][1] - handed[1][1] < 0.05  # together (sent 0.1 s apart)
    assert handed[1][1] - handed[0][1] > 0.3  # after the pause
