"""The channel of one stream: a bounded queue of chunk batches ending in one end record.

The channel moves one socket read's worth of chunks (a list) per operation
and bounds them by count: a ``send`` waits while ``capacity`` chunks are
queued, so it holds at most ``capacity`` plus one read's chunks. A slow
consumer stops the worker, which stops reading the socket: TCP backpressure
reaches the server and memory stays flat. Every wait has a wake-up: the end
record, ``cancel()``, or a timeout.

Exactly one end record per stream: :meth:`SendEnd.finish` is guarded so that
whichever comes first wins: the worker's ``finally`` (success, server error,
timeout, crash) or ``cancel()`` (which does not wait for a worker that may
still be blocked in a connect).

Shape: one shared :class:`.chanstate.ChannelState` (its lock and how threads
wait on it are there) and two ends over it, as in trio's memory channels.
:class:`SendEnd` belongs to the producer (the worker), :class:`ReceiveEnd`
to the consumer (the ``Stream``). The channel knows nothing of HTTP or of
what a Result holds: it is given

- a :class:`Cancellable` (``cancel()``, ``cancelled``, ``event``): what
  stops the producer when the stream is cancelled;
- a :class:`Recorder`, told of every batch the channel accepts, under the
  channel lock, so that what was delivered and what the end record says
  always agree;
- a result builder, passed to :meth:`SendEnd.finish` by whoever ends the
  stream, and called under the same lock.

A consumer that iterates can be lent the producer's read
(:meth:`SendEnd.lend`): its ``take(None)`` then reads and takes the chunks
itself while the producer sleeps, a wake-up per chunk saved; any other way
of waiting, or staying away ``AWAY_S``, gives the read back.

Whether the consumer has *seen* a chunk (taken one from the queue, or been
handed one by its sink) is decided under the lock too: :meth:`SendEnd.rewind`
(the worker restarting a cut stream from scratch) and :meth:`ReceiveEnd.take`
cannot both win, so a consumer never sees chunks of a reply that was then
thrown away.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Callable, List, Optional, Tuple, Union

from ..errors import Cancelled
from ..records import Chunk, Result
from .chanstate import Cancellable, ChannelState, Recorder, Sink, Step, wake_waiters

if TYPE_CHECKING:
    import asyncio

logger = logging.getLogger("streamkit")

AWAY_S = 1.0
"""How long a consumer may stay away from a lent step (between two
``next()`` calls) before the producer takes the step back and reads ahead
into the queue again: a stream whose consumer stopped iterating still ends.
Also how often a lending producer wakes to look (and to see a cancel from
the garbage collector's finalizer, which cannot notify it): at 0.25 s those
wakes cost a thousand streams 3-6 us per chunk (benchmarks/scale.py)."""

PUT_POLL_S = 0.25
"""How often a producer blocked on a full channel re-checks its Cancellable.
An explicit cancel() wakes it at once; this only bounds the garbage-collector
path, whose finalizer may not take locks."""

#: Builds the end record for an error (None: success); called with the channel lock held.
Build = Callable[[Optional[BaseException]], Result]


def discard(chunk: Chunk) -> None:
    """The sink of a stream nobody reads chunk by chunk (``Dispatcher.map``).

    Claiming the channel with it drops chunks without calling it, and the
    consumer never sees any: such a stream may always be restarted.
    """


class BatchSink:
    """A sink that takes the chunks of one read as one list: a call per read,
    not per chunk (a consumer that hands chunks on in bulk)."""

    __slots__ = ("offer", "put")

    def __init__(self, put: Callable[[List[Chunk]], None],
                 offer: Optional[Callable[[List[Chunk]], bool]] = None) -> None:
        self.put = put
        self.offer = offer  # put if that would not wait; False (nothing put) if it would

    def __call__(self, chunk: Chunk) -> None:
        self.put([chunk])


class Stopped(Exception):
    """The stream ended (cancelled) while the producer was still sending."""


def open_channel(capacity: int, canceller: Cancellable,
                 recorder: Recorder) -> Tuple[SendEnd, ReceiveEnd]:
    """A new channel holding at most ``capacity`` chunks (plus one batch)."""
    state = ChannelState(capacity, canceller, recorder)
    return SendEnd(state), ReceiveEnd(state)


class SendEnd:
    """The producer's end. ``claim`` and ``send`` run in the producer's thread;
    ``finish`` and ``cancel`` in any thread."""

    __slots__ = ("_state",)

    def __init__(self, state: ChannelState) -> None:
        self._state = state

    @property
    def ended(self) -> bool:
        """True once the end record is written."""
        return self._state.end is not None

    @property
    def discarding(self) -> bool:
        """True if the channel was claimed with :func:`discard` (nobody sees chunks)."""
        return self._state.discarding

    def claim(self, sink: Optional[Sink]) -> bool:
        """Claim the producer side (chunks go to ``sink`` if given, else to the
        queue; :func:`discard` drops them); False if a producer already claimed it."""
        s = self._state
        with s.lock:
            if s.claimed:
                return False
            s.claimed = True
            s.sink = sink
            s.discarding = sink is discard
            return True

    def rewind(self) -> bool:
        """Forget every chunk sent so far, if the consumer has seen none of them.

        Drops the queued batches and resets the recorder, so the next ``send``
        starts the reply again. Decided under the lock against ``take``: True
        if the channel was rewound; False if the consumer already saw a chunk
        (or the stream has ended), and then nothing changed.
        """
        s = self._state
        with s.lock:
            if s.seen or s.end is not None:
                return False
            s.batches.clear()
            s.queued = 0
            s.recorder.reset()
            return True

    def send(self, chunks: List[Chunk]) -> None:
        """Hand one read's chunks (non-empty) to the consumer; waits while the channel is full.

        Raises Stopped if the stream has ended (cancelled) meanwhile, and
        Cancelled if the Cancellable was cancelled without an end (GC finalizer).
        """
        self._put(chunks, True)

    @property
    def offers(self) -> bool:
        """:meth:`offer` can hand chunks on: the sink, if any, runs no code of
        the caller's and has a way to say it is full (a poller may call it)."""
        sink = self._state.sink
        return (sink is None or self._state.discarding
                or (type(sink) is BatchSink and sink.offer is not None))

    def offer(self, chunks: List[Chunk]) -> bool:
        """:meth:`send` where it would not wait: False, with nothing handed on,
        when the channel or the sink is full. Needs :attr:`offers`."""
        return self._put(chunks, False)

    def _put(self, chunks: List[Chunk], wait: bool) -> bool:
        s = self._state
        with s.lock:
            while (s.queued >= s.capacity and not s.unbounded
                   and s.end is None and s.sink is None):
                if not wait:
                    return False
                if s.canceller.cancelled:
                    raise Cancelled()
                if s.space is None:
                    s.space = threading.Condition(s.lock)
                s.putting += 1
                try:
                    s.space.wait(PUT_POLL_S)
                finally:
                    s.putting -= 1
            if s.end is not None:
                raise Stopped()
            sink = s.sink
            if not wait and sink is not None and not s.discarding:
                # Offered first, recorded after: a chunk the sink refused is not
                # recorded now and then again when it is sent.
                assert type(sink) is BatchSink and sink.offer is not None
                if not sink.offer(chunks):
                    return False
                s.recorder.record(chunks)
                s.seen = True
                return True
            s.recorder.record(chunks)
            if s.discarding:
                return True
            if sink is None:
                s.batches.append(chunks)
                s.queued += len(chunks)
                if s.queued > s.peak_queued:
                    s.peak_queued = s.queued
                if len(chunks) > s.largest_batch:
                    s.largest_batch = len(chunks)
                if s.ringing or s.taking:
                    s.wake_takers(False)
            else:
                s.seen = True
            waiters = s.take_waiters() if s.waiters else None
        if waiters:
            wake_waiters(waiters)
        if sink is not None:
            if type(sink) is BatchSink:
                sink.put(chunks)
            else:
                for c in chunks:
                    sink(c)
        return True

    @property
    def consumer_iterates(self) -> bool:
        """A hint, read without the lock: the consumer's last ``take`` had no
        timeout, it iterates (``lend`` decides under the lock)."""
        return self._state.iterating

    def lend(self, step: Step) -> bool:
        """Let the consumer run ``step`` itself, in its own thread, for as long
        as it keeps calling ``take(None)``: the read a waiting consumer would
        otherwise be woken for, with no handoff between two threads.

        False (nothing lent) unless the consumer iterates (its last ``take``
        had no timeout) and there is no sink. Else blocks until the step
        comes back: ``step`` said so (the body ended, or it failed), the
        consumer took with a timeout or waits another way, it stayed away
        ``AWAY_S``, or the stream ended or was cancelled (never while the
        consumer is inside ``step``). True then; the producer reads on.
        """
        s = self._state
        with s.lock:
            if not s.iterating or s.sink is not None or s.over():
                return False
            if s.returned is None:
                s.returned = threading.Condition(s.lock)
            s.lent = step
            s.away_since = time.monotonic()  # the consumer's absence counts from here
            s.wake_takers(False)
            while s.lent is not None:
                if not s.stepping:
                    if s.over():
                        s.lent = None
                        break
                    waiting = s.ringing and s.iterating  # in take(None), on the bell
                    if not waiting and time.monotonic() - s.away_since >= AWAY_S:
                        s.lent = None
                        s.iterating = False  # lent again once it iterates again
                        break
                s.returned.wait(AWAY_S)
            return True

    def finish(self, error: Optional[BaseException], build: Build) -> bool:
        """Write the end record ``build(error)`` unless there is one; True if this
        call wrote it. Wakes every waiter, then runs the done-callbacks here."""
        s = self._state
        with s.lock:
            if s.end is not None:
                return False
            end = s.end = build(error)
            if s.ended is not None:
                s.ended.set()
            s.wake_takers(True)
            if s.space is not None:
                s.space.notify_all()
            if s.returned is not None:
                s.returned.notify_all()
            waiters = s.take_waiters()
            callbacks, s.callbacks = s.callbacks, []
        wake_waiters(waiters)
        for fn in callbacks:
            _call_back(fn, end)
        return True

    def cancel(self, build: Build) -> bool:
        """End the stream with Cancelled now, then cancel the producer's work.

        A stream that has ended is left alone (its producer may be finishing
        quietly, e.g. reading the end of a body so the connection is reused).
        True if this call ended the stream.
        """
        # End first, then cancel: the producer, woken by the cancel, would
        # otherwise race this call to write the end record.
        if not self.finish(Cancelled(), build):
            return False
        self._state.canceller.cancel()
        return True


class ReceiveEnd:
    """The consumer's end; one consuming thread at a time (``add_callback``,
    ``lift_bound`` and ``wait_end`` from any thread)."""

    __slots__ = ("_state",)

    def __init__(self, state: ChannelState) -> None:
        self._state = state

    @property
    def end(self) -> Optional[Result]:
        """The end record, once written."""
        return self._state.end

    @property
    def queued(self) -> int:
        """Chunks in the channel now (for tests and monitoring)."""
        return self._state.queued

    @property
    def peak_queued(self) -> int:
        """The most chunks ever queued at once."""
        return self._state.peak_queued

    @property
    def wakes(self) -> int:
        """How many times a waiting consumer was woken (a send to a consumer
        that was not waiting wakes nobody)."""
        return self._state.wakes

    @property
    def largest_batch(self) -> int:
        """The most chunks one send carried."""
        return self._state.largest_batch

    def has_unread(self) -> bool:
        return bool(self._state.batches)

    def take(self, timeout: Optional[float]) -> Union[List[Chunk], Result, None]:
        """The next batch, else the end record; None if neither came within ``timeout``.

        With no timeout, a read the producer lent (``SendEnd.lend``) is run
        here, in this thread; a take with a timeout gives it back first.
        """
        s = self._state
        with s.lock:
            if timeout is None:
                s.iterating = True
            else:
                s.reclaim()
            waited = False
            while True:
                if s.batches:
                    batch = s.batches.popleft()
                    s.seen = True
                    s.queued -= len(batch)
                    if s.putting:
                        assert s.space is not None
                        s.space.notify()
                    return batch
                if s.end is not None or timeout == 0 or (waited and timeout is not None):
                    return s.end
                if timeout is None and s.lent is not None and not s.stepping:
                    chunks = _run_step(s, s.lent)
                    if chunks:
                        return chunks
                    continue
                waited = True
                if s.ringing:  # another thread waits on the bell already
                    if s.items is None:
                        s.items = threading.Condition(s.lock)
                    s.taking += 1
                    try:
                        s.items.wait_for(lambda: s.batches or s.end is not None, timeout)
                    finally:
                        s.taking -= 1
                else:
                    s.wait_bell(timeout)

    def add_waiter(self, loop: asyncio.AbstractEventLoop, fut: asyncio.Future[None]) -> bool:
        """Register an asyncio waiter; False if there is something to take already."""
        s = self._state
        with s.lock:
            s.reclaim()
            if s.batches or s.end is not None:
                return False
            s.waiters.append((loop, fut))
            return True

    def remove_waiter(self, fut: asyncio.Future[None]) -> None:
        s = self._state
        with s.lock:
            s.waiters = [w for w in s.waiters if w[1] is not fut]

    def lift_bound(self) -> None:
        """Stop applying backpressure (the reply is wanted whole: nobody may be reading)."""
        s = self._state
        with s.lock:
            s.unbounded = True
            s.reclaim()
            if s.space is not None:
                s.space.notify_all()

    def wait_end(self, timeout: Optional[float]) -> bool:
        """Wait until the end record is written; False if ``timeout`` passed first."""
        s = self._state
        with s.lock:
            if s.end is not None:
                return True
            s.reclaim()
            if s.ended is None:
                s.ended = threading.Event()
            ended = s.ended
        return ended.wait(timeout)

    def add_callback(self, fn: Callable[[Result], None]) -> None:
        """Call ``fn(end)`` once the end record is written (here and now if it is)."""
        s = self._state
        with s.lock:
            end = s.end
            if end is None:
                s.callbacks.append(fn)
                return
        _call_back(fn, end)


def _run_step(s: ChannelState, step: Step) -> List[Chunk]:
    """Run a lent step in the consumer's thread (lock held on entry and on
    return, let go meanwhile): its chunks, recorded as a send records them,
    or [] if it gave none (then the step may have gone back to the producer,
    or the stream ended)."""
    s.stepping = True
    keep = False
    chunks: List[Chunk] = []
    s.lock.release()
    try:
        chunks, keep = step()
    finally:
        s.lock.acquire()
        s.stepping = False
        s.away_since = time.monotonic()
        if not keep or s.end is not None:
            s.lent = None
            assert s.returned is not None
            s.returned.notify()
    if not chunks or s.end is not None:  # cancelled meanwhile: the end is the news
        return []
    s.recorder.record(chunks)
    s.seen = True
    return chunks


def _call_back(fn: Callable[[Result], None], result: Result) -> None:
    try:
        fn(result)
    except Exception:
        logger.exception("a Stream done-callback raised")
