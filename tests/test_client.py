"""streamkit.client: Client and Conversation against the emulator and a raw server."""

from __future__ import annotations

import logging
import socket
import threading
from typing import Any, Dict, Iterator, List, Mapping, Optional

import pytest
from rawserver import RawConn, RawServer

from streamkit import (
    Cancelled,
    ChatRequest,
    ConfigError,
    ConnectError,
    GenerateRequest,
    ModelNotFound,
    RetryPolicy,
    ServerStreamError,
    Timeouts,
)
from streamkit.client import Client
from streamkit.conversation import Conversation
from streamkit.emulator import Emulator, EmulatorConfig, expected

SECRET = "sk-test-0123456789abcdef"
FAST_FAIL = RetryPolicy(attempts=2, backoff_base=0.01, backoff_max=0.02)
WAIT = 5.0  # generous bound for "this happens soon" on a loaded 2-core machine


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with Emulator(EmulatorConfig(models=("demo", "other:7b"))) as emu:
        yield emu


@pytest.fixture
def client(emulator: Emulator) -> Iterator[Client]:
    with Client(emulator.url) as c:
        yield c


def closed_port() -> int:
    """A port nobody listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def expected_text(model: str, body: Mapping[str, Any]) -> str:
    return expected(model, body).text


# -- chat / generate ------------------------------------------------------------

def test_chat_text_equals_emulator_text(client: Client) -> None:
    messages = [{"role": "user", "content": "Why is the sky blue?"}]
    with client.chat("demo", messages, options={"seed": 3}) as stream:
        pieces = [chunk.text for chunk in stream]
        result = stream.result(timeout=10)
    want = expected("demo", {"messages": messages, "options": {"seed": 3}})
    assert "".join(pieces) == want.text == result.text
    assert result.ok and result.attempts == 1
    assert result.done_reason == want.done_reason
    assert result.stats.eval_count == want.eval_count
    assert result.model.startswith("demo")


def test_generate_text_system_and_options(client: Client) -> None:
    stream = client.generate("demo", "Tell me a story", system="Be brief",
                             options={"num_predict": 5}, id="g1")
    result = stream.result(timeout=10)
    want = expected("demo", {"prompt": "Tell me a story", "system": "Be brief",
                             "options": {"num_predict": 5}})
    assert result.text == want.text
    assert result.done_reason == "length"
    assert result.id == "g1"


# -- run: the stream in the calling thread ------------------------------------------

def _streamkit_threads() -> List[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("streamkit-")]


def test_run_streams_in_the_calling_thread(client: Client) -> None:
    seen: List[Any] = []
    before = _streamkit_threads()
    request = GenerateRequest("demo", "Tell me a story", options={"num_predict": 12}, id="r1")

    def on_chunk(chunk: Any) -> None:
        seen.append((threading.current_thread(), chunk.text, _streamkit_threads()))

    result = client.run(request, on_chunk)
    want = expected("demo", {"prompt": "Tell me a story", "options": {"num_predict": 12}})
    assert result.ok and result.id == "r1" and result.text == want.text
    assert "".join(text for _, text, _ in seen) == want.text
    assert {thread for thread, _, _ in seen} == {threading.current_thread()}
    assert all(names == before for _, _, names in seen)  # no worker thread


def test_run_reports_a_failure_in_the_result(client: Client) -> None:
    result = client.run(GenerateRequest("nosuchmodel", "hi"), lambda c: None)
    assert isinstance(result.error, ModelNotFound)


def test_run_cancels_the_stream_when_on_chunk_raises() -> None:
    class Enough(Exception):
        pass

    taken: List[str] = []

    def on_chunk(chunk: Any) -> None:
        taken.append(chunk.text)
        if len(taken) == 2:
            raise Enough()

    with Emulator(EmulatorConfig(tokens_per_second=200)) as emu, Client(emu.url) as c:
        with pytest.raises(Enough):
            c.run(GenerateRequest("demo", "a long story", options={"num_predict": 200}),
                  on_chunk)
        assert len(taken) == 2
        # the connection was closed, so the server stopped generating
        assert emu.wait_until(lambda n: n["disconnects"] >= 1, timeout=10), emu.counters()


@pytest.mark.parametrize("when", ["before the first token", "mid-body"])
def test_a_prepared_stream_run_here_is_cancelled_from_another_thread(when: str) -> None:
    config = (EmulatorConfig(first_token_delay=30) if when == "before the first token"
              else EmulatorConfig(tokens_per_second=20))
    outcome: List[Any] = []
    first = threading.Event()
    with Emulator(config) as emu, Client(emu.url) as c:
        stream = c.prepare(GenerateRequest("demo", "a long story", options={"num_predict": 500}))
        assert not stream.done and repr(stream).endswith("pending>")
        runner = threading.Thread(
            target=lambda: outcome.append(stream.run(lambda chunk: first.set())))
        runner.start()
        try:
            if when == "mid-body":
                assert first.wait(WAIT)
            else:
                assert emu.wait_until(lambda n: n["in_flight"] >= 1, timeout=WAIT)
            assert stream.cancel()
            runner.join(WAIT)
            assert not runner.is_alive(), "run() did not return after cancel()"
        finally:
            stream.cancel()
            runner.join(WAIT)
        assert isinstance(outcome[0].error, Cancelled)
        assert first.is_set() == (when == "mid-body")
        # the connection was closed, so the server stopped
        assert emu.wait_until(lambda n: n["disconnects"] >= 1, timeout=WAIT), emu.counters()


def test_run_refuses_a_started_stream(client: Client) -> None:
    stream = client.generate("demo", "hi")
    with pytest.raises(RuntimeError, match="already running"):
        stream.run(lambda c: None)
    stream.result(timeout=10)


def test_stream_accepts_request_records(client: Client) -> None:
    chat = client.stream(ChatRequest("demo", [{"role": "user", "content": "hi"}]))
    gen = client.stream(GenerateRequest("demo", "hi"))
    assert chat.text() == expected_text("demo", {"messages": [{"role": "user",
                                                              "content": "hi"}]})
    assert gen.text() == expected_text("demo", {"prompt": "hi"})


def test_unknown_model_raises_model_not_found_with_pull_hint(client: Client) -> None:
    stream = client.generate("nosuch", "hi")
    with pytest.raises(ModelNotFound, match="ollama pull nosuch"):
        stream.text()
    assert stream.result(timeout=5).attempts == 1


def test_new_stream_is_not_started(client: Client, emulator: Emulator) -> None:
    before = emulator.counters().get("requests", 0)
    stream = client._new_stream(GenerateRequest("demo", "later"))
    assert not stream.done
    assert emulator.counters().get("requests", 0) == before
    stream.cancel()


def test_concurrent_streams_share_one_client(client: Client) -> None:
    texts: Dict[int, str] = {}

    def run(i: int) -> None:
        texts[i] = client.generate("demo", f"prompt {i}").text()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert texts == {i: expected_text("demo", {"prompt": f"prompt {i}"}) for i in range(6)}


# -- management endpoints ---------------------------------------------------------

def test_models_version_ping(client: Client) -> None:
    names = {m["name"] for m in client.models()}
    assert {"demo:latest", "other:7b"} <= names
    assert client.version() == EmulatorConfig().version
    assert client.ping() is True


def test_ping_unreachable_is_false_not_an_error() -> None:
    with Client(f"http://127.0.0.1:{closed_port()}") as c:
        assert c.ping() is False
        with pytest.raises(ConnectError):
            c.version()


def test_pull_yields_progress_until_success(client: Client) -> None:
    records = list(client.pull("demo"))
    assert records[0]["status"] == "pulling manifest"
    assert records[-1] == {"status": "success"}
    assert any("total" in r for r in records)


def test_pull_unknown_model_raises_server_stream_error(client: Client) -> None:
    with pytest.raises(ServerStreamError, match="does not exist"):
        list(client.pull("nosuch-model"))


def test_load_returns_load_result(client: Client) -> None:
    result = client.load("demo", keep_alive="10m")
    assert result.done_reason == "load"
    assert result.text == ""


def test_openai_dialect_models_and_base_url(emulator: Emulator) -> None:
    with Client(emulator.url, dialect="openai") as c:
        assert c.host == emulator.url + "/v1"
        assert "demo" in {m["id"].split(":")[0] for m in c.models()}
        assert c.version() is None
        assert c.ping()
    with Client(emulator.url + "/v1", dialect="openai") as c:
        assert c.host == emulator.url + "/v1"


# -- conversation ---------------------------------------------------------------

def test_conversation_keeps_history_and_sends_it(client: Client) -> None:
    conv = Conversation(client, "demo", system="You are terse.")
    first = conv.ask("Hello").text()
    sent_1 = [{"role": "system", "content": "You are terse."},
              {"role": "user", "content": "Hello"}]
    assert first == expected_text("demo", {"messages": sent_1})
    conv_history = conv.history
    assert conv_history == [{"role": "user", "content": "Hello"},
                            {"role": "assistant", "content": first}]
    second = conv.ask("And then?").text()
    sent_2 = [*sent_1, {"role": "assistant", "content": first},
              {"role": "user", "content": "And then?"}]
    assert second == expected_text("demo", {"messages": sent_2})
    assert len(conv.history) == 4
    conv_history.clear()  # a copy: the conversation is unaffected
    assert len(conv.history) == 4
    conv.reset()
    assert conv.history == []


def test_conversation_does_not_record_failed_reply(client: Client) -> None:
    conv = Conversation(client, "nosuch")
    with pytest.raises(ModelNotFound):
        conv.ask("Hello").text()
    assert conv.history == []


def test_conversation_does_not_record_cancelled_reply(emulator: Emulator) -> None:
    with Emulator(EmulatorConfig(tokens_per_second=20)) as slow, Client(slow.url) as c:
        conv = Conversation(c, "demo")
        stream = conv.ask("Hello")
        assert stream.get(timeout=5) is not None
        stream.cancel()
        result = stream.result(timeout=5)
        assert result.error is not None
        assert conv.history == []


# -- validation -----------------------------------------------------------------

@pytest.mark.parametrize(("call", "field"), [
    (lambda c: c.chat("", [{"role": "user", "content": "x"}]), "model"),
    (lambda c: c.chat("demo", "hello"), "messages"),
    (lambda c: c.chat("demo", [{"content": "x"}]), "role"),
    (lambda c: c.chat("demo", [{"role": "user", "content": 3}]), "content"),
    (lambda c: c.chat("demo", ["hi"]), r"messages\[0\]"),
    (lambda c: c.generate("demo", None), "prompt"),
    (lambda c: c.generate("demo", "x", options=[1]), "options"),
    (lambda c: c.generate("demo", "x", keep_alive=True), "keep_alive"),
    (lambda c: c.generate("demo", "x", images="abc"), "images"),
    (lambda c: c.stream({"model": "demo"}), "request"),
])
def test_bad_arguments_raise_config_error_naming_field(
        client: Client, call: Any, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        call(client)


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"queue_size": 0}, "queue_size"),
    ({"pool_size": "4"}, "pool_size"),
    ({"dialect": "grpc"}, "dialect"),
    ({"timeouts": 5}, "timeouts"),
    ({"retry": 3}, "retry"),
    ({"headers": {"X-A": 1}}, "headers"),
])
def test_bad_client_settings_raise_config_error(kwargs: Dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        Client("127.0.0.1:1", **kwargs)


def test_host_follows_ollama_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_HOST", "gpu-box:9000")
    with Client() as c:
        assert c.host == "http://gpu-box:9000"
        assert c.dialect == "ollama"


def test_close_is_idempotent_and_final(emulator: Emulator) -> None:
    c = Client(emulator.url)
    c.close()
    c.close()
    with pytest.raises(RuntimeError, match="closed"):
        c.generate("demo", "x")


# -- the API key ------------------------------------------------------------------

class Recorder:
    """RawServer handlers that record each request's headers."""

    def __init__(self) -> None:
        self.headers: List[Dict[str, str]] = []

    def version(self, conn: RawConn) -> None:
        self.headers.append(dict(conn.request.headers))
        conn.respond(200, b'{"version":"0.12.6"}', {"Content-Type": "application/json"})

    def ndjson(self, conn: RawConn) -> None:
        self.headers.append(dict(conn.request.headers))
        conn.respond(200, b'{"model":"m","response":"ok","done":true,"done_reason":"stop"}\n',
                     {"Content-Type": "application/x-ndjson"})


def test_api_key_sent_as_bearer_on_streams_and_json() -> None:
    rec = Recorder()
    with RawServer([rec.version, rec.ndjson]) as server, \
            Client(server.url, api_key=SECRET) as c:
        assert c.version() == "0.12.6"
        assert c.generate("m", "hi").text() == "ok"
    assert [h.get("authorization") for h in rec.headers] == [f"Bearer {SECRET}"] * 2


def test_api_key_defaults_to_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_API_KEY", SECRET)
    rec = Recorder()
    with RawServer(rec.version) as server, Client(server.url) as c:
        c.version()
    assert rec.headers[0].get("authorization") == f"Bearer {SECRET}"


def test_no_authorization_without_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OLLAMA_API_KEY", raising=False)
    rec = Recorder()
    with RawServer(rec.version) as server, Client(server.url) as c:
        c.version()
    assert "authorization" not in rec.headers[0]


def test_api_key_never_in_repr_logs_or_errors(caplog: pytest.LogCaptureFixture) -> None:
    c = Client(f"http://127.0.0.1:{closed_port()}", api_key=SECRET, retry=FAST_FAIL,
               timeouts=Timeouts(connect=1))
    with c, caplog.at_level(logging.DEBUG):
        assert SECRET not in repr(c) and SECRET not in str(vars(c))
        stream = c.generate("demo", "hi")
        with pytest.raises(ConnectError) as info:
            stream.text()
        result = stream.result(timeout=5)
    chain: List[str] = []
    exc: Optional[BaseException] = info.value
    while exc is not None:
        chain.append(repr(exc) + str(exc))
        exc = exc.__cause__ or exc.__context__
    assert result.attempts == 2
    assert SECRET not in caplog.text
    assert not any(SECRET in text for text in chain)
    assert SECRET not in repr(result)


@pytest.mark.parametrize("method", ["json", "stream"])
def test_api_key_not_forwarded_on_redirect_to_another_host(method: str) -> None:
    """127.0.0.1 redirects to localhost (another hostname): no Authorization there."""
    rec = Recorder()
    origin_headers: List[Dict[str, str]] = []

    def target(conn: RawConn) -> None:
        (rec.ndjson if conn.request.path.endswith("generate") else rec.version)(conn)

    with RawServer(target) as server:
        location = f"http://localhost:{server.port}"

        def redirect(conn: RawConn) -> None:
            origin_headers.append(dict(conn.request.headers))
            conn.respond(307, b"", {"Location": location + conn.request.path})

        with RawServer(redirect) as origin, Client(origin.url, api_key=SECRET) as c:
            if method == "json":
                outcome: Any = c.version()
            else:
                outcome = c.generate("m", "hi").result(timeout=10)
    assert origin_headers and origin_headers[0].get("authorization") == f"Bearer {SECRET}"
    assert len(rec.headers) == 1, outcome  # the redirect was followed...
    assert "authorization" not in rec.headers[0]  # ...without the key
