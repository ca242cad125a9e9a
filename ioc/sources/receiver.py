"""The image source in its own process: frames arrive in shared memory.

Receiving a 1 Mpixel image over Channel Access costs about a core at a few hundred
frames/s (caproto parses and copies in Python), and so does writing files.  In
one process they share one GIL; here the transport's client (CA: caproto; pvAccess:
p4p) runs in a child process (``spawn``: no threads are forked) and copies each frame
once into a shared-memory slot (an anonymous ``memfd``, its descriptor passed over the
pipe: nothing is left behind in ``/dev/shm`` if a process is killed).  The IOC
process maps the slot read-only and queues an ``NDArray`` viewing it (with every
attribute the frame carried, see ``frames.frame_message``); when the last reference to
that array goes (file written, frame dropped), the slot goes back to the child.

Memory stays bounded when the writer lags: the child holds at most ``max_slots``
slots (QueueSize + a few in flight); with none free, a frame is passed on as its
UniqueId only, and the IOC counts it in DroppedArrays, as a full queue does.

``ProcessImageSource`` has the interface of ``ca.CAImageSource`` / ``pva.PVAImageSource``;
the source name (``ca://...``, ``pva://...`` or a bare CA prefix) picks the transport.
"""

from __future__ import annotations

import itertools
import logging
import mmap
import multiprocessing
import os
import select
import signal
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import Future

import numpy as np

from .._thread_names import name_this_thread, named
from ..ndarray import NDArray
from ._shm import map_shared, new_slot
from .ca import AttributeSampler, add_attributes
from .frames import frame_from_message, frame_message, parse_source
from .select import TransportSource

log = logging.getLogger(__name__)


class _Pacing:
    """How long the pipe's thread pauses after a round that brought frames, so that the
    next round brings several (see ``ProcessImageSource._read``): up to ``LONGEST``
    (a frame waits at most that long to be queued), shorter when frames come faster
    than ``FRAMES`` a round."""

    FRAMES = 4
    LONGEST = 0.02  # s
    SHORTEST = 0.001
    MOST = 64  # messages a round takes in at most (ids alone hold no slot: no other bound)

    def __init__(self):
        self.seconds = self.LONGEST

    def pause(self, woke: float, frames: int) -> None:
        if frames > self.FRAMES:
            self.seconds = max(self.seconds * self.FRAMES / frames, self.SHORTEST)
        elif frames < self.FRAMES:
            self.seconds = min(self.seconds * 2, self.LONGEST)
        rest = woke + self.seconds - time.monotonic()
        if rest > 0:
            time.sleep(rest)


# Frames in flight besides the queued ones: one being written and two more whose files
# or chunks the disk is still writing (SinglePipeline, the writer's writes in flight),
# the last one kept for "process last" / Stream opens, a round's in the pipe (_Pacing),
# one being received.
IN_FLIGHT = 5 + _Pacing.FRAMES


class _Sender:
    """Messages (pickled) and descriptors share one socket: one writer at a time."""

    def __init__(self, conn, peer_pid: int):
        self.conn = conn
        self.peer_pid = peer_pid
        self.lock = threading.Lock()

    def send(self, message) -> None:
        with self.lock:
            self.conn.send(message)

    def send_fd(self, message, fd: int) -> None:
        from multiprocessing.reduction import send_handle

        with self.lock:
            self.conn.send(message)
            send_handle(self.conn, fd, self.peer_pid)


# -- the child ----------------------------------------------------------------------

class _Slot:
    __slots__ = ("index", "size", "mm", "busy")

    def __init__(self, index: int):
        self.index = index
        self.size = 0
        self.mm = None  # the mapping (see _shm)
        self.busy = False


class _SlotPool:
    """The child's side: which slots are free, and (re)allocation of memfds."""

    def __init__(self, sender: _Sender, max_slots: int):
        self.sender = sender
        self.max_slots = max_slots
        self.slots: list[_Slot] = []
        self.lock = threading.Lock()
        self.current: _Slot | None = None

    def available(self) -> bool:
        with self.lock:
            return len(self.slots) < self.max_slots or any(not s.busy for s in self.slots)

    def allocate(self, nbytes: int) -> np.ndarray | None:
        with self.lock:
            if self.current is not None:
                # built but never handed over (a duplicate UniqueId): free it again
                self.current.busy = False
                self.current = None
            free = [s for s in self.slots if not s.busy]
            fitting = [s for s in free if s.size >= nbytes]
            if fitting:
                slot = min(fitting, key=lambda s: s.size)
            elif len(self.slots) < self.max_slots:
                slot = _Slot(len(self.slots))
                self.slots.append(slot)
            elif free:
                slot = free[0]
            else:
                return None
            slot.busy = True
        if slot.size < nbytes:
            self._resize(slot, nbytes)
        self.current = slot
        return np.frombuffer(slot.mm, dtype=np.uint8, count=nbytes)

    def _resize(self, slot: _Slot, nbytes: int) -> None:
        size = max(nbytes, mmap.PAGESIZE)
        fd, mapping = new_slot(f"nexus-writer-slot{slot.index}", size)
        try:
            slot.mm = mapping  # the old mapping goes with its last view
            slot.size = size
            self.sender.send_fd(("slot", slot.index, size), fd)
        finally:
            os.close(fd)

    def take_current(self) -> _Slot | None:
        slot, self.current = self.current, None
        return slot

    def free(self, index: int) -> None:
        with self.lock:
            if index < len(self.slots):
                self.slots[index].busy = False

    def set_max(self, max_slots: int) -> None:
        with self.lock:
            self.max_slots = max(int(max_slots), 1)


def _child_main(conn, spec: str, max_slots: int, log_levels: dict[str, int],
                pva_queue: int, request_options: dict | None = None) -> None:
    """Entry point of the receiver process."""
    # Ctrl-C reaches the whole process group: the IOC stops us when it stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    name_this_thread("nwi-receiver")  # the process, as top and ps show it
    logging.basicConfig(level=log_levels.pop(""),
                        format="%(asctime)s %(levelname)s receiver %(name)s: %(message)s")
    for name, level in log_levels.items():
        logging.getLogger(name).setLevel(level)
    from ..plugin.ioc_logging import quiet_late_answers
    from ._malloc import keep_frame_buffers

    quiet_late_answers()

    keep_frame_buffers()
    sender = _Sender(conn, os.getppid())
    pool = _SlotPool(sender, max_slots)

    def on_frame(frame) -> None:
        slot = pool.take_current()
        if isinstance(frame, int) or slot is None:
            if slot is not None:
                pool.free(slot.index)
            sender.send(("uid", frame if isinstance(frame, int) else frame.unique_id))
            return
        sender.send(("frame", slot.index, frame_message(frame)))

    source = TransportSource(
        spec, on_frame, pva_queue=pva_queue, request_options=request_options,
        accepting=pool.available, allocate=pool.allocate,
        on_status=lambda status: sender.send(("status", status)),
        on_error=lambda message: sender.send(("error", message)))
    calls = {"set_prefix": source.set_prefix, "read_current": source.read_current,
             "latest_unique_id": source.latest_unique_id,
             "set_driver_prefix": source.set_driver_prefix}
    # Calls may wait on the network: one at a time, off this loop, so that slots freed
    # meanwhile still come back (a stop waiting for the last frames must not starve them).
    from concurrent.futures import ThreadPoolExecutor

    caller = ThreadPoolExecutor(1, thread_name_prefix="receiver-call")

    def run_call(call_id: int, name: str, args: tuple) -> None:
        try:
            result = ("result", call_id, calls[name](*args), None)
        except Exception as exc:  # noqa: BLE001 - reported to the caller
            result = ("result", call_id, None, f"{type(exc).__name__}: {exc}")
        try:
            sender.send(result)
        except OSError:
            pass  # the IOC is gone

    source.start()
    try:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                return  # the IOC is gone
            kind = message[0]
            if kind == "free":
                for index in message[1]:
                    pool.free(index)
            elif kind == "max_slots":
                pool.set_max(message[1])
            elif kind == "call":
                _, call_id, name, args = message
                caller.submit(run_call, call_id, name, args)
            elif kind == "stop":
                return
    finally:
        caller.shutdown(wait=False, cancel_futures=True)
        source.stop()
        try:
            sender.send(("stopped",))
        except OSError:
            pass


# -- the IOC's side ---------------------------------------------------------------------

def _log_levels() -> dict[str, int]:
    """This process's levels for the loggers the child uses ("" is the root)."""
    return {name: logging.getLogger(name or None).getEffectiveLevel()
            for name in ("", "ioc.sources", "caproto", "p4p")}


class ProcessImageSource:
    """Runs the source (CA or PVA) in a child process; frames arrive in shared memory.

    The child is supervised: if it dies (killed, out of memory), the IOC says so in
    WriteMessage, shows the source disconnected and starts a new one after
    ``RESTART_AFTER`` seconds.  Frames still queued from the old child stay valid (their
    mappings live on); its slot numbers are never confused with the new child's."""

    CALL_TIMEOUT = 15.0
    RETURN_EVERY = 0.02  # s: slots freed while no message arrives go back this often
    RETURN_BATCH = 8  # slots returned in one message (at most)
    # s: a freed slot waits at most this long for others (at 250 frames/s, 5 ms made batches
    # of 1-2: a message and two system calls per frame or so; measured with cProfile)
    RETURN_BATCH_AGE = 0.02
    RESTART_AFTER = 1.0

    def __init__(self, prefix: str, on_frame: Callable[[NDArray | int], None], *,
                 on_status: Callable[[dict], None] = lambda status: None,
                 on_error: Callable[[str], None] = lambda message: None,
                 attributes: AttributeSampler | None = None, queue_size: int = 20,
                 pva_queue: int = 32, request_options: dict | None = None,
                 driver_attributes=None, driver_prefix: str = ""):
        self.prefix = prefix
        self.pva_queue = pva_queue
        self.request_options = request_options  # pvRequest plugin options (pva:// only)
        self.on_frame = on_frame
        self.on_status = on_status
        self.on_error = on_error
        self.attributes = attributes
        self.driver_attributes = driver_attributes  # the driver's NDAttributesFile (CA)
        self.driver_prefix = driver_prefix
        self.max_slots = queue_size + IN_FLIGHT
        self.connected = False
        self.skipped = 0
        self.duplicates = 0
        self.restarts = 0
        self.process = None
        self._conn = None
        self._sender: _Sender | None = None
        self._maps: dict[int, object] = {}  # slot -> read-only mapping (see _shm)
        self._calls: dict[int, Future] = {}
        self._ids = itertools.count()
        self._reader: threading.Thread | None = None
        self._generation = 0
        self._stopping = False
        self._freed: list[int] = []
        self._freed_since = 0.0
        self._held = 0  # slots the child has given us and not had back
        self._freed_lock = threading.Lock()

    # -- lifecycle ------------------------------------------------------------------
    def start(self) -> None:
        context = multiprocessing.get_context("spawn")
        ours, theirs = context.Pipe(duplex=True)
        process = context.Process(
            target=_child_main, name="nexus-writer-receiver", daemon=True,
            args=(theirs, self.prefix, self.max_slots, _log_levels(), self.pva_queue,
                  self.request_options))
        process.start()
        theirs.close()
        with self._freed_lock:
            self._generation += 1
            self._freed = []
            self._held = 0
        self.process = process
        self._conn = ours
        self._sender = _Sender(ours, process.pid)
        self._maps = {}
        self._reader = threading.Thread(target=named(self._read), args=(ours, self._generation),
                                        name="receiver-pipe", daemon=True)
        self._reader.start()
        if self.driver_prefix:  # for latest_unique_id (no answer awaited)
            self._sender.send(("call", next(self._ids), "set_driver_prefix",
                               (self.driver_prefix,)))

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping = True
        if self.process is None:
            return
        try:
            self._sender.send(("stop",))
        except OSError:
            pass
        self.process.join(timeout)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout)
        if self._reader is not None and self._reader is not threading.current_thread():
            self._reader.join(timeout)
        self._conn.close()

    def _restart(self, exitcode) -> None:
        """The child ended without being asked: report, then start a new one."""
        self.restarts += 1
        message = (f"image receiver process ended (exit code {exitcode}); "
                   f"restarting in {self.RESTART_AFTER:.0f} s")
        log.error(message)
        self.on_status({"message": message})
        time.sleep(self.RESTART_AFTER)
        if not self._stopping:
            self.start()
            log.warning("image receiver process restarted (pid %d)", self.process.pid)

    def set_prefix(self, prefix: str) -> None:
        self.prefix = prefix
        self._call("set_prefix", prefix)

    def set_queue_size(self, size: int) -> None:
        """QueueSize changed: the child may hold that many frames (plus those in flight)."""
        self.max_slots = max(int(size), 1) + IN_FLIGHT
        try:
            self._sender.send(("max_slots", self.max_slots))
        except OSError:
            pass  # a new child starts with the new size

    def read_current(self, timeout: float = 2.0) -> NDArray | None:
        frame = self._call("read_current", timeout, timeout=timeout * 12 + 5)
        if frame is not None:
            add_attributes(frame, self._driver_attributes(), self.attributes)
        return frame

    def _driver_attributes(self):
        """The driver's NDAttributesFile evaluated here: for CA sources only (pvAccess
        frames carry the driver's own)."""
        if self.driver_attributes is None:
            return None
        try:
            return self.driver_attributes if parse_source(self.prefix)[0] == "ca" else None
        except ValueError:
            return None

    def latest_unique_id(self, timeout: float = 1.0) -> int | None:
        """The UniqueId of the newest frame the source has finished (CA: see
        ``CAImageSource``; PVA: the channel's current value); None when the receiver is
        not connected or does not answer in time."""
        if not self.connected:
            return None
        try:
            return self._call("latest_unique_id", timeout, timeout=timeout * 3 + 2)
        except Exception as exc:  # noqa: BLE001 - the child is restarting, or timed out
            log.warning("cannot read the source's latest frame id: %s", exc)
            return None

    def _call(self, name: str, *args, timeout: float | None = None):
        call_id = next(self._ids)
        future: Future = Future()
        self._calls[call_id] = future
        try:
            self._sender.send(("call", call_id, name, args))
        except OSError as exc:
            self._calls.pop(call_id, None)
            raise ConnectionError("the image receiver process is not running") from exc
        return future.result(timeout or self.CALL_TIMEOUT)

    # -- messages from the child (one thread per child) -----------------------------------
    def _read(self, conn, generation: int) -> None:
        """The pipe, in rounds: what it holds is taken in (frames rebuilt), then handed on
        in one go, then the thread pauses (``_Pacing``) so that the next round finds
        several frames.  A Python thread that has slept resumes slowly on a shared
        machine (cold caches): the file saver wakes once a round and writes its frames
        back to back (measured, writer alone at 200 frames/s: 1.1 ms of CPU a frame one
        at a time, 0.5 ms four at a time)."""
        handlers = {"status": self._on_status, "error": lambda message: self.on_error(message),
                    "result": self._on_result}
        stopped = False
        # one poll object for the pipe's life (Connection.poll builds a selector per call)
        poller = select.poll()
        poller.register(conn.fileno(), select.POLLIN)
        wait_ms = int(self.RETURN_EVERY * 1000)
        pacing = _Pacing()
        arrived: list = []  # frames (or ids alone) taken in this round, in order
        while not stopped:
            try:
                self._return_slots(generation)
                if not poller.poll(wait_ms):
                    self._return_slots(generation, every=True)
                    continue
                woke = time.monotonic()
                while True:
                    message = conn.recv()
                    kind = message[0]
                    if kind == "frame":
                        arrived.append(self._take_in(generation, *message[1:]))
                    elif kind == "uid":
                        arrived.append(message[1])
                    elif kind == "slot":
                        self._on_slot(conn, *message[1:])
                    else:
                        self._hand_on(arrived)  # (in order with the frames before it)
                        if kind == "stopped":
                            stopped = True
                            break
                        self._handle(handlers, kind, message)
                    if len(arrived) >= _Pacing.MOST or not poller.poll(0):
                        break
            except (EOFError, OSError):
                break
            finally:
                frames = len(arrived)
                self._hand_on(arrived)
            if frames and not stopped:
                pacing.pause(woke, frames)
        if self.connected:
            self.connected = False
            self.on_status({"connected": False})
        for future in list(self._calls.values()):
            if not future.done():
                future.set_exception(ConnectionError("the receiver process has ended"))
        self._calls.clear()
        if not stopped and not self._stopping:
            process = self.process
            process.join(5.0)
            self._restart(process.exitcode)

    @staticmethod
    def _handle(handlers: dict, kind: str, message: tuple) -> None:
        try:
            handlers[kind](*message[1:])
        except Exception:  # noqa: BLE001 - one bad message must not end the reader
            log.exception("receiver message %s", kind)

    def _hand_on(self, arrived: list) -> None:
        for frame in arrived:
            try:
                self.on_frame(frame)
            except Exception:  # noqa: BLE001 - one bad frame must not end the reader
                log.exception("receiver frame")
        arrived.clear()

    def _on_slot(self, conn, index: int, size: int) -> None:
        """A new (or larger) slot: map it; the previous mapping of this index lives on
        in the arrays still using it."""
        from multiprocessing.reduction import recv_handle

        self._maps.pop(index, None)
        try:
            fd = recv_handle(conn)
            try:
                self._maps[index] = map_shared(fd, size, writable=False)
            finally:
                os.close(fd)
        except OSError as exc:
            message = f"cannot map a frame buffer of {size} bytes: {exc}; its frames are dropped"
            log.error(message)
            self.on_error(message)

    def _take_in(self, generation: int, index: int, message: tuple):
        """The frame a message describes, viewing its slot (or its UniqueId alone when the
        slot could not be mapped: it is dropped)."""
        with self._freed_lock:
            self._held += 1
        mapping = self._maps.get(index)
        if mapping is None:  # the slot could not be mapped: the frame is dropped
            self._free(generation, index)
            return message[2]
        try:
            frame, base = frame_from_message(mapping, message)
        except Exception:  # noqa: BLE001 - a bad message: dropped (said), its slot back
            log.exception("receiver frame %s", message[2])
            self._free(generation, index)
            return message[2]
        # The slot returns to the child when the last view of it is gone.
        weakref.finalize(base, self._free, generation, index)
        del base
        try:
            # the frame's (the driver's, evaluated here for CA) first, then the writer's
            # own NDAttributes: a later one of the same name replaces the earlier
            # (NDPluginDriver::beginProcessCallbacks)
            add_attributes(frame, self._driver_attributes(), self.attributes)
        except Exception:  # noqa: BLE001 - dropped (said); its slot goes back with it
            log.exception("receiver frame %s: attributes", message[2])
            return message[2]
        return frame

    def _free(self, generation: int, index: int) -> None:
        # Runs where the last view went (the file writer's thread): no system call
        # here; the pipe thread returns the slots in batches.
        with self._freed_lock:
            if generation == self._generation:  # else: a slot of a child that has gone
                if not self._freed:
                    self._freed_since = time.monotonic()
                self._freed.append(index)

    def _return_slots(self, generation: int, every: bool = False) -> None:
        """Give freed slots back to the child: a message for a few of them at a time
        (each one costs both processes a system call and a pickle), at the latest
        RETURN_BATCH_AGE after the first was freed, and however few when the pipe is
        idle (``every``).  A batch is at most a quarter of the child's slots, and slots go
        back at once when the child is close to holding none free (the queue's depth
        stays what QueueSize says)."""
        with self._freed_lock:
            if generation != self._generation or not self._freed:
                return
            batch = max(1, min(self.RETURN_BATCH, self.max_slots // 4))
            if not every and len(self._freed) < batch and \
                    self._held < self.max_slots - 2 * batch and \
                    time.monotonic() - self._freed_since < self.RETURN_BATCH_AGE:
                return
            freed, self._freed = self._freed, []
            self._held -= len(freed)
        self._sender.send(("free", freed))

    def _on_status(self, status: dict) -> None:
        if "connected" in status:
            self.connected = bool(status["connected"])
        self.skipped = status.get("skipped", self.skipped)
        self.duplicates = status.get("duplicates", self.duplicates)
        self.on_status(status)

    def _on_result(self, call_id: int, value, error: str | None) -> None:
        future = self._calls.pop(call_id, None)
        if future is None:
            return
        if error is None:
            future.set_result(value)
        else:
            future.set_exception(RuntimeError(error))
