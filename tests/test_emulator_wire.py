"""Raw HTTP/1.1 helpers for the emulator tests (no test functions here).

They talk to the emulator with plain sockets so tests can see exactly what is
on the wire: status line, headers, chunk framing, a missing terminator, a
reset, blank lines.
"""

from __future__ import annotations

import json
import socket
from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import urlsplit


def address(url: str) -> Tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 80


def request_bytes(url: str, method: str, path: str, body: Any = None,
                  headers: Optional[Dict[str, str]] = None, close: bool = True) -> bytes:
    host, port = address(url)
    payload = b"" if body is None else body if isinstance(body, bytes) else \
        json.dumps(body).encode()
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}"]
    if body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(payload)}"]
    if close:
        lines.append("Connection: close")
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


class Wire:
    """A parsed raw response."""

    def __init__(self, raw: bytes, reset: bool) -> None:
        self.raw = raw
        self.reset = reset
        head, _, self.raw_body = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n") if head else []
        self.status = int(lines[0].split(" ")[1]) if lines else 0
        self.headers = {k.lower(): v.strip() for k, _, v in
                        (line.partition(":") for line in lines[1:])}
        self.chunked = self.headers.get("transfer-encoding") == "chunked"
        self.body, self.terminated = (_dechunk(self.raw_body) if self.chunked
                                      else (self.raw_body, True))

    @property
    def lines(self) -> List[bytes]:
        return self.body.split(b"\n")[:-1] if self.body.endswith(b"\n") else \
            self.body.split(b"\n")

    def json_lines(self) -> List[Dict[str, Any]]:
        return [json.loads(line) for line in self.lines if line.strip()]

    def json(self) -> Any:
        return json.loads(self.body)


def _dechunk(data: bytes) -> Tuple[bytes, bool]:
    out = bytearray()
    pos = 0
    while True:
        eol = data.find(b"\r\n", pos)
        if eol < 0:
            return bytes(out), False
        size = int(data[pos:eol], 16)
        if size == 0:
            return bytes(out), data[eol:eol + 4] == b"\r\n\r\n"
        if len(data) < eol + 2 + size + 2:
            out += data[eol + 2:]
            return bytes(out), False
        out += data[eol + 2:eol + 2 + size]
        pos = eol + 2 + size + 2


def exchange(url: str, method: str, path: str, body: Any = None,
             headers: Optional[Dict[str, str]] = None, timeout: float = 10.0) -> Wire:
    """Send one request with ``Connection: close`` and read until the server closes."""
    with socket.create_connection(address(url), timeout=timeout) as sock:
        sock.sendall(request_bytes(url, method, path, body, headers))
        chunks: List[bytes] = []
        reset = False
        while True:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                reset = True
                break
            if not data:
                break
            chunks.append(data)
        return Wire(b"".join(chunks), reset)


def read_until(sock: socket.socket, count: int, marker: bytes = b"}\n") -> bytes:
    """Read from ``sock`` until ``marker`` occurred ``count`` times (socket timeout applies)."""
    data = b""
    while data.count(marker) < count:
        more = sock.recv(65536)
        if not more:
            break
        data += more
    return data
