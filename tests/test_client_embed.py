"""Client.embed and streamkit._embed against the emulator and a misbehaving raw server."""

from __future__ import annotations

import json
import threading
import time
from typing import Iterator, List

import ollama
import openai
import pytest
from rawserver import RawConn, RawServer

from streamkit import (
    Cancelled,
    CancelToken,
    ConfigError,
    ModelNotFound,
    ProtocolError,
    ResponseError,
    RetryPolicy,
    ServerBusy,
    StreamTimeout,
    Timeouts,
)
from streamkit._embed import run_embed
from streamkit.client import Client
from streamkit.emulator import Emulator, EmulatorConfig, expected_embedding
from streamkit.records import EmbedRequest
from streamkit.stream import FixedRoute
from streamkit.wire import get_dialect
from streamkit.wire.embed import get_embed_codec

FAST_RETRY = RetryPolicy(attempts=3, backoff_base=0.01, backoff_max=0.02)
TEXTS = ["The quick brown fox", "jumps over the lazy dog", "lorem ipsum"]


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    with Emulator(EmulatorConfig(embed_dim=32)) as e:
        yield e


@pytest.fixture
def client(emu: Emulator) -> Iterator[Client]:
    with Client(emu.url, retry=FAST_RETRY) as c:
        yield c


def reply_body(vectors: List[List[float]]) -> bytes:
    return json.dumps({"model": "m", "embeddings": vectors, "prompt_eval_count": 3}).encode()


# -- equal to the official clients -------------------------------------------------------

def test_vectors_equal_the_official_ollama_client(client: Client, emu: Emulator) -> None:
    result = client.embed("demo-embed", TEXTS)
    official = ollama.Client(host=emu.url)
    try:
        theirs = official.embed(model="demo-embed", input=TEXTS)
    finally:
        official._client.close()
    assert result.vectors == [list(v) for v in theirs.embeddings]
    assert result.vectors == expected_embedding("demo-embed", TEXTS, emu.config)
    assert result.prompt_eval_count == theirs.prompt_eval_count
    assert result.model == "demo-embed" and result.ok and result.attempts == 1
    assert result.host == emu.url and result.total_duration and result.load_duration
    timing = result.timing
    assert timing.started_ns and timing.sent_ns and timing.done_ns
    assert timing.started_ns <= timing.sent_ns <= timing.done_ns
    one = client.embed("demo-embed", "lorem ipsum", dimensions=4)
    assert one.vectors == expected_embedding("demo-embed", "lorem ipsum", emu.config,
                                             dimensions=4)


def test_vectors_equal_the_official_openai_client(emu: Emulator) -> None:
    with Client(emu.url, dialect="openai") as ours, \
            openai.OpenAI(base_url=emu.url + "/v1", api_key="unused", max_retries=0) as theirs:
        result = ours.embed("demo-embed", TEXTS)
        reply = theirs.embeddings.create(model="demo-embed", input=TEXTS)
    assert result.vectors == [d.embedding for d in reply.data]
    assert result.prompt_eval_count == reply.usage.prompt_tokens
    assert emu.counters()["by_path"].get("/v1/embeddings", 0) >= 2


def test_empty_input_and_request_fields(emu: Emulator) -> None:
    seen: List[bytes] = []

    def handler(conn: RawConn) -> None:
        seen.append(conn.request.body)
        conn.respond(200, reply_body([[1.0, 0.0]]))

    with RawServer(handler) as server, Client(server.url) as c:
        c.embed("m", ["x"], truncate=False, dimensions=2, keep_alive="1m",
                options={"num_ctx": 8})
    assert json.loads(seen[0]) == {"model": "m", "input": ["x"], "truncate": False,
                                   "dimensions": 2, "keep_alive": "1m",
                                   "options": {"num_ctx": 8}}
    with Client(emu.url) as c:
        assert c.embed("demo-embed", "").vectors == []


def test_bad_arguments_raise_config_error(client: Client) -> None:
    for kwargs in ({"input": 5}, {"input": ["a", 1]}, {"input": "a", "dimensions": 0},
                   {"input": "a", "truncate": "no"}, {"input": "a", "keep_alive": True},
                   {"input": "a", "options": [1]}):
        with pytest.raises(ConfigError):
            client.embed("demo-embed", **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        client.embed("", "a")
    with Client("http://127.0.0.1:1", dialect="openai") as c, \
            pytest.raises(ConfigError, match="truncate"):
        c.embed("m", "a", truncate=False)


# -- server errors -----------------------------------------------------------------------

def test_a_model_that_cannot_embed_gets_ollamas_text_and_a_hint(client: Client) -> None:
    with pytest.raises(ResponseError) as info:
        client.embed("demo", "hello")
    assert info.value.status_code == 501
    assert "This server does not support embeddings" in str(info.value)
    assert "'demo' is not an embedding model" in str(info.value)


def test_an_input_over_the_context_fails_without_truncate(client: Client) -> None:
    with pytest.raises(ResponseError) as info:
        client.embed("demo-embed", ["short", "one two three four"], truncate=False,
                      options={"num_ctx": 4})
    assert info.value.status_code == 400
    assert "the input length exceeds the context length" in str(info.value)
    fitted = client.embed("demo-embed", "one two three four", options={"num_ctx": 4})
    assert fitted.vectors == expected_embedding("demo-embed", "one two", client_cfg())


def client_cfg() -> EmulatorConfig:
    return EmulatorConfig(embed_dim=32)


def test_unknown_model(client: Client) -> None:
    with pytest.raises(ModelNotFound, match="ollama pull nope"):
        client.embed("nope", "a")


# -- retries -------------------------------------------------------------------------------

def test_503_with_retry_after_is_retried(client: Client, emu: Emulator) -> None:
    emu.set_faults("status:503,retry_after=0.2,first=2")
    try:
        started = time.monotonic()
        result = client.embed("demo-embed", "a")
        elapsed = time.monotonic() - started
    finally:
        emu.set_faults(None)
    assert result.attempts == 3 and result.vectors
    assert elapsed >= 0.4 - 0.02  # both waits honoured Retry-After


def test_a_retry_after_beyond_the_cap_is_raised_at_once(emu: Emulator) -> None:
    emu.set_faults("status:429,retry_after=120,first=1")
    try:
        with Client(emu.url, retry=RetryPolicy(retry_after_max=5)) as c, \
                pytest.raises(ServerBusy) as info:
            c.embed("demo-embed", "a")
    finally:
        emu.set_faults(None)
    assert info.value.retry_after == 120


def test_a_reply_cut_mid_body_is_retried() -> None:
    body = reply_body([[1.0, 0.0]])

    def cut(conn: RawConn) -> None:
        conn.send_head(200, {"Content-Length": str(len(body))}, chunked=False)
        conn.send(body[:10])
        conn.cut()

    def whole(conn: RawConn) -> None:
        conn.respond(200, body)

    with RawServer([cut, whole]) as server, Client(server.url, retry=FAST_RETRY) as c:
        result = c.embed("m", "a")
    assert result.attempts == 2 and result.vectors == [[1.0, 0.0]]


@pytest.mark.parametrize("chunked", [False, True])
def test_a_reply_over_max_reply_is_a_protocol_error(chunked: bool) -> None:
    body = reply_body([[0.5] * 200])

    def handler(conn: RawConn) -> None:
        if not chunked:  # the announced length is checked before reading
            conn.respond(200, body)
            return
        conn.send_head(200, {"Content-Type": "application/json"})
        for start in range(0, len(body), 64):
            conn.send_chunk(body[start:start + 64])
        conn.end_chunks()

    with RawServer(handler) as server, Client(server.url) as c:
        kwargs = dict(codec=get_embed_codec("ollama"), dialect=get_dialect("ollama"),
                      transport=c.transport, route=FixedRoute(server.url),
                      timeouts=Timeouts(), retry=FAST_RETRY)
        capped = run_embed(EmbedRequest("m", "a"), max_reply=100, **kwargs)  # type: ignore[arg-type]
        fits = run_embed(EmbedRequest("m", "a"), max_reply=len(body), **kwargs)  # type: ignore[arg-type]
    assert isinstance(capped.error, ProtocolError) and "larger than 100 bytes" in str(capped.error)
    assert capped.attempts == 1 and capped.vectors == []
    assert fits.ok and fits.vectors == [[0.5] * 200]


# -- timeouts and cancel -----------------------------------------------------------------

def test_first_token_bounds_the_whole_reply() -> None:
    body = reply_body([[1.0]])

    def slow_body(conn: RawConn) -> None:
        conn.send_head(200, {"Content-Length": str(len(body))}, chunked=False)
        conn.send(body[:5])
        conn.stall(5)

    with RawServer(slow_body) as server, \
            Client(server.url, timeouts=Timeouts(first_token=0.3)) as c:
        started = time.monotonic()
        with pytest.raises(StreamTimeout) as info:
            c.embed("m", "a")
        assert info.value.phase == "first_token"
        assert time.monotonic() - started < 3


def test_total_timeout_across_attempts() -> None:
    with RawServer(lambda conn: conn.stall(5)) as server, \
            Client(server.url, timeouts=Timeouts(total=0.3)) as c:
        with pytest.raises(StreamTimeout) as info:
            c.embed("m", "a")
        assert info.value.phase == "total"


def test_cancel_ends_a_call_waiting_for_the_reply() -> None:
    arrived = threading.Event()

    def handler(conn: RawConn) -> None:
        arrived.set()
        conn.stall(10)

    with RawServer(handler) as server, Client(server.url) as c:
        token = CancelToken()
        canceller = threading.Thread(target=lambda: arrived.wait(5) and token.cancel())
        canceller.start()
        started = time.monotonic()
        with pytest.raises(Cancelled):
            c.embed("m", "a", cancel=token)
        canceller.join(5)
        assert time.monotonic() - started < 3
        assert server.disconnects.wait(5)


def test_cancel_wakes_a_retry_wait(emu: Emulator) -> None:
    emu.set_faults("status:503,retry_after=30,first=1")
    try:
        with Client(emu.url) as c:
            token = CancelToken()
            waiting = threading.Thread(
                target=lambda: emu.wait_until(lambda n: n["faults"].get("status", 0) >= 1, 5)
                and token.cancel())
            waiting.start()
            started = time.monotonic()
            with pytest.raises(Cancelled):
                c.embed("demo-embed", "a", cancel=token)
            waiting.join(5)
            assert time.monotonic() - started < 5
    finally:
        emu.set_faults(None)


# -- numpy ---------------------------------------------------------------------------------

def test_array_is_built_once_per_dtype(client: Client) -> None:
    numpy = pytest.importorskip("numpy")
    result = client.embed("demo-embed", TEXTS)
    array = result.array()
    assert array.shape == (3, 32) and array.dtype == numpy.float32
    assert array is result.array()
    wide = result.array("float64")
    assert wide.dtype == numpy.float64 and wide.tolist() == result.vectors
    assert numpy.allclose(numpy.linalg.norm(wide, axis=1), 1.0, atol=1e-7)
