"""Incremental Server-Sent Events line framing: socket reads in, lines out.

Unlike NDJSON framing, blank lines are kept: they end events. Per the SSE
specification a line ends at CRLF, LF or a lone CR; a CR that ends one read
and an LF that starts the next are one line ending, not two.
"""

from __future__ import annotations

from typing import List

from .lines import DEFAULT_MAX_LINE, PartialLine

__all__ = ["SSEFramer"]


class SSEFramer(PartialLine):
    """Splits a byte stream into SSE lines (blank ones included); pure, not thread-safe.

    ``feed`` returns the lines completed by ``data`` without their line
    endings; ``flush`` returns a last line that had no ending. A line longer
    than ``max_line`` raises ProtocolError as soon as the bytes seen pass
    the cap, without buffering the rest of it.
    """

    __slots__ = ("_after_cr",)

    def __init__(self, max_line: int = DEFAULT_MAX_LINE) -> None:
        super().__init__(max_line)
        self._after_cr = False  # the previous read ended in CR: an LF now is its pair

    def feed(self, data: bytes) -> List[bytes]:
        """The complete lines ending in ``data``, blank lines included.

        Raises ProtocolError when a line passes ``max_line``.
        """
        if not data:
            return []
        if self._after_cr:
            self._after_cr = False
            if data[:1] == b"\n":
                data = data[1:]
        if b"\r" in data:
            self._after_cr = data[-1:] == b"\r"
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        if b"\n" not in data:
            if data:  # empty when the read was only the LF of a CRLF
                self._hold(data)
            return []
        lines = data.split(b"\n")
        tail = lines.pop()
        lines[0] = self._complete(lines[0])
        if len(data) + len(lines[0]) > self._max_line:
            self._check_sizes(lines)
        if tail:
            self._hold(tail)
        return lines

    def flush(self) -> List[bytes]:
        """The last line if it had no line ending; resets."""
        line = self._complete(b"")
        return [line] if line else []
