"""``cancel()`` mid-stream makes the real server stop generating.

How we know the server stopped, not just the client: llama-cpp-python checks
``request.is_disconnected()`` after every token it sends and, when the client
is gone, aborts the generation and logs ``Disconnected from client``. A
generation that runs to its end instead logs one ``llama_perf_context_print:
eval time = ...`` line. Requests are served one at a time (one model, one
lock), so a long generation still running would also hold up the next
request for tens of seconds.

So the test asks for 1500 tokens (20-40 s on an idle 2-core machine),
cancels after a few, and then checks three things: the disconnect line
appears; a short follow-up request completes in a fraction of the time the
long one still needed (at the rate it was streaming); and the only ``eval
time`` line logged since the start belongs to that follow-up, i.e. the long
generation never ran to completion.
"""

from __future__ import annotations

import time

import pytest
from realserver import GREEDY, REAL_TEST_TIMEOUT_S, RealServer

import streamkit as sk

pytestmark = [pytest.mark.real, pytest.mark.timeout(REAL_TEST_TIMEOUT_S)]

LONG = 1500  # tokens; n_ctx is 2048
CUT_AFTER = 5  # text chunks read before cancelling
DISCONNECT = r"Disconnected from client"
COMPLETED = r"llama_perf_context_print:\s+eval time"
# The follow-up (8 tokens) must finish in a small fraction of the time the
# cancelled generation still had to run, measured at the rate this machine
# streamed its first tokens: a fixed bound would be either loose on an idle
# machine or flaky on one busy with other test runs.
FOLLOW_UP_FRACTION = 0.25
SETTLE_S = 30.0  # waiting for a log line or a result that is due at once


def _read_then_cancel(stream: sk.Stream) -> float:
    """Read CUT_AFTER text chunks, cancel; return the observed tokens/s."""
    seen = 0
    first_ns = 0
    for chunk in stream:
        if not chunk.text:
            continue
        seen += 1
        first_ns = first_ns or chunk.received_ns
        if seen >= CUT_AFTER:
            stream.cancel()
            return (seen - 1) / max((chunk.received_ns - first_ns) / 1e9, 1e-3)
    pytest.fail(f"the stream ended after {seen} text chunks, before it could be cancelled")


def test_cancel_stops_the_server_generating(real_server: RealServer) -> None:
    offset = real_server.log_offset()
    with real_server.client() as client:
        stream = client.generate(real_server.model, "Once upon a time",
                                 options={"num_predict": LONG, **GREEDY})
        with stream:
            rate = _read_then_cancel(stream)
            result = stream.result(timeout=SETTLE_S)
        assert isinstance(result.error, sk.Cancelled), repr(result.error)
        assert result.text  # the partial text is kept
        real_server.wait_for_log(DISCONNECT, offset, timeout=SETTLE_S)

        remaining_s = (LONG - CUT_AFTER) / rate
        started = time.monotonic()
        follow_up = client.generate(real_server.model, "Hello",
                                    options={"num_predict": 8, **GREEDY})
        with follow_up:
            follow = follow_up.result(timeout=remaining_s * FOLLOW_UP_FRACTION + SETTLE_S)
        elapsed = time.monotonic() - started
    assert follow.error is None, repr(follow.error)
    assert elapsed < remaining_s * FOLLOW_UP_FRACTION, (
        f"the follow-up took {elapsed:.1f} s; the cancelled generation had "
        f"~{remaining_s:.0f} s to go at {rate:.0f} tokens/s: was it still running?")
    # Exactly one generation ran to its end since the test began: the follow-up.
    completed = real_server.wait_for_log(COMPLETED, offset, timeout=SETTLE_S)
    assert len(completed) == 1, real_server.log_since(offset)[-3000:]


def test_leaving_the_with_block_early_cancels(real_server: RealServer) -> None:
    offset = real_server.log_offset()
    with real_server.client() as client:
        with client.chat(real_server.model, [{"role": "user", "content": "Tell a long story."}],
                         options={"num_predict": LONG, **GREEDY}) as stream:
            for chunk in stream:
                if chunk.text:
                    break
        result = stream.result(timeout=SETTLE_S)
    assert isinstance(result.error, sk.Cancelled), repr(result.error)
    real_server.wait_for_log(DISCONNECT, offset, timeout=SETTLE_S)
