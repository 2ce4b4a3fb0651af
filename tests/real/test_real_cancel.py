"""``cancel()`` mid-stream makes the real server stop generating.

How we know the server stopped, not just the client: llama-cpp-python checks
``request.is_disconnected()`` after every token it sends and, when the client
is gone, aborts the generation and logs ``Disconnected from client``. A
generation that runs to its end instead logs one ``llama_perf_context_print:
eval time = ...`` line. Requests are served one at a time (one model, one
lock), so a long generation still running would also hold up the next
request for tens of seconds.

So the test asks for ~1500 tokens (about half a minute at this machine's
40-70 tokens/s), cancels after a few, and then checks three things: the
disconnect line appears; a short follow-up request completes promptly (well
before the long one could have finished); and the only ``eval time`` line
logged since the start belongs to that follow-up, i.e. the long generation
never ran to completion.
"""

from __future__ import annotations

import time

import pytest
from realserver import GREEDY, RealServer

import streamkit as sk

pytestmark = pytest.mark.real

LONG = 1500  # tokens; n_ctx is 2048
CUT_AFTER = 5  # text chunks read before cancelling
DISCONNECT = r"Disconnected from client"
COMPLETED = r"llama_perf_context_print:\s+eval time"
# The long generation would need >= 20 s even at 70 tokens/s; a follow-up of
# 8 tokens takes well under a second on an idle server. 15 s leaves room for
# a loaded machine and still tells the two apart.
FOLLOW_UP_LIMIT_S = 15.0


@pytest.mark.timeout(120)
def test_cancel_stops_the_server_generating(real_server: RealServer) -> None:
    offset = real_server.log_offset()
    with real_server.client() as client:
        stream = client.generate(real_server.model, "Once upon a time",
                                 options={"num_predict": LONG, **GREEDY})
        with stream:
            seen = 0
            for chunk in stream:
                seen += bool(chunk.text)
                if seen >= CUT_AFTER:
                    assert stream.cancel() is not False
                    break
            result = stream.result(timeout=10)
        assert isinstance(result.error, sk.Cancelled), repr(result.error)
        assert result.text  # the partial text is kept
        real_server.wait_for_log(DISCONNECT, offset, timeout=15)

        started = time.monotonic()
        follow_up = client.generate(real_server.model, "Hello",
                                    options={"num_predict": 8, **GREEDY})
        with follow_up:
            follow = follow_up.result(timeout=FOLLOW_UP_LIMIT_S + 5)
        elapsed = time.monotonic() - started
    assert follow.error is None, repr(follow.error)
    assert elapsed < FOLLOW_UP_LIMIT_S, f"follow-up waited {elapsed:.1f} s: still generating?"
    # Exactly one generation ran to its end since the test began: the follow-up.
    completed = real_server.wait_for_log(COMPLETED, offset, timeout=10)
    assert len(completed) == 1, real_server.log_since(offset)[-3000:]


@pytest.mark.timeout(120)
def test_leaving_the_with_block_early_cancels(real_server: RealServer) -> None:
    offset = real_server.log_offset()
    with real_server.client() as client:
        with client.chat(real_server.model, [{"role": "user", "content": "Tell a long story."}],
                         options={"num_predict": LONG, **GREEDY}) as stream:
            for chunk in stream:
                if chunk.text:
                    break
        result = stream.result(timeout=10)
    assert isinstance(result.error, sk.Cancelled), repr(result.error)
    real_server.wait_for_log(DISCONNECT, offset, timeout=15)
