"""Stream: one request, a worker, a bounded channel, a consumer.

::

    worker thread                                        consumer (any thread)
    retry(connect → status → first chunk)                for chunk in stream / get()
    read_some → decoder.feed → [chunks] ─► _Channel ─►   / pipe(q) / async for
    ...                                   (bounded)      result() / text()
    finally: end record, exactly once ──────────────►    stops there; raises the error

The worker (:class:`_Worker`) holds everything the stream needs and never
the :class:`Stream` facade, so a facade nobody references any more is
garbage-collected, and its finalizer cancels the worker (no thread leak).

The channel moves one socket read's worth of chunks (a list) per operation
and bounds them by count: a ``put`` waits while ``queue_size`` chunks are
queued, so it holds at most ``queue_size`` plus one read's chunks. A slow
consumer stops the worker, which stops reading the socket: TCP backpressure
reaches the server and memory stays flat. Every wait has a wake-up: the end
record, ``cancel()``, or a timeout.

Exactly one end record per stream: :meth:`_Worker.finish` is guarded so that
whichever comes first wins: the worker's ``finally`` (success, server error,
timeout, crash) or ``cancel()`` (which does not wait for a worker that may
still be blocked in a connect).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import logging
import threading
import time
import weakref
from collections import deque
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Deque,
    List,
    Mapping,
    Optional,
    Protocol,
    Sequence,
    Tuple,
    Union,
)

from .config import RetryPolicy, Timeouts
from .errors import (
    Cancelled,
    ConfigError,
    StreamDiverged,
    StreamError,
    StreamInterrupted,
    StreamkitError,
    StreamTimeout,
)
from .records import (
    END,
    ChatRequest,
    Chunk,
    Request,
    ResponseCache,
    Result,
    Stats,
    Timing,
)
from .retry import Attempts
from .transport import CancelToken, Response, Transport, _forget_frames
from .wire import Decoder, Dialect

if TYPE_CHECKING:
    import asyncio
    import queue

__all__ = ["END", "Chunk", "FixedRoute", "Result", "Route", "Stream"]

logger = logging.getLogger("streamkit")

DEFAULT_QUEUE_SIZE = 256
PUT_POLL_S = 0.25
"""How often a worker blocked on a full channel re-checks its cancel token.
An explicit cancel() wakes it at once; this only bounds the garbage-collector
path, whose finalizer may not take locks."""
DRAIN_S = 0.5
"""How long, after the done record, the worker waits for the end of the body
so the connection can be reused (normally it is already there)."""

Sink = Callable[[Chunk], None]
_serial = itertools.count(1)


class Route(Protocol):
    """Where each attempt of a stream goes (the Dispatcher spreads over many hosts)."""

    def acquire(self, tried: Sequence[str], cancel: threading.Event) -> str:
        """The base URL for the next attempt; may block, waking on ``cancel``."""

    def release(self, host: str, error: Optional[BaseException], streamed: bool) -> None:
        """The attempt on ``host`` is over; ``streamed``: it delivered a first chunk."""


class FixedRoute:
    """One host, no limits: what a Client uses."""

    def __init__(self, url: str) -> None:
        self.url = url

    def acquire(self, tried: Sequence[str], cancel: threading.Event) -> str:
        return self.url

    def release(self, host: str, error: Optional[BaseException], streamed: bool) -> None:
        pass

    def __repr__(self) -> str:
        return f"FixedRoute({self.url!r})"


class _Replay:
    """Checks a replayed stream against the text already delivered and trims it.

    While the replay is within what the consumer already has, its chunks must
    match and are dropped; once past it, only the new remainder goes through
    (a chunk straddling the boundary is trimmed). Text, thinking and tool
    calls are tracked separately.
    """

    def __init__(self, text: str, thinking: str, tool_calls: Sequence[Mapping[str, Any]]) -> None:
        self._want = {"text": text, "thinking": thinking}
        self._pos = {"text": 0, "thinking": 0}
        self._tools = list(tool_calls)
        self._tool_pos = 0

    def caught_up(self) -> bool:
        return (self._pos["text"] >= len(self._want["text"])
                and self._pos["thinking"] >= len(self._want["thinking"])
                and self._tool_pos >= len(self._tools))

    def filter(self, chunks: List[Chunk]) -> List[Chunk]:
        """The parts of ``chunks`` not yet delivered. Raises StreamDiverged."""
        out: List[Chunk] = []
        for c in chunks:
            text = self._skip("text", c.text)
            thinking = self._skip("thinking", c.thinking)
            tools = self._skip_tools(c.tool_calls)
            if c.done and not self.caught_up():
                raise self._diverged("text", "")
            if text or thinking or tools or c.done:
                out.append(c._replace(text=text, thinking=thinking, tool_calls=tools))
        return out

    def _skip(self, field: str, new: str) -> str:
        want, pos = self._want[field], self._pos[field]
        if not new or pos >= len(want):
            return new
        overlap = want[pos:pos + len(new)]
        if new[:len(overlap)] != overlap:
            raise self._diverged(field, new)
        self._pos[field] = pos + len(overlap)
        return new[len(overlap):]

    def _skip_tools(self, tools: Tuple[Mapping[str, Any], ...]) -> Tuple[Mapping[str, Any], ...]:
        if not tools or self._tool_pos >= len(self._tools):
            return tools
        keep = []
        for call in tools:
            if self._tool_pos < len(self._tools):
                if call != self._tools[self._tool_pos]:
                    raise self._diverged("tool calls", "")
                self._tool_pos += 1
            else:
                keep.append(call)
        return tuple(keep)

    def _diverged(self, field: str, new: str) -> StreamDiverged:
        key = field if field in self._want else "text"
        delivered = self._want[key]
        replayed = delivered[:self._pos[key]] + new
        return StreamDiverged(
            f"the replayed stream's {field} differs from what was already delivered; "
            "replay is only safe for deterministic requests (fixed seed, temperature 0)",
            delivered=self._want["text"], replayed=replayed)


class _Stopped(Exception):
    """The stream ended (cancelled) while the worker was still producing."""


class _Worker:
    """The whole state of one stream; runs it in the thread that calls :meth:`run`.

    Lock rules: ``_lock`` (shared by the two Conditions) guards the channel
    (``_batches``, ``_queued``, ``_unbounded``, ``_waiters``), the delivered
    text and timing, and ``end``. ``end`` is written once, by :meth:`finish`.
    ``_items`` is notified when a batch or the end arrives (consumers wait on
    it); ``_space`` when chunks are taken, the bound is lifted or the stream
    ends (the worker waits on it).
    """

    def __init__(self, request: Request, path: str, body: bytes, *, dialect: Dialect,
                 transport: Transport, route: Route, timeouts: Timeouts, retry: RetryPolicy,
                 queue_size: int, cache: Optional[ResponseCache]) -> None:
        self.request = request
        self._path = path
        self._body = body
        self._dialect = dialect
        self._transport = transport
        self._route = route
        self._timeouts = timeouts
        self._retry = retry
        self._capacity = queue_size
        self._cache = cache
        self.token = CancelToken()
        self._lock = threading.Lock()
        self._items = threading.Condition(self._lock)
        self._space = threading.Condition(self._lock)
        self._batches: Deque[List[Chunk]] = deque()
        self._queued = 0
        self.peak_queued = 0  # most chunks ever queued (observability, tests)
        self.largest_batch = 0
        self._unbounded = False
        self._waiters: List[Tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self.end: Optional[Result] = None
        self.ended = threading.Event()
        self._callbacks: List[Callable[[Result], None]] = []
        self._running = False
        self._sink: Optional[Sink] = None
        # delivered so far (under _lock)
        self._texts: List[str] = []
        self._thinking: List[str] = []
        self._tool_calls: List[Mapping[str, Any]] = []
        self._timing = Timing()
        self._next_index = 0
        # worker-only state
        self.host: Optional[str] = None
        self._held: Optional[str] = None  # host acquired and not yet released
        self._tried: List[str] = []
        self._attempts: Optional[Attempts] = None
        self._decoder: Optional[Decoder] = None
        self._response: Optional[Response] = None
        self._total_deadline: Optional[float] = None
        self._cached: Optional[Result] = None
        self._salvaged: List[Chunk] = []

    # -- channel: worker side ------------------------------------------------
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
                self._space.wait(PUT_POLL_S)
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
            self.ended.set()
            self._items.notify_all()
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
        text = "".join(self._texts)
        if error is not None and hasattr(error, "partial"):
            error.partial = text
        timing = dataclasses.replace(self._timing)
        decoder = self._decoder
        if self._cached is not None:
            return dataclasses.replace(self._cached, id=self.request.id, timing=timing,
                                       attempts=0, error=None, cached=True)
        return Result(
            id=self.request.id, model=self.request.model, host=self.host or "", text=text,
            thinking="".join(self._thinking), tool_calls=list(self._tool_calls),
            done_reason=decoder.done_reason if decoder is not None else None,
            stats=decoder.stats if decoder is not None else Stats(), timing=timing,
            attempts=self._attempts.count if self._attempts is not None else 0,
            error=error)

    def _take_waiters(self) -> List[Tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]]:
        waiters = self._waiters
        if waiters:
            self._waiters = []
        return waiters

    # -- channel: consumer side ----------------------------------------------
    def take(self, timeout: Optional[float]) -> Union[List[Chunk], Result, None]:
        """The next batch, else the end record; None if neither came within ``timeout``."""
        with self._lock:
            if not self._batches and self.end is None and timeout != 0:
                self._items.wait_for(lambda: self._batches or self.end is not None, timeout)
            if self._batches:
                batch = self._batches.popleft()
                self._queued -= len(batch)
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
            self._space.notify_all()

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

    # -- the worker ----------------------------------------------------------
    def run(self, sink: Optional[Sink] = None) -> None:
        """Run the stream in this thread; never raises (but KeyboardInterrupt
        and SystemExit pass through after the end record is written)."""
        with self._lock:
            if self._running:
                logger.error("a Stream was started twice; the second run is ignored")
                return
            self._running = True
            self._sink = sink
        if self.end is not None:  # cancelled before it started
            return
        error: Optional[BaseException] = None
        try:
            self._stream()
        except _Stopped:
            pass
        except BaseException as exc:
            error = self._classify(exc)
            _forget_frames(error)
            if not isinstance(exc, Exception):
                self.finish(error)
                raise
        finally:
            self.finish(error, self._store() if error is None else None)
            self._cleanup(error)

    def _classify(self, exc: BaseException) -> BaseException:
        if self.token.cancelled and not isinstance(exc, Cancelled):
            err: BaseException = Cancelled()
        elif isinstance(exc, StreamkitError):
            return exc
        elif isinstance(exc, Exception):
            logger.error("stream %s: the worker crashed", self.request.id, exc_info=exc)
            err = StreamError(f"the stream failed unexpectedly ({type(exc).__name__}: "
                              f"{exc}); this is a bug in streamkit or a decoder")
        else:
            err = Cancelled("the stream was interrupted")
        err.__cause__ = exc
        return err

    def _stream(self) -> None:
        if self._from_cache():
            return
        self._timing.started_ns = time.perf_counter_ns()
        if self._timeouts.total is not None:
            self._total_deadline = time.monotonic() + self._timeouts.total
        self._attempts = Attempts(self._retry, self.token.event)
        replay: Optional[_Replay] = None
        while True:
            self._salvaged = []
            try:
                first = self._attempts.call(self._attempt)
            except StreamError:
                if self._salvaged:  # good records before a bad one in the first read
                    with contextlib.suppress(StreamError):
                        self._emit(self._salvaged, replay)
                raise
            try:
                self._pump(first, replay)
                return
            except StreamInterrupted as exc:
                if not self._may_replay(exc):
                    raise
                _forget_frames(exc)
                self._release_host(exc)
                self._close_response()
                with self._lock:
                    replay = _Replay("".join(self._texts), "".join(self._thinking),
                                     self._tool_calls)
                logger.warning("stream %s was cut after %d chunks (%s); replaying the "
                               "request (attempt %d of %d)", self.request.id,
                               self._timing.chunks, str(exc), self._attempts.count + 1,
                               self._retry.attempts)

    def _may_replay(self, exc: StreamInterrupted) -> bool:
        return (self._retry.on_interrupt == "replay" and not isinstance(exc, StreamDiverged)
                and self._attempts is not None and self._attempts.remaining() > 0
                and not self.token.cancelled)

    def _attempt(self, number: int) -> List[Chunk]:
        """One HTTP attempt up to its first chunk(s); the retry boundary."""
        self._check_total()
        host = self._route.acquire(self._tried, self.token.event)
        self._tried.append(host)
        self.host = self._held = host
        try:
            return self._open_and_read_first(host)
        except BaseException as exc:
            exc = self._retag_total(exc)
            _forget_frames(exc)  # the retry log and the Result keep it; not its sockets
            self._close_response()
            self._release_host(exc, streamed=False)
            raise exc

    def _open_and_read_first(self, host: str) -> List[Chunk]:
        url = host.rstrip("/") + "/" + self._path
        sent_ns, sent = time.perf_counter_ns(), time.monotonic()
        first_deadline = None if self._timeouts.first_token is None else (
            sent + self._timeouts.first_token)
        response = self._transport.open(url, self._body, timeouts=self._attempt_timeouts(),
                                        cancel=self.token)
        self._response = response
        headers_ns = time.perf_counter_ns()
        if not 200 <= response.status < 300:
            raise self._dialect.error_for_status(response.status, response.read_body(),
                                                 response.headers, self.request.model)
        decoder = self._dialect.decoder(first_index=self._next_index)
        self._decoder = decoder
        first_byte_ns: Optional[int] = None
        while True:
            timeout, phase = self._budget(first_deadline, "first_token")
            data = response.read_some(timeout, phase=phase)
            ns = time.perf_counter_ns()
            try:
                if not data:
                    chunks = decoder.close(ns)
                else:
                    if first_byte_ns is None:
                        first_byte_ns = ns
                    chunks = decoder.feed(data, ns)
            except StreamError:
                self._salvaged = list(getattr(decoder, "completed", None) or ())
                raise
            if chunks or not data:
                break
        timing = self._timing
        timing.sent_ns, timing.headers_ns = sent_ns, headers_ns
        if timing.first_byte_ns is None:
            timing.first_byte_ns = first_byte_ns
        return chunks

    def _pump(self, first: List[Chunk], replay: Optional[_Replay]) -> None:
        """Deliver ``first``, then read, decode and deliver until the end marker."""
        response, decoder = self._response, self._decoder
        assert response is not None and decoder is not None
        self._emit(first, replay)
        idle = self._timeouts.idle
        idle_deadline = None if idle is None else time.monotonic() + idle
        last = first  # the last chunk list the decoder handed over
        try:
            while not decoder.done:
                timeout, phase = self._budget(idle_deadline, "idle")
                data = response.read_some(timeout, phase=phase)
                ns = time.perf_counter_ns()
                if not data:
                    last = decoder.close(ns)
                    self._emit(last, replay)
                    return
                chunks = decoder.feed(data, ns)
                if idle is not None and decoder.activity():  # SSE comments do not count
                    idle_deadline = time.monotonic() + idle
                if chunks:
                    last = chunks
                    self._emit(chunks, replay)
        except StreamError:
            self._salvage(decoder, last, replay)
            raise

    def _salvage(self, decoder: Decoder, last: List[Chunk], replay: Optional[_Replay]) -> None:
        """Deliver the chunks a failing read completed before its bad record.

        One read can carry good records and then an error line; the decoder
        keeps what it completed in ``completed`` (a list it has not returned).
        """
        completed = getattr(decoder, "completed", None)
        if not completed or completed is last:
            return
        with contextlib.suppress(StreamError):  # the original error is the news
            self._emit(list(completed), replay)

    def _emit(self, chunks: List[Chunk], replay: Optional[_Replay]) -> None:
        if replay is not None:
            chunks = replay.filter(chunks)
            if chunks:
                base = self._next_index
                chunks = [c._replace(index=base + i) for i, c in enumerate(chunks)]
        if chunks:
            self.deliver(chunks)

    # -- timeouts ------------------------------------------------------------
    def _budget(self, deadline: Optional[float], phase: str) -> Tuple[Optional[float], str]:
        """Seconds the next read may block, and the phase that expires first."""
        now = time.monotonic()
        timeout = None if deadline is None else deadline - now
        if self._total_deadline is not None:
            left = self._total_deadline - now
            if timeout is None or left < timeout:
                return left, "total"
        return timeout, phase

    def _attempt_timeouts(self) -> Timeouts:
        t = self._timeouts
        if self._total_deadline is None:
            return t
        left = self._total_deadline - time.monotonic()
        return Timeouts(connect=_min(t.connect, left), first_token=_min(t.first_token, left),
                        idle=t.idle, total=None)

    def _check_total(self) -> None:
        if self._total_deadline is not None and time.monotonic() >= self._total_deadline:
            raise _total_timeout()

    def _retag_total(self, exc: BaseException) -> BaseException:
        """A timeout cut short by the total deadline is a total timeout (never retried)."""
        if (isinstance(exc, StreamTimeout) and exc.phase != "total"
                and self._total_deadline is not None
                and time.monotonic() >= self._total_deadline - 0.001):
            err = _total_timeout()
            err.__cause__ = exc
            return err
        return exc

    # -- cache, cleanup --------------------------------------------------------
    def _from_cache(self) -> bool:
        if self._cache is None:
            return False
        try:
            hit = self._cache.get(self.request)
        except Exception:
            logger.warning("response cache lookup failed; streaming instead", exc_info=True)
            return False
        if hit is None:
            return False
        self._cached = hit
        self.host = hit.host
        now = time.perf_counter_ns()
        self._timing.started_ns = now
        self.deliver([Chunk(text=hit.text, thinking=hit.thinking,
                            tool_calls=tuple(hit.tool_calls), index=0, received_ns=now,
                            done=True)])
        return True

    def _store(self) -> Optional[Result]:
        """Put a successful Result in the cache before it is published, so a
        request made once ``result()`` returned finds it; returns that Result."""
        if self._cache is None or self._cached is not None or self.end is not None:
            return None
        with self._lock:
            result = self._build_result(None)
        try:
            self._cache.put(self.request, result)
        except Exception:
            logger.warning("response cache store failed", exc_info=True)
        return result

    def _cleanup(self, error: Optional[BaseException]) -> None:
        response = self._response
        if response is not None and error is None and not self.token.cancelled:
            _drain(response)
        self._close_response()
        self._release_host(error)
        self.token._detach_all()

    def _close_response(self) -> None:
        response, self._response = self._response, None
        if response is not None:
            try:
                response.close()
            except Exception:  # closing a broken connection may fail; it is gone anyway
                logger.debug("closing a response failed", exc_info=True)

    def _release_host(self, error: Optional[BaseException], streamed: bool = True) -> None:
        host, self._held = self._held, None
        if host is None:
            return
        try:
            self._route.release(host, error, streamed)
        except Exception:
            logger.error("Route.release failed", exc_info=True)


def _drain(response: Response) -> None:
    """Read the few bytes after the done record so the connection can be reused."""
    deadline = time.monotonic() + DRAIN_S
    try:
        while response.read_some(max(0.0, deadline - time.monotonic())):
            pass
    except StreamkitError:
        pass  # extra data or a slow end: the connection is closed instead


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


def _min(a: Optional[float], b: float) -> float:
    return b if a is None else min(a, b)


def _total_timeout() -> StreamTimeout:
    return StreamTimeout("the stream took longer than the total timeout; raise "
                         "Timeouts.total for long generations", phase="total")


def _abandon(token: CancelToken) -> None:
    """Finalizer of an unreferenced Stream: stop its worker (lock-free, see CancelToken)."""
    token.cancel()


class Stream:
    """One streaming request: iterate it, poll it, pipe it, or wait for its Result.

    Built by ``Client.chat`` / ``generate`` (started) or by the Dispatcher
    (runs when a worker is free). Consume it from one thread at a time.

    - ``for chunk in stream`` / ``async for chunk in stream``: once only
      (a partly read stream carries on; one read to its end refuses); it
      ends at the end record and raises the stream's error (StreamError,
      StreamTimeout, Cancelled, ...) with ``.partial`` set to the text
      delivered so far. Sync iteration inside a running event loop works but
      blocks that loop; use ``async for`` there.
    - ``get(timeout)``: the next Chunk or None (nothing in time, or ended:
      then ``done`` is True). Never raises the stream's error.
    - ``pipe(q)``: chunks then ``streamkit.END`` into a ``queue.Queue``.
    - ``result(timeout)``: waits for the end, returns the Result (its
      ``error`` holds any failure); ``text()`` returns the text or raises.
    - ``cancel()``: from any thread; closes the connection (the server stops
      generating) and ends the stream with Cancelled at once.
    - As a context manager, leaving the block cancels a stream still running.
    """

    def __init__(self, request: Request, *, dialect: Dialect, transport: Transport,
                 route: Route, timeouts: Timeouts, retry: RetryPolicy,
                 queue_size: int = DEFAULT_QUEUE_SIZE,
                 cache: Optional[ResponseCache] = None) -> None:
        if isinstance(queue_size, bool) or not isinstance(queue_size, int) or queue_size < 1:
            raise ConfigError(f"queue_size must be an int >= 1, got {queue_size!r}")
        if isinstance(request, ChatRequest):
            path, body = dialect.chat(request)
        else:
            path, body = dialect.generate(request)
        payload = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        self._w = _Worker(request, path, payload, dialect=dialect, transport=transport,
                          route=route, timeouts=timeouts, retry=retry,
                          queue_size=queue_size, cache=cache)
        self._serial = next(_serial)
        self._batch: List[Chunk] = []
        self._pos = 0
        self._exhausted = False   # the consumer has reached the end record
        self._raised = False      # the stream's error was raised by iteration
        self._started = False
        weakref.finalize(self, _abandon, self._w.token)

    # -- identity --------------------------------------------------------------
    @property
    def id(self) -> Optional[str]:
        """The request's id (None if it has none)."""
        return self._w.request.id

    @property
    def request(self) -> Request:
        return self._w.request

    @property
    def host(self) -> Optional[str]:
        """Base URL of the current (or last) attempt; None before the first."""
        return self._w.host

    @property
    def done(self) -> bool:
        """True once the stream has ended and every chunk has been taken."""
        return (self._w.end is not None and self._pos >= len(self._batch)
                and not self._w.has_unread())

    def __repr__(self) -> str:
        end = self._w.end
        if end is None:
            state = "running" if self._started or self._w.host else "pending"
        elif end.error is None:
            state = "ok"
        else:
            state = f"failed: {type(end.error).__name__}"
        return (f"<streamkit Stream id={self.id!r} model={self._w.request.model!r} "
                f"host={self.host!r} {state}>")

    # -- running -----------------------------------------------------------------
    def _start(self) -> None:
        """Run the stream in a new daemon thread (the Client does this)."""
        if self._started:
            raise RuntimeError("this Stream was already started")
        self._started = True
        label = self.id if self.id is not None else str(self._serial)
        threading.Thread(target=self._w.run, name=f"streamkit-stream-{label}",
                         daemon=True).start()

    def _run(self, sink: Optional[Sink] = None) -> None:
        """Run the whole stream in this thread; never raises; ends exactly once.

        With ``sink``, chunks go to ``sink(chunk)`` (in this thread) instead
        of the channel: for callers that consume nothing but the Result.
        """
        self._started = True
        self._w.run(sink)

    def add_done_callback(self, fn: Callable[[Result], None]) -> None:
        """Call ``fn(result)`` once the stream has ended (at once if it has).

        It runs in the thread that ends the stream (the worker, or the one
        calling ``cancel()``); it must be quick and must not block on this
        stream. An exception it raises is logged and ignored.
        """
        self._w.add_callback(fn)

    def cancel(self) -> bool:
        """Cancel: close the connection and end the stream with Cancelled.

        Idempotent, any thread, returns at once. True if this call ended the
        stream, False if it had already ended. Chunks already queued can
        still be read before the Cancelled end.
        """
        return self._w.cancel()

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._w.cancel()

    # -- consuming -------------------------------------------------------------
    def _claim(self) -> None:
        # Like a file or a generator, a Stream is its own iterator: iter() on a
        # partly read stream carries on where it stopped. Only a stream read to
        # its end refuses, so that a second loop cannot silently see nothing.
        if self._exhausted:
            raise RuntimeError("this Stream has already been read to its end (a Stream "
                               "can be iterated only once); use result() or text() for "
                               "the whole reply")

    def __iter__(self) -> Stream:
        self._claim()
        return self

    def __next__(self) -> Chunk:
        pos = self._pos
        if pos < len(self._batch):
            self._pos = pos + 1
            return self._batch[pos]
        return self._next_batch(self._w.take(None))

    def _next_batch(self, item: Union[List[Chunk], Result, None]) -> Chunk:
        if isinstance(item, list):
            self._batch, self._pos = item, 1
            return item[0]
        self._exhausted = True
        if item is not None and item.error is not None and not self._raised:
            self._raised = True
            raise item.error
        raise StopIteration

    def get(self, timeout: Optional[float] = None) -> Optional[Chunk]:
        """The next chunk, waiting up to ``timeout`` seconds (None: until one comes).

        Returns None if nothing came in time or the stream has ended (then
        ``done`` is True; the outcome is in ``result()``). Never raises the
        stream's error. ``get(0)`` polls without blocking (GUI loops).
        """
        pos = self._pos
        if pos < len(self._batch):
            self._pos = pos + 1
            return self._batch[pos]
        item = self._w.take(timeout)
        if isinstance(item, list):
            self._batch, self._pos = item, 1
            return item[0]
        if item is not None:
            self._exhausted = True
        return None

    def pipe(self, q: queue.Queue[Any]) -> Result:
        """Put every chunk, then ``streamkit.END``, into ``q``; return the Result.

        Blocks until the stream ends (and on ``q.put`` if ``q`` is bounded and
        full). Counts as the one iteration. Never raises the stream's error.
        """
        self._claim()
        for c in self._batch[self._pos:]:
            q.put(c)
        self._batch, self._pos = [], 0
        while True:
            item = self._w.take(None)
            if not isinstance(item, list):
                break
            for c in item:
                q.put(c)
        self._exhausted = True
        q.put(END)
        return self.result()

    def result(self, timeout: Optional[float] = None) -> Result:
        """Wait for the end and return the Result; never raises the stream's error.

        Unread chunks stay readable; from this call on the worker no longer
        waits for the consumer (the reply is wanted whole anyway).

        Raises:
            TimeoutError: the stream did not end within ``timeout`` seconds.
        """
        self._w.lift_bound()
        if not self._w.ended.wait(timeout):
            raise TimeoutError(f"stream {self.id!r} did not end within {timeout} s")
        end = self._w.end
        assert end is not None
        return end

    def text(self, timeout: Optional[float] = None) -> str:
        """Wait for the end and return the full text; raises the stream's error if it failed.

        Raises:
            TimeoutError: the stream did not end within ``timeout`` seconds.
            StreamkitError: the stream's own error (with ``.partial``).
        """
        result = self.result(timeout)
        if result.error is not None:
            raise result.error
        return result.text

    # -- asyncio ---------------------------------------------------------------
    def __aiter__(self) -> Stream:
        self._claim()
        return self

    async def __anext__(self) -> Chunk:
        """The next chunk without blocking the event loop (the worker wakes it)."""
        import asyncio

        while True:
            pos = self._pos
            if pos < len(self._batch):
                self._pos = pos + 1
                return self._batch[pos]
            item = self._w.take(0)
            if item is not None:
                try:
                    return self._next_batch(item)
                except StopIteration:
                    raise StopAsyncIteration from None
            loop = asyncio.get_running_loop()
            fut: asyncio.Future[None] = loop.create_future()
            if not self._w.add_waiter(loop, fut):
                continue
            try:
                await fut
            finally:
                self._w.remove_waiter(fut)
