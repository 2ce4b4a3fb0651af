"""Ollama dialect: request bodies, NDJSON decoding, in-band errors, status mapping."""

from __future__ import annotations

import json
import random
import tracemalloc
from typing import Any, Dict, List, Mapping, Sequence, Tuple

import pytest

from streamkit import _json
from streamkit.errors import (
    ModelNotFound,
    ProtocolError,
    ResponseError,
    ServerBusy,
    ServerStreamError,
    StreamInterrupted,
)
from streamkit.records import ChatRequest, Chunk, GenerateRequest, Stats
from streamkit.wire import get_dialect
from streamkit.wire._status import parse_retry_after
from streamkit.wire.ollama import OLLAMA, OllamaDecoder

BACKENDS = ["json"] + (["orjson"] if _json.fast_loads is not None else [])


@pytest.fixture(params=BACKENDS, autouse=True)
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run every decoding test with both JSON backends."""
    loads = _json.stdlib_loads if request.param == "json" else _json.fast_loads
    monkeypatch.setattr(_json, "loads", loads)
    return str(request.param)


def line(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def chat(content: str = "", done: bool = False, **extra: Any) -> Dict[str, Any]:
    message: Dict[str, Any] = {"role": "assistant", "content": content}
    message.update(extra.pop("message", {}))
    return {"model": "m", "created_at": "2026-01-02T03:04:05Z", "message": message,
            "done": done, **extra}


FINAL_METRICS = {"total_duration": 812000000, "load_duration": 3100000,
                 "prompt_eval_count": 12, "prompt_eval_duration": 40000000,
                 "eval_count": 4, "eval_duration": 9000000}
TOOL_CALL = {"id": "call_ab12cd34",
             "function": {"index": 0, "name": "get_weather", "arguments": {"city": "Paris"}}}

CHAT_BODY = b"".join([
    line(chat("", message={"thinking": "Hmm\u0085 "})),
    line(chat("Hé\u2028llo 🙂")),
    line(chat("", message={"tool_calls": [TOOL_CALL]})),
    line(chat(" world", done=True, done_reason="stop", **FINAL_METRICS)),
])

# (text, thinking, tool_calls, done) per chunk of CHAT_BODY
CHAT_EXPECTED = [
    ("", "Hmm\u0085 ", (), False),
    ("Hé\u2028llo 🙂", "", (), False),
    ("", "", (TOOL_CALL,), False),
    (" world", "", (), True),
]


def decode(pieces: Sequence[bytes], first_index: int = 0) -> List[Chunk]:
    decoder = OLLAMA.decoder(first_index=first_index)
    chunks: List[Chunk] = []
    for stamp, piece in enumerate(pieces):
        chunks.extend(decoder.feed(piece, stamp))
    chunks.extend(decoder.close(len(pieces)))
    return chunks


def summary(chunks: Sequence[Chunk]) -> List[Tuple[Any, ...]]:
    return [(c.text, c.thinking, c.tool_calls, c.done) for c in chunks]


# --- request bodies -------------------------------------------------------------------

BODY_CASES: List[Tuple[Any, str, Dict[str, Any]]] = [
    (ChatRequest("m", [{"role": "user", "content": "hi"}]),
     "api/chat",
     {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}),
    (ChatRequest("m", [{"role": "user", "content": "hi"}], options={"temperature": 0, "seed": 1},
                 format={"type": "object"}, think="high", tools=[{"type": "function"}],
                 keep_alive="10m", id="x"),
     "api/chat",
     {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True,
      "tools": [{"type": "function"}], "format": {"type": "object"},
      "options": {"temperature": 0, "seed": 1}, "think": "high", "keep_alive": "10m"}),
    (GenerateRequest("m", "p"),
     "api/generate", {"model": "m", "prompt": "p", "stream": True}),
    (GenerateRequest("m", "p", system="s", options={"num_predict": 3}, format="json",
                     think=False, raw=True, images=["aGk="], keep_alive=0, suffix="end"),
     "api/generate",
     {"model": "m", "prompt": "p", "stream": True, "suffix": "end", "system": "s", "raw": True,
      "images": ["aGk="], "format": "json", "options": {"num_predict": 3}, "think": False,
      "keep_alive": 0}),
]


@pytest.mark.parametrize(("request_", "path", "body"), BODY_CASES)
def test_request_bodies(request_: Any, path: str, body: Dict[str, Any]) -> None:
    method = OLLAMA.chat if isinstance(request_, ChatRequest) else OLLAMA.generate
    got_path, got_body = method(request_)
    assert (got_path, got_body) == (path, body)
    json.dumps(got_body)  # JSON-serialisable as built


def test_get_dialect_returns_ollama() -> None:
    assert get_dialect("ollama") is OLLAMA
    assert OLLAMA.name == "ollama"


# --- decoding -------------------------------------------------------------------------

def test_chat_stream_decodes_thinking_text_tool_calls_and_done_text() -> None:
    decoder = OLLAMA.decoder()
    chunks = decoder.feed(CHAT_BODY, 42)
    assert summary(chunks) == CHAT_EXPECTED
    assert [c.index for c in chunks] == [0, 1, 2, 3]
    assert all(c.received_ns == 42 for c in chunks)
    assert chunks[3].raw is not None and chunks[3].raw["done_reason"] == "stop"
    assert decoder.done and decoder.done_reason == "stop" and decoder.model == "m"
    assert decoder.stats == Stats(**FINAL_METRICS)
    assert decoder.close(43) == []


def test_split_at_every_offset_gives_identical_chunks() -> None:
    for offset in range(len(CHAT_BODY) + 1):
        got = decode([CHAT_BODY[:offset], CHAT_BODY[offset:]])
        assert summary(got) == CHAT_EXPECTED, offset
        assert [c.index for c in got] == [0, 1, 2, 3]


def test_random_multi_splits_give_identical_chunks() -> None:
    rng = random.Random(99)
    for _ in range(200):
        cuts = sorted(rng.sample(range(1, len(CHAT_BODY)), rng.randint(2, 10)))
        pieces = [CHAT_BODY[a:b] for a, b in zip([0, *cuts], [*cuts, len(CHAT_BODY)])]
        assert summary(decode(pieces)) == CHAT_EXPECTED, cuts


def test_received_ns_is_the_stamp_of_the_read_that_completed_the_record() -> None:
    first, second = line(chat("a")), line(chat("b", done=True))
    decoder = OLLAMA.decoder()
    assert decoder.feed(first[:5], 1) == []
    assert [c.received_ns for c in decoder.feed(first[5:] + second[:3], 2)] == [2]
    assert [c.received_ns for c in decoder.feed(second[3:], 3)] == [3]


def test_generate_stream_with_thinking_and_done_tool_calls() -> None:
    body = (line({"model": "g", "response": "", "thinking": "think", "done": False})
            + line({"model": "g", "response": "Hi", "done": False})
            + line({"model": "g", "response": "!", "done": True, "done_reason": "length",
                    "context": [1, 2], "eval_count": 2, "tool_calls": [TOOL_CALL]}))
    decoder = OLLAMA.decoder()
    chunks = decoder.feed(body, 0)
    assert summary(chunks) == [("", "think", (), False), ("Hi", "", (), False),
                               ("!", "", (TOOL_CALL,), True)]
    assert decoder.done_reason == "length"
    assert decoder.stats == Stats(eval_count=2)  # missing metrics stay None


def test_synthetic_load_reply_without_newline_is_a_done_chunk() -> None:
    decoder = OLLAMA.decoder()
    reply = b'{"model":"m","created_at":"2026-01-02T03:04:05Z","response":"","done":true,' \
            b'"done_reason":"load"}'
    assert decoder.feed(reply, 1) == []
    assert not decoder.activity()
    chunks = decoder.close(2)
    assert summary(chunks) == [("", "", (), True)]
    assert chunks[0].received_ns == 2
    assert decoder.done_reason == "load"
    assert decoder.stats == Stats()


def test_first_index_offsets_chunk_indexes() -> None:
    assert [c.index for c in decode([CHAT_BODY], first_index=7)] == [7, 8, 9, 10]


def test_data_after_done_is_ignored() -> None:
    decoder = OLLAMA.decoder()
    chunks = decoder.feed(line(chat("x", done=True)) + b"garbage\n", 0)
    assert summary(chunks) == [("x", "", (), True)]
    assert decoder.feed(b"{not json}\n" + b"z" * 100, 1) == []
    assert decoder.close(2) == []


def test_activity_reflects_whether_the_last_feed_completed_records() -> None:
    decoder = OLLAMA.decoder()
    record = line(chat("a"))
    decoder.feed(record[:10], 0)
    assert not decoder.activity()
    decoder.feed(record[10:], 1)
    assert decoder.activity()
    decoder.feed(b"\n", 2)
    assert not decoder.activity()


@pytest.mark.parametrize("error", [
    {"error": "model runner has unexpectedly stopped"},
    {"error": {"message": "model runner has unexpectedly stopped"}},
])
def test_in_band_error_on_the_first_line(error: Dict[str, Any]) -> None:
    decoder = OLLAMA.decoder()
    with pytest.raises(ServerStreamError, match="model runner has unexpectedly stopped"):
        decoder.feed(line(error), 0)


def test_in_band_error_on_a_later_line_keeps_earlier_chunks_out_of_it() -> None:
    decoder = OLLAMA.decoder()
    assert summary(decoder.feed(line(chat("partial")), 0)) == [("partial", "", (), False)]
    with pytest.raises(ServerStreamError) as info:
        decoder.feed(line({"error": "an error was encountered while running the model"}), 1)
    assert str(info.value) == "an error was encountered while running the model"


@pytest.mark.parametrize(("bad", "what"), [
    (b'{"model":"m","message":{"content":"x"\n', "not valid JSON"),
    (b'{"a":1}{"b":2}\n', "not valid JSON"),
    (b"[1,2]\n", "JSON array"),
    (b'"text"\n', "JSON string"),
    (b"null\n", "JSON null"),
    (b'{"response":"\xff\xfe"}\n', "not valid JSON"),  # invalid UTF-8
    (b'{"message":{"content":"a","tool_calls":5}}\n', "unexpected shape"),
])
def test_undecodable_lines_raise_protocol_error(bad: bytes, what: str) -> None:
    decoder = OLLAMA.decoder()
    with pytest.raises(ProtocolError, match=what) as info:
        decoder.feed(bad, 0)
    assert repr(bad.rstrip(b"\n")[:8])[2:-1] in str(info.value)  # a short excerpt of the line


def test_long_bad_line_is_excerpted() -> None:
    decoder = OLLAMA.decoder()
    with pytest.raises(ProtocolError, match=r"\.\.\. \(1001 bytes\)"):
        decoder.feed(b"{" + b"x" * 1000 + b"\n", 0)


def test_missing_done_raises_stream_interrupted_at_close() -> None:
    decoder = OLLAMA.decoder()
    assert len(decoder.feed(line(chat("a")) + line(chat("b")), 0)) == 2
    with pytest.raises(StreamInterrupted, match="before the final done record"):
        decoder.close(1)


def test_body_cut_mid_record_is_an_interruption() -> None:
    decoder = OLLAMA.decoder()
    decoder.feed(line(chat("a")) + b'{"model":"m","mess', 0)
    with pytest.raises(StreamInterrupted, match="middle of a record"):
        decoder.close(1)


def test_final_line_without_newline_is_decoded_at_close() -> None:
    decoder = OLLAMA.decoder()
    body = line(chat("a")) + line(chat("b", done=True))[:-1]
    assert len(decoder.feed(body, 0)) == 1
    assert summary(decoder.close(1)) == [("b", "", (), True)]


def test_oversize_line_raises_protocol_error_with_bounded_memory() -> None:
    decoder = OllamaDecoder(max_line=4 * 1024 * 1024)
    tracemalloc.start()
    try:
        with pytest.raises(ProtocolError, match="limit"):
            for _ in range(1024):  # up to 64 MiB in 64 KiB reads
                decoder.feed(b'{"response":"' + b"a" * (64 * 1024 - 13), 0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 20 * 1024 * 1024, peak


# --- error statuses -------------------------------------------------------------------

NOW = 1_700_000_000.0


def http_date(epoch: float) -> str:
    from email.utils import formatdate
    return formatdate(epoch, usegmt=True)


STATUS_CASES: List[Tuple[int, bytes, Dict[str, str], type, Dict[str, Any], str]] = [
    (404, b'{"error":"model \'llama9\' not found"}', {}, ModelNotFound,
     {"model": "llama9", "status_code": 404}, "ollama pull llama9"),
    (404, b'{"error":"model \\"llama9\\" not found, try pulling it first"}', {}, ModelNotFound,
     {"model": "llama9"}, "ollama pull llama9"),
    (404, b"404 page not found", {}, ResponseError,
     {"status_code": 404, "body": "404 page not found"}, 'dialect="openai"'),
    (429, b'{"error":"slow down"}', {"retry-after": "7"}, ServerBusy,
     {"retry_after": 7.0, "status_code": 429}, "slow down"),
    (503, b'{"error":"server busy, please try again.  maximum pending requests exceeded"}',
     {}, ServerBusy, {"retry_after": None, "status_code": 503}, "maximum pending requests"),
    (503, b"busy", {"retry-after": "soon"}, ServerBusy, {"retry_after": None}, "busy"),
    (500, b'{"error":"model runner has unexpectedly stopped"}', {}, ResponseError,
     {"status_code": 500}, "model runner has unexpectedly stopped"),
    (400, b'{"error":{"message":"invalid think value","type":"invalid_request_error"}}', {},
     ResponseError, {"status_code": 400}, "invalid think value"),
    (400, b"plain text complaint", {}, ResponseError, {"status_code": 400},
     "plain text complaint"),
    (403, b"", {}, ResponseError, {"status_code": 403}, "API key"),
]


@pytest.mark.parametrize(("status", "body", "headers", "kind", "attrs", "says"), STATUS_CASES)
def test_error_for_status(status: int, body: bytes, headers: Dict[str, str], kind: type,
                          attrs: Dict[str, Any], says: str) -> None:
    err = OLLAMA.error_for_status(status, body, headers, "llama9")
    assert type(err) is kind
    for name, value in attrs.items():
        assert getattr(err, name) == value, name
    assert says in str(err)


def test_plain_404_is_not_a_model_error() -> None:
    err = OLLAMA.error_for_status(404, b"404 page not found", {}, "llama9")
    assert not isinstance(err, ModelNotFound)
    assert "host" in str(err)


def test_retry_after_http_date_becomes_seconds_from_now() -> None:
    err = OLLAMA.error_for_status(503, b"", {"retry-after": http_date(NOW + 30)}, "m")
    assert isinstance(err, ServerBusy)
    assert err.retry_after is not None and 0 <= err.retry_after <= 31


@pytest.mark.parametrize(("value", "expected"), [
    ("0", 0.0), ("120", 120.0), (" 5 ", 5.0), ("1.5", 1.5), ("-3", 0.0),
    (http_date(NOW + 60), 60.0), (http_date(NOW - 60), 0.0),
    ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),
    ("", None), ("soon", None), ("nan", None), ("inf", None), (None, None),
])
def test_parse_retry_after(value: Any, expected: Any) -> None:
    assert parse_retry_after(value, now=NOW) == expected


@pytest.mark.parametrize("reads", [
    [b'{"response":"a","done":false}\n', b'{"response":"b","done":true}\n'],
    [b'{"response":"a","done":false}\r\n', b'{"response":"b","done":true}\r\n'],
    [b'{"response":"a",', b'"done":false}\n', b'{"response":"b","done":true}\n'],
    [b'\n', b'{"response":"a","done":false}\n\n', b'{"response":"b","done":true}\n'],
])
def test_one_record_reads_decode_like_a_byte_by_byte_feed(reads: List[bytes]) -> None:
    def texts(feeds: List[bytes]) -> List[Tuple[str, int]]:
        decoder = OllamaDecoder()
        return [(c.text, c.index) for data in feeds for c in decoder.feed(data, 0)]

    whole = b"".join(reads)
    assert texts(reads) == texts([whole[i:i + 1] for i in range(len(whole))])
    assert texts(reads) == [("a", 0), ("b", 1)]


def test_a_one_record_read_longer_than_max_line_is_refused() -> None:
    line = b'{"response":"' + b"x" * 100 + b'","done":true}\n'
    with pytest.raises(ProtocolError):
        OllamaDecoder(max_line=64).feed(line, 0)
