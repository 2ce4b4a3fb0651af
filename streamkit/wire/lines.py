"""Incremental NDJSON framing: socket reads in, complete lines out.

Lines are split on the byte ``b"\\n"`` only. ``str.splitlines`` (and so
requests' ``iter_lines`` and httpx's line decoder) also splits on U+0085,
U+2028, U+2029 and others, which Ollama sends raw inside JSON strings, so a
token containing one would cut a record in two. Lines stay bytes: UTF-8 is
decoded with the JSON of a whole line, so a multibyte character split across
two reads is harmless.
"""

from __future__ import annotations

from typing import List

from ..errors import ProtocolError

__all__ = ["DEFAULT_MAX_LINE", "LineFramer", "PartialLine"]

DEFAULT_MAX_LINE = 16 * 1024 * 1024
"""Default cap on one line, in bytes (the ``\\n`` not counted, a ``\\r`` counted)."""


def oversize_error(size: int, max_line: int) -> ProtocolError:
    return ProtocolError(
        f"a line from the server exceeds the {max_line}-byte limit "
        f"({size} bytes without a newline so far); raise max_line if this "
        "server legitimately sends records that large")


class PartialLine:
    """The bytes of a line whose end has not arrived yet, capped at ``max_line``.

    Kept as the reads that carried it: joining once when the line ends avoids
    quadratic re-copying. Shared by the NDJSON and SSE framers.
    """

    __slots__ = ("_max_line", "_pending", "_pending_len")

    def __init__(self, max_line: int = DEFAULT_MAX_LINE) -> None:
        if max_line < 1:
            raise ValueError(f"max_line must be >= 1, got {max_line!r}")
        self._max_line = max_line
        self._pending: List[bytes] = []
        self._pending_len = 0

    @property
    def buffered(self) -> int:
        """Bytes held for the current partial line."""
        return self._pending_len

    def _complete(self, first: bytes) -> bytes:
        """The held bytes followed by ``first`` (the rest of the line); resets."""
        if not self._pending:
            return first
        self._pending.append(first)
        line = b"".join(self._pending)
        self._pending = []
        self._pending_len = 0
        return line

    def _hold(self, piece: bytes) -> None:
        size = self._pending_len + len(piece)
        if size > self._max_line:
            self._pending = []
            self._pending_len = 0
            raise oversize_error(size, self._max_line)
        self._pending.append(piece)
        self._pending_len = size

    def _check_sizes(self, lines: List[bytes]) -> None:
        for line in lines:
            if len(line) > self._max_line:
                raise oversize_error(len(line), self._max_line)


class LineFramer(PartialLine):
    """Splits a byte stream into lines on ``b"\\n"``; pure, not thread-safe.

    ``feed`` returns the lines completed by ``data``: a trailing ``b"\\r"`` is
    stripped (CRLF works even when the CR and LF arrive in different reads)
    and blank lines are skipped. ``flush`` returns a last line that had no
    newline. A line longer than ``max_line`` raises :class:`ProtocolError` as
    soon as the bytes seen pass the cap; what was buffered is dropped, so an
    endless line costs at most ``max_line`` plus one read of memory.
    """

    __slots__ = ()

    def feed(self, data: bytes) -> List[bytes]:
        """The complete, non-blank lines ending in ``data`` (CR stripped).

        Raises ProtocolError when a line passes ``max_line``.
        """
        if b"\n" not in data:
            if data:
                self._hold(data)
            return []
        lines = data.split(b"\n")
        tail = lines.pop()
        lines[0] = self._complete(lines[0])
        if len(data) + len(lines[0]) > self._max_line:  # only then can a line be too long
            self._check_sizes(lines)
        if tail:
            self._hold(tail)
        if b"\r" in data or lines[0][-1:] == b"\r":
            return [ln[:-1] if ln[-1:] == b"\r" else ln for ln in lines if ln and ln != b"\r"]
        if b"" in lines:  # cheaper than filtering when, as usual, there is no blank line
            return [ln for ln in lines if ln]
        return lines

    def flush(self) -> List[bytes]:
        """The last line if it had no newline (CR stripped, blank skipped); resets."""
        line = self._complete(b"")
        if line.endswith(b"\r"):
            line = line[:-1]
        return [line] if line else []
