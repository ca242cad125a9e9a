"""CA frame assembly: a frame is used only when its pixels and its scalars surely belong
together (what EPICS base's server does to a lagging client, replayed update by update)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from ioc.sources.ca import CAImageSource

PREFIX = "T:image1:"


def _response(data):
    return SimpleNamespace(data=np.atleast_1d(np.asarray(data)))


class Replay:
    """A CAImageSource fed by hand: ``array(px)`` and ``batch(uid, counter)``."""

    def __init__(self, order=("ArrayCounter_RBV", "UniqueId_RBV")):
        self.frames, self.statuses = [], []
        self.source = CAImageSource(PREFIX, self.frames.append, context=object(),
                                    on_status=self.statuses.append)
        self.source._skip_current = False
        self.order = order
        self.source.meta.update({"NDimensions_RBV": 2, "ArraySize0_RBV": 4, "ArraySize1_RBV": 3,
                                 "DataType_RBV": 3, "ColorMode_RBV": 0})
        self.scalar("ArrayCounter_RBV", 0)

    def _sub(self, suffix):
        return SimpleNamespace(pv=SimpleNamespace(name=PREFIX + suffix))

    def scalar(self, suffix, value):
        self.source._meta_callback(suffix)(self._sub(suffix), _response(value))

    def array(self, px: int):
        """An ArrayData update whose pixels are frame ``px``'s."""
        self.source._on_array(self._sub("ArrayData"), _response(np.full(12, px, ">i2")))

    def batch(self, uid: int, counter: int | None = None):
        values = {"ArrayCounter_RBV": uid if counter is None else counter, "UniqueId_RBV": uid}
        for suffix in self.order:
            self.scalar(suffix, values[suffix])
        self.scalar("TimeStamp_RBV", 1000.0 + uid)
        self.scalar("EpicsTSSec_RBV", 10 + uid)
        self.scalar("EpicsTSNsec_RBV", uid)

    def finish(self):
        """The source goes quiet: the last update is finished by the timer."""
        self.source._finish(self.source.pairing.take(last=True))
        return [(f.unique_id, int(f.data[0, 0])) for f in self.frames]


def test_in_order_frames_are_used_with_their_own_values():
    for order in (("ArrayCounter_RBV", "UniqueId_RBV"), ("UniqueId_RBV", "ArrayCounter_RBV")):
        r = Replay(order)
        for uid in (1, 2, 3):
            r.array(uid)
            r.batch(uid)
        assert r.finish() == [(1, 1), (2, 2), (3, 3)]
        assert [f.timestamp for f in r.frames] == [1001.0, 1002.0, 1003.0]
        assert r.source.skipped == 0


def test_one_array_update_for_several_frames_is_not_used():
    """RSRV keeps one array update queued and reads it when sent: frames 2-4 were posted
    while it waited, their scalars follow it; the pixels may be any of them."""
    r = Replay()
    r.array(1)
    r.batch(1)
    r.array(4)
    for uid in (2, 3, 4):
        r.batch(uid)
    r.array(5)
    r.batch(5)
    assert r.finish() == [(1, 1), (5, 5)]
    assert r.source.skipped == 3 and r.source.doubtful == 1


def test_replaced_updates_make_the_counter_jump():
    """A queued update replaced by a newer one (RSRV, lagging client): the image plugin's
    counter jumps even where the UniqueIds look fine."""
    r = Replay()
    r.array(1)
    r.batch(1, counter=1)
    r.array(2)
    r.batch(3, counter=3)  # the scalars of 2 replaced by those of 3; the pixels are 2's
    r.array(4)
    r.batch(4, counter=4)
    assert r.finish() == [(1, 1), (4, 4)]


def test_upstream_gaps_are_not_doubted():
    """The plugin posted every frame it got (counter +1) but the driver's ids jump: frames
    the plugin never received; the frames that came are fine."""
    r = Replay()
    r.array(1)
    r.batch(1, counter=1)
    r.array(5)
    r.batch(5, counter=2)
    assert r.finish() == [(1, 1), (5, 5)]
    assert r.source.skipped == 3 and r.source.doubtful == 0


def test_a_frame_not_used_still_counts_as_arrived():
    """A stop waiting for the last frame must not wait for one that came but was not used."""
    r = Replay()
    r.array(1)
    r.batch(1)
    r.array(3)
    r.batch(2)
    r.batch(3)
    r.array(4)  # (its scalars lost)
    assert r.finish() == [(1, 1)]
    assert {"skipped": 2, "arrived": 3} in r.statuses


def test_the_last_update_before_the_source_goes_quiet_is_the_last_frame():
    """Nothing was posted after the array was read (no further update came): its pixels
    are the newest frame's, whose scalars came last (the end of an acquisition)."""
    r = Replay()
    r.array(1)
    r.batch(1)
    r.array(4)
    for uid in (2, 3, 4):
        r.batch(uid)
    assert r.finish() == [(1, 1), (4, 4)]
    assert r.frames[-1].timestamp == 1004.0 and r.source.skipped == 2


def test_same_pixels_twice_are_doubted_only_while_the_link_lags():
    """RSRV read the array after the next frame had replaced it (it was blocked sending
    to a lagging client): two updates with the same pixels.  A detector may also send
    identical frames: only doubted after frames were lost lately."""
    r = Replay()
    r.array(7)
    r.batch(1)
    r.array(7)
    r.batch(2)
    assert r.finish() == [(1, 7), (2, 7)]  # identical frames, nothing lost: both kept
    r = Replay()
    r.array(1)
    r.batch(1)
    r.array(5)
    r.batch(5, counter=2)  # frames 2-4 never came: the link lags
    r.array(7)
    r.batch(6, counter=3)  # its array was read after frame 7 replaced it
    r.array(7)
    r.batch(7, counter=4)
    assert r.finish() == [(1, 1), (5, 5), (7, 7)]
    assert r.source.skipped == 4
