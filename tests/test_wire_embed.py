"""streamkit.wire.embed: request bodies and reply decoding of both dialects (pure)."""

from __future__ import annotations

import base64
import json
import struct
from typing import Any, Dict

import pytest

from streamkit.errors import ConfigError, ModelNotFound, ProtocolError, ResponseError, ServerBusy
from streamkit.records import EmbedRequest
from streamkit.wire import get_dialect
from streamkit.wire.embed import embed_error, get_embed_codec

OLLAMA = get_embed_codec("ollama")
OPENAI = get_embed_codec("openai")


def dumps(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def b64(values: Any) -> str:
    return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()


def test_ollama_request_sends_only_what_is_set() -> None:
    assert OLLAMA.request(EmbedRequest("m", "hi")) == ("api/embed", {"model": "m", "input": "hi"})
    path, body = OLLAMA.request(EmbedRequest("m", ("a", "b"), truncate=False, dimensions=8,
                                             keep_alive="1m", options={"num_ctx": 64}))
    assert path == "api/embed"
    assert body == {"model": "m", "input": ["a", "b"], "truncate": False, "dimensions": 8,
                    "keep_alive": "1m", "options": {"num_ctx": 64}}


def test_openai_request_asks_for_base64_and_refuses_what_it_cannot_send() -> None:
    assert OPENAI.request(EmbedRequest("m", ["a"], dimensions=4, keep_alive="1m")) == (
        "embeddings", {"model": "m", "input": ["a"], "dimensions": 4,
                       "encoding_format": "base64"})
    with pytest.raises(ConfigError, match="truncate=False"):
        OPENAI.request(EmbedRequest("m", "a", truncate=False))
    with pytest.raises(ConfigError, match="options"):
        OPENAI.request(EmbedRequest("m", "a", options={"num_ctx": 4}))
    assert OPENAI.request(EmbedRequest("m", "a", truncate=True))[1]["input"] == "a"


def test_ollama_decode() -> None:
    reply = OLLAMA.decode(dumps({"model": "m", "embeddings": [[0.5, -0.25], [1, 0]],
                                 "total_duration": 9, "load_duration": 2,
                                 "prompt_eval_count": 5}), EmbedRequest("m", ["a", "b"]))
    assert reply.vectors == [[0.5, -0.25], [1, 0]]
    assert (reply.model, reply.prompt_eval_count, reply.total_duration,
            reply.load_duration) == ("m", 5, 9, 2)
    empty = OLLAMA.decode(dumps({"model": "m", "embeddings": []}), EmbedRequest("m", ""))
    assert empty.vectors == [] and empty.prompt_eval_count is None


def test_openai_decode_base64_and_floats_in_index_order() -> None:
    body: Dict[str, Any] = {"object": "list", "model": "m", "data": [
        {"object": "embedding", "embedding": b64([0.25, -1.5]), "index": 1},
        {"object": "embedding", "embedding": [0.5, 0.125], "index": 0}],
        "usage": {"prompt_tokens": 7, "total_tokens": 7}}
    reply = OPENAI.decode(dumps(body), EmbedRequest("m", ["a", "b"]))
    assert reply.vectors == [[0.5, 0.125], [0.25, -1.5]]
    assert reply.prompt_eval_count == 7 and reply.total_duration is None
    one = {"data": [{"embedding": [1.0], "index": 0}]}
    assert OPENAI.decode(dumps(one), EmbedRequest("m", "")).vectors == [[1.0]]


@pytest.mark.parametrize("codec,data,request_input,match", [
    (OLLAMA, b"not json", "a", "not valid JSON"),
    (OLLAMA, b"[1]", "a", "array where an object"),
    (OLLAMA, dumps({"model": "m"}), "a", "no 'embeddings'"),
    (OLLAMA, dumps({"embeddings": [[1.0]]}), ["a", "b"], "1 vectors for 2 inputs"),
    (OLLAMA, dumps({"embeddings": ["x"]}), "a", "not a list of numbers"),
    (OPENAI, dumps({"data": {}}), "a", "no 'data'"),
    (OPENAI, dumps({"data": [{"embedding": "!!", "index": 0}]}), "a", "not base64"),
    (OPENAI, dumps({"data": [{"embedding": "AAA=", "index": 0}]}), "a", "float32"),
    (OPENAI, dumps({"data": []}), "a", "0 vectors for 1 inputs"),
])
def test_malformed_replies(codec: Any, data: bytes, request_input: Any, match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        codec.decode(data, EmbedRequest("m", request_input))


def test_embed_error_hints() -> None:
    dialect = get_dialect("ollama")
    cannot = embed_error(dialect, 501, dumps({"error": "This server does not support "
                                                       "embeddings. Start it with "
                                                       "`--embeddings`"}), {}, "llama3")
    assert type(cannot) is ResponseError and cannot.status_code == 501
    assert "does not support embeddings" in str(cannot)
    assert "'llama3' is not an embedding model" in str(cannot)
    long = embed_error(dialect, 400, dumps({"error": "the input length exceeds the context "
                                                     "length"}), {}, "e")
    assert "num_ctx" in str(long) and long.status_code == 400
    missing = embed_error(dialect, 404, dumps({"error": 'model "e" not found, try pulling it '
                                                        'first'}), {}, "e")
    assert isinstance(missing, ModelNotFound)
    busy = embed_error(get_dialect("openai"), 503, dumps({"error": {"message": "busy"}}),
                       {"retry-after": "2"}, "e")
    assert isinstance(busy, ServerBusy) and busy.retry_after == 2.0
    plain = embed_error(dialect, 400, dumps({"error": "invalid input type"}), {}, "e")
    assert str(plain) == "HTTP 400 from the server: invalid input type"


def test_unknown_dialect() -> None:
    with pytest.raises(ConfigError):
        get_embed_codec("grpc")
