"""One embed request, run in the calling thread: attempts, timeouts, reading, decoding.

The entry point is :func:`run_embed`; :meth:`Client.embed` calls it, and a
pool (the Dispatcher, a batch run) can call it on its own threads with its
own :class:`~streamkit.stream.Route`. An embed reply is one JSON document,
so the whole exchange is the retry boundary: nothing reaches the caller
before the reply has arrived and been decoded. Embedding is idempotent, so
a reply cut mid-body is retried too (a stream's is not).

Timeouts: ``connect`` bounds connecting, ``first_token`` the wait from
sending the request to the *end* of the reply (the server computes every
vector before it answers; a cold model load counts), ``total`` the whole
call across attempts; ``idle`` plays no part. Cancelling ``token`` (from any
thread) shuts the socket of the attempt in progress and wakes a backoff
sleep; the result then carries :class:`~streamkit.errors.Cancelled`.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import TYPE_CHECKING, Any, List, Mapping, Optional, Tuple, Union

from ._http import CancelToken, Response, Transport, forget_frames, refuse_encoding
from .config import RetryPolicy, Timeouts
from .errors import (
    Cancelled,
    ConfigError,
    ResponseTooLarge,
    StreamError,
    StreamInterrupted,
    StreamkitError,
    StreamTimeout,
)
from .records import EmbedRequest, EmbedResult, Timing
from .retry import Attempts, is_retryable
from .wire import Dialect
from .wire.embed import EmbedCodec, EmbedReply, embed_error

if TYPE_CHECKING:
    from .stream import Route

__all__ = ["MAX_REPLY", "embed_policy", "embed_request", "run_embed"]

logger = logging.getLogger("streamkit")

MAX_REPLY = 512 << 20
"""Largest embed reply read (bytes): about 40,000 768-dimension vectors as Ollama
writes them. A longer reply fails with ResponseTooLarge rather than exhaust memory."""


def embed_policy(policy: RetryPolicy) -> RetryPolicy:
    """``policy`` with a cut reply also retried (safe: embedding is idempotent).

    A policy with its own ``retry_if`` is left as it is.
    """
    if policy.retry_if is not None:
        return policy

    def retry_if(exc: BaseException) -> bool:
        return is_retryable(exc, policy) or isinstance(exc, StreamInterrupted)

    return dataclasses.replace(policy, retry_if=retry_if)


def run_embed(request: EmbedRequest, *, codec: EmbedCodec, dialect: Dialect,
              transport: Transport, route: Route, timeouts: Timeouts, retry: RetryPolicy,
              token: Optional[CancelToken] = None, max_reply: int = MAX_REPLY) -> EmbedResult:
    """Embed ``request``'s inputs; blocks until the reply, a final error or a cancel.

    Never raises for a failed request (KeyboardInterrupt and SystemExit pass
    through): the returned result has ``error`` set (ConfigError for what
    the dialect cannot express, ConnectError, ResponseError and its
    subclasses, StreamTimeout, StreamInterrupted, ProtocolError, Cancelled).
    ``token`` cancels it from another thread; a new one is made if None.
    """
    runner = _Embed(request, codec, dialect, transport, route, timeouts, retry,
                    token if token is not None else CancelToken(), max_reply)
    return runner.run()


class _Embed:
    """The state of one embed call (used by one thread)."""

    def __init__(self, request: EmbedRequest, codec: EmbedCodec, dialect: Dialect,
                 transport: Transport, route: Route, timeouts: Timeouts, retry: RetryPolicy,
                 token: CancelToken, max_reply: int) -> None:
        self.request = request
        self._codec = codec
        self._dialect = dialect
        self._transport = transport
        self._route = route
        self._timeouts = timeouts
        self._retry = retry
        self.token = token
        self._max_reply = max_reply
        self.timing = Timing()
        self.host = ""
        self._tried: List[str] = []
        self._body = b""
        self._path = ""
        self._deadline: Optional[float] = None

    def run(self) -> EmbedResult:
        self.timing.started_ns = time.perf_counter_ns()
        attempts = Attempts(embed_policy(self._retry), self.token.event)
        error: Optional[BaseException] = None
        reply: Optional[EmbedReply] = None
        try:
            path, body = self._codec.request(self.request)
            self._path, self._body = path, _json_body(body)
            if self._timeouts.total is not None:
                self._deadline = time.monotonic() + self._timeouts.total
            reply = attempts.call(self._attempt)
        except Exception as exc:
            error = self._classify(exc)
        finally:
            self.token.detach_all()
        self.timing.done_ns = time.perf_counter_ns()
        return self._result(reply, error, attempts.count)

    def _classify(self, exc: Exception) -> BaseException:
        forget_frames(exc)
        if self.token.cancelled and not isinstance(exc, Cancelled):
            err: BaseException = Cancelled("the embed request was cancelled")
        elif isinstance(exc, StreamkitError):
            return exc
        else:
            logger.error("embed %s: unexpected failure", self.request.id, exc_info=exc)
            err = StreamError(f"the embed request failed unexpectedly ({type(exc).__name__}: "
                              f"{exc}); this is a bug in streamkit")
        err.__cause__ = exc
        return err

    def _result(self, reply: Optional[EmbedReply], error: Optional[BaseException],
                attempts: int) -> EmbedResult:
        result = EmbedResult(id=self.request.id, model=self.request.model, host=self.host,
                             timing=self.timing, attempts=attempts, error=error)
        if reply is not None:
            result.vectors = reply.vectors
            result.model = reply.model or self.request.model
            result.prompt_eval_count = reply.prompt_eval_count
            result.total_duration = reply.total_duration
            result.load_duration = reply.load_duration
        return result

    # -- one attempt ---------------------------------------------------------------
    def _attempt(self, number: int) -> EmbedReply:
        if self._deadline is not None and time.monotonic() >= self._deadline:
            raise _total_timeout()
        host = self._route.acquire(self._tried, self.token.event)
        self._tried.append(host)
        self.host = host
        error: Optional[BaseException] = None
        try:
            return self._exchange(host)
        except BaseException as exc:
            error = self._retag_total(exc)
            forget_frames(error)
            if error is exc:
                raise
            raise error from exc
        finally:
            try:
                self._route.release(host, error, error is None)
            except Exception:
                logger.error("Route.release failed", exc_info=True)

    def _exchange(self, host: str) -> EmbedReply:
        url = host.rstrip("/") + "/" + self._path
        sent_ns, sent = time.perf_counter_ns(), time.monotonic()
        reply_deadline = (None if self._timeouts.first_token is None
                          else sent + self._timeouts.first_token)
        response = self._transport.open(url, self._body, timeouts=self._open_timeouts(),
                                        cancel=self.token)
        try:
            if not 200 <= response.status < 300:
                raise embed_error(self._dialect, response.status, response.read_body(),
                                  response.headers, self.request.model)
            data = self._read_all(response, reply_deadline)
        finally:
            response.close()
        self.timing.sent_ns, self.timing.headers_ns = sent_ns, response.head_ns
        return self._codec.decode(data, self.request)

    def _read_all(self, response: Response, reply_deadline: Optional[float]) -> bytes:
        refuse_encoding(response, "embed reply")
        length = response.headers.get("content-length", "")
        if length.isdigit() and int(length) > self._max_reply:
            raise _too_large(int(length), self._max_reply)
        parts: List[bytes] = []
        size = 0
        while True:
            timeout, phase = self._budget(reply_deadline)
            data = response.read_some(timeout, phase=phase)
            if not data:
                return b"".join(parts)
            if not parts:
                self.timing.first_byte_ns = response.read_ns
            size += len(data)
            if size > self._max_reply:
                raise _too_large(size, self._max_reply)
            parts.append(data)

    # -- timeouts --------------------------------------------------------------------
    def _budget(self, reply_deadline: Optional[float]) -> Tuple[Optional[float], str]:
        now = time.monotonic()
        timeout = None if reply_deadline is None else reply_deadline - now
        if self._deadline is not None:
            left = self._deadline - now
            if timeout is None or left < timeout:
                return left, "total"
        return timeout, "first_token"

    def _open_timeouts(self) -> Timeouts:
        t = self._timeouts
        if self._deadline is None:
            return t
        left = max(0.001, self._deadline - time.monotonic())
        return Timeouts(connect=_min(t.connect, left), first_token=_min(t.first_token, left),
                        idle=t.idle, total=None)

    def _retag_total(self, exc: BaseException) -> BaseException:
        """A timeout cut short by the total deadline is a total timeout (never retried)."""
        if (isinstance(exc, StreamTimeout) and exc.phase != "total"
                and self._deadline is not None
                and time.monotonic() >= self._deadline - 0.001):
            err = _total_timeout()
            err.__cause__ = exc
            return err
        return exc


def _json_body(body: Any) -> bytes:
    import json
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _min(a: Optional[float], b: float) -> float:
    return b if a is None else min(a, b)


def _too_large(size: int, limit: int) -> ResponseTooLarge:
    return ResponseTooLarge(f"the embed reply is larger than {limit} bytes ({size}); embed "
                         "fewer inputs per request, or raise max_reply", limit=limit)


def _total_timeout() -> StreamTimeout:
    return StreamTimeout("the embed request took longer than the total timeout; raise "
                         "Timeouts.total, or embed fewer inputs per request", phase="total")



def embed_request(model: str, input: Any, *, truncate: Optional[bool] = None,
                  dimensions: Optional[int] = None,
                  keep_alive: Optional[Union[str, float]] = None,
                  options: Optional[Mapping[str, Any]] = None,
                  id: Optional[str] = None) -> EmbedRequest:
    """A validated EmbedRequest (``model`` already checked); ConfigError naming a bad argument."""
    if isinstance(input, str):
        inputs: Union[str, Tuple[str, ...]] = input
    elif isinstance(input, (list, tuple)) and all(isinstance(i, str) for i in input):
        inputs = tuple(input)
    else:
        raise ConfigError("input must be a string or a list of strings, got "
                          f"{type(input).__name__}")
    if truncate is not None and not isinstance(truncate, bool):
        raise ConfigError(f"truncate must be a bool, got {truncate!r}")
    if dimensions is not None and (isinstance(dimensions, bool) or not isinstance(
            dimensions, int) or dimensions < 1):
        raise ConfigError(f"dimensions must be an int >= 1, got {dimensions!r}")
    if keep_alive is not None and (isinstance(keep_alive, bool) or not isinstance(
            keep_alive, (str, int, float))):
        raise ConfigError(f"keep_alive must be a duration string like '5m' or seconds, "
                          f"got {keep_alive!r}")
    if options is not None and not isinstance(options, Mapping):
        raise ConfigError("options must be a dict of Ollama option names")
    return EmbedRequest(model, inputs, truncate=truncate, dimensions=dimensions,
                        keep_alive=keep_alive, options=options, id=id)
