"""One streaming HTTP response, read as the bytes arrive.

:meth:`Response.read_some` returns the bytes of one socket read as soon as
they arrive. It never asks for a fixed amount (``iter_content(512)`` on a
body without chunked encoding waits for 512 bytes, delaying the last line),
and undoes chunked transfer encoding itself (:class:`~.chunked.Dechunker`).

The per-read path is kept to what a stream needs, because with many slow
streams each read carries one small chunk and its fixed cost is the cost
of the stream:

- Once the socket file's buffer is empty (after the first read), the
  response calls the socket's own ``recv``, not the buffered file over
  ``socket.SocketIO`` over the stamped reader (three Python layers), and
  stamps the arrival itself, first thing after the call returns.
- The socket timeout is re-armed only when the time left moves by more
  than :data:`TIMEOUT_SLACK_S`: ``settimeout`` is a system call that also
  releases the GIL, which with hundreds of busy threads means waiting up to
  a switch interval to get it back. A read armed a little early that times
  out before its deadline is simply retried; a deadline is never passed by
  more than the slack.
"""

from __future__ import annotations

import socket
import time
from typing import Any, Callable, List, Mapping, Optional, Tuple

import requests

from ..errors import Cancelled, StreamInterrupted, StreamkitError
from .cancel import CancelToken
from .chunked import Dechunker
from .connection import BUFFER_SIZE, release, socket_file
from .lean import REDIRECTS, Head
from .translate import read_error, timeout_error

__all__ = ["READ_SIZE", "TIMEOUT_SLACK_S", "Response"]

READ_SIZE = 64 * 1024
"""Most bytes one ``read_some`` takes off the socket (bounds memory per read)."""

TIMEOUT_SLACK_S = 0.002
"""How far the armed socket timeout may be from the time a read has left
before it is re-armed (see the module docstring)."""


class Response:
    """One streaming HTTP response. Used by one thread at a time (the worker).

    ``status`` and ``headers`` (lower-case keys) are set; the body is read
    with :meth:`read_some` or :meth:`read_body`; ``head_ns`` and ``read_ns``
    (``perf_counter_ns``) are when the headers and the bytes of the last
    read came off the socket. ``stamped`` is False when the connection could
    not give arrival stamps (a warning was logged): the stamps are then
    taken after each read returns. Once the body has been read to its end
    the connection goes back to the pool; :meth:`close` before that closes
    it (a half-read connection is never reused).
    """

    def __init__(self, resp: requests.Response, cancel: CancelToken,
                 body_timeout: Optional[float], *, secrets: Tuple[bytes, ...] = ()) -> None:
        self.status: int = resp.status_code
        self.headers: Mapping[str, str] = {k.lower(): v for k, v in resp.headers.items()}
        self.url: str = resp.url
        self._raw: Any = resp.raw
        self._give_back: Optional[Callable[[bool], None]] = None
        self._prefetch = b""  # body bytes read with the head (the lean path)
        self._will_close = False
        self._cancel = cancel
        self._body_timeout = body_timeout
        self._secrets = secrets
        self._fp, self._stamps, self._socket = socket_file(self._raw)
        self.stamped: bool = self._stamps is not None
        if self._stamps is not None:
            self._stamps.deadline = None  # the head is in; body reads bound themselves
        # The socket timeout last set (None: blocking), so an unchanged one is
        # not set again; and the socket once it is read directly (see above).
        self._armed: Optional[float] = None
        self._polled_from: Optional[float] = None
        self._direct: Optional[socket.socket] = None
        if self._socket is not None:
            cancel.attach(self._socket)
            self._armed = self._socket.gettimeout()
        # When the headers came off the socket, and the bytes of the last read.
        self.head_ns: int = self._stamp()
        self.read_ns: int = self.head_ns
        self._dechunker = Dechunker() if self._raw.chunked else None
        self._left: Optional[int] = None if self._raw.chunked else self._raw.length_remaining
        self._eof = self._fp is None or self._left == 0
        self._released = False
        if self._eof:
            self._release()

    @classmethod
    def from_socket(cls, head: Head, url: str, sock: socket.socket, cancel: CancelToken,
                    body_timeout: Optional[float], give_back: Callable[[bool], None], *,
                    secrets: Tuple[bytes, ...] = ()) -> Response:
        """A response read straight from ``sock`` (the lean path, :mod:`.lean`).

        ``head.rest`` is returned by the first read; ``give_back(reusable)``
        is called once: True when the body was read to its end and the
        connection may serve another request, False to close it.
        """
        self = cls.__new__(cls)
        self.status, self.headers, self.url = head.status, head.headers, url
        self._raw = None
        self._give_back = give_back
        self._cancel = cancel
        self._body_timeout = body_timeout
        self._secrets = secrets
        self._fp, self._stamps, self._socket = None, None, sock
        self.stamped = True
        self._armed = sock.gettimeout()
        self._polled_from = None
        self._direct = sock
        self._prefetch = head.rest
        self._will_close = head.will_close
        self.head_ns = self.read_ns = head.ns
        self._dechunker = Dechunker() if head.chunked else None
        self._left = None if head.chunked else head.length
        if self._left is not None and len(self._prefetch) > self._left:
            self._prefetch = self._prefetch[:self._left]  # bytes past the body: not reused
            self._will_close = True
        self._eof = self._left == 0
        self._released = False
        if self._eof:
            self._release()
        return self

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
        self._raise_if_broken()
        while not self._eof:
            data = self._recv(deadline, phase)
            payload = self._payload(data)
            if self._eof:
                self._release()
            if payload:
                return payload
        return b""

    # -- reading from a poller thread (see :mod:`.poller`) ---------------------
    def pollable(self) -> Optional[socket.socket]:
        """The plain socket to wait on, or None when this body must be read
        with :meth:`read_some` (TLS or another wrapper may hold bytes a
        readiness check cannot see; the socket file's buffer is not empty
        yet; the body is complete)."""
        sock = self._direct
        if sock is None or self._eof or self._prefetch or type(sock) is not socket.socket:
            return None
        return sock

    def start_polling(self) -> None:
        """Make the socket non-blocking for :meth:`read_ready` (owning thread)."""
        assert self._direct is not None
        self._polled_from = self._armed  # restored after: a pooled socket keeps its state
        self._direct.setblocking(False)
        self._armed = 0.0

    def stop_polling(self) -> None:
        """Back to blocking reads, in the owning thread once the poller let go;
        a body read to its end now returns its connection to the pool."""
        if self._direct is not None and self._armed == 0.0:
            self._direct.settimeout(self._polled_from)
            self._armed = self._polled_from
        if self._eof:
            self._release()

    @property
    def complete(self) -> bool:
        """The body has been read to its end."""
        return self._eof

    @property
    def is_redirect(self) -> bool:
        """A redirect with somewhere to go, which requests would follow."""
        return self.status in REDIRECTS and "location" in self.headers

    @property
    def broken(self) -> bool:
        """The framing broke after bytes already returned: the next read raises
        the error (:meth:`read_some` does, at once, without waiting)."""
        return self._dechunker is not None and self._dechunker.error is not None

    def read_ready(self) -> Optional[bytes]:
        """One non-blocking read after the poller saw the socket readable.

        Returns the body bytes it carried, b"" at the clean end of the body,
        or None when there was nothing (yet) for the caller: no bytes after
        all, or chunk framing only. Unlike :meth:`read_some` the connection
        is not handed back at the end: :meth:`stop_polling` does that in the
        owning thread, after the poller stopped watching the socket.

        Raises what :meth:`read_some` raises, but never StreamTimeout.
        """
        if self._cancel.cancelled:
            raise Cancelled()
        self._raise_if_broken()
        assert self._direct is not None
        size = READ_SIZE if self._left is None else min(READ_SIZE, self._left)
        try:
            data: bytes = self._direct.recv(size)
        except BlockingIOError:
            return None  # readiness that another read already used up
        except (OSError, ValueError) as exc:
            raise read_error(exc, self._cancel, "idle") from exc
        self.read_ns = time.perf_counter_ns()
        if not data and self._cancel.cancelled:
            raise Cancelled()  # our own shutdown() reads as EOF
        payload = self._payload(data)
        if payload or self._eof:
            return payload
        return None

    def read_body(self, limit: int = 1 << 20) -> bytes:
        """Up to ``limit`` bytes of the body, for an error reply; best effort.

        Reads until the end of the body, ``limit`` bytes, a timeout (the idle
        timeout per read) or a broken connection, and returns what it got,
        redacted (:meth:`redact`): it becomes an error message. Raises
        Cancelled only.
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
        return self.redact(b"".join(parts)[:limit])

    def redact(self, body: bytes) -> bytes:
        """``body`` with every credential the request carried replaced by ``***``."""
        for secret in self._secrets:
            if secret in body:
                body = body.replace(secret, b"***")
        return body

    def close(self) -> None:
        """Close; a body not read to its end closes the connection. Idempotent."""
        if self._released:
            return
        self._released = True
        self._cancel.detach_all()
        if self._give_back is not None:
            self._give_back(False)
        else:
            self._raw.close()  # closes the connection too: it is mid-body

    # -- internals -----------------------------------------------------------
    def _raise_if_broken(self) -> None:
        """Raise the framing error a read before this one ran into (see :attr:`broken`)."""
        if self._dechunker is not None and self._dechunker.error is not None:
            raise self._dechunker.error

    def _recv(self, deadline: Optional[float], phase: str) -> bytes:
        if self._cancel.cancelled:
            raise Cancelled()
        if self._prefetch:
            prefetched, self._prefetch = self._prefetch, b""
            return prefetched  # read_ns is the head's: they came off the socket together
        sock = self._direct
        size = READ_SIZE if self._left is None else min(READ_SIZE, self._left)
        while True:
            remaining = None
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise timeout_error(phase)
            try:
                if sock is not None:
                    if not _armed_for(self._armed, remaining, TIMEOUT_SLACK_S):
                        sock.settimeout(remaining)
                        self._armed = remaining
                    data: bytes = sock.recv(size)
                    self.read_ns = time.perf_counter_ns()
                else:
                    data = self._read_file(remaining, size)
            except socket.timeout as exc:
                if sock is not None and deadline is not None and time.monotonic() < deadline:
                    continue  # armed a little early (within the slack): wait out the rest
                raise read_error(exc, self._cancel, phase) from exc
            except (OSError, ValueError) as exc:  # ValueError: read on a closed file
                raise read_error(exc, self._cancel, phase) from exc
            if not data and self._cancel.cancelled:
                raise Cancelled()  # our own shutdown() reads as EOF
            return data

    def _read_file(self, remaining: Optional[float], size: int) -> bytes:
        """One read through the socket file: the bytes buffered with the headers,
        else one ``recv``. A read of at least the file's buffer size leaves that
        buffer empty, so from then on the socket is read directly."""
        # Never armed early here: a timed-out socket file cannot be read again.
        if self._socket is not None and not _armed_for(self._armed, remaining, 0.0):
            self._socket.settimeout(remaining)
            self._armed = remaining
        data: bytes = self._fp.read1(size)
        self.read_ns = self._stamp()
        if self._stamps is not None and size >= BUFFER_SIZE:
            self._direct = self._socket
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
        self._cancel.detach_all()
        close_delimited = self._left is None and self._dechunker is None
        if self._give_back is not None:
            self._give_back(not (close_delimited or self._will_close))
        else:
            release(self._raw, close_delimited=close_delimited)


def _armed_for(armed: Optional[float], remaining: Optional[float], early: float) -> bool:
    """Whether a socket timeout of ``armed`` will do for a read with ``remaining``
    seconds left: it expires at most TIMEOUT_SLACK_S late and ``early`` early."""
    if armed is None or remaining is None:
        return armed is remaining
    return -early <= armed - remaining <= TIMEOUT_SLACK_S
