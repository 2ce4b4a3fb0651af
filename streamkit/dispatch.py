"""Dispatcher: many requests over a fixed pool of worker threads and one or many hosts.

The pool follows CPython's ``concurrent.futures.thread``: a module-level
worker function that holds the dispatcher only through a weakref, one work
queue, and a single ``None`` sentinel that each exiting worker passes on to
the next. Each worker runs one stream at a time, calling ``Stream._run()`` in
its own thread; the pool never grows past ``workers``.

Unlike ``Executor.map``, :meth:`Dispatcher.map` and :meth:`Dispatcher.events`
read their input lazily: at most ``workers + max_pending`` requests are
submitted and not yet handed to the caller, so a generator of a million
requests is never materialised.

Every wait in the thread that iterates ``map``/``events`` is a short timed
wait, so Ctrl-C (KeyboardInterrupt) there is seen at once: it cancels every
stream of the dispatcher and propagates.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
import weakref
from collections import deque
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Deque,
    Dict,
    Iterable,
    Iterator,
    List,
    Optional,
    Sequence,
    Set,
    Tuple,
    Union,
)

from ._hosts import HostRouter, HostSpec, parse_hosts
from .errors import ConfigError
from .records import Chunk, Request, Result

if TYPE_CHECKING:
    from .client import Client
    from .stream import Stream

__all__ = ["Dispatcher"]

logger = logging.getLogger("streamkit")

#: Longest timed wait in the consumer thread: Ctrl-C and close() are seen this fast.
POLL_S = 0.1
#: close() waits this long for cancelled workers to exit, then warns and returns.
JOIN_TIMEOUT_S = 10.0
#: Chunks buffered in the merged channel of events() before workers wait.
EVENTS_BUFFER = 1024

Event = Tuple[str, Union[Chunk, Result]]


def _worker(dispatcher_ref: Any, work: Any) -> None:
    """Run jobs until the shutdown sentinel; module-level so it keeps no strong ref.

    ``dispatcher_ref`` is a ``weakref.ref`` to the Dispatcher: a forgotten
    dispatcher can be collected, and its weakref callback then puts the
    sentinel that stops us.
    """
    while True:
        job = work.get()  # blocks until a job or the sentinel: close() and GC put one
        if job is not None:
            job.run()
            # Drop the job (and its stream's buffers) before blocking again.
            del job
            continue
        dispatcher = dispatcher_ref()
        if dispatcher is not None and not dispatcher._closed:
            del dispatcher  # a stray sentinel: cannot happen today, but never exit early
            continue
        # Pass the single sentinel on so the next worker wakes up and exits too.
        work.put(None)
        return


class _Job:
    """One stream queued for, or running on, a worker; ``run`` never raises."""

    __slots__ = ("_finished", "cancelled", "stream")

    def __init__(self, stream: Stream, finished: Callable[[_Job], None]) -> None:
        self.stream = stream
        self.cancelled = False
        self._finished = finished

    def run(self) -> None:
        try:
            self._execute()
        except BaseException:  # Stream._run never raises; log rather than kill the worker
            logger.exception("a dispatcher job raised; the stream has already ended")
        finally:
            self._finished(self)

    def _execute(self) -> None:
        self.stream._run()

    def cancel(self) -> None:
        self.cancelled = True
        self.stream.cancel()


class _FanoutJob(_Job):
    """A stream of one map/events call: runs drained, then reports its Result."""

    __slots__ = ("fanout", "seq")

    def __init__(self, stream: Stream, finished: Callable[[_Job], None],
                 fanout: _Fanout, seq: int) -> None:
        super().__init__(stream, finished)
        self.fanout = fanout
        self.seq = seq

    def _execute(self) -> None:
        try:
            sink = self.fanout.chunk_sink(self) if self.fanout.forward_chunks else None
            _run_drained(self.stream, sink)
        finally:
            self.fanout.channel.put_result((self.seq, _final_result(self.stream)))


def _run_drained(stream: Stream, sink: Optional[Callable[[Chunk], None]]) -> None:
    """Run ``stream`` here with its chunks handed to ``sink`` (or dropped), not queued.

    Nobody iterates a map/events stream, so its bounded chunk queue would fill
    and stall the worker; the Stream's sink hook bypasses the queue.
    """
    stream._run(sink=sink if sink is not None else _drop)


def _drop(chunk: Chunk) -> None:
    pass


def _final_result(stream: Stream) -> Result:
    """The stream's Result; it has ended (``_run`` returned), so this does not wait."""
    try:
        return stream.result(timeout=0)
    except BaseException as exc:  # cannot happen once _run returned; keep "exactly once"
        return Result(id=stream.id, model=getattr(stream.request, "model", ""),
                      host=stream.host or "", error=exc)


class _Channel:
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

    def put_chunk(self, item: Any, job: _Job) -> None:
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


class _Fanout:
    """The state of one map/events call: lazy input, outstanding jobs, results.

    Used only by the thread iterating the call, except ``channel`` (and
    ``chunk_sink``), which the workers feed.
    """

    def __init__(self, dispatcher: Dispatcher, requests: Iterable[Request], *,
                 forward_chunks: bool) -> None:
        self._dispatcher = dispatcher
        self._input = iter(requests)
        self._limit = dispatcher.workers + dispatcher.max_pending
        self.forward_chunks = forward_chunks
        self.channel = _Channel(EVENTS_BUFFER)
        self.jobs: Dict[int, _FanoutJob] = {}  # submitted, Result not yet taken
        self.outstanding = 0                    # submitted, not yet handed to the caller
        self.exhausted = False
        self._next_seq = 0

    def fill(self) -> None:
        """Submit input until ``workers + max_pending`` are outstanding or it runs out."""
        while not self.exhausted and self.outstanding < self._limit:
            try:
                request = next(self._input)
            except StopIteration:
                self.exhausted = True
                return
            seq = self._next_seq
            self._next_seq += 1
            job = self._dispatcher._submit_fanout(_with_id(request, seq), self, seq)
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

    def chunk_sink(self, job: _FanoutJob) -> Callable[[Chunk], None]:
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


def _check_count(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def _route_urls(hosts: Sequence[HostSpec], dialect: str) -> List[Tuple[str, int]]:
    parsed = parse_hosts(hosts)
    if dialect != "openai":
        return parsed
    # The OpenAI paths are relative to .../v1, as in Client.
    return [(url if url.endswith("/v1") else url + "/v1", n) for url, n in parsed]


class Dispatcher:
    """Runs many streams on a fixed pool of worker threads, over one or many hosts.

    Args:
        client: the Client whose transport, dialect, timeouts and retry policy
            every stream uses. Not closed by the Dispatcher. Give it a
            ``pool_size`` of at least ``workers`` (or let the Dispatcher build
            its own Client).
        hosts: spread requests over these servers: URLs or ``(url, parallel)``
            pairs; ``parallel`` (default 1, like ``OLLAMA_NUM_PARALLEL``) caps
            requests in flight per host. Each attempt goes to the usable host
            with the fewest requests in flight; a host failing before the first
            chunk (connect error, 5xx, 429/503) is skipped for a cooldown
            (1 s doubling up to 30 s) and the attempt is retried elsewhere.
            ``Result.host`` says where each answer came from.
        workers: worker threads, i.e. streams running at once.
        max_pending: how many requests ``map``/``events`` read ahead beyond
            the running ones (default ``2 * workers``).
        **client_options: ``Client`` keyword arguments (host, timeouts, retry,
            dialect, headers, api_key, queue_size, cache) for the Client the
            Dispatcher builds when no ``client`` is given. Its connection pool
            is sized to ``workers``; it is closed with the Dispatcher.

    Thread-safe; a context manager (leaving it calls ``close()``).

    Raises:
        ConfigError: bad workers/max_pending/hosts, or client options together
            with a client.
    """

    def __init__(self, client: Optional[Client] = None, *,
                 hosts: Optional[Sequence[HostSpec]] = None, workers: int = 8,
                 max_pending: Optional[int] = None, **client_options: Any) -> None:
        self.workers = _check_count("workers", workers, 1)
        self.max_pending = 2 * self.workers if max_pending is None else _check_count(
            "max_pending", max_pending, 0)
        if client is not None and client_options:
            raise ConfigError(f"client options {sorted(client_options)} only apply when the "
                              f"Dispatcher builds its own Client; set them on the client")
        self._owns_client = client is None
        if client is None:
            from .client import Client  # here: a Dispatcher given a client never needs it
            host = client_options.pop("host", None)
            if hosts:
                first = hosts[0]
                host = first if isinstance(first, str) else first[0]
            client = Client(host, pool_size=self.workers, **client_options)
        self._client = client
        try:
            self._router: Optional[HostRouter] = (
                HostRouter(_route_urls(hosts, client.dialect)) if hosts is not None else None)
        except BaseException:
            if self._owns_client:
                client.close()
            raise
        if not self._owns_client:
            self._check_pool(client)
        self._work: queue.SimpleQueue[Optional[_Job]] = queue.SimpleQueue()
        self._threads: List[threading.Thread] = []
        self._live: Set[_Job] = set()
        self._closed = False
        # Guards _closed, _threads and _live; notified when _live empties.
        self._lock = threading.Condition(threading.Lock())

    def _check_pool(self, client: Client) -> None:
        """Warn when a caller's Client keeps fewer connections per host than can run at once.

        urllib3 would then open (and discard, with a "Connection pool is
        full" warning) a new connection for every request over the limit.
        """
        per_host = self.workers if self._router is None else min(
            self.workers, self._router.max_parallel)
        pool = getattr(getattr(client, "transport", None), "_pool_size", per_host)
        if isinstance(pool, int) and pool < per_host:
            logger.warning("Client(pool_size=%d) is smaller than the %d streams the "
                           "Dispatcher may run on one host; pass pool_size=%d to the Client "
                           "so connections are reused", pool, per_host, per_host)

    @property
    def client(self) -> Client:
        return self._client

    @property
    def hosts(self) -> List[str]:
        """The base URLs requests go to."""
        return self._router.urls if self._router is not None else [self._client.host]

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<Dispatcher {state} workers={self.workers} hosts={self.hosts!r}>"

    # -- submitting -----------------------------------------------------------

    def submit(self, request: Request) -> Stream:
        """Queue ``request``; its Stream starts when a worker is free. Never blocks.

        The Stream works like a ``Client`` stream: iterate it, ``result()``,
        ``cancel()`` (also before it starts: it then ends with Cancelled).
        Workers run streams in submission order, and a stream nobody reads
        holds its worker once its chunk queue is full: read streams in the
        order submitted, or use ``map``/``events``.

        Raises:
            RuntimeError: the dispatcher is closed.
            ConfigError: ``request`` is not a ChatRequest or GenerateRequest.
        """
        self._check_open()
        stream = self._client._new_stream(request, route=self._router)
        self._enqueue(_Job(stream, self._job_finished))
        return stream

    def _submit_fanout(self, request: Request, fanout: _Fanout, seq: int) -> _FanoutJob:
        self._check_open()
        stream = self._client._new_stream(request, route=self._router)
        job = _FanoutJob(stream, self._job_finished, fanout, seq)
        self._enqueue(job)
        return job

    def _enqueue(self, job: _Job) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot submit to a closed Dispatcher")
            self._live.add(job)
            self._start_workers()
            self._work.put(job)

    def _start_workers(self) -> None:
        """Start the whole pool on first use (lock held). It never grows after that."""
        if self._threads:
            return

        # The weakref callback wakes the workers if the dispatcher is collected unclosed.
        def wake(_: object, work: Any = self._work) -> None:
            work.put(None)
        ref = weakref.ref(self, wake)
        for n in range(1, self.workers + 1):
            thread = threading.Thread(target=_worker, args=(ref, self._work),
                                      name=f"streamkit-dispatch-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _job_finished(self, job: _Job) -> None:
        with self._lock:
            self._live.discard(job)
            if not self._live:
                self._lock.notify_all()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("cannot submit to a closed Dispatcher")

    # -- map / events -----------------------------------------------------------

    def map(self, requests: Iterable[Request], *, ordered: bool = False,
            return_exceptions: bool = False) -> Iterator[Result]:
        """Run every request; yield one Result each (drained internally; no chunks).

        Input is read lazily: at most ``workers + max_pending`` requests are
        submitted and not yet yielded. A request without an ``id`` gets its
        0-based input index as a string, so ``Result.id`` always names it.

        Args:
            ordered: yield in input order (completed results wait, bounded by
                the read-ahead, for the one at the head); otherwise as completed.
            return_exceptions: yield failed Results (``.error`` set) instead of
                raising.

        Raises (from the iterator):
            the typed error of the first failed request (StreamkitError) when
                ``return_exceptions`` is False; the other requests of this call
                are cancelled.
            RuntimeError: the dispatcher was closed while input remained.
            KeyboardInterrupt: after cancelling every stream of the dispatcher.
            Any error raised by the input iterable.

        Leaving the loop early (break, an exception) cancels the requests of
        this call still queued or running.
        """
        self._check_open()
        return self._map(requests, ordered, return_exceptions)

    def _map(self, requests: Iterable[Request], ordered: bool,
             return_exceptions: bool) -> Iterator[Result]:
        fanout = _Fanout(self, requests, forward_chunks=False)
        buffered: Dict[int, Result] = {}
        head = 0
        try:
            while True:
                fanout.fill()
                if fanout.finished:
                    return
                if ordered and head in buffered:
                    result = buffered.pop(head)
                    head += 1
                else:
                    seq, result = fanout.take()[1]
                    if ordered:
                        buffered[seq] = result
                        continue
                fanout.outstanding -= 1
                if result.error is not None and not return_exceptions:
                    raise result.error
                yield result
        except KeyboardInterrupt:
            self.cancel_all()
            raise
        finally:
            fanout.cancel()

    def events(self, requests: Iterable[Request]) -> Iterator[Event]:
        """Run every request; yield ``(request_id, Chunk)`` as chunks arrive from any
        stream, then ``(request_id, Result)`` once each stream ends.

        One merged channel for a fan-in consumer. Input is read lazily as in
        :meth:`map` (ids assigned the same way). Failed requests are not
        raised: their Result has ``.error`` set. The channel is bounded: a
        slow consumer slows the streams (backpressure).

        Raises (from the iterator): RuntimeError (closed while input
        remained), KeyboardInterrupt (after cancelling every stream), errors
        of the input iterable. Leaving early cancels this call's requests.
        """
        self._check_open()
        return self._events(requests)

    def _events(self, requests: Iterable[Request]) -> Iterator[Event]:
        fanout = _Fanout(self, requests, forward_chunks=True)
        try:
            while True:
                fanout.fill()
                if fanout.finished:
                    return
                is_chunk, item = fanout.take()
                if is_chunk:
                    yield item
                    continue
                result: Result = item[1]
                fanout.outstanding -= 1
                yield (result.id or str(item[0]), result)
        except KeyboardInterrupt:
            self.cancel_all()
            raise
        finally:
            fanout.cancel()

    # -- cancel / close ---------------------------------------------------------

    def cancel_all(self) -> int:
        """Cancel every stream queued or running (the dispatcher stays open).

        Returns how many streams were cancelled. Does not wait for them to end.
        """
        with self._lock:
            jobs = list(self._live)
        for job in jobs:
            job.cancel()
        if self._router is not None:
            self._router.wake()
        return len(jobs)

    def close(self, cancel_pending: bool = True, *, timeout: Optional[float] = None) -> None:
        """Stop the dispatcher; idempotent. Further ``submit``/``map`` raise RuntimeError.

        ``cancel_pending=True`` cancels queued streams (they end with
        Cancelled) and running ones. ``cancel_pending=False`` first waits for
        them to finish, up to ``timeout`` seconds (None: until they do; each
        stream is bounded by its timeouts, but one nobody reads can wait for
        its reader forever), then cancels what is left. Finally joins every
        worker (bounded: ``JOIN_TIMEOUT_S``, then logs a warning) and closes
        the Client if the dispatcher built it.
        """
        with self._lock:
            first = not self._closed
            self._closed = True
            if first and self._threads:
                self._work.put(None)  # after every queued job: FIFO
        if not cancel_pending:
            self._wait_idle(timeout)
        self.cancel_all()
        if self._router is not None:
            self._router.close()
        self._join(JOIN_TIMEOUT_S)
        if self._owns_client:
            self._client.close()

    def _wait_idle(self, timeout: Optional[float]) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while self._live:
                left = POLL_S if deadline is None else min(POLL_S, deadline - time.monotonic())
                if left <= 0:
                    return
                self._lock.wait(left)

    def _join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        stuck = [t.name for t in self._threads if t.is_alive()]
        if stuck:
            logger.warning("dispatcher workers still running after %.0f s: %s",
                           timeout, ", ".join(stuck))

    def __enter__(self) -> Dispatcher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

