"""The replay comparator on its own: what a replay repeats is dropped, what is new
goes through, a difference raises StreamDiverged. Pure: chunks in, chunks out.
"""

from __future__ import annotations

from typing import Any, List, Mapping, Tuple

import pytest

from streamkit._stream.replay import Replay
from streamkit.errors import StreamDiverged
from streamkit.records import Chunk


def chunk(text: str = "", *, thinking: str = "", tools: Tuple[Mapping[str, Any], ...] = (),
          done: bool = False, index: int = 0) -> Chunk:
    return Chunk(text, index=index, thinking=thinking, tool_calls=tools, done=done)


def texts(chunks: List[Chunk]) -> List[str]:
    return [c.text for c in chunks]


def test_repeated_chunks_are_dropped_and_new_ones_pass() -> None:
    replay = Replay("Hello ", "", [])
    assert replay.filter([chunk("Hel"), chunk("lo ")]) == []
    assert replay.caught_up()
    assert texts(replay.filter([chunk("World")])) == ["World"]


def test_a_chunk_straddling_the_boundary_is_trimmed_to_its_new_part() -> None:
    replay = Replay("Hello W", "", [])
    out = replay.filter([chunk("Hello "), chunk("World", index=7)])
    assert texts(out) == ["orld"]
    assert out[0].index == 7  # other fields are kept; the worker renumbers


def test_a_different_text_raises_with_what_was_delivered_and_replayed() -> None:
    replay = Replay("Hello World", "", [])
    replay.filter([chunk("Hello ")])
    with pytest.raises(StreamDiverged) as info:
        replay.filter([chunk("Moon")])
    assert info.value.delivered == "Hello World"
    assert info.value.replayed == "Hello Moon"
    assert info.value.partial == "Hello World"


def test_a_replay_that_ends_before_catching_up_diverges() -> None:
    replay = Replay("Hello World", "", [])
    with pytest.raises(StreamDiverged):
        replay.filter([chunk("Hello"), chunk(done=True)])


def test_the_done_chunk_passes_once_caught_up_even_when_empty() -> None:
    replay = Replay("Hi", "", [])
    out = replay.filter([chunk("Hi"), chunk(done=True)])
    assert len(out) == 1 and out[0].done and out[0].text == ""


def test_thinking_is_compared_on_its_own() -> None:
    replay = Replay("answer", "because", [])
    out = replay.filter([chunk(thinking="because"), chunk("ans"), chunk("wer!")])
    assert [(c.text, c.thinking) for c in out] == [("!", "")]
    with pytest.raises(StreamDiverged, match="thinking"):
        Replay("", "because", []).filter([chunk(thinking="since")])


def test_tool_calls_already_delivered_are_dropped_and_must_match() -> None:
    first = {"function": {"name": "a", "arguments": {}}}
    second = {"function": {"name": "b", "arguments": {}}}
    replay = Replay("", "", [first])
    out = replay.filter([chunk(tools=(first, second))])
    assert [c.tool_calls for c in out] == [(second,)]
    with pytest.raises(StreamDiverged, match="tool calls"):
        Replay("", "", [first]).filter([chunk(tools=(second,))])


def test_nothing_delivered_lets_everything_through() -> None:
    replay = Replay("", "", [])
    assert replay.caught_up()
    assert texts(replay.filter([chunk("a"), chunk("b")])) == ["a", "b"]
