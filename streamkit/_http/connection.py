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
"""``ACTIVE.token``: the CancelToken of the attempt sending in this thread
(set by the transport around a send, None otherwise), read by the pools."""

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
    """

    last_ns = 0

    def __init__(self, raw: io.RawIOBase, sock: Optional[socket.socket]) -> None:
        super().__init__()
        self.sock = sock
        self._raw = raw
        self._readinto = raw.readinto  # bound once: this is the per-read path

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> Optional[int]:
        n = self._readinto(buffer)
        self.last_ns = time.perf_counter_ns()
        return n

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
        # PRIVATE: the read1 behaviour BUFFER_SIZE describes. Checked on CPython
        # 3.9 to 3.13.
        return io.BufferedReader(StampedReader(raw, sock), BUFFER_SIZE)


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
    response_class = _StampedHTTPResponse


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
    """The shared adapter: cancellable pools, no urllib3 retries (retry.py retries)."""

    def init_poolmanager(self, connections: int, maxsize: int, block: bool = False,
                         **pool_kwargs: Any) -> None:
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)
        self.poolmanager.pool_classes_by_scheme = _POOL_CLASSES

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if not proxy.lower().startswith("socks"):  # SOCKS managers bring their own pools
            manager.pool_classes_by_scheme = _POOL_CLASSES
        return manager
