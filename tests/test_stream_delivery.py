"""The record of what a stream delivered: text, thinking, tool calls, timing. Pure."""

from __future__ import annotations

from streamkit._stream.delivery import Delivered
from streamkit.records import Chunk


def test_text_thinking_and_tool_calls_accumulate_across_batches() -> None:
    call = {"function": {"name": "f", "arguments": {}}}
    d = Delivered()
    d.record([Chunk("", index=0, thinking="hm", received_ns=10),
              Chunk("Hel", index=1, received_ns=10)])
    d.record([Chunk("lo", index=2, tool_calls=(call,), received_ns=20)])
    assert d.snapshot() == ("Hello", "hm", [call])
    assert d.next_index == 3
    d.tool_calls.clear()  # a copy: the record is not changed through it
    assert d.tool_calls == [call]


def test_timing_stamps_come_from_the_chunks_that_carry_tokens() -> None:
    d = Delivered()
    d.record([Chunk("", index=0, received_ns=5)])  # no token: no token stamps yet
    assert d.timing.first_token_ns is None and d.timing.chunks == 1
    d.record([Chunk("", index=1, thinking="x", received_ns=10),
              Chunk("a", index=2, received_ns=10)])
    d.record([Chunk("b", index=3, received_ns=30), Chunk("", index=4, received_ns=30,
                                                           done=True)])
    t = d.timing
    assert (t.first_token_ns, t.first_content_ns, t.last_token_ns) == (10, 10, 30)
    assert t.done_ns == 30 and t.chunks == 5
    assert d.next_index == 5


def test_one_chunk_batches_are_recorded_like_a_batch_of_all() -> None:
    chunks = [Chunk("", thinking="hm", index=0, received_ns=10),
              Chunk("a", index=1, received_ns=20),
              Chunk("", tool_calls=({"function": {"name": "f"}},), index=2, received_ns=30),
              Chunk("b", index=3, received_ns=40, done=True)]
    one_by_one, all_at_once = Delivered(), Delivered()
    for c in chunks:
        one_by_one.record([c])
    all_at_once.record(chunks)
    assert one_by_one.snapshot() == all_at_once.snapshot()
    assert one_by_one.timing == all_at_once.timing
    assert one_by_one.next_index == all_at_once.next_index == 4
