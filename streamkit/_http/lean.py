"""Lean HTTP/1.1: a streaming POST over plain TCP, without requests' layers.

Opening a short streaming request through requests, urllib3 and http.client
costs about 1 ms of CPU (``benchmarks/request_cost.py``, per request: 1.3 ms
that way, 0.5 ms this way, 0.26 ms for the bare exchange written by hand),
and with hundreds of streams starting at once that cost is the start burst:
every stream waits for the GIL behind every other one's request. So the common case is done
here directly: ``http://``, no proxy, keep-alive sockets pooled per host.
What requests works out once per URL (headers, ``~/.netrc``, the proxy
decision) still comes from requests (``transport._Target``), and anything
unusual goes back to it: TLS and proxies never come here, and a redirect is
followed by requests' own code from the reply read here.

What this module promises, as the requests path does: the head and a small
body go out in one ``send``; the head must be in within ``first_token``
seconds in all however it trickles in (1xx replies skipped); ``cancel``
shuts the socket down in every phase once it exists; the body is read by
:class:`~.response.Response` straight from the socket; a connection goes
back to the pool only once its body was read to the end.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Dict, List, Mapping, Optional, Tuple
from urllib.parse import urlsplit

from ..errors import Cancelled, ConnectError
from .cancel import CancelToken
from .translate import connect_failed, connect_timed_out, no_reply_in_time

__all__ = ["MAX_HEAD", "REDIRECTS", "Head", "Key", "LeanPool", "LeanTarget", "connect", "exchange"]

MAX_HEAD = 64 * 1024
"""Largest reply head (status line and headers) accepted."""

_READ = 64 * 1024
REDIRECTS = frozenset((301, 302, 303, 307, 308))
"""Statuses requests follows (with a Location header)."""

Key = Tuple[str, int]


class Head:
    """A parsed reply head; ``rest`` holds the body bytes read with it."""

    __slots__ = ("chunked", "headers", "length", "ns", "rest", "status", "will_close")

    def __init__(self, status: int, headers: Dict[str, str], rest: bytes, ns: int,
                 http10: bool, url: str) -> None:
        self.status = status
        self.headers = headers
        self.rest = rest
        self.ns = ns
        self.chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        self.length: Optional[int] = None
        if not self.chunked and "content-length" in headers:
            try:
                self.length = int(headers["content-length"].split(",")[0])
            except ValueError as exc:
                raise _broken(url, f"a bad Content-Length {headers['content-length']!r}") \
                    from exc
        if status in (204, 304) or 100 <= status < 200:
            self.length = 0
        connection = headers.get("connection", "").lower()
        self.will_close = ("close" in connection or (http10 and "keep-alive" not in connection)
                           or (not self.chunked and self.length is None))


class LeanTarget:
    """One URL: where to connect and the request head but its length, encoded once.

    Raises ValueError for headers http.client would refuse to encode (then
    requests' path is used).
    """

    __slots__ = ("key", "prefix", "url")

    def __init__(self, url: str, headers: Mapping[str, object]) -> None:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port or 80
        self.key: Key = (host, port)
        self.url = url
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        name = f"[{host}]" if ":" in host else host
        lines = [f"POST {path} HTTP/1.1", f"Host: {name if port == 80 else f'{name}:{port}'}"]
        for key, value in headers.items():
            if key.lower() in ("host", "content-length"):
                continue
            text = value.decode("latin-1") if isinstance(value, bytes) else str(value)
            if "\r" in text or "\n" in text or "\r" in key or "\n" in key:
                raise ValueError("a header with a line break")
            lines.append(f"{key}: {text}")
        self.prefix = ("\r\n".join(lines) + "\r\nContent-Length: ").encode("latin-1")

    def request(self, body: bytes) -> bytes:
        return self.prefix + str(len(body)).encode() + b"\r\n\r\n" + body


class LeanPool:
    """Idle keep-alive sockets per host, at most ``size`` each. Thread-safe."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._idle: Dict[Key, List[socket.socket]] = {}
        self._lock = threading.Lock()
        self._closed = False

    def take(self, key: Key) -> Optional[socket.socket]:
        """An idle socket to ``key`` that the server has not closed, or None."""
        while True:
            with self._lock:
                idle = self._idle.get(key)
                if not idle:
                    return None
                sock = idle.pop()
            if _alive(sock):
                return sock
            sock.close()

    def give(self, key: Key, sock: socket.socket) -> None:
        """Keep ``sock`` for the next request to ``key`` (or close it: pool
        full or closed)."""
        with self._lock:
            if not self._closed:
                idle = self._idle.setdefault(key, [])
                if len(idle) < self._size:
                    idle.append(sock)
                    return
        sock.close()

    def close(self) -> None:
        """Close every idle socket; sockets given back later are closed. Idempotent."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, {}
        for socks in idle.values():
            for sock in socks:
                sock.close()


def _alive(sock: socket.socket) -> bool:
    """Nothing to read on an idle keep-alive socket: the server has not closed it
    (an end of file, or bytes nobody asked for, and it is no use)."""
    try:
        sock.setblocking(False)
        sock.recv(1, socket.MSG_PEEK)
    except BlockingIOError:
        return True
    except OSError:
        return False
    return False


def connect(target: LeanTarget, timeout: Optional[float], cancel: CancelToken) -> socket.socket:
    """A new connection to ``target``, registered with ``cancel``.

    Raises ConnectError, StreamTimeout(phase="connect"), Cancelled.
    """
    if cancel.cancelled:
        raise Cancelled()
    try:
        sock = socket.create_connection(target.key, timeout)
    except socket.timeout as exc:
        raise connect_timed_out(target.url) from exc
    except OSError as exc:
        raise connect_failed(target.url, exc) from exc
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as urllib3 does
    cancel.attach(sock)  # shut down at once if cancelled meanwhile
    return sock


def exchange(sock: socket.socket, target: LeanTarget, body: bytes,
             head_timeout: Optional[float], cancel: CancelToken, *,
             reused: bool = False) -> Optional[Head]:
    """Send the request; read the reply head within ``head_timeout`` in all.

    Returns None when ``sock`` was ``reused`` from the pool and the server
    had closed it: it broke before a byte of reply came (send it again on a
    new connection). Raises ConnectError (reset, closed or malformed before
    the head was in), StreamTimeout(phase="first_token"), Cancelled. The
    caller closes ``sock`` on error and on None.
    """
    deadline = None if head_timeout is None else time.monotonic() + head_timeout
    buf = b""
    try:
        sock.settimeout(head_timeout)
        sock.sendall(target.request(body))
        while True:
            end = buf.find(b"\r\n\r\n")
            if end >= 0:
                head = _parse(buf[:end], buf[end + 4:], time.perf_counter_ns(), target.url)
                if head is not None:
                    return head
                buf = buf[end + 4:]  # a 1xx reply: the real one follows
                continue
            if len(buf) > MAX_HEAD:
                raise _broken(target.url, f"a reply head over {MAX_HEAD} bytes")
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise socket.timeout("timed out")
                sock.settimeout(left)
            data = sock.recv(_READ)
            if not data:
                if cancel.cancelled:
                    raise Cancelled()
                if reused and not buf:
                    return None
                raise _broken(target.url, "the server closed the connection without a reply")
            buf += data
    except socket.timeout as exc:
        if cancel.cancelled:
            raise Cancelled() from exc
        raise no_reply_in_time(target.url) from exc
    except OSError as exc:
        if cancel.cancelled:
            raise Cancelled() from exc
        if reused and not buf and isinstance(exc, (ConnectionResetError, BrokenPipeError)):
            return None
        raise connect_failed(target.url, exc) from exc


def _parse(raw: bytes, rest: bytes, ns: int, url: str) -> Optional[Head]:
    """The head in ``raw`` (without its blank line), or None for a 1xx reply.

    Raises ConnectError for a reply that is not HTTP/1.x or a malformed one,
    as requests' path does.
    """
    lines = raw.decode("latin-1").split("\r\n")
    version, _, tail = lines[0].partition(" ")
    code = tail[:3]
    if not version.startswith("HTTP/1.") or len(code) != 3 or not code.isdigit():
        raise _broken(url, f"not an HTTP/1.x status line: {lines[0][:80]!r}")
    status = int(code)
    if 100 <= status < 200 and status != 101:
        return None
    headers: Dict[str, str] = {}
    last = ""
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and last:  # an obsolete folded continuation
            headers[last] += " " + line.strip()
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise _broken(url, f"a malformed header line {line[:80]!r}")
        last = name.lower()
        value = value.strip()
        headers[last] = f"{headers[last]}, {value}" if last in headers else value
    return Head(status, headers, rest, ns, version == "HTTP/1.0", url)


def _broken(url: str, why: str) -> ConnectError:
    """The reply broke before its head was in: ``why``, as the error's cause
    (requests' path chains the http.client error the same way)."""
    cause = ConnectionError(why)
    error = connect_failed(url, cause)
    error.__cause__ = cause
    return error
