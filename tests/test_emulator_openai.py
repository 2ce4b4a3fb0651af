"""The emulator's OpenAI-compatible endpoints: SSE wire format, the official
openai client, errors and faults."""

from __future__ import annotations

import json
from typing import Any, Dict, Iterator, List

import openai
import pytest
from test_emulator_wire import Wire, exchange

from streamkit.emulator import Emulator, expected

MESSAGES = [{"role": "user", "content": "hello there"}]
CHAT = {"model": "demo", "messages": MESSAGES, "stream": True}
COMPLETION = {"model": "demo", "prompt": "write a poem", "stream": True}


@pytest.fixture
def emu() -> Iterator[Emulator]:
    with Emulator(response_tokens=(10, 10)) as emulator:
        yield emulator


@pytest.fixture
def client(emu: Emulator) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=emu.url + "/v1", api_key="unused", max_retries=0) as c:
        yield c


def events(wire: Wire) -> List[str]:
    """The SSE data payloads, checking the framing on the way."""
    text = wire.body.decode()
    assert text.endswith("\n\n")
    blocks = text[:-2].split("\n\n")
    assert all(block.startswith("data: ") for block in blocks)
    return [block[len("data: "):] for block in blocks]


def test_chat_stream_current_format(emu: Emulator) -> None:
    body = {**CHAT, "stream_options": {"include_usage": True}}
    wire = exchange(emu.url, "POST", "/v1/chat/completions", body)
    assert wire.status == 200 and wire.terminated
    assert wire.headers["content-type"] == "text/event-stream"
    data = events(wire)
    assert data[-1] == "[DONE]"
    chunks: List[Dict[str, Any]] = [json.loads(d) for d in data[:-1]]
    exp = expected("demo", body, emu.config)
    content = chunks[:-2]
    assert content[0]["choices"][0]["delta"] == {"role": "assistant", "content": exp.tokens[0]}
    assert all("role" not in c["choices"][0]["delta"] for c in content[1:])
    assert "".join(c["choices"][0]["delta"]["content"] for c in content) == exp.text
    assert list(content[0]) == ["id", "object", "created", "model", "system_fingerprint",
                                "choices"]
    assert {c["id"] for c in chunks} == {content[0]["id"]}
    assert content[0]["id"].startswith("chatcmpl-")
    assert len({c["created"] for c in chunks}) == 1
    finish, usage = chunks[-2], chunks[-1]
    assert finish["choices"] == [{"index": 0, "delta": {}, "finish_reason": "stop"}]
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == exp.eval_count
    assert usage["usage"]["total_tokens"] == exp.eval_count + usage["usage"]["prompt_tokens"]
    assert all("usage" not in c for c in chunks[:-1])


def test_chat_reasoning_and_max_tokens(emu: Emulator) -> None:
    body = {**CHAT, "reasoning_effort": "low", "max_tokens": 12}
    chunks = [json.loads(d) for d in events(exchange(emu.url, "POST", "/v1/chat/completions",
                                                     body))[:-1]]
    exp = expected("demo", body, emu.config)
    assert exp.done_reason == "length" and len(exp.thinking_tokens) == 8
    deltas = [c["choices"][0]["delta"] for c in chunks[:-1]]
    assert deltas[0] == {"role": "assistant", "content": "", "reasoning": exp.thinking_tokens[0]}
    assert "".join(d.get("reasoning", "") for d in deltas) == exp.thinking
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


def test_completions_stream_with_usage(emu: Emulator) -> None:
    body = {**COMPLETION, "stream_options": {"include_usage": True}}
    data = events(exchange(emu.url, "POST", "/v1/completions", body))
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    exp = expected("demo", body, emu.config)
    assert all(c["object"] == "text_completion" and c["id"].startswith("cmpl-") for c in chunks)
    assert "".join(c["choices"][0]["text"] for c in chunks[:-1]) == exp.text
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert all(c["usage"] == {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
               for c in chunks[:-1])
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 10


def test_non_stream_default(emu: Emulator) -> None:
    wire = exchange(emu.url, "POST", "/v1/chat/completions", {"model": "demo",
                                                             "messages": MESSAGES})
    reply = wire.json()
    assert reply["object"] == "chat.completion"
    assert reply["choices"][0]["message"] == {"role": "assistant",
                                              "content": expected("demo", CHAT, emu.config).text}
    assert reply["usage"]["completion_tokens"] == 10


@pytest.mark.parametrize(("path", "body", "status", "kind", "message"), [
    ("/v1/chat/completions", {"model": "nope", "messages": MESSAGES}, 404, "not_found_error",
     "model 'nope' not found"),
    ("/v1/chat/completions", {"model": "demo", "messages": []}, 400, "invalid_request_error",
     "[] is too short - 'messages'"),
    ("/v1/completions", b"{oops", 400, "invalid_request_error",
     "invalid character 'o' looking for beginning of object key string"),
])
def test_errors_are_openai_json(emu: Emulator, path: str, body: Any, status: int, kind: str,
                                message: str) -> None:
    wire = exchange(emu.url, "POST", path, body)
    assert wire.status == status and wire.headers["content-type"] == "application/json"
    assert wire.body.endswith(b"\n")
    assert wire.json() == {"error": {"message": message, "type": kind, "param": None,
                                     "code": None}}


def test_official_openai_client(emu: Emulator, client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(model="demo", messages=MESSAGES,  # type: ignore[arg-type]
                                            stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == expected("demo", CHAT, emu.config).text
    completion = client.completions.create(model="demo", prompt="write a poem", stream=True)
    assert "".join(c.choices[0].text for c in completion if c.choices) == \
        expected("demo", COMPLETION, emu.config).text
    single = client.chat.completions.create(model="demo", messages=MESSAGES)  # type: ignore[arg-type]
    assert single.choices[0].message.content == expected("demo", CHAT, emu.config).text
    assert [m.id for m in client.models.list()] == ["demo:latest", "demo-embed:latest"]
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=MESSAGES,  # type: ignore[arg-type]
                                       stream=True)


def test_status_fault_is_openai_json(emu: Emulator, client: openai.OpenAI) -> None:
    emu.set_faults("status:503,retry_after=1")
    wire = exchange(emu.url, "POST", "/v1/chat/completions", CHAT)
    assert wire.status == 503 and wire.headers["retry-after"] == "1"
    assert wire.json()["error"]["type"] == "api_error"
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="demo", messages=MESSAGES)  # type: ignore[arg-type]


def test_midbody_faults_on_v1(emu: Emulator) -> None:
    emu.set_faults("cut,after=2")
    cut = exchange(emu.url, "POST", "/v1/chat/completions", CHAT)
    assert not cut.terminated and b"[DONE]" not in cut.body
    emu.set_faults("nodone")
    nodone = exchange(emu.url, "POST", "/v1/chat/completions", CHAT)
    assert nodone.terminated and b"[DONE]" not in nodone.body
    assert b'"finish_reason":"stop"' in nodone.body
    emu.set_faults("error,after=2")
    error = exchange(emu.url, "POST", "/v1/chat/completions", CHAT)
    data = events(error)
    assert error.terminated and len(data) == 3 and "[DONE]" not in data
    assert json.loads(data[-1])["choices"][0]["delta"] == {"content": ""}
    emu.set_faults("malformed,after=1")
    bad = events(exchange(emu.url, "POST", "/v1/chat/completions", CHAT))
    with pytest.raises(json.JSONDecodeError):
        json.loads(bad[1])
    assert bad[-1] == "[DONE]"
