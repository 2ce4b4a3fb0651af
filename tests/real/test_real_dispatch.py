"""Four concurrent streams through the Dispatcher against the real server.

llama-cpp-python serves one request at a time (one model behind a lock; the
server runs with ``--interrupt_requests false`` so a newcomer waits instead of
cutting the running stream short). All four requests are nonetheless open at
once: the server answers each with its headers at once and streams the
queued ones in turn. Every stream must complete, whole.
"""

from __future__ import annotations

from typing import Dict, List

import pytest
from realserver import GREEDY, REAL_TEST_TIMEOUT_S, RealServer

import streamkit as sk

pytestmark = [pytest.mark.real, pytest.mark.timeout(REAL_TEST_TIMEOUT_S)]

PROMPTS = {
    "colors": "Name three colors.",
    "animals": "Name three animals.",
    "fruit": "Name three fruits.",
    "cities": "Name three cities.",
}
NUM_PREDICT = 16


def _requests(model: str) -> List[sk.ChatRequest]:
    return [sk.ChatRequest(model, [{"role": "user", "content": prompt}],
                           options={"num_predict": NUM_PREDICT, **GREEDY}, id=key)
            for key, prompt in PROMPTS.items()]


def test_four_concurrent_streams_all_complete(real_server: RealServer) -> None:
    offset = real_server.log_offset()
    with real_server.client() as client, sk.Dispatcher(client, workers=4) as dispatcher:
        results: Dict[str, sk.Result] = {}
        for result in dispatcher.map(_requests(real_server.model), ordered=False):
            assert result.id is not None
            results[result.id] = result
    assert sorted(results) == sorted(PROMPTS)
    for key, result in results.items():
        assert result.error is None, f"{key}: {result.error!r}"
        assert result.text.strip(), key
        assert result.done_reason == "length", key
    # Each request reached the server once and ran to its end.
    real_server.wait_for_log(r"POST /v1/chat/completions HTTP/1.1\" 200", offset, count=4)
    real_server.wait_for_log(r"llama_perf_context_print:\s+eval time", offset, count=4)


def test_concurrent_results_match_sequential_ones(real_server: RealServer) -> None:
    """Interleaving on the wire changes nothing: greedy text equals a lone run's."""
    requests = _requests(real_server.model)
    with real_server.client() as client:
        alone = {}
        for request in requests[:2]:
            with client.stream(request) as stream:
                alone[request.id] = stream.text()
        with sk.Dispatcher(client, workers=4) as dispatcher:
            together = {r.id: r for r in dispatcher.map(requests, ordered=True)}
    for key, text in alone.items():
        assert together[key].error is None
        assert together[key].text == text, key
