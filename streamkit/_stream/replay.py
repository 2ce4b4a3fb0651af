"""Replay comparator: checks a replayed stream against what was already delivered.

When a stream is cut mid-body and ``RetryPolicy(on_interrupt="replay")``
allows it, the worker sends the request again. The consumer has already
seen part of the reply, so the replay must repeat it exactly (else
StreamDiverged) and only its new remainder is delivered.
"""

from __future__ import annotations

from typing import Any, List, Mapping, Sequence, Tuple

from ..errors import StreamDiverged
from ..records import Chunk


class Replay:
    """Checks a replayed stream against the text already delivered and trims it.

    While the replay is within what the consumer already has, its chunks must
    match and are dropped; once past it, only the new remainder goes through
    (a chunk straddling the boundary is trimmed). Text, thinking and tool
    calls are tracked separately.
    """

    def __init__(self, text: str, thinking: str, tool_calls: Sequence[Mapping[str, Any]]) -> None:
        self._want = {"text": text, "thinking": thinking}
        self._pos = {"text": 0, "thinking": 0}
        self._tools = list(tool_calls)
        self._tool_pos = 0

    def caught_up(self) -> bool:
        return (self._pos["text"] >= len(self._want["text"])
                and self._pos["thinking"] >= len(self._want["thinking"])
                and self._tool_pos >= len(self._tools))

    def filter(self, chunks: List[Chunk]) -> List[Chunk]:
        """The parts of ``chunks`` not yet delivered. Raises StreamDiverged."""
        out: List[Chunk] = []
        for c in chunks:
            text = self._skip("text", c.text)
            thinking = self._skip("thinking", c.thinking)
            tools = self._skip_tools(c.tool_calls)
            if c.done and not self.caught_up():
                raise self._diverged("text", "")
            if text or thinking or tools or c.done:
                out.append(c._replace(text=text, thinking=thinking, tool_calls=tools))
        return out

    def _skip(self, field: str, new: str) -> str:
        want, pos = self._want[field], self._pos[field]
        if not new or pos >= len(want):
            return new
        overlap = want[pos:pos + len(new)]
        if new[:len(overlap)] != overlap:
            raise self._diverged(field, new)
        self._pos[field] = pos + len(overlap)
        return new[len(overlap):]

    def _skip_tools(self, tools: Tuple[Mapping[str, Any], ...]) -> Tuple[Mapping[str, Any], ...]:
        if not tools or self._tool_pos >= len(self._tools):
            return tools
        keep = []
        for call in tools:
            if self._tool_pos < len(self._tools):
                if call != self._tools[self._tool_pos]:
                    raise self._diverged("tool calls", "")
                self._tool_pos += 1
            else:
                keep.append(call)
        return tuple(keep)

    def _diverged(self, field: str, new: str) -> StreamDiverged:
        key = field if field in self._want else "text"
        delivered = self._want[key]
        replayed = delivered[:self._pos[key]] + new
        return StreamDiverged(
            f"the replayed stream's {field} differs from what was already delivered; "
            "replay is only safe for deterministic requests (fixed seed, temperature 0)",
            delivered=self._want["text"], replayed=replayed)
