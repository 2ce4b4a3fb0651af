"""The channel of one stream: a bounded queue of chunk batches ending in one end record.

The channel moves one socket read's worth of chunks (a list) per operation
and bounds them by count: a ``put`` waits while ``queue_size`` chunks are
queued, so it holds at most ``queue_size`` plus one read's chunks. A slow
consumer stops the worker, which stops reading the socket: TCP backpressure
reaches the server and memory stays flat. Every wait has a wake-up: the end
record, ``cancel()``, or a timeout.

Exactly one end record per stream: :meth:`_Channel.finish` is guarded so that
whichever comes first wins: the worker's ``finally`` (success, server error,
timeout, crash) or ``cancel()`` (which does not wait for a worker that may
still be blocked in a connect).

The channel also keeps the record of what it delivered (text, thinking, tool
calls, timing), which the end record and a replay are built from. The worker
(``_worker._Worker``) extends it with the producing side; the contents of
the end record come from its :meth:`_Channel._build_result` hook.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import deque
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Deque,
    List,
    Mapping,
    Optional,
    Tuple,
    Union,
)

from .errors import Cancelled
from .records import Chunk, Result, Timing
from .transport import CancelToken

if TYPE_CHECKING:
    import asyncio

logger = logging.getLogger("streamkit")

PUT_POLL_S = 0.25
"""How often a worker blocked on a full channel re-checks its cancel token.
An explicit cancel() wakes it at once; this only bounds the garbage-collector
path, whose finalizer may not take locks."""

Sink = Callable[[Chunk], None]


class _Stopped(Exception):
    """The stream ended (cancelled) while the worker was still producing."""


class _Channel:
    """Bounded batches from one producer to one consumer, then one end record.

    Lock rules: ``_lock`` (shared by the two Conditions) guards the queue
    (``_batches``, ``_queued``, ``_unbounded``, ``_waiters``, the counts of
    waiting threads ``_taking`` and ``_putting``), the delivered
    text and timing, and ``end``. ``end`` is written once, by :meth:`finish`.
    ``_items`` is notified when a batch or the end arrives (consumers wait on
    it); ``_space`` when chunks are taken, the bound is lifted or the stream
    ends (the producer waits on it).
    """

    def __init__(self, queue_size: int, token: CancelToken) -> None:
        self._capacity = queue_size
        self.token = token
        self._lock = threading.Lock()
        # The Conditions and the Event are made (under _lock) by the first
        # thread that waits: most streams of a fan-out never wait on them,
        # and making them is most of the cost of a Stream.
        self._items: Optional[threading.Condition] = None
        self._space: Optional[threading.Condition] = None
        self._ended: Optional[threading.Event] = None
        self._batches: Deque[List[Chunk]] = deque()
        self._queued = 0
        self.peak_queued = 0  # most chunks ever queued (observability, tests)
        self.largest_batch = 0
        self._unbounded = False
        # Threads waiting on _items (a consumer) and on _space (the producer):
        # the per-read notify is skipped when nobody waits.
        self._taking = 0
        self._putting = 0
        self._waiters: List[Tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self.end: Optional[Result] = None
        self._callbacks: List[Callable[[Result], None]] = []
        self._running = False
        self._sink: Optional[Sink] = None
        # delivered so far (under _lock)
        self._texts: List[str] = []
        self._thinking: List[str] = []
        self._tool_calls: List[Mapping[str, Any]] = []
        self._timing = Timing()
        self._next_index = 0

    # -- producer side ---------------------------------------------------------
    def _claim_producer(self, sink: Optional[Sink]) -> bool:
        """Claim the producer side (chunks go to ``sink`` if given, else to the
        queue); False if a producer already claimed it."""
        with self._lock:
            if self._running:
                return False
            self._running = True
            self._sink = sink
            return True

    def deliver(self, chunks: List[Chunk]) -> None:
        """Hand one read's chunks to the consumer; waits while the channel is full.

        Raises _Stopped if the stream has ended (cancelled) meanwhile, and
        Cancelled if the token was cancelled without an end (GC finalizer).
        """
        with self._lock:
            while (self._queued >= self._capacity and not self._unbounded
                   and self.end is None and self._sink is None):
                if self.token.cancelled:
                    raise Cancelled()
                if self._space is None:
                    self._space = threading.Condition(self._lock)
                self._putting += 1
                try:
                    self._space.wait(PUT_POLL_S)
                finally:
                    self._putting -= 1
            if self.end is not None:
                raise _Stopped()
            self._account(chunks)
            if self._sink is None:
                self._batches.append(chunks)
                self._queued += len(chunks)
                if self._queued > self.peak_queued:
                    self.peak_queued = self._queued
                if len(chunks) > self.largest_batch:
                    self.largest_batch = len(chunks)
                if self._taking:
                    assert self._items is not None
                    self._items.notify()
            waiters = self._take_waiters()
        _wake(waiters)
        if self._sink is not None:
            for c in chunks:
                self._sink(c)

    def _account(self, chunks: List[Chunk]) -> None:
        """Record delivered text, tool calls and timing (under the lock).

        Comprehensions over the batch rather than one loop with branches per
        chunk: this runs for every chunk of every stream.
        """
        text = "".join([c.text for c in chunks])
        thinking = "".join([c.thinking for c in chunks])
        if text:
            self._texts.append(text)
        if thinking:
            self._thinking.append(thinking)
        tools = [call for c in chunks if c.tool_calls for call in c.tool_calls]
        if tools:
            self._tool_calls.extend(tools)
        timing = self._timing
        if text or thinking or tools:
            if timing.first_token_ns is None:
                timing.first_token_ns = next(c.received_ns for c in chunks if _has_token(c))
            if text and timing.first_content_ns is None:
                timing.first_content_ns = next(c.received_ns for c in chunks if c.text)
            timing.last_token_ns = next(c.received_ns for c in reversed(chunks)
                                        if _has_token(c))
        last = chunks[-1]
        if last.done:  # the decoder ends a batch at the done record
            timing.done_ns = last.received_ns
        timing.chunks += len(chunks)
        self._next_index = last.index + 1

    def finish(self, error: Optional[BaseException], result: Optional[Result] = None) -> bool:
        """Write the end record (``result``, or one built now) unless there is one;
        True if this call wrote it."""
        with self._lock:
            if self.end is not None:
                return False
            end = self.end = result if result is not None else self._build_result(error)
            if self._ended is not None:
                self._ended.set()
            if self._items is not None:
                self._items.notify_all()
            if self._space is not None:
                self._space.notify_all()
            waiters = self._take_waiters()
            callbacks, self._callbacks = self._callbacks, []
        _wake(waiters)
        for fn in callbacks:
            _call_back(fn, end)
        return True

    def add_callback(self, fn: Callable[[Result], None]) -> None:
        with self._lock:
            end = self.end
            if end is None:
                self._callbacks.append(fn)
                return
        _call_back(fn, end)

    def _build_result(self, error: Optional[BaseException]) -> Result:
        """The end record for ``error`` (None: success). Called with the lock held."""
        raise NotImplementedError

    def _take_waiters(self) -> List[Tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]]:
        waiters = self._waiters
        if waiters:
            self._waiters = []
        return waiters

    def delivered(self) -> Tuple[str, str, List[Mapping[str, Any]]]:
        """The text, thinking and tool calls delivered so far."""
        with self._lock:
            return "".join(self._texts), "".join(self._thinking), list(self._tool_calls)

    # -- consumer side ---------------------------------------------------------
    def take(self, timeout: Optional[float]) -> Union[List[Chunk], Result, None]:
        """The next batch, else the end record; None if neither came within ``timeout``."""
        with self._lock:
            if not self._batches and self.end is None and timeout != 0:
                if self._items is None:
                    self._items = threading.Condition(self._lock)
                self._taking += 1
                try:
                    self._items.wait_for(lambda: self._batches or self.end is not None, timeout)
                finally:
                    self._taking -= 1
            if self._batches:
                batch = self._batches.popleft()
                self._queued -= len(batch)
                if self._putting:
                    assert self._space is not None
                    self._space.notify()
                return batch
            return self.end

    def add_waiter(self, loop: asyncio.AbstractEventLoop, fut: asyncio.Future[None]) -> bool:
        """Register an asyncio waiter; False if there is something to take already."""
        with self._lock:
            if self._batches or self.end is not None:
                return False
            self._waiters.append((loop, fut))
            return True

    def remove_waiter(self, fut: asyncio.Future[None]) -> None:
        with self._lock:
            self._waiters = [w for w in self._waiters if w[1] is not fut]

    def lift_bound(self) -> None:
        """Stop applying backpressure (result() was asked for: nobody may be reading)."""
        with self._lock:
            self._unbounded = True
            if self._space is not None:
                self._space.notify_all()

    def wait_end(self, timeout: Optional[float]) -> bool:
        """Wait until the end record is written; False if ``timeout`` passed first."""
        with self._lock:
            if self.end is not None:
                return True
            if self._ended is None:
                self._ended = threading.Event()
            ended = self._ended
        return ended.wait(timeout)

    @property
    def queued(self) -> int:
        """Chunks in the channel now (for tests and monitoring)."""
        return self._queued

    def has_unread(self) -> bool:
        return bool(self._batches)

    def cancel(self) -> bool:
        """Shut the attempt's socket and end the stream with Cancelled now.

        A stream that has ended is left alone: its worker may be reading the
        last bytes of the body so that the connection can be reused.
        """
        # End first, then shut the socket: the worker, woken by the shutdown,
        # would otherwise race this call to write the end record.
        if not self.finish(Cancelled()):
            return False
        self.token.cancel()
        return True


def _has_token(c: Chunk) -> bool:
    return bool(c.text or c.thinking or c.tool_calls)


def _call_back(fn: Callable[[Result], None], result: Result) -> None:
    try:
        fn(result)
    except Exception:
        logger.exception("a Stream done-callback raised")


def _wake(waiters: List[Tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]]) -> None:
    for loop, fut in waiters:
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
            loop.call_soon_threadsafe(_resolve, fut)


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
