"""The state a channel's two ends share, and how their threads wait on it.

What :mod:`.channel` builds its ends on: :class:`ChannelState` holds the
queued batches, the end record and the sink under one lock, and carries the
wake-ups between producer and consumer (the bell, two Conditions, asyncio
waiters). Its lock rules are in its docstring; nothing here decides what a
send or a take means, that is the ends' job.

Also here: what the state is given and holds, :class:`Cancellable`,
:class:`Recorder` and :data:`Sink`. Nothing here blocks except
:meth:`ChannelState.wait_bell` (bounded by its timeout); nothing raises.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Callable, Deque, List, Optional, Protocol, Tuple

from ..records import Chunk, Result

if TYPE_CHECKING:
    import asyncio

Sink = Callable[[Chunk], None]
#: A read the producer lends its consumer (see ``SendEnd.lend``): the chunks
#: of the next read(s), and whether the consumer may keep the step.
Step = Callable[[], Tuple[List[Chunk], bool]]
Waiter = Tuple["asyncio.AbstractEventLoop", "asyncio.Future[None]"]


class Cancellable(Protocol):
    """What the channel needs of a cancel token (``transport.CancelToken`` is one)."""

    event: threading.Event

    @property
    def cancelled(self) -> bool: ...

    def cancel(self) -> bool:
        """Cancel the producer's work; True if this call did it. Never blocks."""


class Recorder(Protocol):
    """Keeps the record of what the channel delivered (text, timing...)."""

    def record(self, chunks: List[Chunk]) -> None:
        """Account for a batch the channel accepted; called with the channel lock held."""

    def reset(self) -> None:
        """Forget every batch recorded so far (a restart); called with the channel lock held."""


class ChannelState:
    """The state both ends share.

    Lock rules: ``lock`` (shared by the two Conditions) guards every field
    below and the recorder's writes. ``end`` is written once, by
    :meth:`.channel.SendEnd.finish`.

    Waking the consumer is the per-chunk cost of a stream whose consumer
    keeps up, so it is one ``release`` of a lock made once per channel:
    ``bell`` is held while nobody rings it; the consumer sets ``ringing``,
    lets go of ``lock`` and blocks acquiring ``bell``; a producer that finds
    ``ringing`` set clears it and releases ``bell`` (both under ``lock``, so
    a ring can never be given twice; the woken consumer cannot run before
    the producer lets go of the GIL, by then it has let go of ``lock`` too).
    Nobody waiting, nothing rung: a send costs no wake-up at all. A second
    thread taking at the same time (not the usual shape) waits on the
    ``items`` Condition instead. ``space`` is notified when chunks are taken,
    the bound is lifted or the stream ends (the producer waits on it).
    The bell, the Conditions and the Event are made, under the lock, by the
    first thread that waits: most streams of a fan-out never wait, and
    making them is most of the cost of a Stream.

    A read lent to the consumer (``lent``, see ``SendEnd.lend``) is run by
    one consumer thread at a time (``stepping``), lent only while the
    consumer is ``iterating`` (its last take had no timeout); ``away_since``
    is when it last left a step; the producer waits on ``returned`` for the
    step back.
    """

    __slots__ = ("away_since", "batches", "bell", "callbacks", "canceller", "capacity",
                 "claimed", "discarding", "end", "ended", "items", "iterating",
                 "largest_batch", "lent", "lock", "peak_queued", "putting", "queued",
                 "recorder", "returned", "ringing", "seen", "sink", "space", "stepping",
                 "taking", "unbounded", "waiters", "wakes")

    def __init__(self, capacity: int, canceller: Cancellable, recorder: Recorder) -> None:
        self.capacity = capacity
        self.canceller = canceller
        self.recorder = recorder
        self.lock = threading.Lock()
        self.bell: Optional[threading.Lock] = None
        self.ringing = False
        self.wakes = 0  # consumer wake-ups (observability, tests)
        self.items: Optional[threading.Condition] = None
        self.space: Optional[threading.Condition] = None
        self.ended: Optional[threading.Event] = None
        self.batches: Deque[List[Chunk]] = deque()
        self.queued = 0
        self.peak_queued = 0  # most chunks ever queued (observability, tests)
        self.largest_batch = 0
        self.unbounded = False
        # Threads waiting on items (a second consumer) and on space (the
        # producer): the per-read notify is skipped when nobody waits.
        self.taking = 0
        self.putting = 0
        self.waiters: List[Waiter] = []
        self.end: Optional[Result] = None
        self.callbacks: List[Callable[[Result], None]] = []
        self.claimed = False
        self.sink: Optional[Sink] = None
        self.discarding = False  # claimed with ``discard``: chunks are dropped
        self.seen = False  # a chunk reached the consumer (taken, or handed to its sink)
        self.lent: Optional[Step] = None
        self.stepping = False
        self.iterating = False  # the consumer's last take had no timeout
        self.away_since = 0.0
        self.returned: Optional[threading.Condition] = None

    def over(self) -> bool:
        """The stream ended, or its producer was cancelled (lock held)."""
        return self.end is not None or self.canceller.cancelled

    def reclaim(self) -> None:
        """Take a lent step back for the producer, unless a consumer runs it
        now (lock held): the consumer waits another way from here."""
        self.iterating = False
        if self.lent is not None and not self.stepping:
            self.lent = None
            assert self.returned is not None
            self.returned.notify()

    def wake_takers(self, every: bool) -> None:
        """Wake the consumer waiting on the bell, and one (``every``: all) of the
        threads waiting on ``items``; nothing when nobody waits (lock held)."""
        if self.ringing:
            self.ringing = False
            self.wakes += 1
            assert self.bell is not None
            self.bell.release()
        if self.taking:
            assert self.items is not None
            self.wakes += 1
            if every:
                self.items.notify_all()
            else:
                self.items.notify()

    def wait_bell(self, timeout: Optional[float]) -> None:
        """Wait (``lock`` held on entry and on return) until a batch, the end
        or a lent step arrives or ``timeout`` passes, on the bell."""
        bell = self.bell
        if bell is None:
            bell = self.bell = threading.Lock()
            bell.acquire()  # held: not rung
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.batches and self.end is None and self.lent is None:
            wait = -1.0
            if deadline is not None:
                wait = deadline - time.monotonic()
                if wait <= 0:
                    return
            self.ringing = True
            rung = False
            self.lock.release()
            try:
                rung = bell.acquire(True, wait)
            finally:
                self.lock.acquire()
                if self.ringing:  # nobody rang
                    self.ringing = False
                elif not rung:  # rung as the wait ended: take the ring back so the bell is held
                    bell.acquire(False)

    def take_waiters(self) -> List[Waiter]:
        """The asyncio waiters to wake, removed from the state (lock held)."""
        waiters = self.waiters
        if waiters:
            self.waiters = []
        return waiters


def wake_waiters(waiters: List[Waiter]) -> None:
    """Resolve the futures of asyncio waiters taken by :meth:`ChannelState.take_waiters`
    (call it with the lock released)."""
    for loop, fut in waiters:
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
            loop.call_soon_threadsafe(_resolve, fut)


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
