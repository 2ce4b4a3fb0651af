"""Stream: one request, a worker, a bounded channel, a consumer.

::

    worker thread                                        consumer (any thread)
    retry(connect → status → first chunk)                for chunk in stream / get()
    read_some → decoder.feed → [chunks] ─► channel ─►    / pipe(q) / async for
    ...                                   (bounded)      result() / text()
    finally: end record, exactly once ──────────────►    stops there; raises the error

This module is the public face: :class:`Stream` (and, re-exported from
``_stream.routing``, :class:`Route` and :class:`FixedRoute`). The machinery
behind it lives in the private ``_stream`` package, one job per module.

The :class:`Stream` holds its worker and the receiving end of the worker's
channel; the worker never holds the Stream, so a Stream nobody references
any more is garbage-collected, and its finalizer cancels the worker (no
thread leak).
"""

from __future__ import annotations

import itertools
import json
import threading
import weakref
from typing import TYPE_CHECKING, Any, Callable, List, Optional, Union

from ._http import Poller, Transport
from ._stream.channel import ReceiveEnd, Stopped
from ._stream.chanstate import Cancellable, Sink
from ._stream.routing import FixedRoute, Route
from ._stream.worker import Worker
from .config import RetryPolicy, Timeouts, check_count
from .records import (
    END,
    ChatRequest,
    Chunk,
    Request,
    ResponseCache,
    Result,
)
from .wire import Dialect

if TYPE_CHECKING:
    import asyncio
    import queue

__all__ = ["END", "Chunk", "FixedRoute", "Result", "Route", "Stream"]

DEFAULT_QUEUE_SIZE = 256

_serial = itertools.count(1)


def _abandon(token: Cancellable, rx: ReceiveEnd) -> None:
    """Finalizer of an unreferenced Stream: stop its worker (``cancel()`` takes no lock).

    A stream whose end record is written is left alone: its worker may still
    be reading the last bytes of the body so the connection can be reused,
    and cancelling would shut that connection down.
    """
    if rx.end is None:
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
        check_count("queue_size", queue_size)
        if isinstance(request, ChatRequest):
            path, body = dialect.chat(request)
        else:
            path, body = dialect.generate(request)
        payload = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        self._w = Worker(request, path, payload, dialect=dialect, transport=transport,
                         route=route, timeouts=timeouts, retry=retry,
                         queue_size=queue_size, cache=cache)
        self._rx = self._w.receiver
        self._serial = next(_serial)
        self._batch: List[Chunk] = []
        self._pos = 0
        self._exhausted = False   # the consumer has reached the end record
        self._raised = False      # the stream's error was raised by iteration
        self._started = False
        weakref.finalize(self, _abandon, self._w.token, self._rx)

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
        return (self._rx.end is not None and self._pos >= len(self._batch)
                and not self._rx.has_unread())

    def __repr__(self) -> str:
        end = self._rx.end
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

    def _run(self, sink: Optional[Sink] = None, poller: Optional[Poller] = None) -> None:
        """Run the whole stream in this thread; never raises; ends exactly once.

        With ``sink``, chunks go to ``sink(chunk)`` (in this thread) instead
        of the channel: for callers that consume nothing but the Result.
        With ``poller``, its thread reads the body while this one sleeps.
        """
        self._started = True
        self._w.run(sink, poller)

    def run(self, on_chunk: Callable[[Chunk], None]) -> Result:
        """Run this stream in the calling thread, handing each chunk to
        ``on_chunk`` as it arrives; return the Result.

        For a stream not yet started (``Client.prepare`` makes one): no worker
        thread and no queue, so it is the cheapest way to stream from threads
        of your own (one thread per stream instead of two; see
        benchmarks/README.md). Blocks until the
        stream ends, bounded by its timeouts. A failed request does not
        raise: the Result's ``error`` says why. If ``on_chunk`` raises, the
        stream is cancelled (the connection closes, so the server stops) and
        the exception propagates. ``cancel()`` from another thread ends it at
        once.

        Raises:
            RuntimeError: the stream was started already.
        """
        if self._started:
            raise RuntimeError("this Stream is already running; run() takes a stream not "
                               "yet started (Client.prepare makes one)")
        raised: List[BaseException] = []

        def sink(chunk: Chunk) -> None:
            try:
                on_chunk(chunk)
            except BaseException as exc:
                raised.append(exc)
                self._w.cancel()
                raise Stopped() from None

        self._run(sink)
        if raised:
            raise raised[0]
        return self.result(0)

    def add_done_callback(self, fn: Callable[[Result], None]) -> None:
        """Call ``fn(result)`` once the stream has ended (at once if it has).

        It runs in the thread that ends the stream (the worker, or the one
        calling ``cancel()``); it must be quick and must not block on this
        stream. An exception it raises is logged and ignored.
        """
        self._rx.add_callback(fn)

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
        # The per-chunk path, repeated inline in get() and __anext__() on
        # purpose: a shared helper would cost a call per chunk. A batch is
        # fetched (one call) only when the current one is used up.
        pos = self._pos
        if pos < len(self._batch):
            self._pos = pos + 1
            return self._batch[pos]
        return self._next_batch(self._rx.take(None))

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
        item = self._rx.take(timeout)
        if isinstance(item, list):
            return self._next_batch(item)
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
            item = self._rx.take(None)
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
        self._rx.lift_bound()
        if not self._rx.wait_end(timeout):
            raise TimeoutError(f"stream {self.id!r} did not end within {timeout} s")
        end = self._rx.end
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
            item = self._rx.take(0)
            if item is not None:
                try:
                    return self._next_batch(item)
                except StopIteration:
                    raise StopAsyncIteration from None
            loop = asyncio.get_running_loop()
            fut: asyncio.Future[None] = loop.create_future()
            if not self._rx.add_waiter(loop, fut):
                continue
            try:
                await fut
            finally:
                self._rx.remove_waiter(fut)
