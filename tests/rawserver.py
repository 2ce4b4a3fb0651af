"""A byte-level, scriptable, misbehaving HTTP/1.1 server for tests.

The emulator speaks the protocol faithfully; this server lets a test write
*any* bytes: a reset before the status line, a truncated chunked body, a
half-written line, a 64 MiB line, a stall, headers that never come. Each
request is handed to a *handler* running in its own thread::

    def handler(conn: RawConn) -> None:
        conn.send_head(200, {"Content-Type": "application/x-ndjson"})
        conn.send_chunk(b'{"response":"hi","done":false}\\n')
        conn.stall()                      # until the client leaves or the server closes

    with RawServer(handler) as server:
        ...  server.url, server.requests, server.disconnects.wait(1.0)

Both wire dialects can be spoken: :class:`Wire` builds the records of
Ollama's NDJSON (``/api/chat``, ``/api/generate``) or of the OpenAI SSE
stream (``/v1/chat/completions``, ``/v1/completions``: ``data: {...}``
events, a finish chunk, ``data: [DONE]``), so one misbehaving handler can be
written once and run over either.

Nothing here blocks forever: every wait has a timeout or wakes when the
server closes, and ``close()`` shuts every connection down and joins every
thread it started (the leak-check fixture stays happy).
"""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

__all__ = ["NDJSON", "SSE", "SSE_DONE", "Counter", "RawConn", "RawRequest", "RawServer",
           "Wire", "chunk", "ndjson_handler", "sse_event", "sse_handler", "wire_handler"]

NDJSON = "application/x-ndjson"
SSE = "text/event-stream"
SSE_DONE = b"data: [DONE]\n\n"

HEAD_LIMIT = 64 * 1024
JOIN_TIMEOUT_S = 5.0
WAIT_SLICE_S = 0.05


@dataclass
class RawRequest:
    """One parsed request: method, path, lower-cased headers, body."""

    method: str
    path: str
    headers: Dict[str, str] = field(default_factory=dict)
    body: bytes = b""


class Counter:
    """A thread-safe counter with a wait-until helper."""

    def __init__(self) -> None:
        self._value = 0
        self._cond = threading.Condition()

    @property
    def value(self) -> int:
        return self._value

    def add(self, n: int = 1) -> None:
        with self._cond:
            self._value += n
            self._cond.notify_all()

    def wait(self, timeout: float, at_least: int = 1) -> bool:
        """True once the count reaches ``at_least``; False after ``timeout`` seconds."""
        with self._cond:
            return self._cond.wait_for(lambda: self._value >= at_least, timeout)


def chunk(data: bytes) -> bytes:
    """``data`` framed as one HTTP/1.1 chunk."""
    return b"%x\r\n%s\r\n" % (len(data), data)


class RawConn:
    """The server side of one request: write bytes, stall, reset, watch for a disconnect."""

    def __init__(self, sock: socket.socket, request: RawRequest, server: RawServer) -> None:
        self.sock = sock
        self.request = request
        self._server = server
        self.keep_alive = True  # a handler may set False to close after it returns
        self.disconnected = False

    # -- writing -------------------------------------------------------------
    def send(self, data: bytes) -> bool:
        """Write raw bytes. False (and counts a disconnect) if the client is gone."""
        try:
            self.sock.sendall(data)
            return True
        except OSError:
            self._server._note_disconnect(self)
            return False

    def send_head(self, status: int = 200, headers: Optional[Mapping[str, str]] = None,
                  *, chunked: bool = True, reason: str = "OK") -> bool:
        """Status line and headers; adds ``Transfer-Encoding: chunked`` unless told not to."""
        lines = [f"HTTP/1.1 {status} {reason}"]
        hdrs = dict(headers or {})
        if chunked:
            hdrs.setdefault("Transfer-Encoding", "chunked")
        lines += [f"{k}: {v}" for k, v in hdrs.items()]
        return self.send(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))

    def send_chunk(self, data: bytes) -> bool:
        return self.send(chunk(data)) if data else True

    def end_chunks(self) -> bool:
        """The zero-size chunk that ends a chunked body."""
        return self.send(b"0\r\n\r\n")

    def respond(self, status: int, body: bytes,
                headers: Optional[Mapping[str, str]] = None) -> bool:
        """A complete reply with Content-Length."""
        hdrs = {"Content-Length": str(len(body)), **(headers or {})}
        return self.send_head(status, hdrs, chunked=False) and self.send(body)

    # -- misbehaving ---------------------------------------------------------
    def reset(self) -> None:
        """Abort the connection with a TCP RST (SO_LINGER 0, then close)."""
        self.keep_alive = False
        with contextlib.suppress(OSError):
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()  # no shutdown first: that would send a FIN, not a RST

    def cut(self) -> None:
        """Close the connection cleanly (FIN) wherever the reply is."""
        self.keep_alive = False
        self._server._drop(self.sock)

    def stall(self, timeout: float = 30.0) -> bool:
        """Send nothing until the client disconnects (True) or the server closes or
        ``timeout`` passes (False). Counts the disconnect."""
        self.keep_alive = False
        return self.wait_disconnect(timeout)

    def wait_disconnect(self, timeout: float) -> bool:
        """True once the client has closed its side (EOF or error on read)."""
        deadline = time.monotonic() + timeout
        while not self._server.closing.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if self._peer_gone(min(remaining, WAIT_SLICE_S)):
                self._server._note_disconnect(self)
                return True
        return False

    def _peer_gone(self, timeout: float) -> bool:
        try:
            self.sock.settimeout(timeout)
            data = self.sock.recv(65536)
        except socket.timeout:
            return False
        except OSError:
            return True
        return not data  # any pipelined bytes are ignored: tests send one request

    def closed_by_server(self) -> bool:
        return self._server.closing.is_set()


Handler = Callable[[RawConn], None]


class RawServer:
    """A threaded server on 127.0.0.1, port 0; one handler thread per connection.

    ``requests`` lists every parsed request, ``connections`` counts accepted
    connections and ``disconnects`` counts client disconnects a handler saw
    (while stalled or writing). ``handler`` may also be a list: request *n*
    (0-based, in arrival order) uses ``handler[min(n, len - 1)]``.
    """

    def __init__(self, handler: Union[Handler, List[Handler]], *,
                 host: str = "127.0.0.1") -> None:
        self.handlers = handler if isinstance(handler, list) else [handler]
        self.requests: List[RawRequest] = []
        self.connections = Counter()
        self.disconnects = Counter()
        self.closing = threading.Event()
        self._lock = threading.Lock()
        self._socks: List[socket.socket] = []
        self._threads: List[threading.Thread] = []
        self._listener = socket.create_server((host, 0))
        self._listener.settimeout(WAIT_SLICE_S)
        self.host, self.port = self._listener.getsockname()[:2]
        self.url = f"http://{host}:{self.port}"
        self._acceptor = threading.Thread(target=self._accept_loop, name="rawserver-accept",
                                          daemon=True)
        self._acceptor.start()

    def __enter__(self) -> RawServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop accepting, shut every connection down, join every thread. Idempotent."""
        self.closing.set()
        self._acceptor.join(JOIN_TIMEOUT_S)
        with self._lock:
            socks, threads = list(self._socks), list(self._threads)
        for s in socks:
            self._drop(s)
        for t in threads:
            t.join(JOIN_TIMEOUT_S)
        self._listener.close()

    # -- internals -----------------------------------------------------------
    def _accept_loop(self) -> None:
        while not self.closing.is_set():
            try:
                sock, _ = self._listener.accept()
            except (socket.timeout, OSError):
                continue
            # every write goes out at once, as a streaming server's do (Nagle would
            # hold a small write back until the previous one is acknowledged)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.connections.add()
            t = threading.Thread(target=self._serve, args=(sock,), daemon=True,
                                 name=f"rawserver-conn-{self.connections.value}")
            with self._lock:
                self._socks.append(sock)
                self._threads.append(t)
            t.start()

    def _serve(self, sock: socket.socket) -> None:
        buf = b""
        try:
            while not self.closing.is_set():
                parsed = self._read_request(sock, buf)
                if parsed is None:
                    return
                request, buf = parsed
                with self._lock:
                    index = len(self.requests)
                    self.requests.append(request)
                conn = RawConn(sock, request, self)
                self.handlers[min(index, len(self.handlers) - 1)](conn)
                if not conn.keep_alive:
                    return
        finally:
            self._drop(sock)

    def _read_request(self, sock: socket.socket,
                      buf: bytes) -> Optional[Tuple[RawRequest, bytes]]:
        while b"\r\n\r\n" not in buf:
            data = self._recv(sock)
            if not data or len(buf) > HEAD_LIMIT:
                return None
            buf += data
        head, _, rest = buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, path, _ = ([*lines[0].split(" ", 2), "", ""])[:3]
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0") or 0)
        while len(rest) < length:
            data = self._recv(sock)
            if not data:
                return None
            rest += data
        return RawRequest(method, path, headers, rest[:length]), rest[length:]

    def _recv(self, sock: socket.socket) -> bytes:
        while not self.closing.is_set():
            try:
                sock.settimeout(WAIT_SLICE_S)
                return sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return b""
        return b""

    def _note_disconnect(self, conn: RawConn) -> None:
        with self._lock:
            if conn.disconnected:
                return
            conn.disconnected = True
        self.disconnects.add()

    def _drop(self, sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()


def ndjson_handler(lines: List[bytes], *, status: int = 200,
                   content_type: str = "application/x-ndjson") -> Handler:
    """A handler that sends each line (a newline is added) as one chunk, then ends."""
    def handler(conn: RawConn) -> None:
        conn.send_head(status, {"Content-Type": content_type})
        for line in lines:
            if not conn.send_chunk(line + b"\n"):
                return
        conn.end_chunks()
    return handler


# -- SSE (the OpenAI dialect) -----------------------------------------------------

def sse_event(data: Union[bytes, Mapping[str, Any]]) -> bytes:
    """One SSE event: ``data: <json>`` and the blank line that ends it."""
    payload = data if isinstance(data, bytes) else json.dumps(data).encode()
    return b"data: " + payload + b"\n\n"


def sse_handler(events: List[bytes], *, status: int = 200, done: bool = True) -> Handler:
    """A handler that sends each (already framed) event as one chunk, then
    ``data: [DONE]`` unless ``done`` is False, then ends the body."""
    def handler(conn: RawConn) -> None:
        conn.send_head(status, {"Content-Type": SSE, "Cache-Control": "no-cache"})
        for event in events + ([SSE_DONE] if done else []):
            if not conn.send_chunk(event):
                return
        conn.end_chunks()
    return handler


class Wire:
    """The records of one dialect (``ollama`` | ``openai``) and endpoint (``chat`` |
    ``generate``), each returned framed and ready to send (NDJSON line with its
    newline, or SSE event with its blank line).

    ``usage`` (openai) decides whether the end carries a usage chunk; a server
    like llama.cpp's that ignores ``stream_options.include_usage`` sends none.
    """

    def __init__(self, dialect: str, endpoint: str, model: str = "demo", *,
                 usage: bool = True) -> None:
        if dialect not in ("ollama", "openai") or endpoint not in ("chat", "generate"):
            raise ValueError(f"no wire for {dialect!r} {endpoint!r}")
        self.dialect, self.endpoint, self.model, self.usage = dialect, endpoint, model, usage
        self.content_type = SSE if dialect == "openai" else NDJSON

    def token(self, text: str) -> bytes:
        """One record carrying ``text``."""
        if self.dialect == "ollama":
            return self._ollama(text, done=False)
        return sse_event(self._openai(text, None))

    def end(self, tokens: int = 0, reason: str = "stop") -> bytes:
        """The closing records: Ollama's ``done`` record (with ``eval_count``), or
        the finish chunk, the usage chunk (when ``usage``) and ``data: [DONE]``."""
        if self.dialect == "ollama":
            return self._ollama("", done=True, reason=reason, tokens=tokens)
        out = sse_event(self._openai("", reason))
        if self.usage:
            out += sse_event({**self._base(), "choices": [], "usage": {
                "prompt_tokens": 8, "completion_tokens": tokens,
                "total_tokens": 8 + tokens}})
        return out + SSE_DONE

    def _ollama(self, text: str, *, done: bool, reason: str = "stop",
                tokens: int = 0) -> bytes:
        record: Dict[str, Any] = {"model": self.model}
        if self.endpoint == "chat":
            record["message"] = {"role": "assistant", "content": text}
        else:
            record["response"] = text
        record["done"] = done
        if done:
            record.update(done_reason=reason, eval_count=tokens, prompt_eval_count=8)
        return json.dumps(record).encode() + b"\n"

    def _base(self) -> Dict[str, Any]:
        chat = self.endpoint == "chat"
        return {"id": "chatcmpl-raw" if chat else "cmpl-raw",
                "object": "chat.completion.chunk" if chat else "text_completion",
                "created": 1700000000, "model": self.model}

    def _openai(self, text: str, finish: Optional[str]) -> Dict[str, Any]:
        if self.endpoint == "chat":
            delta = {"role": "assistant", "content": text} if text else {}
            choice: Dict[str, Any] = {"index": 0, "delta": delta}
        else:
            choice = {"index": 0, "text": text}
        choice["finish_reason"] = finish
        return {**self._base(), "choices": [choice]}


def wire_handler(wire: Wire, tokens: List[str], *,
                 pace: Optional[Callable[[int], None]] = None) -> Handler:
    """A well-behaved streaming reply of ``tokens`` in ``wire``'s dialect.

    ``pace(i)``, if given, is called before token ``i`` is sent (to space
    the tokens out in time).
    """
    def handler(conn: RawConn) -> None:
        conn.send_head(200, {"Content-Type": wire.content_type})
        for i, token in enumerate(tokens):
            if pace is not None:
                pace(i)
            if not conn.send_chunk(wire.token(token)):
                return
        conn.send_chunk(wire.end(len(tokens)))
        conn.end_chunks()
    return handler
