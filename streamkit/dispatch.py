"""Dispatcher: many requests over a fixed pool of worker threads and one or many hosts.

The pool (``_dispatch.pool``) follows CPython's ``concurrent.futures.thread``;
each ``map``/``events`` call (``_dispatch.fanout``) reads its input lazily:
at most ``workers + max_pending`` requests are submitted and not yet handed
to the caller. Hosts are routed by ``_stream.routing.HostRouter``.

Every wait in the thread that iterates ``map``/``events`` is a short timed
wait, so Ctrl-C (KeyboardInterrupt) there is seen at once: it cancels every
stream of the dispatcher and propagates.
"""

from __future__ import annotations

import logging
from typing import (
    TYPE_CHECKING,
    Any,
    Dict,
    Iterable,
    Iterator,
    List,
    Optional,
    Sequence,
    Tuple,
    Union,
    overload,
)

from ._dispatch.embed import EmbedCall
from ._dispatch.fanout import Fanout
from ._dispatch.pool import Job, Pool
from ._stream.routing import HostRouter, parse_hosts
from .config import HostSpec, check_count, dialect_base_url
from .errors import ConfigError
from .records import Chunk, EmbedRequest, EmbedResult, Request, Result

if TYPE_CHECKING:
    from .client import Client
    from .stream import Stream

__all__ = ["Dispatcher"]

logger = logging.getLogger("streamkit")

#: close() waits this long for cancelled workers to exit, then warns and returns.
JOIN_TIMEOUT_S = 10.0

Event = Tuple[str, Union[Chunk, Result, EmbedResult]]
AnyRequest = Union[Request, EmbedRequest]


def _route_urls(hosts: Sequence[HostSpec], dialect: str) -> List[Tuple[str, int]]:
    return [(dialect_base_url(url, dialect), n) for url, n in parse_hosts(hosts)]


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
            with the fewest requests in flight; a host failing (connect error,
            5xx, 429/503, or cutting a stream) is skipped for a cooldown (1 s
            doubling up to 30 s), then probed by one request, and the attempt
            is retried elsewhere: never on a host it failed on while a healthy
            one is left. ``Result.host`` says where each answer came from,
            ``Result.hosts_tried`` where each attempt went.
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
        self.workers = check_count("workers", workers, 1)
        self.max_pending = 2 * self.workers if max_pending is None else check_count(
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
        self._pool = Pool(self.workers, "streamkit-dispatch")

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
        state = "closed" if self._pool.closed else "open"
        return f"<Dispatcher {state} workers={self.workers} hosts={self.hosts!r}>"

    # -- submitting -----------------------------------------------------------

    @overload
    def submit(self, request: EmbedRequest) -> EmbedCall: ...

    @overload
    def submit(self, request: Request) -> Stream: ...

    def submit(self, request: AnyRequest) -> Union[Stream, EmbedCall]:
        """Queue ``request``; its Stream starts when a worker is free. Never blocks.

        The Stream works like a ``Client`` stream: iterate it, ``result()``,
        ``cancel()`` (also before it starts: it then ends with Cancelled).
        Workers run streams in submission order, and a stream nobody reads
        holds its worker once its chunk queue is full: read streams in the
        order submitted, or use ``map``/``events``.

        An :class:`~streamkit.EmbedRequest` gets an ``EmbedCall`` instead of a
        Stream: no chunks; ``result(timeout)`` waits for its
        :class:`~streamkit.EmbedResult` (which carries any error), and
        ``cancel()`` works as for a Stream. Its hosts are routed the same way.

        Raises:
            RuntimeError: the dispatcher is closed.
            ConfigError: ``request`` is not a ChatRequest, GenerateRequest or
                EmbedRequest.
        """
        stream = self._new_stream(request)
        self._pool.submit(Job(stream))
        return stream

    def _new_stream(self, request: AnyRequest) -> Union[Stream, EmbedCall]:
        """A Stream (an EmbedCall for an embed request) routed by this dispatcher; not started."""
        self._check_open()
        if isinstance(request, EmbedRequest):
            return EmbedCall(self._client, request, self._router)
        return self._client._new_stream(request, route=self._router)

    def _check_open(self) -> None:
        if self._pool.closed:
            raise RuntimeError("cannot submit to a closed Dispatcher")

    def _fanout(self, requests: Iterable[AnyRequest], forward_chunks: bool) -> Fanout:
        return Fanout(requests, pool=self._pool, new_stream=self._new_stream,
                      read_ahead=self.max_pending, forward_chunks=forward_chunks)

    # -- map / events -----------------------------------------------------------

    @overload
    def map(self, requests: Iterable[EmbedRequest], *, ordered: bool = False,
            return_exceptions: bool = False) -> Iterator[EmbedResult]: ...

    @overload
    def map(self, requests: Iterable[Request], *, ordered: bool = False,
            return_exceptions: bool = False) -> Iterator[Result]: ...

    @overload
    def map(self, requests: Iterable[AnyRequest], *, ordered: bool = False,
            return_exceptions: bool = False) -> Iterator[Union[Result, EmbedResult]]: ...

    def map(self, requests: Iterable[AnyRequest], *, ordered: bool = False,
            return_exceptions: bool = False) -> Iterator[Any]:
        """Run every request; yield one Result each (drained internally; no chunks).

        An :class:`~streamkit.EmbedRequest` yields an
        :class:`~streamkit.EmbedResult` (chat/generate and embed requests may
        be mixed; each yields its own kind).

        Input is read lazily: at most ``workers + max_pending`` requests are
        submitted and not yet yielded. A request without an ``id`` gets its
        0-based input index as a string, so ``Result.id`` always names it.
        Nobody sees a map stream's chunks, so with the default
        ``RetryPolicy.on_interrupt`` (None) a stream cut mid-reply is sent
        again from scratch, to another host when there is one, within the
        attempt budget (``Result.restarts`` counts it). Each request yields
        exactly one Result.

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

    def _map(self, requests: Iterable[AnyRequest], ordered: bool,
             return_exceptions: bool) -> Iterator[Any]:
        fanout = self._fanout(requests, forward_chunks=False)
        buffered: Dict[int, Any] = {}
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

    def events(self, requests: Iterable[AnyRequest]) -> Iterator[Event]:
        """Run every request; yield ``(request_id, Chunk)`` as chunks arrive from any
        stream, then ``(request_id, Result)`` once each stream ends.

        One merged channel for a fan-in consumer. Input is read lazily as in
        :meth:`map` (ids assigned the same way). Failed requests are not
        raised: their Result has ``.error`` set. The channel is bounded: a
        slow consumer slows the streams (backpressure). An
        :class:`~streamkit.EmbedRequest` has no chunks: it yields only
        ``(request_id, EmbedResult)`` once its reply is in.

        Raises (from the iterator): RuntimeError (closed while input
        remained), KeyboardInterrupt (after cancelling every stream), errors
        of the input iterable. Leaving early cancels this call's requests.
        """
        self._check_open()
        return self._events(requests)

    def _events(self, requests: Iterable[AnyRequest]) -> Iterator[Event]:
        fanout = self._fanout(requests, forward_chunks=True)
        try:
            while True:
                fanout.fill()
                if fanout.finished:
                    return
                is_chunk, item = fanout.take()
                if is_chunk:
                    yield item
                    continue
                result: Union[Result, EmbedResult] = item[1]
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
        cancelled = self._pool.cancel_all()
        if self._router is not None:
            self._router.wake()
        return cancelled

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
        self._pool.shutdown()
        if not cancel_pending:
            self._pool.wait_idle(timeout)
        self.cancel_all()
        if self._router is not None:
            self._router.close()
        self._pool.join(JOIN_TIMEOUT_S)
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> Dispatcher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

