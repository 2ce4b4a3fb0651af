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
from typing import TYPE_CHECKING, Any, Callable, Deque, Dict, Iterable, Optional, Tuple

from ..records import Chunk, Request, Result
from .pool import POLL_S, Job, Pool

if TYPE_CHECKING:
    from .task import Task

#: Chunks buffered in the merged channel of events() before workers wait.
EVENTS_BUFFER = 1024


class Merged:
    """What the workers of one map/events call report, in completion order.

    Results are unbounded (a call has at most ``workers + max_pending`` of them
    outstanding). Chunks (events only) are bounded: a worker with a chunk for a
    full channel waits, which stops its stream reading the socket
    (backpressure), until the consumer catches up, the job is cancelled or the
    channel is closed (then the chunk is dropped: nobody will read it).
    """

    def __init__(self, chunk_limit: int) -> None:
        self._items: Deque[Tuple[bool, Any]] = deque()
        self._chunks = 0
        self._limit = chunk_limit
        self._closed = False
        self._cond = threading.Condition(threading.Lock())
        # Threads waiting on _cond for items (the consumer) and for space (the
        # workers): a notify nobody waits for is skipped; it costs a little
        # on every chunk of every stream.
        self._getting = 0
        self._putting = 0

    def put_chunk(self, item: Any, job: Job) -> None:
        with self._cond:
            while self._chunks >= self._limit and not (self._closed or job.cancelled):
                self._putting += 1
                try:
                    self._cond.wait(POLL_S)  # wakes on get(); the slice re-checks cancel
                finally:
                    self._putting -= 1
            if self._closed or job.cancelled:
                return
            self._items.append((True, item))
            self._chunks += 1
            if self._getting:
                self._cond.notify_all()

    def put_result(self, item: Any) -> None:
        with self._cond:
            self._items.append((False, item))
            if self._getting:
                self._cond.notify_all()

    def get(self, timeout: float) -> Optional[Tuple[bool, Any]]:
        """The next (is_chunk, item), or None if nothing came within ``timeout``."""
        with self._cond:
            if not self._items:
                self._getting += 1
                try:
                    self._cond.wait(timeout)
                finally:
                    self._getting -= 1
                if not self._items:
                    return None
            is_chunk, item = self._items.popleft()
            if is_chunk:
                self._chunks -= 1
                if self._putting:
                    self._cond.notify_all()
            return is_chunk, item

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class FanoutJob(Job):
    """A stream of one map/events call: runs drained, then reports its Result."""

    __slots__ = ("fanout", "seq")

    def __init__(self, stream: Task, fanout: Fanout, seq: int) -> None:
        super().__init__(stream)
        self.fanout = fanout
        self.seq = seq

    def _execute(self) -> None:
        try:
            sink = self.fanout.chunk_sink(self) if self.fanout.forward_chunks else None
            _run_drained(self.stream, sink)
        finally:
            self.fanout.channel.put_result((self.seq, _final_result(self.stream)))


def _run_drained(stream: Task, sink: Optional[Callable[[Chunk], None]]) -> None:
    """Run ``stream`` here with its chunks handed to ``sink`` (or dropped), not queued.

    Nobody iterates a map/events stream, so its bounded chunk queue would fill
    and stall the worker; the Stream's sink hook bypasses the queue.
    """
    stream._run(sink=sink if sink is not None else _drop)


def _drop(chunk: Chunk) -> None:
    pass


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

    def chunk_sink(self, job: FanoutJob) -> Callable[[Chunk], None]:
        request_id = job.stream.id or str(job.seq)
        put = self.channel.put_chunk

        def sink(chunk: Chunk) -> None:
            put((request_id, chunk), job)
        return sink

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
