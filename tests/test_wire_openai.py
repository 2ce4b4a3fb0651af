"""OpenAI dialect: request bodies, SSE framing and decoding, status mapping."""

from __future__ import annotations

import json
import random
from typing import Any, Dict, List, Mapping, Sequence, Tuple

import pytest

from streamkit import _json
from streamkit.errors import (
    ConfigError,
    ModelNotFound,
    ProtocolError,
    ResponseError,
    ServerBusy,
    ServerStreamError,
    StreamInterrupted,
)
from streamkit.records import ChatRequest, Chunk, GenerateRequest, Stats
from streamkit.wire import get_dialect
from streamkit.wire.openai import OPENAI
from streamkit.wire.sse import SSEFramer

BACKENDS = ["json"] + (["orjson"] if _json.fast_loads is not None else [])


@pytest.fixture(params=BACKENDS, autouse=True)
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run every decoding test with both JSON backends."""
    loads = _json.stdlib_loads if request.param == "json" else _json.fast_loads
    monkeypatch.setattr(_json, "loads", loads)
    return str(request.param)


def js(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def delta(finish: Any = None, **fields: Any) -> bytes:
    return js({"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "m",
               "choices": [{"index": 0, "delta": fields, "finish_reason": finish}]})


CALL_START = {"index": 0, "id": "call_1", "type": "function",
              "function": {"name": "get_weather", "arguments": '{"ci'}}
CALL_END = {"index": 0, "function": {"arguments": 'ty":"Paris"}'}}
MERGED_CALL = {"id": "call_1", "type": "function",
               "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}
USAGE = js({"id": "chatcmpl-1", "model": "m", "choices": [],
            "usage": {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}})
TEXT = "Hé🙂\u2028\u0085!"
SPLIT_DELTA = delta(content=TEXT)
SPLIT_AT = SPLIT_DELTA.index(b'"choices"')

# Every framing feature at once: comments, CRLF, CR only, LF, no space after
# the colon, ignored fields, multi-line data, no final blank line.
SSE_BODY = b"".join([
    b": keep-alive\r\n\r\n",
    b"data: " + delta(role="assistant", content="") + b"\n\n",
    b"data:" + delta(reasoning="th") + b"\r\r",
    b"event: message\nid: 3\nretry: 100\n",
    b"data: " + SPLIT_DELTA[:SPLIT_AT] + b"\r\n",    # one JSON text over two data lines
    b"data: " + SPLIT_DELTA[SPLIT_AT:] + b"\r\n\r\n",
    b"data: " + delta(reasoning_content="more") + b"\n\n",
    b"data: " + delta(tool_calls=[CALL_START]) + b"\n\n",
    b": ping\n\n",
    b"data: " + delta(tool_calls=[CALL_END]) + b"\n\n",
    b"data: " + delta(content=" x") + b"\r\n\r\n",
    b"data: " + delta("tool_calls") + b"\n\n",
    b"data: " + USAGE + b"\n\n",
    b"data: [DONE]",
])

# (text, thinking, tool_calls, done)
SSE_EXPECTED = [
    ("", "th", (), False),
    (TEXT, "", (), False),
    ("", "more", (), False),
    (" x", "", (), False),
    ("", "", (MERGED_CALL,), False),  # the finish chunk
    ("", "", (), True),               # [DONE]
]


def decode(pieces: Sequence[bytes]) -> Tuple[List[Chunk], Any]:
    decoder = OPENAI.decoder()
    chunks: List[Chunk] = []
    for stamp, piece in enumerate(pieces):
        chunks.extend(decoder.feed(piece, stamp))
    chunks.extend(decoder.close(len(pieces)))
    return chunks, decoder


def summary(chunks: Sequence[Chunk]) -> List[Tuple[Any, ...]]:
    return [(c.text, c.thinking, c.tool_calls, c.done) for c in chunks]


# --- SSE framing ------------------------------------------------------------------------

def test_sse_framer_line_endings() -> None:
    framer = SSEFramer()
    assert framer.feed(b"a\r\nb\rc\n\r\n") == [b"a", b"b", b"c", b""]
    assert framer.feed(b"d\r") == [b"d"]
    assert framer.feed(b"") == []  # an empty read must not forget the pending CR
    assert framer.feed(b"\ne\r") == [b"e"]
    assert framer.feed(b"\r") == [b""]  # CR CR: two line endings
    assert framer.feed(b"tail") == []
    assert framer.flush() == [b"tail"]


def test_sse_framer_oversize_line() -> None:
    framer = SSEFramer(100)
    framer.feed(b"data: " + b"x" * 90)
    with pytest.raises(ProtocolError, match="100-byte limit"):
        framer.feed(b"x" * 10)


# --- decoding ---------------------------------------------------------------------------

def test_sse_stream_decodes() -> None:
    chunks, decoder = decode([SSE_BODY])
    assert summary(chunks) == SSE_EXPECTED
    assert [c.index for c in chunks] == list(range(6))
    assert decoder.done and decoder.done_reason == "tool_calls" and decoder.model == "m"
    assert decoder.stats == Stats(prompt_eval_count=9, eval_count=4)
    assert chunks[4].raw is not None and chunks[4].raw["choices"][0]["finish_reason"]
    assert chunks[5].raw is None


def test_split_at_every_offset_gives_identical_chunks() -> None:
    for offset in range(len(SSE_BODY) + 1):
        chunks, _ = decode([SSE_BODY[:offset], SSE_BODY[offset:]])
        assert summary(chunks) == SSE_EXPECTED, offset


def test_random_multi_splits_and_byte_by_byte() -> None:
    rng = random.Random(7)
    for _ in range(200):
        cuts = sorted(rng.sample(range(1, len(SSE_BODY)), rng.randint(2, 12)))
        pieces = [SSE_BODY[a:b] for a, b in zip([0, *cuts], [*cuts, len(SSE_BODY)])]
        assert summary(decode(pieces)[0]) == SSE_EXPECTED, cuts
    single = [SSE_BODY[i:i + 1] for i in range(len(SSE_BODY))]
    assert summary(decode(single)[0]) == SSE_EXPECTED


def test_lf_only_stream_with_final_blank_line() -> None:
    body = (b"data: " + delta(role="assistant", content="Hi") + b"\n\n"
            + b"data: " + delta("stop") + b"\n\n" + b"data: [DONE]\n\n")
    chunks, decoder = decode([body])
    assert summary(chunks) == [("Hi", "", (), False), ("", "", (), False), ("", "", (), True)]
    assert decoder.done_reason == "stop"
    assert decoder.stats == Stats()


def test_role_only_and_empty_deltas_produce_no_chunk() -> None:
    decoder = OPENAI.decoder()
    body = (b"data: " + delta(role="assistant") + b"\n\n"
            + b"data: " + delta(role="assistant", content="") + b"\n\n"
            + b"data: " + js({"choices": [{"delta": {}}]}) + b"\n\n")
    assert decoder.feed(body, 0) == []
    assert decoder.activity()  # real events, even without text


def test_comment_only_feed_is_not_activity() -> None:
    decoder = OPENAI.decoder()
    decoder.feed(b": keep-alive\n\n:\n", 0)
    assert not decoder.activity()
    decoder.feed(b"data: " + delta(content="a") + b"\n\n", 1)
    assert decoder.activity()
    decoder.feed(b": ping\r\n\r\n", 2)
    assert not decoder.activity()


def test_finish_on_the_last_content_chunk_old_ollama_format() -> None:
    body = b"data: " + delta("length", role="assistant", content="end") + b"\n\ndata: [DONE]\n\n"
    chunks, decoder = decode([body])
    assert summary(chunks) == [("end", "", (), False), ("", "", (), True)]
    assert decoder.done_reason == "length"


def test_whole_tool_calls_without_finish_come_with_done() -> None:
    call = {"index": 0, "id": "c", "type": "function",
            "function": {"name": "f", "arguments": "{}"}}
    body = b"data: " + delta(tool_calls=[call]) + b"\n\ndata: [DONE]\n\n"
    chunks, _ = decode([body])
    assert summary(chunks) == [("", "", ({"id": "c", "type": "function",
                                          "function": {"name": "f", "arguments": "{}"}},),
                                True)]


def test_two_tool_calls_merge_by_index() -> None:
    first = {"index": 0, "id": "a", "function": {"name": "f", "arguments": '{"x":'}}
    second = {"index": 1, "id": "b", "function": {"name": "g", "arguments": "{}"}}
    body = b"".join(b"data: " + d + b"\n\n" for d in [
        delta(tool_calls=[first, second]),
        delta(tool_calls=[{"index": 0, "function": {"arguments": "1}"}}]),
        delta("tool_calls"),
    ]) + b"data: [DONE]\n\n"
    chunks, _ = decode([body])
    assert [c["function"] for c in chunks[0].tool_calls] == [
        {"name": "f", "arguments": '{"x":1}'}, {"name": "g", "arguments": "{}"}]


def test_completions_stream_text_and_usage() -> None:
    def chunk(text: str, finish: Any, usage: Mapping[str, int]) -> bytes:
        return b"data: " + js({"id": "cmpl-1", "object": "text_completion", "model": "m",
                                "choices": [{"text": text, "index": 0, "finish_reason": finish}],
                                "usage": usage}) + b"\n\n"
    zero = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    body = (chunk("Once", None, zero) + chunk(" upon", "length", zero)
            + b"data: " + js({"choices": [], "model": "m",
                               "usage": {"prompt_tokens": 3, "completion_tokens": 2}})
            + b"\n\ndata: [DONE]\n\n")
    chunks, decoder = decode([body])
    assert summary(chunks) == [("Once", "", (), False), (" upon", "", (), False),
                               ("", "", (), True)]
    assert decoder.stats == Stats(prompt_eval_count=3, eval_count=2)
    assert decoder.done_reason == "length"


@pytest.mark.parametrize("event", [
    b'data: {"error":{"message":"model crashed","type":"api_error"}}\n\n',
    b'data: {"error":"model crashed"}\n\n',
    b'error: {"code":500,"message":"model crashed"}\n\n',
])
def test_error_event_raises_server_stream_error(event: bytes) -> None:
    decoder = OPENAI.decoder()
    assert len(decoder.feed(b"data: " + delta(content="a") + b"\n\n", 0)) == 1
    with pytest.raises(ServerStreamError, match="model crashed"):
        decoder.feed(event, 1)


def test_body_ending_before_done_is_interrupted() -> None:
    decoder = OPENAI.decoder()
    decoder.feed(b"data: " + delta(content="a") + b"\n\ndata: " + delta("stop") + b"\n\n", 0)
    with pytest.raises(StreamInterrupted, match=r"\[DONE\]"):
        decoder.close(1)


def test_data_after_done_is_ignored() -> None:
    decoder = OPENAI.decoder()
    assert summary(decoder.feed(b"data: [DONE]\n\ndata: garbage\n\n", 0)) == [("", "", (), True)]
    assert decoder.feed(b"data: more garbage\n\n", 1) == []
    assert decoder.close(2) == []


@pytest.mark.parametrize("bad", [b"data: {nope}\n\n", b"data: [1]\n\n",
                                 b'data: {"choices":[5]}\n\n'])
def test_malformed_events_raise_protocol_error(bad: bytes) -> None:
    with pytest.raises(ProtocolError):
        OPENAI.decoder().feed(bad, 0)


def test_oversize_multi_line_event_raises() -> None:
    decoder = OPENAI.decoder(max_line=100)
    with pytest.raises(ProtocolError, match="SSE event"):
        decoder.feed(b"data: " + b"x" * 60 + b"\ndata: " + b"y" * 60 + b"\n", 0)


# --- request bodies ---------------------------------------------------------------------

MESSAGES = [{"role": "user", "content": "hi"}]
STREAMING = {"stream": True, "stream_options": {"include_usage": True}}

BODY_CASES: List[Tuple[Any, str, Dict[str, Any]]] = [
    (ChatRequest("m", MESSAGES), "chat/completions",
     {"model": "m", "messages": MESSAGES, **STREAMING}),
    (ChatRequest("m", MESSAGES,
                 options={"num_predict": 64, "temperature": 0, "top_p": 0.9, "top_k": 40,
                          "seed": 7, "stop": ["\n"], "frequency_penalty": 0.5,
                          "presence_penalty": 0.1, "repeat_penalty": 1.1, "num_ctx": 4096},
                 format="json", think="low", tools=[{"type": "function"}], keep_alive="5m"),
     "chat/completions",
     {"model": "m", "messages": MESSAGES, **STREAMING, "tools": [{"type": "function"}],
      "max_tokens": 64, "temperature": 0, "top_p": 0.9, "top_k": 40, "seed": 7, "stop": ["\n"],
      "frequency_penalty": 0.5, "presence_penalty": 0.1, "repeat_penalty": 1.1,
      "num_ctx": 4096, "response_format": {"type": "json_object"},
      "reasoning_effort": "low"}),
    (ChatRequest("m", MESSAGES, options={"num_predict": -1}, format={"type": "object"},
                 think=True),
     "chat/completions",
     {"model": "m", "messages": MESSAGES, **STREAMING,
      "response_format": {"type": "json_schema",
                          "json_schema": {"name": "response", "schema": {"type": "object"}}}}),
    (GenerateRequest("m", "Once"), "completions", {"model": "m", "prompt": "Once", **STREAMING}),
    (GenerateRequest("m", "Once", options={"num_predict": 5, "max_tokens": 9}, raw=True,
                     keep_alive=0, suffix="end", format=""),
     "completions",
     {"model": "m", "prompt": "Once", **STREAMING, "max_tokens": 9, "suffix": "end"}),
]


@pytest.mark.parametrize(("request_", "path", "body"), BODY_CASES)
def test_request_bodies(request_: Any, path: str, body: Dict[str, Any]) -> None:
    method = OPENAI.chat if isinstance(request_, ChatRequest) else OPENAI.generate
    got_path, got_body = method(request_)
    assert (got_path, got_body) == (path, body)
    json.dumps(got_body)


@pytest.mark.parametrize("request_", [
    GenerateRequest("m", "p", system="be brief"),
    GenerateRequest("m", "p", images=["aGk="]),
    ChatRequest("m", MESSAGES, options={"stream": False}),
    ChatRequest("m", MESSAGES, options={"model": "other"}),
    ChatRequest("m", MESSAGES, format="yaml"),
])
def test_requests_openai_cannot_express_are_config_errors(request_: Any) -> None:
    method = OPENAI.chat if isinstance(request_, ChatRequest) else OPENAI.generate
    with pytest.raises(ConfigError):
        method(request_)


def test_get_dialect_returns_openai() -> None:
    assert get_dialect("openai") is OPENAI
    assert OPENAI.name == "openai"
    with pytest.raises(ConfigError):
        get_dialect("anthropic")


# --- error statuses ---------------------------------------------------------------------

def oai_error(message: str, type_: str = "api_error", code: Any = None) -> bytes:
    return js({"error": {"message": message, "type": type_, "param": None, "code": code}})


STATUS_CASES: List[Tuple[int, bytes, Dict[str, str], type, Dict[str, Any], str]] = [
    (404, oai_error("model 'llama9' not found", "not_found_error"), {}, ModelNotFound,
     {"model": "llama9"}, "/v1/models"),
    (404, oai_error("The model `llama9` does not exist.", "NotFoundError", 404), {},
     ModelNotFound, {"model": "llama9"}, "does not exist"),
    (404, oai_error("no access", "invalid_request_error", "model_not_found"), {},
     ModelNotFound, {"model": "llama9"}, "no access"),
    (404, b"404 page not found", {}, ResponseError, {"status_code": 404}, "/v1"),
    (404, b'{"detail":"Not Found"}', {}, ResponseError, {"status_code": 404}, "Not Found"),
    (429, oai_error("rate limited"), {"retry-after": "3"}, ServerBusy,
     {"retry_after": 3.0}, "rate limited"),
    (503, oai_error("server busy"), {}, ServerBusy, {"retry_after": None}, "server busy"),
    (400, oai_error("[] is too short - 'messages'", "invalid_request_error"), {},
     ResponseError, {"status_code": 400}, "too short"),
    (401, oai_error("Invalid API key"), {}, ResponseError, {"status_code": 401}, "API key"),
    (500, b"Internal Server Error", {}, ResponseError, {"status_code": 500},
     "Internal Server Error"),
]


@pytest.mark.parametrize(("status", "body", "headers", "kind", "attrs", "says"), STATUS_CASES)
def test_error_for_status(status: int, body: bytes, headers: Dict[str, str], kind: type,
                          attrs: Dict[str, Any], says: str) -> None:
    err = OPENAI.error_for_status(status, body, headers, "llama9")
    assert type(err) is kind
    for name, value in attrs.items():
        assert getattr(err, name) == value, name
    assert says in str(err)
    assert err.body == body.decode()
