"""Chunked transfer decoding (RFC 9112 §7.1): bytes in, payload out. No I/O.

The response reads the socket itself and feeds every read here, so one read
carrying many small HTTP chunks costs one call, and a huge chunk (a 64 MiB
line) is never held whole.
"""

from __future__ import annotations

from typing import List, Optional

from ..errors import ProtocolError

__all__ = ["MAX_FRAMING_LINE", "Dechunker"]

MAX_FRAMING_LINE = 8 * 1024
"""Longest chunk-size or trailer line accepted in a chunked body."""


class Dechunker:
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
        if self._state == self.SIZE and not self._buf:
            # The usual read of a streaming server: exactly one whole chunk.
            nl = data.find(b"\r\n")
            if nl > 0:
                try:
                    size = int(data[:nl], 16)
                except ValueError:
                    size = -1
                stop = nl + 2 + size
                if size > 0 and len(data) == stop + 2 and data.endswith(b"\r\n"):
                    return data[nl + 2:stop]
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

