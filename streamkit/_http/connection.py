"""Connections: the urllib3 and http.client subclasses, and every use of their internals.

This is the one module of streamkit that relies on what urllib3, requests
and http.client do not promise. Each such use carries a ``PRIVATE:`` comment
naming the versions it was checked on (the minimum-versions CI job runs the
suites at the declared floors; the default suite runs at the newest).

What the classes here add to a stock ``HTTPAdapter``:

- **Cancellation.** Each connection a pool hands out while a transport is
  sending (:data:`ACTIVE` names the attempt's token) is registered with that
  token, and unregistered when it goes back to the pool; after a connect the
  token is checked again (a cancel may have come before the socket existed).
- **Coalescing.** A request head and a small body go out in one ``send``
  (urllib3 sends them apart): one system call and one TCP segment, which the
  server then reads at once.
- **Arrival stamps.** The response reads its socket through a
  :class:`StampedReader`, which notes when each ``recv`` returned, before
  any parsing. Where that reader could not be installed (a connection class
  that is not ours, e.g. a SOCKS proxy's) :func:`socket_file` logs a warning
  once and the response says ``stamped=False``: nothing degrades silently.
"""

from __future__ import annotations

import http.client
import io
import logging
import socket
import threading
import time
from typing import Any, NamedTuple, Optional

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from .cancel import CancelToken, shutdown

__all__ = ["ACTIVE", "BUFFER_SIZE", "COALESCE_MAX", "Adapter", "SocketFile", "StampedReader",
           "release", "socket_file"]

BUFFER_SIZE = io.DEFAULT_BUFFER_SIZE
"""The buffer of a response's socket file. ``BufferedReader.read1(n)`` with
``n`` at least this returns the buffered bytes only, or does one raw read
straight into its result: either way the buffer is empty afterwards, and the
socket may be read directly (``Response`` does)."""

COALESCE_MAX = 64 * 1024
"""Largest request body sent in one piece with its head."""

ACTIVE = threading.local()
"""What the transport tells the layers below about the request sending in
this thread (set around a send, unset otherwise): ``ACTIVE.token``, the
attempt's CancelToken, read by the pools; ``ACTIVE.head_timeout``, seconds
the status line and headers may take in all (None: no limit), read when the
response's socket file is made."""

_log = logging.getLogger("streamkit")
_warned_unstamped = threading.Event()  # the fallback warning is logged once per process


# --------------------------------------------------------------------------
# reading: arrival stamps


class StampedReader(io.RawIOBase):
    """A socket's unbuffered reader that notes when each ``recv`` returned.

    ``last_ns`` (``perf_counter_ns``) is taken first thing after the read, so
    bytes that arrived with the headers and wait in the buffer while they
    are parsed keep their arrival time. ``sock`` is the socket read (None
    when the reader is not a plain socket's, e.g. TLS inside a TLS proxy).

    A socket timeout bounds each ``recv``, so a server sending one byte at
    a time never trips it. ``deadline`` (``time.monotonic()``; None: none)
    bounds them all: each read waits at most what is left of it, and one
    past it raises ``socket.timeout``. It is set for the head of a response
    (status line, ``100 Continue`` replies, headers) and cleared by the
    response once the head is in; body reads keep their own deadlines.
    """

    last_ns = 0
    deadline: Optional[float] = None

    def __init__(self, raw: io.RawIOBase, sock: Optional[socket.socket],
                 deadline: Optional[float] = None) -> None:
        super().__init__()
        self.sock = sock
        self._raw = raw
        self._readinto = raw.readinto  # bound once: this is the per-read path
        if sock is not None:  # without the socket there is no wait to cut short
            self.deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> Optional[int]:
        if self.deadline is not None:
            self._wait_at_most(self.deadline - time.monotonic())
        n = self._readinto(buffer)
        self.last_ns = time.perf_counter_ns()
        return n

    def _wait_at_most(self, left: float) -> None:
        if left <= 0:
            raise socket.timeout("timed out")  # what a socket timeout raises
        assert self.sock is not None
        self.sock.settimeout(left)

    def fileno(self) -> int:
        return self._raw.fileno()

    def close(self) -> None:
        if not self.closed:
            self._raw.close()  # the socket counts its open files and closes after the last
        super().close()


class _StampingSocket:
    """Stands in for the socket given to http.client's response, whose
    constructor opens its socket file with ``sock.makefile("rb")``."""

    __slots__ = ("_target",)

    def __init__(self, sock: Any) -> None:
        self._target = sock

    def makefile(self, mode: str) -> Any:
        try:
            # Public: makefile(buffering=0) gives the raw reader and counts
            # it, so the socket closes only once this file is closed too.
            raw = self._target.makefile(mode, buffering=0)
        except TypeError:  # a socket-like object without buffering=: no stamps (warned)
            return self._target.makefile(mode)
        sock = self._target if isinstance(self._target, socket.socket) else None
        head_timeout: Optional[float] = getattr(ACTIVE, "head_timeout", None)
        deadline = None if head_timeout is None else time.monotonic() + head_timeout
        # PRIVATE: the read1 behaviour BUFFER_SIZE describes. Checked on CPython
        # 3.9 to 3.13.
        return io.BufferedReader(StampedReader(raw, sock, deadline), BUFFER_SIZE)


class _StampedHTTPResponse(http.client.HTTPResponse):
    """http.client's response, reading through a :class:`StampedReader`."""

    def __init__(self, sock: Any, debuglevel: int = 0, method: Optional[str] = None,
                 url: Optional[str] = None) -> None:
        # PRIVATE: HTTPResponse.__init__ uses its sock only for
        # sock.makefile("rb"). Checked on CPython 3.9, 3.11, 3.13.
        super().__init__(_StampingSocket(sock), debuglevel, method, url)  # type: ignore[arg-type]


class SocketFile(NamedTuple):
    """What a response reads: the buffered socket file (None once http.client
    closed it), its stamped reader (None: no stamps) and its socket (None:
    unknown; then reads keep the socket's timeout and cancel shuts the
    connection, not the socket, down)."""

    fp: Any
    stamps: Optional[StampedReader]
    sock: Optional[socket.socket]


def socket_file(raw: Any) -> SocketFile:
    """The socket file under a urllib3 response (``requests.Response.raw``).

    Taken from the response, not the connection: http.client detaches the
    socket from a connection that will close after this response.
    """
    # PRIVATE: urllib3's HTTPResponse._fp is http.client's response, and its
    # .fp the socket file. Checked on urllib3 1.26.5, 2.0.0, 2.6.3, 2.8.0;
    # CPython 3.9, 3.11, 3.13.
    fp = raw._fp.fp
    reader = getattr(fp, "raw", None)
    if isinstance(reader, StampedReader):
        return SocketFile(fp, reader, reader.sock)
    if fp is None:
        return SocketFile(None, None, None)
    if not _warned_unstamped.is_set():
        _warned_unstamped.set()
        _log.warning("streamkit: this connection (%s) does not read through the stamped "
                     "reader; Chunk.received_ns is taken after each read returns, which "
                     "makes latency figures later by the parsing time",
                     type(reader).__name__)
    # PRIVATE, fallback only: socket.SocketIO._sock is the socket it reads.
    # Checked on CPython 3.9, 3.11, 3.13.
    sock = getattr(reader, "_sock", None)
    return SocketFile(fp, None, sock if isinstance(sock, socket.socket) else None)


def release(raw: Any, *, close_delimited: bool) -> None:
    """Hand the connection of a response read to its end back to the pool.

    The body was read from the socket file directly, so urllib3 does not
    know it is complete: close http.client's response (the socket file only),
    then release. A body that ended with the connection, or a connection the
    server will close, is closed instead.
    """
    if close_delimited:
        raw.close()
        return
    # PRIVATE: urllib3's HTTPResponse._original_response is http.client's
    # response (will_close, close()). Checked on urllib3 1.26.5, 2.0.0, 2.6.3, 2.8.0.
    original = raw._original_response
    if original is not None:
        if original.will_close:
            raw.close()
            return
        original.close()
    raw.release_conn()


# --------------------------------------------------------------------------
# sending: cancellable connections, coalesced head and body


class _CancellableConnectionMixin:
    """After connecting, re-check the token: cancel() may have run before the
    socket existed, when there was nothing to shut down. Sends the head and
    a small body of a request in one ``send``.
    """

    sock: Optional[socket.socket]
    _streamkit_hold = False  # the next send() is a request head: keep it for the body
    _streamkit_head: Optional[bytes] = None

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        token = getattr(self, "_streamkit_token", None)
        if token is not None and token.cancelled:
            shutdown(self)

    def request(self, method: str, url: str, body: Any = None, headers: Any = None,
                **kwargs: Any) -> None:
        # PRIVATE: request() sends the head with one send() (endheaders), then
        # the body with send(); urllib3 2.x takes chunked= here, 1.26 another
        # method. Checked on urllib3 1.26.5, 2.0.0, 2.6.3, 2.8.0; CPython 3.9, 3.11, 3.13.
        self._streamkit_hold = (isinstance(body, bytes) and 0 < len(body) <= COALESCE_MAX
                                and not kwargs.get("chunked"))
        try:
            super().request(method, url, body, headers, **kwargs)  # type: ignore[misc]
        finally:
            head, self._streamkit_head, self._streamkit_hold = (
                self._streamkit_head, None, False)
        if head is not None:  # no body followed after all
            super().send(head)  # type: ignore[misc]

    def send(self, data: Any) -> None:
        if self._streamkit_head is not None:
            data, self._streamkit_head = self._streamkit_head + data, None
        elif self._streamkit_hold and isinstance(data, bytes):
            self._streamkit_hold, self._streamkit_head = False, data
            return
        super().send(data)  # type: ignore[misc]


class _HTTPConnection(_CancellableConnectionMixin, HTTPConnection):
    response_class = _StampedHTTPResponse


class _HTTPSConnection(_CancellableConnectionMixin, HTTPSConnection):
    """Also cancellable during the TLS handshake.

    Wrapping a socket in TLS detaches the plain socket object (its fd
    becomes -1) before the handshake runs, so shutting down ``self.sock``
    then finds nothing. While connecting, the token also holds a duplicate
    of the TCP socket: shutting that down ends the connection itself and
    wakes the handshake's ``recv``. The duplicate is closed when
    ``connect()`` returns, so no fd number is ever shut down after it may
    have been reused.
    """

    response_class = _StampedHTTPResponse
    _streamkit_handle: Optional[socket.socket] = None

    def _new_conn(self) -> socket.socket:
        # PRIVATE: connect() gets its TCP socket from _new_conn() before any
        # TLS. Checked on urllib3 1.26.5, 2.0.0, 2.6.3, 2.8.0.
        sock: socket.socket = super()._new_conn()
        token: Optional[CancelToken] = getattr(self, "_streamkit_token", None)
        if token is not None:
            self._streamkit_handle = handle = sock.dup()
            token.attach(handle)  # shuts it down at once if already cancelled
        return sock

    def connect(self) -> None:
        try:
            super().connect()
        finally:
            handle, self._streamkit_handle = self._streamkit_handle, None
            if handle is not None:
                token = getattr(self, "_streamkit_token", None)
                if token is not None:
                    token.detach(handle)
                handle.close()


class _CancellablePoolMixin:
    """Registers each connection handed out with the current attempt's token
    and unregisters it when it goes back to the pool (then it may serve
    another stream, which an old token must not shut down)."""

    # PRIVATE: _get_conn(timeout) / _put_conn(conn) are where every pooled
    # connection passes. Checked on urllib3 1.26.5, 2.0.0, 2.6.3, 2.8.0.
    def _get_conn(self, timeout: Optional[float] = None) -> Any:
        conn = super()._get_conn(timeout)  # type: ignore[misc]
        token: Optional[CancelToken] = getattr(ACTIVE, "token", None)
        if token is not None:
            token.attach(conn)
        return conn

    def _put_conn(self, conn: Any) -> None:
        if conn is not None:
            token = getattr(conn, "_streamkit_token", None)
            if token is not None:
                token.detach(conn)
        super()._put_conn(conn)  # type: ignore[misc]


class _HTTPPool(_CancellablePoolMixin, HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(_CancellablePoolMixin, HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


_POOL_CLASSES = {"http": _HTTPPool, "https": _HTTPSPool}


class Adapter(HTTPAdapter):
    """The shared adapter: cancellable pools, no urllib3 retries (retry.py retries).

    ``close()`` closes every pool, and so every idle socket, at once: with
    urllib3 2.x, clearing a pool manager only forgets its pools, whose
    sockets then close whenever the pools are garbage-collected (never,
    while an exception somewhere still refers to one). A connection in use
    is closed when its response ends and it finds its pool closed.
    """

    def close(self) -> None:
        managers = [self.poolmanager, *self.proxy_manager.values()]
        for manager in managers:
            # PRIVATE: PoolManager.pools is urllib3's mapping of live pools.
            # Checked on urllib3 1.26.5, 2.0.0, 2.6.3, 2.8.0.
            pools = manager.pools
            for key in list(pools.keys()):
                pool = pools.get(key)
                if pool is not None:
                    pool.close()  # idempotent; 1.26 also does it when clearing
        super().close()

    def init_poolmanager(self, connections: int, maxsize: int, block: bool = False,
                         **pool_kwargs: Any) -> None:
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)
        self.poolmanager.pool_classes_by_scheme = _POOL_CLASSES

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if not proxy.lower().startswith("socks"):  # SOCKS managers bring their own pools
            manager.pool_classes_by_scheme = _POOL_CLASSES
        return manager
