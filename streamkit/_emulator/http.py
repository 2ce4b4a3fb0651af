"""A minimal HTTP/1.1 server connection as an asyncio Protocol.

Why a Protocol and not asyncio streams: the emulator must notice a client
that leaves at any moment (while queued, during the first-token delay, in a
stall), must honour flow control, and must write large slabs fast. A
Protocol gets ``eof_received``/``connection_lost``/``pause_writing``
callbacks directly, and every wait below wakes on whichever comes first.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from email.utils import formatdate
from http import HTTPStatus
from typing import Callable, Dict, List, Optional, Sequence, Tuple

__all__ = ["BadRequest", "Conn", "Request", "chunk", "head", "status_line"]

HIGH_WATER = 256 * 1024  # bytes buffered before pause_writing (flow control)
MAX_HEAD = 64 * 1024
MAX_BODY = 64 * 1024 * 1024
TERMINATOR = b"0\r\n\r\n"


class BadRequest(Exception):
    """The bytes on the connection are not an HTTP/1.1 request we can serve."""


class Request:
    """One parsed request. ``headers`` keys are lower-case."""

    __slots__ = ("body", "headers", "keep_alive", "method", "path", "target", "version")

    def __init__(self, method: str, target: str, version: str,
                 headers: Dict[str, str], body: bytes) -> None:
        self.method = method
        self.target = target
        self.path = target.split("?", 1)[0]
        self.version = version
        self.headers = headers
        self.body = body
        connection = headers.get("connection", "").lower()
        self.keep_alive = ("close" not in connection if version == "HTTP/1.1"
                           else "keep-alive" in connection)


def status_line(code: int) -> bytes:
    try:
        phrase = HTTPStatus(code).phrase
    except ValueError:
        phrase = "Status"
    return f"HTTP/1.1 {code} {phrase}\r\n".encode()


def head(code: int, headers: Sequence[Tuple[str, str]]) -> bytes:
    """Status line and headers (Date added; sorted by name like Go's server)."""
    items = sorted([*headers, ("Date", formatdate(usegmt=True))])
    return status_line(code) + "".join(f"{k}: {v}\r\n" for k, v in items).encode() + b"\r\n"


def chunk(data: bytes) -> bytes:
    """One HTTP/1.1 chunk of chunked transfer encoding."""
    return b"%x\r\n%b\r\n" % (len(data), data)


def _parse_head(raw: bytes) -> Tuple[str, str, str, Dict[str, str]]:
    try:
        text = raw.decode("latin-1")
    except UnicodeDecodeError as exc:  # pragma: no cover - latin-1 decodes anything
        raise BadRequest("bad header bytes") from exc
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise BadRequest(f"malformed request line {lines[0]!r}")
    headers: Dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise BadRequest(f"malformed header line {line!r}")
        headers[name.lower()] = value.strip()
    return parts[0], parts[1], parts[2], headers


def _parse_chunked(buf: bytearray, start: int) -> Optional[Tuple[bytes, int]]:
    """(body, end offset) of a complete chunked body at ``start``, or None if incomplete."""
    body = bytearray()
    pos = start
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        try:
            size = int(bytes(buf[pos:eol]).split(b";", 1)[0], 16)
        except ValueError:
            raise BadRequest("bad chunk size") from None
        if size == 0:
            end = buf.find(b"\r\n\r\n", eol)
            return (bytes(body), end + 4) if end >= 0 else None
        if len(buf) < eol + 2 + size + 2:
            return None
        body += buf[eol + 2:eol + 2 + size]
        pos = eol + 2 + size + 2
        if len(body) > MAX_BODY:
            raise BadRequest("body too large")


class Conn(asyncio.Protocol):
    """One client connection. Runs entirely on the emulator's event loop."""

    def __init__(self, on_open: Callable[[Conn], None], on_lost: Callable[[Conn], None]) -> None:
        self._on_open = on_open
        self._on_lost = on_lost
        self._buf = bytearray()
        self._continue_sent = False
        self._paused = False
        self._wakers: List[asyncio.Future[None]] = []
        self.transport: Optional[asyncio.Transport] = None
        self.closed = False

    # -- asyncio.Protocol callbacks -------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.set_write_buffer_limits(high=HIGH_WATER)
        self._on_open(self)

    def data_received(self, data: bytes) -> None:
        self._buf += data
        self._wake()

    def eof_received(self) -> bool:
        # Like Go's server, a read EOF means the client has gone: cancel its work.
        self._mark_closed()
        return False

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self._mark_closed()
        self._on_lost(self)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._wake()

    # -- waiting --------------------------------------------------------------------
    def _mark_closed(self) -> None:
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        wakers, self._wakers = self._wakers, []
        for fut in wakers:
            if not fut.done():
                fut.set_result(None)

    async def park(self, other: Optional[asyncio.Future[object]] = None,
                   deadline: Optional[float] = None) -> None:
        """Wait for any connection event, ``other`` done, or loop time ``deadline``."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._wakers.append(fut)
        handle = None if deadline is None else loop.call_at(deadline, _resolve, fut)

        def on_other(_: object) -> None:
            _resolve(fut)
        if other is not None:
            other.add_done_callback(on_other)
        try:
            await fut
        finally:
            if handle is not None:
                handle.cancel()
            if other is not None:
                other.remove_done_callback(on_other)

    async def sleep_until(self, deadline: float) -> bool:
        """Sleep until loop time ``deadline``; False as soon as the client leaves."""
        loop = asyncio.get_running_loop()
        while not self.closed and loop.time() < deadline:
            await self.park(deadline=deadline)
        return not self.closed

    async def wait_future(self, other: asyncio.Future[object]) -> bool:
        """Wait for ``other``; False (and ``other`` untouched) if the client leaves first."""
        while not self.closed and not other.done():
            await self.park(other=other)
        return other.done() and not self.closed

    async def wait_closed(self) -> None:
        """Block until the client leaves (used by stall)."""
        while not self.closed:
            await self.park()

    async def drain(self) -> bool:
        """Wait while the write buffer is over the high-water mark; False if closed."""
        while self._paused and not self.closed:
            await self.park()
        return not self.closed

    # -- reading --------------------------------------------------------------------
    async def read_request(self) -> Optional[Request]:
        """The next request, or None when the client closed the connection.

        Raises:
            BadRequest: the bytes are not a request (the caller answers 400).
        """
        while True:
            request = self._try_parse()
            if request is not None:
                return request
            if self.closed:
                return None
            await self.park()

    def _try_parse(self) -> Optional[Request]:
        end = self._buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buf) > MAX_HEAD:
                raise BadRequest("request head too large")
            return None
        method, target, version, headers = _parse_head(bytes(self._buf[:end]))
        start = end + 4
        if "chunked" in headers.get("transfer-encoding", "").lower():
            parsed = _parse_chunked(self._buf, start)
            if parsed is None:
                self._maybe_continue(headers)
                return None
            body, stop = parsed
        else:
            length = self._content_length(headers)
            if len(self._buf) < start + length:
                self._maybe_continue(headers)
                return None
            body, stop = bytes(self._buf[start:start + length]), start + length
        del self._buf[:stop]
        self._continue_sent = False
        return Request(method, target, version, headers, body)

    @staticmethod
    def _content_length(headers: Dict[str, str]) -> int:
        try:
            length = int(headers.get("content-length", "0"))
        except ValueError:
            raise BadRequest("bad Content-Length") from None
        if not 0 <= length <= MAX_BODY:
            raise BadRequest("bad Content-Length")
        return length

    def _maybe_continue(self, headers: Dict[str, str]) -> None:
        if not self._continue_sent and headers.get("expect", "").lower() == "100-continue":
            self._continue_sent = True
            self.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    # -- writing and closing ------------------------------------------------------
    def write(self, data: bytes) -> None:
        if not self.closed and self.transport is not None:
            self.transport.write(data)

    def close(self) -> None:
        """Flush what is buffered, then close (FIN)."""
        self.closed = True
        if self.transport is not None:
            self.transport.close()
        self._wake()

    def abort(self) -> None:
        """Close at once, dropping buffered data."""
        self.closed = True
        if self.transport is not None:
            self.transport.abort()
        self._wake()

    def reset(self) -> None:
        """Close with an RST (SO_LINGER 0) instead of a FIN."""
        if self.transport is not None:
            sock = self.transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.abort()


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
