"""Chat and completions streams from the real server through Client and Stream.

Greedy decoding with a seed: the same request yields the same text, so a
repeat is an honest check that nothing was lost or reordered in transit.
"""

from __future__ import annotations

from typing import List, Tuple

import pytest
from realserver import GREEDY, REAL_TEST_TIMEOUT_S, RESULT_TIMEOUT_S, RealServer

import streamkit as sk

pytestmark = [pytest.mark.real, pytest.mark.timeout(REAL_TEST_TIMEOUT_S)]

NUM_PREDICT = 32
COLORS = [{"role": "user", "content": "Name three colors."}]


def _chat(real_server: RealServer, **options: object) -> Tuple[List[sk.Chunk], sk.Result]:
    with real_server.client() as client:
        stream = client.chat(real_server.model, COLORS,
                             options={"num_predict": NUM_PREDICT, **GREEDY, **options})
        with stream:
            chunks: List[sk.Chunk] = list(stream)
            result = stream.result(timeout=RESULT_TIMEOUT_S)
    _check_chunks(chunks, result)
    return chunks, result


def _check_chunks(chunks: List[sk.Chunk], result: sk.Result) -> None:
    assert result.error is None, repr(result.error)
    assert "".join(c.text for c in chunks) == result.text
    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert result.timing.chunks == len(chunks)
    stamps = [c.received_ns for c in chunks]
    assert stamps == sorted(stamps)
    assert chunks[-1].done and sum(c.done for c in chunks) == 1


def test_chat_streams_real_tokens(real_server: RealServer) -> None:
    chunks, result = _chat(real_server)
    assert result.text.strip()
    assert result.done_reason == "length"  # a base model rambles on to max_tokens
    # llama-cpp-python streams one token per event (a multi-byte character
    # split over tokens waits for its last byte): several, at most NUM_PREDICT.
    assert 2 <= sum(1 for c in chunks if c.text) <= NUM_PREDICT
    # The server sends no usage record (see test_real_server); if it ever
    # does, the stats must agree with num_predict.
    assert result.stats.eval_count in (None, NUM_PREDICT)
    timing = result.timing
    assert timing.sent_ns is not None and timing.first_token_ns is not None
    assert timing.done_ns is not None
    assert timing.sent_ns <= timing.first_token_ns <= timing.done_ns
    assert result.attempts == 1


def test_same_greedy_request_gives_the_same_text(real_server: RealServer) -> None:
    assert _chat(real_server, num_predict=16)[1].text == _chat(real_server, num_predict=16)[1].text


def test_stop_option_maps_across(real_server: RealServer) -> None:
    _, result = _chat(real_server, stop=["\n", "."], num_predict=64)
    assert result.done_reason == "stop"
    assert "\n" not in result.text and "." not in result.text


def test_completions_stream_real_tokens(real_server: RealServer) -> None:
    with real_server.client() as client:
        stream = client.generate(real_server.model, "Once upon a time",
                                 options={"num_predict": 16, **GREEDY})
        with stream:
            chunks = list(stream)
            result = stream.result(timeout=RESULT_TIMEOUT_S)
    _check_chunks(chunks, result)
    assert len(result.text.split()) >= 3  # real words, not one stray token
    assert result.done_reason == "length"
    assert result.model  # from the events' "model" field or the request


def test_text_and_get_work_on_a_real_stream(real_server: RealServer) -> None:
    with real_server.client() as client:
        first = client.generate(real_server.model, "The capital of France is",
                                options={"num_predict": 8, **GREEDY})
        with first:
            expected = first.text()
        second = client.generate(real_server.model, "The capital of France is",
                                 options={"num_predict": 8, **GREEDY})
        pieces = []
        with second:
            while True:
                chunk = second.get(timeout=RESULT_TIMEOUT_S)
                if chunk is None:
                    assert second.done
                    break
                pieces.append(chunk.text)
    assert expected.strip() and "".join(pieces) == expected
