"""The real server itself, over plain HTTP: it is up, cached, and streams SSE.

These pin down the facts the other real tests rely on (the model alias, SSE
framing, no usage record from llama-cpp-python's stream), independently of
streamkit's own code.
"""

from __future__ import annotations

import json
import os
import urllib.request
from typing import Any, Dict, List

import pytest
from realserver import REAL_TEST_TIMEOUT_S, RealServer, tool

pytestmark = [pytest.mark.real, pytest.mark.timeout(REAL_TEST_TIMEOUT_S)]


def _post_sse(url: str, body: Dict[str, Any]) -> List[str]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as reply:
        assert reply.status == 200
        assert reply.headers["content-type"].startswith("text/event-stream")
        text = reply.read().decode("utf-8")
    return [line[len("data: "):] for line in text.splitlines() if line.startswith("data: ")]


def test_models_lists_the_alias(real_server: RealServer) -> None:
    with urllib.request.urlopen(real_server.url + "/models", timeout=10) as reply:
        data = json.load(reply)
    assert [m["id"] for m in data["data"]] == [real_server.model]


def test_raw_chat_stream_is_sse_ending_in_done(real_server: RealServer) -> None:
    events = _post_sse(real_server.url + "/chat/completions", {
        "model": real_server.model, "stream": True, "max_tokens": 8, "temperature": 0,
        "messages": [{"role": "user", "content": "Say hello."}],
        "stream_options": {"include_usage": True}})
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant"}
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text.strip()
    # llama-cpp-python 0.3.36 ignores stream_options: no usage record. If a
    # newer pin adds one, test_real_stream's stats assertions should tighten.
    assert not any(c.get("usage") for c in chunks)


@pytest.mark.skipif(bool(os.environ.get("STREAMKIT_REAL_URL")),
                    reason="external server: the cache is not ours")
def test_second_install_is_a_no_op(real_server: RealServer) -> None:
    cache = tool.cache_dir()
    assert tool.is_installed(cache)
    log = cache / "install.log"
    before = log.stat().st_mtime_ns if log.exists() else None
    assert tool.install() == tool.model_path(cache)
    after = log.stat().st_mtime_ns if log.exists() else None
    assert after == before  # pip never ran: the marker matched
