"""HTTP transport: the only module that imports requests and urllib3.

One :class:`Transport` per Client. Every worker thread gets its own
``requests.Session`` (sessions are not thread-safe: cookies, adapters), and
all of them mount ONE shared ``HTTPAdapter`` whose pool holds ``pool_size``
connections per host, so connections are reused across requests and threads.

Sending: what ``Session.post`` would work out for a URL (proxies from the
environment, ``~/.netrc``, merged headers, the prepared URL) is worked out
once per URL (:class:`_Target`); each request then copies the headers and
hands its body to the shared adapter's ``send``, and the session follows
redirects. That is most of a short request's CPU saved, on the path where
many workers compete for one GIL.

Reading: :meth:`Response.read_some` returns the bytes of one socket read as
soon as they arrive. It never asks for a fixed amount (``iter_content(512)``
on a body without chunked encoding waits for 512 bytes, delaying the last
line), and it undoes chunked transfer encoding itself (:class:`_Dechunker`)
so that one read carrying many small HTTP chunks costs one call, and a huge
chunk (a 64 MiB line) is never read into memory whole.

Cancelling: a :class:`CancelToken` is attached to every pooled connection an
attempt takes (the pool classes below register it), so ``cancel()`` can shut
the socket down in every phase: waiting for the status line, mid-body, and
right after a connect finishes. A blocked ``recv`` then returns at once and
the server sees the disconnect, which is the only signal Ollama honours.
A connect in progress has no socket object yet; it ends within the connect
timeout (the stream layer ends the stream for its consumer at once anyway).

Errors are translated here, once, by phase (requests reports a read timeout
mid-body as ``ConnectionError``, so the type alone says little):

============================  ==============================================
open(): refused, DNS, TLS,    ConnectError
reset before the status
open(): connect timeout       StreamTimeout(phase="connect")
open(): no status in time     StreamTimeout(phase="first_token")
read_some(): no bytes in time StreamTimeout(phase=<the caller's phase>)
read_some(): cut, reset,      StreamInterrupted
truncated chunked body
bad chunked framing           ProtocolError
any phase after cancel()      Cancelled
============================  ==============================================
"""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import socket
import threading
import time
import traceback
from typing import Any, Dict, List, Mapping, Optional, Set, Tuple

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from ._version import __version__
from .config import Secret, Timeouts
from .errors import (
    Cancelled,
    ConfigError,
    ConnectError,
    ProtocolError,
    StreamInterrupted,
    StreamkitError,
    StreamTimeout,
)

__all__ = ["CancelToken", "Response", "Transport"]

READ_SIZE = 64 * 1024
"""Most bytes one ``read_some`` takes off the socket (bounds memory per read)."""

MAX_FRAMING_LINE = 8 * 1024
"""Longest chunk-size or trailer line accepted in a chunked body."""

BODY_TIMEOUT_S = 30.0
"""Per-read budget for ``read_body`` (an error reply) when no idle timeout is set."""

DEFAULT_POOLS = 32
"""Hosts whose connection pools the shared adapter keeps."""

COALESCE_MAX = 64 * 1024
"""Largest request body sent in one piece with its head."""

MAX_TARGETS = 256
"""URLs whose prepared request a Transport keeps (see :class:`_Target`)."""

_USER_AGENT = f"streamkit/{__version__} (+requests/{requests.__version__})"

# The CancelToken of the attempt running in this thread, read by the pool
# classes when they hand out a connection. Set only for the duration of
# Transport.open().
_active = threading.local()


# --------------------------------------------------------------------------
# cancellation


def _shutdown(conn: Any) -> None:
    """Shut down a socket, or the socket of a urllib3 connection if it has one yet."""
    sock = conn if isinstance(conn, socket.socket) else getattr(conn, "sock", None)
    if sock is None:
        return
    # socket.socket.shutdown, not SSLSocket.shutdown: the latter also drops
    # the TLS object under a read that may be running in another thread;
    # shutting the fd down is all it takes to wake that read.
    with contextlib.suppress(OSError):  # already closed, or never connected
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class CancelToken:
    """Cancels the HTTP attempts of one stream, from any thread.

    ``event`` is set once cancelled (the retry layer waits on it between
    attempts). Lock-free on purpose: ``cancel()`` may run inside a garbage
    collector finalizer, on a thread that is itself in the middle of
    attaching a connection, where taking a lock could deadlock.
    """

    __slots__ = ("_conns", "_once", "event")

    def __init__(self) -> None:
        self.event = threading.Event()
        self._once = threading.Lock()  # acquired once, never released: "first cancel wins"
        self._conns: Set[Any] = set()

    @property
    def cancelled(self) -> bool:
        return self.event.is_set()

    def cancel(self) -> bool:
        """Cancel; True if this call did it, False if it was already cancelled.

        Idempotent, any thread, never blocks: sets ``event`` first, then shuts
        down the socket of the attempt in progress so a blocked read returns.
        """
        if not self._once.acquire(blocking=False):
            return False
        self.event.set()  # before the snapshot: a racing _attach sees one or the other
        for conn in tuple(self._conns):  # tuple() of a set is atomic under the GIL
            _shutdown(conn)
        return True

    def _attach(self, conn: Any) -> None:
        """Register a urllib3 connection or a bare socket for shutdown on cancel."""
        if not isinstance(conn, socket.socket):
            conn._streamkit_token = self
        self._conns.add(conn)
        if self.event.is_set():
            _shutdown(conn)

    def _detach(self, conn: Any) -> None:
        if getattr(conn, "_streamkit_token", None) is self:
            conn._streamkit_token = None
        self._conns.discard(conn)

    def _detach_all(self) -> None:
        for conn in tuple(self._conns):
            self._detach(conn)

    def __repr__(self) -> str:
        return f"<CancelToken cancelled={self.cancelled}>"


class _CancellableConnectionMixin:
    """After connecting, re-check the token: cancel() may have run before the
    socket existed, when there was nothing to shut down.

    Also sends the head and a small body of a request in one ``send``
    (urllib3 sends them separately): one system call and one TCP segment
    instead of two, which the server then reads at once.
    """

    sock: Optional[socket.socket]
    _streamkit_hold = False  # the next send() is a request head: keep it for the body
    _streamkit_head: Optional[bytes] = None

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        token = getattr(self, "_streamkit_token", None)
        if token is not None and token.cancelled:
            _shutdown(self)

    def request(self, method: str, url: str, body: Any = None, headers: Any = None,
                **kwargs: Any) -> None:
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


class _StampedSocketIO(socket.SocketIO):
    """A socket's raw reader that notes when each ``recv`` returned.

    ``Chunk.received_ns`` is when the bytes came off the socket. Bytes that
    arrived in the same segment as the headers (a server usually sends the
    head and the first chunk together) sit in the reader's buffer while the
    headers are parsed: their arrival is this stamp, not the time of the
    later ``read1`` that returns them from the buffer.
    """

    last_ns = 0

    def readinto(self, b: Any) -> Optional[int]:
        n = super().readinto(b)
        self.last_ns = time.perf_counter_ns()  # first thing after the recv returns
        return n


class _StampedHTTPResponse(http.client.HTTPResponse):
    """http.client's response reading through a :class:`_StampedSocketIO`."""

    def __init__(self, sock: socket.socket, debuglevel: int = 0,
                 method: Optional[str] = None, url: Optional[str] = None) -> None:
        super().__init__(sock, debuglevel, method, url)
        if isinstance(sock, socket.socket):
            # What sock.makefile("rb") does, with our raw reader; the socket
            # counts its open files (it closes only once they are closed).
            raw = _StampedSocketIO(sock, "rb")
            sock._io_refs += 1  # type: ignore[attr-defined]
            plain, self.fp = self.fp, io.BufferedReader(raw, io.DEFAULT_BUFFER_SIZE)
            plain.close()


class _HTTPConnection(_CancellableConnectionMixin, HTTPConnection):
    response_class = _StampedHTTPResponse


class _HTTPSConnection(_CancellableConnectionMixin, HTTPSConnection):
    response_class = _StampedHTTPResponse


class _CancellablePoolMixin:
    """Registers each connection handed out with the current attempt's token
    and unregisters it when it goes back to the pool (then it may serve
    another stream, which an old token must not shut down)."""

    def _get_conn(self, timeout: Optional[float] = None) -> Any:
        conn = super()._get_conn(timeout)  # type: ignore[misc]
        token: Optional[CancelToken] = getattr(_active, "token", None)
        if token is not None:
            token._attach(conn)
        return conn

    def _put_conn(self, conn: Any) -> None:
        if conn is not None:
            token = getattr(conn, "_streamkit_token", None)
            if token is not None:
                token._detach(conn)
        super()._put_conn(conn)  # type: ignore[misc]


class _HTTPPool(_CancellablePoolMixin, HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(_CancellablePoolMixin, HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


_POOL_CLASSES = {"http": _HTTPPool, "https": _HTTPSPool}


class _Adapter(HTTPAdapter):
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


# --------------------------------------------------------------------------
# chunked transfer decoding


class _Dechunker:
    """Incremental decoder of a chunked body (RFC 9112 §7.1): bytes in, payload out.

    Pure and cheap: one ``feed`` per socket read, however many HTTP chunks
    the read holds. Holds at most one framing line between reads.
    """

    __slots__ = ("_buf", "_left", "_state", "error")

    SIZE, DATA, CRLF, TRAILER, DONE = range(5)

    def __init__(self) -> None:
        self._buf = b""
        self._left = 0
        self._state = self.SIZE
        # Bad framing found after good payload in the same read: the payload
        # is returned first, the error raised by the next feed.
        self.error: Optional[ProtocolError] = None

    @property
    def finished(self) -> bool:
        """The body ended cleanly (the last chunk and the trailers were read)."""
        return self._state == self.DONE and self.error is None

    def feed(self, data: bytes) -> bytes:
        """The payload bytes in ``data``. Raises ProtocolError on bad framing
        (after returning the payload that came before it, if any)."""
        if self.error is not None:
            raise self.error
        out: List[bytes] = []
        try:
            self._feed(data, out)
        except ProtocolError as exc:
            if not any(out):
                raise
            self.error = exc
            self._state = self.DONE  # nothing more is read past bad framing
        return b"".join(out) if len(out) != 1 else out[0]

    def _feed(self, data: bytes, out: List[bytes]) -> None:
        buf = self._buf + data if self._buf else data
        pos, end = 0, len(buf)
        while pos < end and self._state != self.DONE:
            if self._state == self.SIZE:
                pos = self._whole_chunks(buf, pos, out)
                if pos >= end:
                    break
            if self._state == self.DATA:
                take = min(self._left, end - pos)
                out.append(buf[pos:pos + take])
                pos += take
                self._left -= take
                if not self._left:
                    self._state = self.CRLF
            elif self._state == self.CRLF:
                if end - pos < 2:
                    break
                if buf[pos:pos + 2] != b"\r\n":
                    raise ProtocolError("bad chunked encoding from the server: "
                                        "a chunk is longer than its size line says")
                pos += 2
                self._state = self.SIZE
            else:
                nl = buf.find(b"\n", pos)
                if nl < 0:
                    if end - pos > MAX_FRAMING_LINE:
                        raise ProtocolError("bad chunked encoding from the server: "
                                            "a chunk-size line is too long")
                    break
                self._framing_line(buf[pos:nl])
                pos = nl + 1
        self._buf = buf[pos:] if self._state != self.DONE else b""

    @staticmethod
    def _whole_chunks(buf: bytes, pos: int, out: List[bytes]) -> int:
        """Fast path: take the complete, plain chunks of ``buf`` from ``pos`` on.

        One loop turn per chunk (the state machine takes three); anything
        unusual (a partial chunk, an extension, the last chunk, bad framing)
        stops it, and the state machine goes on from the returned offset.
        """
        end = len(buf)
        find = buf.find
        while True:
            nl = find(b"\r\n", pos)
            if nl < 0:
                return pos
            try:
                size = int(buf[pos:nl], 16)
            except ValueError:
                return pos
            start = nl + 2
            stop = start + size
            if size <= 0 or stop + 2 > end or buf[stop:stop + 2] != b"\r\n":
                return pos
            out.append(buf[start:stop])
            pos = stop + 2

    def _framing_line(self, line: bytes) -> None:
        if self._state == self.TRAILER:
            if not line.strip():
                self._state = self.DONE
            return
        size_text = line.split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            size = -1
        if size < 0:
            raise ProtocolError(f"bad chunked encoding from the server: chunk size "
                                f"{size_text[:40]!r} is not a hex number")
        if size == 0:
            self._state = self.TRAILER
        else:
            self._left = size
            self._state = self.DATA


# --------------------------------------------------------------------------
# response


class Response:
    """One streaming HTTP response. Used by one thread at a time (the worker).

    ``status`` and ``headers`` (lower-case keys) are set; the body is read
    with :meth:`read_some` or :meth:`read_body`; ``head_ns`` and ``read_ns``
    (``perf_counter_ns``) are when the headers and the bytes of the last
    read came off the socket. Once the body has been read
    to its end the connection goes back to the pool; :meth:`close` before
    that closes it (a half-read connection is never reused).
    """

    def __init__(self, resp: requests.Response, cancel: CancelToken,
                 body_timeout: Optional[float]) -> None:
        self.status: int = resp.status_code
        self.headers: Mapping[str, str] = {k.lower(): v for k, v in resp.headers.items()}
        self.url: str = resp.url
        self._raw = resp.raw
        self._cancel = cancel
        self._body_timeout = body_timeout
        self._conn = self._raw.connection
        self._fp = self._raw._fp.fp  # type: ignore[union-attr]  # http.client's socket file
        # From the socket file, not the connection: http.client detaches the
        # socket from a connection that will close after this response.
        self._sock: Optional[socket.socket] = getattr(getattr(self._fp, "raw", None),
                                                      "_sock", None)
        if self._sock is not None:
            cancel._attach(self._sock)
        raw = getattr(self._fp, "raw", None)
        self._stamps: Optional[_StampedSocketIO] = (
            raw if isinstance(raw, _StampedSocketIO) else None)
        # When the headers came off the socket, and the bytes of the last read.
        self.head_ns: int = self._stamp()
        self.read_ns: int = self.head_ns
        self._dechunker = _Dechunker() if self._raw.chunked else None
        self._left: Optional[int] = None if self._raw.chunked else self._raw.length_remaining
        self._eof = self._fp is None or self._left == 0
        self._released = False
        if self._eof:
            self._release()

    def __repr__(self) -> str:
        return f"<streamkit Response [{self.status}]>"

    def read_some(self, timeout: Optional[float], *, phase: str = "idle") -> bytes:
        """The body bytes of the next socket read(s), as soon as any arrive.

        Blocks at most ``timeout`` seconds (None: no limit) in all. Returns
        b"" at the clean end of the body (and from then on).

        Raises:
            StreamTimeout: no body bytes within ``timeout`` (``.phase`` is ``phase``).
            StreamInterrupted: the connection was cut or reset, or a chunked
                body or a Content-Length body ended early.
            ProtocolError: bad chunked framing.
            Cancelled: the token was cancelled.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        if self._dechunker is not None and self._dechunker.error is not None:
            raise self._dechunker.error
        while not self._eof:
            data = self._recv(deadline, phase)
            payload = self._payload(data)
            if self._eof:
                self._release()
            if payload:
                return payload
        return b""

    def read_body(self, limit: int = 1 << 20) -> bytes:
        """Up to ``limit`` bytes of the body, for an error reply; best effort.

        Reads until the end of the body, ``limit`` bytes, a timeout (the idle
        timeout per read) or a broken connection, and returns what it got.
        Raises Cancelled only.
        """
        parts: List[bytes] = []
        size = 0
        try:
            while size < limit:
                data = self.read_some(self._body_timeout)
                if not data:
                    break
                parts.append(data)
                size += len(data)
        except Cancelled:
            raise
        except StreamkitError:
            pass  # the status is the news; a torn error body must not hide it
        return b"".join(parts)[:limit]

    def close(self) -> None:
        """Close; a body not read to its end closes the connection. Idempotent."""
        if self._released:
            return
        self._released = True
        self._cancel._detach_all()
        self._raw.close()  # closes the connection too: it is mid-body

    # -- internals -----------------------------------------------------------
    def _recv(self, deadline: Optional[float], phase: str) -> bytes:
        if self._cancel.cancelled:
            raise Cancelled()
        remaining = None
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _timeout(phase)
        try:
            if self._sock is not None:
                self._sock.settimeout(remaining)
            size = READ_SIZE if self._left is None else min(READ_SIZE, self._left)
            data: bytes = self._fp.read1(size)
            self.read_ns = self._stamp()
        except socket.timeout as exc:
            _forget_frames(exc)
            if self._cancel.cancelled:
                raise Cancelled() from exc
            raise _timeout(phase) from exc
        except (OSError, ValueError) as exc:  # ValueError: read on a closed file
            _forget_frames(exc)
            if self._cancel.cancelled:
                raise Cancelled() from exc
            raise StreamInterrupted(
                f"the connection broke mid-stream ({_reason(exc)}); the reply is "
                "incomplete") from exc
        if not data and self._cancel.cancelled:
            raise Cancelled()  # our own shutdown() reads as EOF
        return data

    def _stamp(self) -> int:
        """When the bytes just read came off the socket (now if unknown)."""
        stamps = self._stamps
        if stamps is not None and stamps.last_ns:
            return stamps.last_ns
        return time.perf_counter_ns()

    def _payload(self, data: bytes) -> bytes:
        if self._dechunker is not None:
            if not data:
                raise StreamInterrupted(
                    "the connection closed in the middle of a chunked body; the "
                    "reply is incomplete (the server or a proxy cut it short)")
            payload = self._dechunker.feed(data)
            self._eof = self._dechunker.finished
            return payload
        if self._left is None:  # no length: the body ends when the connection does
            self._eof = not data
            return data
        if not data:
            raise StreamInterrupted(
                f"the connection closed {self._left} bytes before the end of the "
                "body announced by Content-Length; the reply is incomplete")
        self._left -= len(data)
        self._eof = self._left <= 0
        return data

    def _release(self) -> None:
        """The body is complete: hand the connection back to the pool for reuse."""
        if self._released:
            return
        self._released = True
        self._cancel._detach_all()
        original = self._raw._original_response
        if self._left is None and self._dechunker is None:
            self._raw.close()  # read to EOF: the server closed it
            return
        if original is not None:
            if original.will_close:
                self._raw.close()
                return
            original.close()  # the socket file only; the socket stays open
        self._raw.release_conn()


def _timeout(phase: str) -> StreamTimeout:
    what = {"first_token": "the first chunk", "idle": "the next chunk",
            "total": "the end of the stream", "connect": "a connection"}.get(phase, "data")
    return StreamTimeout(f"timed out waiting for {what} ({phase} timeout); raise "
                         f"Timeouts.{phase} if the server is just slow", phase=phase)


# --------------------------------------------------------------------------
# transport


class Transport:
    """HTTP for one Client: a shared connection pool, a Session per thread. Thread-safe.

    ``headers`` are sent with every request; ``api_key`` as
    ``Authorization: Bearer`` (requests drops it on a redirect to another
    host; it never appears in a repr, log line or error message).

    The environment (``HTTP_PROXY``, ``HTTPS_PROXY``, ``ALL_PROXY``,
    ``NO_PROXY``, ``REQUESTS_CA_BUNDLE``, ``CURL_CA_BUNDLE``, ``~/.netrc``)
    is read, with requests' rules, when the Transport first opens a URL, and
    kept for its life: change it before creating the Client. Cookies are
    neither sent nor kept by :meth:`open`.
    """

    def __init__(self, *, pool_size: int = 10, headers: Optional[Mapping[str, str]] = None,
                 api_key: Optional[Secret] = None) -> None:
        if isinstance(pool_size, bool) or not isinstance(pool_size, int) or pool_size < 1:
            raise ConfigError(f"pool_size must be an int >= 1, got {pool_size!r}")
        self._pool_size = pool_size
        self._adapter = _Adapter(pool_connections=DEFAULT_POOLS, pool_maxsize=pool_size,
                                 max_retries=0)
        self._headers: Dict[str, str] = {"User-Agent": _USER_AGENT,
                                         "Accept-Encoding": "identity",
                                         "Content-Type": "application/json"}
        self._headers.update(headers or {})
        self._api_key = api_key
        self._local = threading.local()
        self._targets: Dict[str, _Target] = {}
        self._closed = False

    def __repr__(self) -> str:
        key = "set" if self._api_key is not None else "none"
        return f"<streamkit Transport pool_size={self._pool_size} api_key={key}>"

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def open(self, url: str, body: bytes, *, timeouts: Timeouts,
             cancel: CancelToken) -> Response:
        """POST ``body`` to ``url``; return once the status line and headers are in.

        Blocks for at most ``timeouts.connect`` (connecting) plus
        ``timeouts.first_token`` (waiting for the status line); ``cancel``
        wakes it at once once a socket exists.

        Raises:
            ConnectError: refused, DNS, TLS, or a reset before the status line.
            StreamTimeout: ``phase="connect"`` or ``phase="first_token"``.
            Cancelled: ``cancel`` was cancelled before or during the call.
            RuntimeError: the transport is closed.
        """
        if cancel.cancelled:
            raise Cancelled()
        session = self._session()
        target = self._target(session, url)
        _active.token = cancel
        try:
            resp = target.send(session, body, (timeouts.connect, timeouts.first_token))
        except requests.RequestException as exc:
            cancel._detach_all()
            _forget_frames(exc)
            raise _open_error(exc, url, cancel) from exc
        except BaseException:
            cancel._detach_all()
            raise
        finally:
            _active.token = None
        response = Response(resp, cancel, timeouts.idle or BODY_TIMEOUT_S)
        if cancel.event.is_set():  # cancelled while the headers were being parsed
            response.close()
            raise Cancelled()
        return response

    def request_json(self, method: str, url: str, body: Any = None, *,
                     timeout: float) -> Tuple[int, Any]:
        """A small non-streaming request (``/api/tags``, ``/api/version``, ...).

        Returns ``(status, value)``: the decoded JSON body, or the body as
        text when it is not JSON (``None`` for an empty body). Blocks at
        most about ``timeout`` seconds per phase.

        Raises:
            ConnectError: the server could not be reached or broke the reply.
            StreamTimeout: ``phase="connect"``, or ``"first_token"`` when the
                reply did not come in time.
            RuntimeError: the transport is closed.
        """
        session = self._session()
        data = None if body is None else json.dumps(body).encode("utf-8")
        try:
            resp = session.request(method, url, data=data, timeout=(timeout, timeout))
            content = resp.content
        except requests.RequestException as exc:
            _forget_frames(exc)
            raise _open_error(exc, url, None) from exc
        if not content:
            return resp.status_code, None
        try:
            return resp.status_code, json.loads(content)
        except ValueError:
            return resp.status_code, content.decode("utf-8", "replace")

    def close(self) -> None:
        """Close every pooled connection. Idempotent; in-flight streams end with errors."""
        self._closed = True
        self._adapter.close()

    def _target(self, session: requests.Session, url: str) -> _Target:
        target = self._targets.get(url)
        if target is None:
            if len(self._targets) >= MAX_TARGETS:  # bounded: URLs are hosts x paths
                self._targets.clear()
            target = self._targets[url] = _Target(session, self._adapter, url)
        return target

    def _session(self) -> requests.Session:
        if self._closed:
            raise RuntimeError("this streamkit client (transport) is closed")
        session: Optional[requests.Session] = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.mount("http://", self._adapter)
            session.mount("https://", self._adapter)
            session.headers.update(self._headers)
            if self._api_key is not None:
                session.headers["Authorization"] = f"Bearer {self._api_key.reveal()}"
            self._local.session = session
        return session


_Timeout = Tuple[Any, Any]
"""(connect, read) seconds or None, as requests takes them."""


class _Target:
    """What ``Session.post(url, ...)`` works out for one URL, worked out once.

    ``Session.request`` spends most of a short request's CPU on things that
    cannot change between two POSTs to the same URL: scanning ``os.environ``
    for proxies (twice), looking for ``~/.netrc``, merging the session's
    headers, preparing the URL. This keeps the prepared request (headers
    and authentication included) and the proxy/TLS settings, and each
    request only copies the headers and sets its body. The environment is
    therefore read when a Transport first opens a URL, not on every request.

    Cookies are neither sent nor kept (Ollama and OpenAI-compatible servers
    set none); redirects are followed by the session, as ``Session.post``
    would, so ``Authorization`` never follows a redirect to another host.
    """

    __slots__ = ("_adapter", "_cert", "_headers", "_hooks", "_proxies", "_url", "_verify")

    def __init__(self, session: requests.Session, adapter: HTTPAdapter, url: str) -> None:
        template = session.prepare_request(requests.Request("POST", url, data=b""))
        settings = session.merge_environment_settings(template.url or url, {}, True, None,
                                                      None)
        self._adapter = adapter
        self._url = template.url
        self._headers = template.headers
        self._hooks = template.hooks
        # Typed Any: requests' stubs disagree among their own methods here.
        self._proxies: Any = settings["proxies"]
        self._verify: Any = settings["verify"]
        self._cert: Any = settings["cert"]

    def send(self, session: requests.Session, body: bytes,
             timeout: _Timeout) -> requests.Response:
        """POST ``body``; the response once its headers are in (redirects followed).

        Raises what ``requests`` raises (RequestException and subclasses).
        """
        request = requests.PreparedRequest()
        request.method = "POST"
        request.url = self._url
        headers = self._headers.copy()
        headers["Content-Length"] = str(len(body))
        request.headers = headers
        request.body = body
        request.hooks = self._hooks
        resp = self._adapter.send(request, stream=True, timeout=timeout, verify=self._verify,
                                  cert=self._cert, proxies=self._proxies)
        if resp.is_redirect:
            resp = self._follow(session, resp, request, timeout)
        return resp

    def _follow(self, session: requests.Session, resp: requests.Response,
                request: requests.PreparedRequest,
                timeout: _Timeout) -> requests.Response:
        """Follow redirects as ``Session.send`` does (its limits, its auth stripping)."""
        request._cookies = requests.cookies.RequestsCookieJar()  # type: ignore[attr-defined]
        hops = list(session.resolve_redirects(resp, request, stream=True, timeout=timeout,
                                              verify=self._verify, cert=self._cert,
                                              proxies=self._proxies))
        return hops[-1] if hops else resp


def _forget_frames(exc: BaseException) -> None:
    """Drop the local variables of the finished frames in ``exc``'s tracebacks.

    The translated error keeps ``exc`` as its cause, and a Result keeps the
    error for as long as the caller likes (a batch run keeps thousands): the
    frames of requests/urllib3 would otherwise pin sockets and buffers.
    """
    seen: Set[int] = set()
    current: Optional[BaseException] = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        traceback.clear_frames(current.__traceback__)
        current = current.__cause__ or current.__context__


def _reason(exc: BaseException) -> str:
    """The most specific cause in an exception chain, briefly (never headers)."""
    seen: List[BaseException] = []
    current: Optional[BaseException] = exc
    while current is not None and current not in seen:
        seen.append(current)
        nested = getattr(current, "reason", None)
        if isinstance(nested, BaseException):
            current = nested
            continue
        args = getattr(current, "args", ())
        inner = next((a for a in args if isinstance(a, BaseException)), None)
        current = inner or current.__cause__ or current.__context__
    root = seen[-1]
    text = str(root) or type(root).__name__
    return text if len(text) <= 200 else text[:200] + "..."


def _open_error(exc: requests.RequestException, url: str,
                cancel: Optional[CancelToken]) -> StreamkitError:
    """Translate a requests error raised before the body started."""
    if cancel is not None and cancel.cancelled:
        return Cancelled()
    if isinstance(exc, requests.ConnectTimeout):
        return StreamTimeout(f"could not connect to {_origin(url)} in time (connect "
                             "timeout); check the host, or raise Timeouts.connect",
                             phase="connect")
    if isinstance(exc, requests.ReadTimeout):
        return StreamTimeout(f"{_origin(url)} accepted the request but sent no reply in "
                             "time (first_token timeout); a cold model load can take "
                             "minutes: raise Timeouts.first_token", phase="first_token")
    if isinstance(exc, (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema,
                        requests.exceptions.InvalidSchema)):
        return ConfigError(f"bad URL {url!r}: {_reason(exc)}")
    return ConnectError(f"could not connect to {_origin(url)} ({_reason(exc)}); is the "
                        "server running (`ollama serve`) and the host right?")


def _origin(url: str) -> str:
    """scheme://host:port of a URL (never user info or the query)."""
    scheme, sep, rest = url.partition("://")
    host = rest.split("/", 1)[0].rsplit("@", 1)[-1]
    return f"{scheme}{sep}{host}" if sep else host
