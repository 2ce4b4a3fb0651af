"""The emulator's embedding endpoints: /api/embed, /api/embeddings, /v1/embeddings."""

from __future__ import annotations

import base64
import json
import math
import socket
import struct
import threading
import time
from typing import Any, Dict, Iterator, List

import ollama
import openai
import pytest
from test_emulator_wire import address, exchange, request_bytes

from streamkit.emulator import Emulator, EmulatorConfig, expected_embedding
from streamkit.errors import ConfigError

CANNOT_EMBED = "This server does not support embeddings. Start it with `--embeddings`"


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    with Emulator(EmulatorConfig(embed_dim=64)) as e:
        yield e


def norm(vector: List[float]) -> float:
    return math.sqrt(math.fsum(x * x for x in vector))


def f32(values: List[float]) -> List[float]:
    return list(struct.unpack(f"<{len(values)}f", struct.pack(f"<{len(values)}f", *values)))


# -- vectors ------------------------------------------------------------------------

def test_vectors_are_deterministic_unit_length_and_input_dependent() -> None:
    cfg = EmulatorConfig()
    a1, a2, b = expected_embedding("demo-embed", ["alpha beta", "alpha beta", "gamma"], cfg)
    assert a1 == a2 and a1 != b
    assert len(a1) == 768
    assert abs(norm(a1) - 1.0) < 1e-7 and abs(norm(b) - 1.0) < 1e-7
    other_model = expected_embedding("other-embed", "alpha beta", cfg)[0]
    other_seed = expected_embedding("demo-embed", "alpha beta", EmulatorConfig(seed=1))[0]
    assert other_model != a1 and other_seed != a1
    assert expected_embedding("demo-embed:latest", "alpha beta", cfg)[0] == a1
    odd = expected_embedding("demo-embed", "alpha beta", EmulatorConfig(embed_dim=13))[0]
    assert len(odd) == 13 and abs(norm(odd) - 1.0) < 1e-7


def test_dimensions_cut_and_renormalise() -> None:
    full = expected_embedding("demo-embed", "some text")[0]
    short = expected_embedding("demo-embed", "some text", dimensions=10)[0]
    assert len(short) == 10 and abs(norm(short) - 1.0) < 1e-7
    scale = norm(full[:10])
    assert all(abs(s - f / scale) < 1e-8 for s, f in zip(short, full[:10]))


def test_config_validates_embedding_fields() -> None:
    with pytest.raises(ConfigError, match="embed_dim"):
        EmulatorConfig(embed_dim=0)
    with pytest.raises(ConfigError, match="embed_token_cost"):
        EmulatorConfig(embed_token_cost=-1)
    with pytest.raises(ConfigError, match="embed_models"):
        EmulatorConfig(embed_models=("",))
    cfg = EmulatorConfig(models=("a",), embed_models=("e", "a"))
    assert cfg.served == ("a", "e") and cfg.embeds("e:latest") and cfg.embeds("a")


# -- official clients ------------------------------------------------------------------

def test_official_ollama_client_embed(emu: Emulator) -> None:
    client = ollama.Client(host=emu.url)
    try:
        texts = ["The quick brown fox", "jumps over", ""]
        reply = client.embed(model="demo-embed", input=texts)
        assert reply.model == "demo-embed"
        assert [list(v) for v in reply.embeddings] == expected_embedding(
            "demo-embed", texts, emu.config)
        assert reply.prompt_eval_count == (4 + 2) + (2 + 2) + (0 + 2)
        assert reply.total_duration and reply.total_duration > 0
        single = client.embed(model="demo-embed", input="jumps over")
        assert list(single.embeddings[0]) == list(reply.embeddings[1])
        assert client.embed(model="demo-embed", input=[]).embeddings == []
        short = client.embed(model="demo-embed", input="jumps over", dimensions=8)
        assert list(short.embeddings[0]) == expected_embedding(
            "demo-embed", "jumps over", emu.config, dimensions=8)[0]
        legacy = client.embeddings(model="demo-embed", prompt="jumps over")
        assert list(legacy.embedding) == list(reply.embeddings[1])
        assert list(client.embeddings(model="demo-embed", prompt="").embedding) == []
        assert "embedding" in (client.show("demo-embed").capabilities or [])
        assert "demo-embed:latest" in [m.model for m in client.list().models]
    finally:
        client._client.close()


def test_official_openai_client_embeddings(emu: Emulator) -> None:
    with openai.OpenAI(base_url=emu.url + "/v1", api_key="unused", max_retries=0) as client:
        texts = ["The quick brown fox", "jumps over"]
        want = expected_embedding("demo-embed", texts, emu.config)
        as_base64 = client.embeddings.create(model="demo-embed", input=texts)  # its default
        assert [d.embedding for d in as_base64.data] == [f32(v) for v in want]
        as_float = client.embeddings.create(model="demo-embed", input=texts,
                                            encoding_format="float")
        assert [d.embedding for d in as_float.data] == want
        assert [d.index for d in as_float.data] == [0, 1]
        assert as_float.usage.prompt_tokens == as_float.usage.total_tokens == 10
        assert as_float.model == "demo-embed" and as_float.object == "list"
        one = client.embeddings.create(model="demo-embed", input="", encoding_format="float")
        assert one.data[0].embedding == expected_embedding("demo-embed", [""], emu.config)[0]
        with pytest.raises(openai.NotFoundError):
            client.embeddings.create(model="nope", input="x")


# -- wire format and errors ----------------------------------------------------------------

def test_native_reply_field_order_and_content_type(emu: Emulator) -> None:
    wire = exchange(emu.url, "POST", "/api/embed", {"model": "demo-embed", "input": "a b"})
    assert wire.status == 200
    assert wire.headers["content-type"] == "application/json; charset=utf-8"
    assert list(wire.json()) == ["model", "embeddings", "total_duration", "load_duration",
                                 "prompt_eval_count"]
    empty = exchange(emu.url, "POST", "/api/embed", {"model": "demo-embed", "input": ""})
    assert empty.json() == {"model": "demo-embed", "embeddings": []}
    v1 = exchange(emu.url, "POST", "/v1/embeddings", {"model": "demo-embed", "input": "a b",
                                                      "encoding_format": "base64"})
    body = v1.json()
    assert v1.headers["content-type"] == "application/json" and v1.body.endswith(b"}\n")
    assert list(body) == ["object", "data", "model", "usage"]
    assert list(body["data"][0]) == ["object", "embedding", "index"]
    raw = base64.b64decode(body["data"][0]["embedding"])
    want = expected_embedding("demo-embed", "a b", emu.config)[0]
    assert list(struct.unpack(f"<{len(want)}f", raw)) == f32(want)


@pytest.mark.parametrize("path,body,status,error", [
    ("/api/embed", {"model": "demo-embed", "input": 5}, 400, "invalid input type"),
    ("/api/embed", {"model": "demo-embed", "input": ["a", 1]}, 400, "invalid input type"),
    ("/api/embed", {"input": "a"}, 404, "model '' not found"),
    ("/api/embed", {"model": "nope", "input": "a"}, 404,
     'model "nope" not found, try pulling it first'),
    ("/api/embed", {"model": "demo-embed", "input": "a", "dimensions": "x"}, 400,
     "json: cannot unmarshal string into Go struct field EmbedRequest.dimensions of type int"),
    ("/api/embed", {"model": "demo-embed", "input": "a", "truncate": "no"}, 400,
     "json: cannot unmarshal string into Go struct field EmbedRequest.truncate of type bool"),
    ("/api/embed", {"model": "demo-embed", "input": "a b c d", "truncate": False,
                    "options": {"num_ctx": 4}}, 400,
     "the input length exceeds the context length"),
    ("/api/embed", {"model": "demo-embed", "input": "a b", "options": {"num_ctx": 1}}, 400,
     "input after truncation exceeds maximum context length"),
    ("/api/embed", {"model": "demo", "input": "a"}, 501, CANNOT_EMBED),
    ("/api/embeddings", {"prompt": "a"}, 400, "model is required"),
    ("/api/embeddings", {"model": "demo", "prompt": "a"}, 500, CANNOT_EMBED),
    ("/api/generate", {"model": "demo-embed", "prompt": "a"}, 400,
     '"demo-embed" does not support generate'),
    ("/api/chat", {"model": "demo-embed", "messages": [{"role": "user", "content": "a"}]},
     400, '"demo-embed" does not support chat'),
])
def test_native_errors(emu: Emulator, path: str, body: Dict[str, Any], status: int,
                       error: str) -> None:
    wire = exchange(emu.url, "POST", path, body)
    assert (wire.status, wire.json()) == (status, {"error": error})


@pytest.mark.parametrize("body,status,error,kind", [
    ({"model": "demo-embed", "input": []}, 400, "invalid input", "invalid_request_error"),
    ({"model": "demo-embed"}, 400, "invalid input", "invalid_request_error"),
    ({"model": "demo-embed", "input": "a", "encoding_format": "hex"}, 400,
     "Invalid value for 'encoding_format' = hex. Supported values: ['float', 'base64'].",
     "invalid_request_error"),
    ({"model": "nope", "input": "a"}, 404, 'model "nope" not found, try pulling it first',
     "not_found_error"),
    ({"model": "demo", "input": "a"}, 501, CANNOT_EMBED, "api_error"),
])
def test_v1_errors(emu: Emulator, body: Dict[str, Any], status: int, error: str,
                   kind: str) -> None:
    wire = exchange(emu.url, "POST", "/v1/embeddings", body)
    assert wire.status == status
    assert wire.json()["error"]["message"] == error
    assert wire.json()["error"]["type"] == kind


def test_truncation_embeds_the_kept_words(emu: Emulator) -> None:
    wire = exchange(emu.url, "POST", "/api/embed", {
        "model": "demo-embed", "input": ["one two three four five", "six"],
        "options": {"num_ctx": 5}})
    body = wire.json()
    cfg = emu.config
    assert body["embeddings"][0] == expected_embedding("demo-embed", "one two three", cfg)[0]
    assert body["prompt_eval_count"] == (3 + 2) + (1 + 2)


def test_a_generate_model_is_loaded_before_it_refuses(emu: Emulator) -> None:
    cfg = EmulatorConfig(models=("chatty",), embed_models=(), load_time=0.05)
    with Emulator(cfg) as e:
        wire = exchange(e.url, "POST", "/api/embed", {"model": "chatty", "input": "a"})
        assert wire.status == 501
        assert e.counters()["loads"] == 1
        empty = exchange(e.url, "POST", "/api/embed", {"model": "chatty", "input": []})
        assert empty.json() == {"model": "chatty", "embeddings": []}


# -- cost, slots, faults, counters -------------------------------------------------------------

def test_an_embedding_model_has_one_slot_held_for_the_request_cost() -> None:
    cfg = EmulatorConfig(embed_dim=8, parallel=4, embed_request_cost=0.3,
                         embed_token_cost=0.01)
    with Emulator(cfg) as e:
        results: List[int] = []

        def post() -> None:
            results.append(exchange(e.url, "POST", "/api/embed",
                                    {"model": "demo-embed", "input": ["a b", "c"]}).status)

        started = time.monotonic()
        threads = [threading.Thread(target=post) for _ in range(2)]
        for t in threads:
            t.start()
        assert e.wait_until(lambda c: c["waiting"] == 1 and c["in_flight"] == 1, timeout=5)
        for t in threads:
            t.join(10)
        elapsed = time.monotonic() - started
        assert results == [200, 200]
        # Two requests, one slot: each holds it for 0.3 + 7 tokens * 0.01 s.
        assert elapsed >= 2 * (0.3 + 0.07) - 0.02
        counters = e.counters()
        assert counters["embed_inputs"] == 4 and counters["completed"] == 2


def test_a_client_that_leaves_frees_the_slot() -> None:
    cfg = EmulatorConfig(embed_dim=8, embed_request_cost=30.0)
    with Emulator(cfg) as e:
        sock = socket.create_connection(address(e.url), timeout=5)
        try:
            sock.sendall(request_bytes(e.url, "POST", "/api/embed",
                                       {"model": "demo-embed", "input": "a"}))
            assert e.wait_until(lambda c: c["in_flight"] == 1, timeout=5)
        finally:
            sock.close()
        assert e.wait_until(lambda c: c["in_flight"] == 0 and c["disconnects"] == 1,
                            timeout=5)


def test_faults_apply_to_embed(emu: Emulator) -> None:
    emu.set_faults("status:503,retry_after=7,first=1; error,nth=2,message=boom; cut,nth=3")
    try:
        busy = exchange(emu.url, "POST", "/api/embed", {"model": "demo-embed", "input": "a"})
        assert busy.status == 503 and busy.headers["retry-after"] == "7"
        assert busy.json() == {"error": "server busy, please try again.  maximum pending "
                                        "requests exceeded"}
        failed = exchange(emu.url, "POST", "/v1/embeddings",
                          {"model": "demo-embed", "input": "a"})
        assert failed.status == 500 and failed.json()["error"]["message"] == "boom"
        cut = exchange(emu.url, "POST", "/api/embed", {"model": "demo-embed", "input": "a"})
        assert cut.raw == b""
        fine = exchange(emu.url, "POST", "/api/embed", {"model": "demo-embed", "input": "a"})
        assert fine.status == 200
    finally:
        emu.set_faults(None)
    assert emu.counters()["faults"].get("cut", 0) >= 1


def test_head_and_get_are_not_routes(emu: Emulator) -> None:
    assert exchange(emu.url, "GET", "/api/embed").status == 405
    assert json.loads(exchange(emu.url, "POST", "/api/embed", b"").body) == {
        "error": "missing request body"}
