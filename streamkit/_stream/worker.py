"""The worker of one stream: attempts, reading, decoding, timeouts, replay, cache.

::

    retry(connect → status → first chunk)        (the retry boundary)
    read_some → decoder.feed → [chunks] → send into the channel
    (or lent to an iterating consumer, who reads and takes them itself)
    ...
    a cut: restart from scratch if the consumer saw nothing (rewind the
           channel), else replay or fail (``RetryPolicy.on_interrupt``)
    finally: end record, exactly once; drain or close; release the host

A :class:`Worker` holds its stream's channel (it keeps the sending end and
hands out the receiving end), the record of what it delivered, and its
deadlines; it never holds the ``Stream`` facade: a facade nobody references
any more is garbage-collected, and its finalizer cancels the worker.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from typing import List, Optional

from .._http import CancelToken, Poller, Response, Transport, forget_frames
from ..config import RetryPolicy, Timeouts
from ..errors import (
    Cancelled,
    StreamDiverged,
    StreamError,
    StreamInterrupted,
    StreamkitError,
    StreamTimeout,
)
from ..records import Chunk, Request, ResponseCache, Result, Stats
from ..retry import Attempts
from ..wire import Decoder, Dialect
from .channel import Build, Stopped, open_channel
from .chanstate import Sink
from .deadlines import Deadlines
from .delivery import Delivered
from .lent import LentBody
from .polled import PolledBody
from .replay import Replay
from .routing import Route, is_cut

logger = logging.getLogger("streamkit")

DRAIN_S = 0.5
"""How long, after the done record, the worker waits for the end of the body
so the connection can be reused (normally it is already there)."""


class Worker:
    """The producing side of one stream; runs it in the thread that calls :meth:`run`.

    Everything here is the worker thread's alone, except what the result
    builder :meth:`_result` reads: the channel calls it under its lock, also
    from a thread that cancels.
    """

    def __init__(self, request: Request, path: str, body: bytes, *, dialect: Dialect,
                 transport: Transport, route: Route, timeouts: Timeouts, retry: RetryPolicy,
                 queue_size: int, cache: Optional[ResponseCache]) -> None:
        self.request = request
        self.token = CancelToken()
        self.delivered = Delivered()
        self._tx, self.receiver = open_channel(queue_size, self.token, self.delivered)
        self._path = path
        self._body = body
        self._dialect = dialect
        self._transport = transport
        self._route = route
        self._deadlines = Deadlines(timeouts)
        self._retry = retry
        self._cache = cache
        self.host: Optional[str] = None
        self._held: Optional[str] = None  # host acquired and not yet released
        self._tried: List[str] = []
        self._attempts: Optional[Attempts] = None
        self._decoder: Optional[Decoder] = None
        self._response: Optional[Response] = None
        self._cached: Optional[Result] = None
        self._salvaged: List[Chunk] = []
        self._restarts = 0
        self._poller: Optional[Poller] = None

    def cancel(self) -> bool:
        """End the stream with Cancelled and shut its socket; any thread, never blocks.

        True if this call ended the stream (see ``SendEnd.cancel``).
        """
        return self._tx.cancel(self._result)

    # -- the run -------------------------------------------------------------
    def run(self, sink: Optional[Sink] = None, poller: Optional[Poller] = None) -> None:
        """Run the stream in this thread; never raises (but KeyboardInterrupt
        and SystemExit pass through after the end record is written).

        With ``poller``, the body is read by the poller's thread while this
        one sleeps (see :mod:`.polled`), where the sink allows it.
        """
        self._poller = poller
        if not self._tx.claim(sink):
            logger.error("a Stream was started twice; the second run is ignored")
            return
        if self._tx.ended:  # cancelled before it started
            return
        error: Optional[BaseException] = None
        try:
            self._stream()
        except Stopped:
            pass
        except BaseException as exc:
            error = self._classify(exc)
            forget_frames(error)
            if not isinstance(exc, Exception):
                self._tx.finish(error, self._result)
                raise
        finally:
            stored = self._store() if error is None else None
            self._tx.finish(error, self._result if stored is None else _constant(stored))
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
        self.delivered.timing.started_ns = time.perf_counter_ns()
        self._deadlines.start()
        self._attempts = Attempts(self._retry, self.token.event)
        replay: Optional[Replay] = None
        while True:
            self._salvaged = []
            try:
                first = self._attempts.call(self._attempt)
            except (StreamError, StreamTimeout) as exc:
                if self._restart(exc):
                    replay = None
                    continue
                if self._salvaged:  # good records before a bad one in the first read
                    with contextlib.suppress(StreamError):
                        self._emit(self._salvaged, replay)
                raise
            try:
                self._pump(first, replay)
                return
            except (StreamInterrupted, StreamTimeout) as exc:
                if self._restart(exc):
                    replay = None
                    continue
                if not isinstance(exc, StreamInterrupted) or not self._may_replay(exc):
                    raise
                forget_frames(exc)
                self._release_host(exc)
                self._close_response()
                replay = Replay(*self.delivered.snapshot())
                logger.warning("stream %s was cut after %d chunks (%s); replaying the "
                               "request (attempt %d of %d)", self.request.id,
                               self.delivered.timing.chunks, str(exc),
                               self._attempts.count + 1, self._retry.attempts)

    def _interrupt_mode(self) -> str:
        """``RetryPolicy.on_interrupt``, its default resolved for this stream."""
        mode = self._retry.on_interrupt
        if mode is None:
            return "restart" if self._tx.discarding else "fail"
        return mode

    def _restart(self, exc: BaseException) -> bool:
        """Start again from scratch after a cut, if the mode, the budget and the
        consumer allow it; True if the next attempt is a restart.

        The consumer's side is decided by ``SendEnd.rewind`` under the channel
        lock: once it has taken a chunk, the stream is never silently restarted.
        """
        if (not is_cut(exc) or self.token.cancelled
                or self._interrupt_mode() not in ("restart", "replay")
                or self._attempts is None or self._attempts.remaining() == 0):
            return False
        chunks = self.delivered.timing.chunks
        if not self._tx.rewind():
            return False
        forget_frames(exc)
        self._release_host(exc)  # the router cools the host that cut us down
        self._close_response()
        self._restarts += 1
        logger.warning("stream %s was cut after %d chunks nobody has seen (%s); sending "
                       "it again from scratch (attempt %d of %d)", self.request.id, chunks,
                       str(exc), self._attempts.count + 1, self._retry.attempts)
        return True

    def _may_replay(self, exc: StreamInterrupted) -> bool:
        return (self._interrupt_mode() == "replay" and not isinstance(exc, StreamDiverged)
                and self._attempts is not None and self._attempts.remaining() > 0
                and not self.token.cancelled)

    def _attempt(self, number: int) -> List[Chunk]:
        """One HTTP attempt up to its first chunk(s); the retry boundary."""
        self._deadlines.check_total()
        host = self._route.acquire(self._tried, self.token.event)
        self._tried.append(host)
        self.host = self._held = host
        try:
            return self._open_and_read_first(host)
        except BaseException as exc:
            exc = self._deadlines.retag(exc)
            forget_frames(exc)  # the retry log and the Result keep it; not its sockets
            self._close_response()
            self._release_host(exc, streamed=False)
            raise exc

    def _open_and_read_first(self, host: str) -> List[Chunk]:
        url = host.rstrip("/") + "/" + self._path
        deadlines = self._deadlines
        sent_ns = time.perf_counter_ns()
        first_deadline = deadlines.after(deadlines.timeouts.first_token)
        response = self._transport.open(url, self._body, timeouts=deadlines.for_attempt(),
                                        cancel=self.token)
        self._response = response
        headers_ns = response.head_ns
        if not 200 <= response.status < 300:
            raise self._dialect.error_for_status(response.status, response.read_body(),
                                                 response.headers, self.request.model)
        decoder = self._dialect.decoder(first_index=self.delivered.next_index)
        self._decoder = decoder
        first_byte_ns: Optional[int] = None
        while True:
            timeout, phase = deadlines.budget(first_deadline, "first_token")
            data = response.read_some(timeout, phase=phase)
            ns = response.read_ns  # stamped as the recv returned, before any parsing
            try:
                if not data:
                    chunks = decoder.close(ns)
                else:
                    if first_byte_ns is None:
                        first_byte_ns = ns
                    chunks = decoder.feed(data, ns)
            except StreamError:
                self._salvaged = list(decoder.completed)
                raise
            if chunks or not data:
                break
        timing = self.delivered.timing
        timing.sent_ns, timing.headers_ns = sent_ns, headers_ns
        if timing.first_byte_ns is None:
            timing.first_byte_ns = first_byte_ns
        return chunks

    def _pump(self, first: List[Chunk], replay: Optional[Replay]) -> None:
        """Deliver ``first``, then read, decode and deliver until the end marker."""
        response, decoder = self._response, self._decoder
        assert response is not None and decoder is not None
        self._emit(first, replay)
        idle = self._deadlines.timeouts.idle
        last = first  # the last chunk list the decoder handed over
        try:
            if (self._poller is not None and replay is None and not decoder.done
                    and self._tx.offers and response.pollable() is not None):
                polled = PolledBody(response, decoder, self._tx, idle, last)
                try:
                    polled.pump(self._poller, self._deadlines)
                finally:
                    last = polled.last
            # What is left, read by this thread, or by an iterating consumer's
            # while lent (a replay filters what it sends: never lent).
            body = LentBody(response, decoder, self._deadlines, idle, last)
            try:
                while not decoder.done and not body.ended:
                    if (replay is None and self._tx.consumer_iterates
                            and self._tx.lend(body.step)):
                        if body.error is not None:
                            raise body.error
                        continue
                    self._emit(body.read(), replay)
            finally:
                last = body.last
        except StreamError:
            self._salvage(decoder, last, replay)
            raise

    def _salvage(self, decoder: Decoder, last: List[Chunk], replay: Optional[Replay]) -> None:
        """Deliver the chunks a failing read completed before its bad record.

        One read can carry good records and then an error line; the decoder
        keeps what it completed in ``completed`` (a list it has not returned).
        """
        completed = decoder.completed
        if not completed or completed is last:
            return
        with contextlib.suppress(StreamError):  # the original error is the news
            self._emit(list(completed), replay)

    def _emit(self, chunks: List[Chunk], replay: Optional[Replay]) -> None:
        if replay is not None:
            chunks = replay.filter(chunks)
            if chunks:
                base = self.delivered.next_index
                chunks = [c._replace(index=base + i) for i, c in enumerate(chunks)]
        if chunks:
            self._tx.send(chunks)

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
        self.delivered.timing.started_ns = now
        self._tx.send([Chunk(text=hit.text, thinking=hit.thinking,
                             tool_calls=tuple(hit.tool_calls), index=0, received_ns=now,
                             done=True)])
        return True

    def _store(self) -> Optional[Result]:
        """Put a successful Result in the cache before it is published, so a
        request made once ``result()`` returned finds it; returns that Result."""
        if self._cache is None or self._cached is not None or self._tx.ended:
            return None
        # No lock: this thread is the only writer of what the builder reads.
        result = self._result(None)
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
        self.token.detach_all()

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

    # -- the end record ------------------------------------------------------
    def _result(self, error: Optional[BaseException]) -> Result:
        """The Result for ``error`` (None: success): the stream's result builder."""
        delivered = self.delivered
        text = delivered.text
        if error is not None and hasattr(error, "partial"):
            error.partial = text
        timing = dataclasses.replace(delivered.timing)
        decoder = self._decoder
        if self._cached is not None:
            return dataclasses.replace(self._cached, id=self.request.id, timing=timing,
                                       attempts=0, error=None, cached=True, hosts_tried=(),
                                       restarts=0)
        return Result(
            id=self.request.id, model=self.request.model, host=self.host or "", text=text,
            thinking=delivered.thinking, tool_calls=delivered.tool_calls,
            done_reason=decoder.done_reason if decoder is not None else None,
            stats=decoder.stats if decoder is not None else Stats(), timing=timing,
            attempts=self._attempts.count if self._attempts is not None else 0,
            error=error, hosts_tried=tuple(self._tried), restarts=self._restarts)


def _constant(result: Result) -> Build:
    """A result builder that returns ``result`` (built and cached beforehand)."""
    def build(error: Optional[BaseException]) -> Result:
        return result
    return build


def _drain(response: Response) -> None:
    """Read the few bytes after the done record so the connection can be reused."""
    deadline = time.monotonic() + DRAIN_S
    try:
        while response.read_some(max(0.0, deadline - time.monotonic())):
            pass
    except StreamkitError:
        pass  # extra data or a slow end: the connection is closed instead
