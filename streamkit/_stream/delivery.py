"""What a stream has handed to its consumer: text, thinking, tool calls, timing.

The channel tells a :class:`Delivered` of every batch it accepts (it is the
channel's ``Recorder``); the end record and a replay are built from it.
"""

from __future__ import annotations

from typing import Any, List, Mapping, Tuple

from ..records import Chunk, Timing


class Delivered:
    """The running record of one stream's delivered chunks.

    Thread rules: ``record`` runs under the channel lock, in the producer's
    thread (or the consumer's, running a read the producer lent it while it
    sleeps). The producer's thread reads everything freely (no one else
    writes while it runs); another thread reads only from a result builder,
    which the channel calls under its lock. ``timing`` stamps outside the chunks
    (start, request sent, headers) are written by the producer directly.
    """

    __slots__ = ("_texts", "_thinking", "_tool_calls", "next_index", "timing")

    def __init__(self) -> None:
        self._texts: List[str] = []
        self._thinking: List[str] = []
        self._tool_calls: List[Mapping[str, Any]] = []
        self.timing = Timing()
        self.next_index = 0  # the index the next attempt's first chunk takes

    def record(self, chunks: List[Chunk]) -> None:
        """Account for one non-empty batch: text, tool calls, timing stamps.

        Comprehensions over the batch rather than one loop with branches per
        chunk: this runs for every chunk of every stream; a batch of one (a
        paced stream's every read) takes a straight path.
        """
        if len(chunks) == 1:
            self._record_one(chunks[0])
            return
        text = "".join([c.text for c in chunks])
        thinking = "".join([c.thinking for c in chunks])
        if text:
            self._texts.append(text)
        if thinking:
            self._thinking.append(thinking)
        tools = [call for c in chunks if c.tool_calls for call in c.tool_calls]
        if tools:
            self._tool_calls.extend(tools)
        timing = self.timing
        if text or thinking or tools:
            if timing.first_token_ns is None:
                timing.first_token_ns = next(c.received_ns for c in chunks if _has_token(c))
            if text and timing.first_content_ns is None:
                timing.first_content_ns = next(c.received_ns for c in chunks if c.text)
            timing.last_token_ns = next(c.received_ns for c in reversed(chunks)
                                        if _has_token(c))
        last = chunks[-1]
        if last.done:  # the decoder ends a batch at the done record
            timing.done_ns = last.received_ns
        timing.chunks += len(chunks)
        self.next_index = last.index + 1

    def reset(self) -> None:
        """Forget what was recorded (the stream restarts from scratch); the
        start stamp stays: the stream's time runs from its first attempt."""
        self._texts = []
        self._thinking = []
        self._tool_calls = []
        self.timing = Timing(started_ns=self.timing.started_ns)
        self.next_index = 0

    def _record_one(self, c: Chunk) -> None:
        text, thinking, tools = c.text, c.thinking, c.tool_calls
        if text:
            self._texts.append(text)
        if thinking:
            self._thinking.append(thinking)
        if tools:
            self._tool_calls.extend(tools)
        timing = self.timing
        if text or thinking or tools:
            if timing.first_token_ns is None:
                timing.first_token_ns = c.received_ns
            if text and timing.first_content_ns is None:
                timing.first_content_ns = c.received_ns
            timing.last_token_ns = c.received_ns
        if c.done:
            timing.done_ns = c.received_ns
        timing.chunks += 1
        self.next_index = c.index + 1

    @property
    def text(self) -> str:
        return "".join(self._texts)

    @property
    def thinking(self) -> str:
        return "".join(self._thinking)

    @property
    def tool_calls(self) -> List[Mapping[str, Any]]:
        """A copy of the tool calls delivered so far."""
        return list(self._tool_calls)

    def snapshot(self) -> Tuple[str, str, List[Mapping[str, Any]]]:
        """(text, thinking, tool calls) delivered so far."""
        return self.text, self.thinking, self.tool_calls


def _has_token(c: Chunk) -> bool:
    return bool(c.text or c.thinking or c.tool_calls)
