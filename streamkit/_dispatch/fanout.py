"""One ``Dispatcher.map``/``events`` call: lazy input, its jobs, one merged channel.

Unlike ``Executor.map``, the input is read lazily: at most ``workers +
max_pending`` requests are submitted and not yet handed to the caller, so a
generator of a million requests is never materialised. The streams of a call
run drained (nobody iterates them) and report into one merged channel:
their Results, and with ``events`` their chunks.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import deque
from threading import Condition
from typing import TYPE_CHECKING, Any, Callable, Deque, Dict, Iterable, List, Optional, Tuple

from .._stream.channel import BatchSink, discard
from ..records import Chunk, Request, Result
from .pool import POLL_S, Job, Pool

if TYPE_CHECKING:
    from .task import Task

#: Chunks buffered in the merged channel of events() before workers wait.
EVENTS_BUFFER = 1024
#: Longest wait of a worker for space before it re-checks its job and the
#: channel (a cancel or close wakes it at once; this is only a backstop).
BACKSTOP_S = 1.0


class _Waiting:
    """A worker waiting for space in a Merged channel, with the chunks it brings:
    its own Condition, so a freed slot wakes exactly this worker, in arrival order."""

    __slots__ = ("cond", "granted", "items", "job")

    def __init__(self, lock: threading.Lock, job: Job, items: List[Any]) -> None:
        self.cond = Condition(lock)
        self.granted = False  # its chunks were queued in a freed slot
        self.items = items
        self.job = job


class Merged:
    """What the workers of one map/events call report, in completion order.

    Results are unbounded (a call has at most ``workers + max_pending`` of them
    outstanding). Chunks (events only) are bounded: a worker with the chunks
    of one read for a full channel waits, which stops its stream reading the
    socket (backpressure), until the consumer catches up, the job is
    cancelled or the channel is closed (then the chunks are dropped: nobody
    will read them). A read's chunks go in together once a slot is free, so
    the channel holds at most ``chunk_limit`` plus one read's chunks.

    Waking is O(1) per read, whatever the number of workers: the consumer
    waits on ``_ready`` and is notified only when it waits; each waiting
    worker waits on its own Condition in a FIFO queue, and a chunk taken
    that frees a slot queues the chunks of the first of them, then wakes that
    worker alone. A worker held back reads more at once when it resumes (the
    socket kept filling), so the slower the consumer, the fewer the wake-ups
    per chunk. Chunks of waiting workers arrive in the order the workers
    came, and a worker arriving later queues behind them. Lock rules:
    ``_lock`` guards every field; ``_queue`` holds the workers not yet granted.
    """

    def __init__(self, chunk_limit: int) -> None:
        self._items: Deque[Tuple[bool, Any]] = deque()
        self._chunks = 0  # chunks queued
        self._limit = chunk_limit
        self._closed = False
        self._lock = threading.Lock()
        self._ready = Condition(self._lock)
        self._getting = 0  # 1 while the consumer waits
        self._queue: Deque[_Waiting] = deque()

    def put_chunk(self, item: Any, job: Job) -> None:
        """:meth:`put_chunks` of one chunk."""
        self.put_chunks([item], job)

    def put_chunks(self, items: List[Any], job: Job) -> None:
        """Queue the chunks of one read (non-empty) together; waits (FIFO) while
        ``chunk_limit`` chunks are queued.

        Returns without queuing once the channel is closed or ``job`` cancelled.
        """
        with self._lock:
            if self._closed or job.cancelled:
                return
            if self._chunks >= self._limit or self._queue:
                self._wait_for_slot(job, items)
                return
            self._admit(items)
            if self._getting:
                self._ready.notify()

    def offer_chunks(self, items: List[Any], job: Job) -> bool:
        """:meth:`put_chunks` if that would not wait; False (nothing queued) if it would.

        True without queuing once the channel is closed or ``job`` cancelled
        (what ``put_chunks`` does then: the chunks are dropped).
        """
        with self._lock:
            if self._closed or job.cancelled:
                return True
            if self._chunks >= self._limit or self._queue:
                return False
            self._admit(items)
            if self._getting:
                self._ready.notify()
            return True

    def _admit(self, items: List[Any]) -> None:
        self._chunks += len(items)
        self._items.extend([(True, item) for item in items])

    def _wait_for_slot(self, job: Job, items: List[Any]) -> None:
        """Queue up until a taken chunk hands these their slot (lock held)."""
        me = _Waiting(self._lock, job, items)
        self._queue.append(me)
        while not me.granted and not (self._closed or job.cancelled):
            # Woken by a grant, close() or wake(job) (a cancel); the timeout
            # is only a backstop: nothing waits forever.
            me.cond.wait(BACKSTOP_S)
        if not me.granted:
            self._queue.remove(me)  # dropped: nobody will read it

    def _free_slot(self) -> None:
        """A chunk was taken (lock held): a free slot goes to the first waiting worker."""
        self._chunks -= 1
        if self._queue and self._chunks < self._limit:
            first = self._queue.popleft()
            first.granted = True
            self._admit(first.items)
            first.cond.notify()

    def put_result(self, item: Any) -> None:
        with self._lock:
            self._items.append((False, item))
            if self._getting:
                self._ready.notify()

    def get(self, timeout: float) -> Optional[Tuple[bool, Any]]:
        """The next (is_chunk, item), or None if nothing came within ``timeout``."""
        with self._lock:
            if not self._items:
                self._getting += 1
                try:
                    self._ready.wait(timeout)
                finally:
                    self._getting -= 1
                if not self._items:
                    return None
            is_chunk, item = self._items.popleft()
            if is_chunk:
                self._free_slot()
            return is_chunk, item

    def wake(self, job: Job) -> None:
        """Wake ``job``'s worker if it waits for space (it was cancelled)."""
        with self._lock:
            for waiting in self._queue:
                if waiting.job is job:
                    waiting.cond.notify()

    def close(self) -> None:
        """Drop what comes next; wake every waiting worker (they return at once)."""
        with self._lock:
            self._closed = True
            for waiting in self._queue:
                waiting.cond.notify()


class FanoutJob(Job):
    """A stream of one map/events call: runs drained, then reports its Result."""

    __slots__ = ("fanout", "seq")

    def __init__(self, stream: Task, fanout: Fanout, seq: int) -> None:
        super().__init__(stream)
        self.fanout = fanout
        self.seq = seq

    def _execute(self) -> None:
        try:
            # Nobody iterates a map/events stream, so its bounded chunk queue
            # would fill and stall the worker; the sink hook bypasses it. With
            # map, ``discard`` also tells the stream nobody sees its chunks,
            # so it may restart after a cut.
            sink = self.fanout.chunk_sink(self) if self.fanout.forward_chunks else discard
            self.stream._run(sink=sink, poller=self.poller)
        finally:
            self.fanout.channel.put_result((self.seq, _final_result(self.stream)))

    def cancel(self) -> None:
        super().cancel()
        self.fanout.channel.wake(self)


def _final_result(stream: Task) -> Any:
    """The stream's Result; it has ended (``_run`` returned), so this does not wait."""
    try:
        return stream.result(timeout=0)
    except BaseException as exc:  # cannot happen once _run returned; keep "exactly once"
        return Result(id=stream.id, model=getattr(stream.request, "model", ""),
                      host=stream.host or "", error=exc)


class Fanout:
    """The state of one map/events call: lazy input, outstanding jobs, results.

    Used only by the thread iterating the call, except ``channel`` (and
    ``chunk_sink``), which the workers feed. ``new_stream`` builds a Stream
    for a request (raising RuntimeError once the dispatcher is closed).
    """

    def __init__(self, requests: Iterable[Any], *, pool: Pool,
                 new_stream: Callable[[Any], Task], read_ahead: int,
                 forward_chunks: bool) -> None:
        self._input = iter(requests)
        self._pool = pool
        self._new_stream = new_stream
        self._limit = pool.workers + read_ahead
        self.forward_chunks = forward_chunks
        self.channel = Merged(EVENTS_BUFFER)
        self.jobs: Dict[int, FanoutJob] = {}  # submitted, Result not yet taken
        self.outstanding = 0                   # submitted, not yet handed to the caller
        self.exhausted = False
        self._next_seq = 0

    def fill(self) -> None:
        """Submit input until ``workers + read_ahead`` are outstanding or it runs out."""
        while not self.exhausted and self.outstanding < self._limit:
            try:
                request = next(self._input)
            except StopIteration:
                self.exhausted = True
                return
            seq = self._next_seq
            self._next_seq += 1
            job = FanoutJob(self._new_stream(_with_id(request, seq)), self, seq)
            self._pool.submit(job)
            self.jobs[seq] = job
            self.outstanding += 1

    @property
    def finished(self) -> bool:
        return self.exhausted and self.outstanding == 0

    def take(self) -> Tuple[bool, Any]:
        """The next (is_chunk, item) from the workers; waits in ``POLL_S`` slices."""
        while True:
            got = self.channel.get(POLL_S)
            if got is None:
                continue
            is_chunk, item = got
            if not is_chunk:
                self.jobs.pop(item[0], None)
            return is_chunk, item

    def chunk_sink(self, job: FanoutJob) -> BatchSink:
        """The sink of ``job``'s stream: each read's chunks go into the channel together."""
        request_id = job.stream.id or str(job.seq)
        channel = self.channel

        def put_read(chunks: List[Chunk]) -> None:
            channel.put_chunks([(request_id, chunk) for chunk in chunks], job)

        def offer_read(chunks: List[Chunk]) -> bool:
            return channel.offer_chunks([(request_id, chunk) for chunk in chunks], job)
        return BatchSink(put_read, offer_read)

    def cancel(self) -> None:
        """Cancel every job of this call still running or queued; drop their chunks."""
        self.channel.close()
        for job in list(self.jobs.values()):
            job.cancel()
        self.jobs.clear()


def _with_id(request: Request, seq: int) -> Request:
    """``request`` with ``id=str(seq)`` (its 0-based input index) when it has none."""
    if dataclasses.is_dataclass(request) and getattr(request, "id", None) is None:
        return dataclasses.replace(request, id=str(seq))
    return request
