"""The emulator: native API on the wire, the official ollama client, pacing,
concurrency, disconnects, counters and lifecycle."""

from __future__ import annotations

import json
import re
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List

import ollama
import pytest
import requests
from test_emulator_wire import address, exchange, read_until, request_bytes

from streamkit.emulator import Emulator, EmulatorConfig, expected
from streamkit.errors import ConfigError

CHAT_BODY = {"model": "demo", "messages": [{"role": "user", "content": "hello there"}]}
GEN_BODY = {"model": "demo", "prompt": "write a poem"}
CREATED_AT = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z$")
METRICS = ("total_duration", "load_duration", "prompt_eval_count", "prompt_eval_duration",
           "eval_count", "eval_duration")


@pytest.fixture
def emu() -> Iterator[Emulator]:
    with Emulator() as emulator:
        yield emulator


def keys(line: bytes) -> List[str]:
    return [k for k, _ in json.loads(line, object_pairs_hook=lambda pairs: pairs)]


# -- config and expected() ----------------------------------------------------------------

def test_config_is_frozen_and_validated() -> None:
    cfg = EmulatorConfig(models=["a", "b"], faults="cut,after=2")  # type: ignore[arg-type]
    assert cfg.models == ("a", "b") and cfg.faults[0].kind == "cut"
    with pytest.raises(AttributeError):
        cfg.port = 1  # type: ignore[misc]
    for bad in ({"parallel": 0}, {"tokens_per_second": -1}, {"response_tokens": (5, 2)},
                {"models": ()}, {"tokens_per_chunk": 0}, {"faults": "explode"}):
        with pytest.raises(ConfigError):
            EmulatorConfig(**bad)  # type: ignore[arg-type]


def test_expected_is_deterministic_and_prompt_dependent() -> None:
    a = expected("demo", GEN_BODY)
    assert a == expected("demo:latest", dict(GEN_BODY))
    assert a.text == "".join(a.tokens) and a.done_reason == "stop"
    assert 8 <= a.eval_count <= 48
    assert expected("demo", {**GEN_BODY, "prompt": "another"}).text != a.text
    assert expected("demo", {**GEN_BODY, "options": {"seed": 7}}).text != a.text
    assert expected("demo", GEN_BODY, EmulatorConfig(seed=1)).text != a.text


def test_expected_num_predict_stop_think_format() -> None:
    capped = expected("demo", {**GEN_BODY, "options": {"num_predict": 3}})
    assert (capped.eval_count, capped.done_reason, len(capped.tokens)) == (3, "length", 3)
    full = expected("demo", GEN_BODY)
    assert capped.tokens == full.tokens[:3]  # a cap cuts, it does not change the text
    exact = expected("demo", {**GEN_BODY, "options": {"num_predict": len(full.tokens)}})
    assert (exact.text, exact.done_reason) == (full.text, "stop")
    stop = full.text[10:13]
    cut = expected("demo", {**GEN_BODY, "options": {"stop": [stop]}})
    assert cut.text == full.text[:full.text.index(stop)] and cut.done_reason == "stop"
    think = expected("demo", {**GEN_BODY, "think": True})
    assert think.thinking and len(think.thinking_tokens) == 8
    assert think.eval_count == 8 + len(think.tokens)
    answer = json.loads(expected("demo", {**GEN_BODY, "format": "json"}).text)
    assert isinstance(answer["answer"], str) and answer["answer"]
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}}
    assert json.loads(expected("demo", {**GEN_BODY, "format": schema}).text)


def test_vocabulary_exercises_unicode_and_go_escapes() -> None:
    text = "".join(expected("demo", {"prompt": str(i)}).text for i in range(40))
    assert any(ord(ch) > 0xFFFF for ch in text)  # the emoji: 4-byte UTF-8
    assert "é" in text and "<" in text
    exotic = EmulatorConfig(exotic=True)
    odd = "".join(expected("demo", {"prompt": str(i)}, exotic).text for i in range(40))
    assert "\x85" in odd and "\u2028" in odd


# -- native wire format -------------------------------------------------------------------

def test_generate_stream_wire_format(emu: Emulator) -> None:
    wire = exchange(emu.url, "POST", "/api/generate", GEN_BODY)
    exp = expected("demo", GEN_BODY)
    assert wire.status == 200 and wire.terminated
    assert wire.headers["content-type"] == "application/x-ndjson"
    assert "content-length" not in wire.headers
    # one NDJSON line per HTTP chunk
    assert wire.raw_body.count(b"\r\n") == 2 * (len(exp.tokens) + 1) + 2
    lines = wire.lines
    assert all(keys(line) == ["model", "created_at", "response", "done"] for line in lines[:-1])
    assert keys(lines[-1]) == ["model", "created_at", "response", "done", "done_reason",
                               "context", *METRICS]
    chunks = wire.json_lines()
    assert [c["response"] for c in chunks[:-1]] == exp.tokens
    assert all(CREATED_AT.match(c["created_at"]) for c in chunks)
    done = chunks[-1]
    assert done["done"] is True and done["done_reason"] == "stop"
    assert done["eval_count"] == exp.eval_count
    assert b"\\u003c" in wire.body or "<" not in exp.text  # Go escapes < > &


def test_chat_stream_with_thinking_and_field_order(emu: Emulator) -> None:
    body = {**CHAT_BODY, "think": True}
    wire = exchange(emu.url, "POST", "/api/chat", body)
    exp = expected("demo", body)
    chunks = wire.json_lines()
    think_chunks = chunks[:len(exp.thinking_tokens)]
    assert [c["message"]["thinking"] for c in think_chunks] == exp.thinking_tokens
    assert all(c["message"]["content"] == "" for c in think_chunks)
    assert keys(wire.lines[0]) == ["model", "created_at", "message", "done"]
    assert list(chunks[0]["message"]) == ["role", "content", "thinking"]
    content = "".join(c["message"]["content"] for c in chunks)
    assert content == exp.text
    assert keys(wire.lines[-1]) == ["model", "created_at", "message", "done", "done_reason",
                                    *METRICS]


def test_non_stream_single_object(emu: Emulator) -> None:
    body = {**GEN_BODY, "stream": False, "think": True}
    wire = exchange(emu.url, "POST", "/api/generate", body)
    exp = expected("demo", body)
    assert wire.headers["content-type"] == "application/json; charset=utf-8"
    assert not wire.body.endswith(b"\n")
    reply = wire.json()
    assert (reply["response"], reply["thinking"]) == (exp.text, exp.thinking)
    assert reply["done"] is True and reply["eval_count"] == exp.eval_count


def test_zero_metrics_are_omitted(emu: Emulator) -> None:
    body = {**GEN_BODY, "options": {"num_predict": 0}}
    chunks = exchange(emu.url, "POST", "/api/generate", body).json_lines()
    assert len(chunks) == 1 and chunks[0]["done_reason"] == "length"
    assert "eval_count" not in chunks[0] and "eval_duration" not in chunks[0]
    assert chunks[0]["prompt_eval_count"] >= 1


def test_empty_prompt_is_a_load_reply(emu: Emulator) -> None:
    wire = exchange(emu.url, "POST", "/api/generate", {"model": "demo", "prompt": ""})
    assert wire.headers["content-type"] == "application/json; charset=utf-8"
    assert keys(wire.body) == ["model", "created_at", "response", "done", "done_reason"]
    assert wire.json()["done_reason"] == "load"
    chat = exchange(emu.url, "POST", "/api/chat", {"model": "demo", "messages": []}).json()
    assert chat["message"] == {"role": "assistant", "content": ""}


@pytest.mark.parametrize(("path", "body", "status", "error"), [
    ("/api/generate", b"", 400, "missing request body"),
    ("/api/chat", b"{x", 400, "invalid character 'x' looking for beginning of object key string"),
    ("/api/chat", b'{"model":', 400, "unexpected EOF"),
    ("/api/generate", b"{}", 404, "model '' not found"),
    ("/api/generate", b"null", 404, "model '' not found"),
    ("/api/chat", b"{}", 400, "model is required"),
    ("/api/chat", b'{"model":"nope","messages":[]}', 404, "model 'nope' not found"),
    ("/api/generate", b'{"model":5}', 400,
     "json: cannot unmarshal number into Go struct field GenerateRequest.model of type string"),
    ("/api/show", b'{"model":"nope"}', 404, "model 'nope:latest' not found"),
])
def test_request_errors(emu: Emulator, path: str, body: bytes, status: int, error: str) -> None:
    wire = exchange(emu.url, "POST", path, body)
    assert wire.status == status
    assert wire.headers["content-type"] == "application/json; charset=utf-8"
    assert wire.json() == {"error": error}


def test_stray_paths_methods_and_root(emu: Emulator) -> None:
    stray = exchange(emu.url, "GET", "/nope")
    assert (stray.status, stray.body, stray.headers["content-type"]) == \
        (404, b"404 page not found", "text/plain")
    wrong = exchange(emu.url, "GET", "/api/chat")
    assert (wrong.status, wrong.body) == (405, b"405 method not allowed")
    root = exchange(emu.url, "GET", "/")
    assert (root.status, root.body) == (200, b"Ollama is running")
    assert root.headers["content-type"] == "text/plain; charset=utf-8"
    head = exchange(emu.url, "HEAD", "/")
    assert head.status == 200 and head.body == b""
    assert exchange(emu.url, "GET", "/api/version").json() == {"version": "0.12.6"}
    assert [m["name"] for m in exchange(emu.url, "GET", "/api/ps").json()["models"]] == []


def test_keep_alive_serves_several_requests_on_one_connection(emu: Emulator) -> None:
    with requests.Session() as session:
        for _ in range(3):
            reply = session.post(emu.url + "/api/generate", json={**GEN_BODY, "stream": False})
            assert reply.json()["response"] == expected("demo", GEN_BODY).text
    assert emu.counters()["requests"] == 3


def test_stamp_and_tokens_per_chunk() -> None:
    with Emulator(stamp=True, tokens_per_chunk=3) as emu:
        before = time.perf_counter_ns()
        chunks = exchange(emu.url, "POST", "/api/generate", GEN_BODY).json_lines()
        after = time.perf_counter_ns()
    exp = expected("demo", GEN_BODY)
    assert len(chunks) - 1 == -(-len(exp.tokens) // 3)
    assert "".join(c["response"] for c in chunks) == exp.text
    assert chunks[-1]["eval_count"] == exp.eval_count
    stamps = [c["_sent_ns"] for c in chunks]
    assert stamps == sorted(stamps) and before < stamps[0] and stamps[-1] < after


def test_exotic_tokens_on_the_wire() -> None:
    with Emulator(exotic=True, response_tokens=(200, 200)) as emu:
        wire = exchange(emu.url, "POST", "/api/generate", GEN_BODY)
    exp = expected("demo", GEN_BODY, emu.config)
    assert "\x85" in exp.text and "\u2028" in exp.text
    assert "\x85".encode() in wire.body and b"\\u2028" in wire.body  # NEL raw, LS escaped
    assert "\u2028".encode() not in wire.body
    pieces = [json.loads(line)["response"] for line in wire.body.split(b"\n") if line][:-1]
    assert "".join(pieces) == exp.text


# -- the official ollama client -----------------------------------------------------------

def test_official_ollama_client(emu: Emulator) -> None:
    client = ollama.Client(host=emu.url)
    try:
        messages = CHAT_BODY["messages"]
        parts = list(client.chat("demo", messages=messages, stream=True))
        assert "".join(p.message.content or "" for p in parts) == expected("demo", CHAT_BODY).text
        assert parts[-1].done and parts[-1].eval_count
        gen = list(client.generate("demo", "write a poem", stream=True))
        assert "".join(p.response for p in gen) == expected("demo", GEN_BODY).text
        single = client.chat("demo", messages=messages)
        assert single.message.content == expected("demo", CHAT_BODY).text
        assert [m.model for m in client.list().models] == ["demo:latest", "demo-embed:latest"]
        assert client.show("demo").modelinfo["general.architecture"] == "emulator"
        progress = list(client.pull("demo", stream=True))
        assert progress[0].status == "pulling manifest" and progress[-1].status == "success"
        assert any(p.completed and p.completed < (p.total or 0) for p in progress)
        with pytest.raises(ollama.ResponseError) as info:
            client.chat("missing", messages=messages)
        assert info.value.status_code == 404
        assert info.value.error == "model 'missing' not found"
        with pytest.raises(ollama.ResponseError):
            list(client.pull("missing", stream=True))  # the mid-stream error line
        assert [m.model for m in client.ps().models] == ["demo:latest"]
    finally:
        client._client.close()


# -- pacing, load, concurrency, disconnects -----------------------------------------------

def test_pacing_matches_tokens_per_second() -> None:
    tps = 100.0
    body = {**GEN_BODY, "options": {"num_predict": 100}}
    with Emulator(tokens_per_second=tps, response_tokens=(200, 200)) as emu, \
            socket.create_connection(address(emu.url), timeout=10) as sock:
        sock.sendall(request_bytes(emu.url, "POST", "/api/generate", body))
        arrivals = []
        data = b""
        while b"0\r\n\r\n" not in data:
            more = sock.recv(65536)
            assert more
            arrivals.append((time.perf_counter(), more.count(b'"done":false')))
            data += more
    first = next(t for t, n in arrivals if n)
    last = max(t for t, n in arrivals if n)
    expected_span = 99 / tps
    assert abs((last - first) - expected_span) <= 0.1 * expected_span
    done = json.loads(next(p for p in data.split(b"\r\n") if b'"done":true' in p))
    rate = done["eval_count"] / done["eval_duration"] * 1e9
    assert abs(rate - tps) <= 0.1 * tps


def test_load_time_first_use_only() -> None:
    with Emulator(load_time=0.2) as emu:
        first = exchange(emu.url, "POST", "/api/generate", {**GEN_BODY, "stream": False}).json()
        second = exchange(emu.url, "POST", "/api/generate", {**GEN_BODY, "stream": False}).json()
        assert emu.counters()["loads"] == 1
    assert first["load_duration"] >= 0.2e9 > second["load_duration"]
    assert first["total_duration"] > first["load_duration"]


def _open_stream(url: str, body: Dict[str, Any]) -> socket.socket:
    sock = socket.create_connection(address(url), timeout=10)
    sock.sendall(request_bytes(url, "POST", "/api/generate", body))
    return sock


def test_disconnect_mid_stream_stops_generation() -> None:
    with Emulator(tokens_per_second=50, response_tokens=(200, 200)) as emu:
        sock = _open_stream(emu.url, GEN_BODY)
        with sock:
            read_until(sock, 3)
        assert emu.wait_until(lambda c: c["disconnects"] == 1 and c["in_flight"] == 0, 5)
        sent = emu.counters()["chunks_sent"]
        assert sent < 20
        # nothing more is generated: the count stays put for several token intervals
        assert not emu.wait_until(lambda c: c["chunks_sent"] > sent, timeout=0.3)
        assert emu.counters()["completed"] == 0


@pytest.mark.parametrize("setting", [{"first_token_delay": 30.0}, {"load_time": 30.0}])
def test_disconnect_during_first_token_delay_or_load(setting: Dict[str, float]) -> None:
    with Emulator(**setting) as emu:  # type: ignore[arg-type]
        sock = _open_stream(emu.url, GEN_BODY)
        with sock:
            assert emu.wait_until(lambda c: c["inference"] == 1, 5)
        assert emu.wait_until(lambda c: c["disconnects"] == 1, 5)  # long before 30 s
        assert emu.counters()["chunks_sent"] == 0 and emu.counters()["in_flight"] == 0


def test_disconnect_while_waiting_for_a_slot() -> None:
    with Emulator(tokens_per_second=40, parallel=1, response_tokens=(30, 30)) as emu:
        holder = _open_stream(emu.url, GEN_BODY)
        # the holder must own the slot before the waiter arrives (two connections race)
        assert emu.wait_until(lambda c: c["in_flight"] == 1, 5)
        waiter = _open_stream(emu.url, {**GEN_BODY, "prompt": "second"})
        with holder:
            assert emu.wait_until(lambda c: c["waiting"] == 1, 5)
            waiter.close()
            assert emu.wait_until(lambda c: c["disconnects_waiting"] == 1 and c["waiting"] == 0,
                                  5)
            read_until(holder, 31)
        assert emu.wait_until(lambda c: c["completed"] == 1 and c["in_flight"] == 0, 5)
        # the abandoned request never took the slot, and the slot is free again
        third = exchange(emu.url, "POST", "/api/generate", {**GEN_BODY, "stream": False})
        assert third.status == 200 and emu.counters()["completed"] == 2


def test_fifo_slots_and_503_past_max_queue() -> None:
    with Emulator(tokens_per_second=50, parallel=1, max_queue=1,
                  response_tokens=(10, 10)) as emu:
        holder = _open_stream(emu.url, GEN_BODY)
        queued = _open_stream(emu.url, {**GEN_BODY, "prompt": "queued"})
        with holder, queued:
            assert emu.wait_until(lambda c: c["waiting"] == 1, 5)
            busy = exchange(emu.url, "POST", "/api/generate", GEN_BODY)
            assert busy.status == 503
            assert busy.json() == {"error": "server busy, please try again.  "
                                            "maximum pending requests exceeded"}
            assert read_until(holder, 11).count(b"}\n") == 11
            assert read_until(queued, 11).count(b"}\n") == 11
        assert emu.wait_until(lambda c: c["completed"] == 2, 5)
        assert emu.counters()["busy_rejections"] == 1


def test_slow_client_is_flow_controlled() -> None:
    with Emulator(response_tokens=(200_000, 200_000)) as emu:
        sock = _open_stream(emu.url, GEN_BODY)
        with sock:
            sock.recv(1000)
            # unread data fills the socket buffers, then the server waits for us
            assert not emu.wait_until(lambda c: c["chunks_sent"] >= 200_000, timeout=0.5)
            assert emu.counters()["in_flight"] == 1
        assert emu.wait_until(lambda c: c["disconnects"] == 1 and c["in_flight"] == 0, 5)


# -- counters, lifecycle, CLI -------------------------------------------------------------

def test_counters_endpoint_and_reset(emu: Emulator) -> None:
    exchange(emu.url, "POST", "/api/generate", GEN_BODY)
    over_http = exchange(emu.url, "GET", "/_emulator/counters").json()
    assert over_http["inference"] == 1 and over_http["completed"] == 1
    assert over_http["by_path"]["/api/generate"] == 1
    assert over_http["chunks_sent"] == emu.counters()["chunks_sent"] > 0
    reset = exchange(emu.url, "POST", "/_emulator/reset").json()
    assert reset["inference"] == 0 and emu.counters()["completed"] == 0


def test_peak_in_flight_is_the_most_generating_at_once() -> None:
    with Emulator(tokens_per_second=5, parallel=2) as emu:
        socks = [_open_stream(emu.url, GEN_BODY) for _ in range(3)]
        try:
            assert emu.wait_until(lambda c: c["in_flight"] == 2 and c["waiting"] == 1, 5)
            assert emu.counters()["peak_in_flight"] == 2
            # A reset starts the peak over from the streams still generating.
            assert exchange(emu.url, "POST", "/_emulator/reset").json()["peak_in_flight"] == 2
        finally:
            for sock in socks:
                sock.close()
        assert emu.wait_until(lambda c: c["in_flight"] == 0 and c["waiting"] == 0, 5)
        assert emu.counters()["peak_in_flight"] == 2
        assert exchange(emu.url, "POST", "/_emulator/reset").json()["peak_in_flight"] == 0


def test_start_stop_idempotent_and_thread_named() -> None:
    emu = Emulator()
    emu.start()
    emu.start()
    try:
        assert "streamkit-emulator" in [t.name for t in threading.enumerate()]
        assert requests.get(emu.url, timeout=5).text == "Ollama is running"
    finally:
        emu.stop()
        emu.stop()
    assert "streamkit-emulator" not in [t.name for t in threading.enumerate()]


def test_stop_with_open_streams_closes_everything() -> None:
    emu = Emulator(tokens_per_second=5, parallel=1).start()
    socks = [_open_stream(emu.url, GEN_BODY) for _ in range(3)]
    try:
        assert emu.wait_until(lambda c: c["in_flight"] == 1 and c["waiting"] == 2, 5)
    finally:
        emu.stop()
        for sock in socks:
            assert sock.recv(65536) is not None
            sock.close()


def test_port_in_use_is_a_config_error(emu: Emulator) -> None:
    with pytest.raises(ConfigError, match="cannot listen"):
        Emulator(port=address(emu.url)[1]).start()


def test_cli_prints_url_and_exits_130_on_ctrl_c() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "streamkit", "emulate", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert requests.get(url + "/api/version", timeout=5).json() == {"version": "0.12.6"}
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 130
        assert proc.stderr is not None and proc.stderr.read() == ""
    finally:
        proc.kill()
        proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


BURST = 300


def _system_backlog_cap() -> int:
    try:
        return int(Path("/proc/sys/net/core/somaxconn").read_text())
    except (OSError, ValueError):
        return 0


@pytest.mark.skipif(_system_backlog_cap() < BURST, reason="needs Linux, somaxconn >= 300")
def test_a_burst_of_connections_waits_in_the_accept_queue() -> None:
    # While the server is stopped (it accepts nothing), 300 clients connect at
    # once: each handshake must complete at once into the accept queue. With
    # asyncio's default backlog of 100 the kernel drops the SYNs beyond it, and
    # those connects hang until a retransmission 1 s later (again and again
    # while the queue stays full).
    proc = subprocess.Popen([sys.executable, "-m", "streamkit", "emulate", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    socks: List[socket.socket] = []
    try:
        assert proc.stdout is not None
        target = address(proc.stdout.readline().strip())
        proc.send_signal(signal.SIGSTOP)
        with selectors.DefaultSelector() as selector:
            for _ in range(BURST):
                sock = socket.socket()
                socks.append(sock)
                sock.setblocking(False)
                sock.connect_ex(target)
                selector.register(sock, selectors.EVENT_WRITE)
            connected, deadline = 0, time.monotonic() + 0.5  # a loopback handshake takes µs
            while connected < BURST and time.monotonic() < deadline:
                for key, _ in selector.select(max(0.0, deadline - time.monotonic())):
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    selector.unregister(sock)
                    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
                    connected += 1
        assert connected == BURST
        proc.send_signal(signal.SIGCONT)
        last = socks[-1]  # queued, not dropped: once running, the server answers it
        last.settimeout(10)
        last.sendall(request_bytes(f"http://{target[0]}:{target[1]}", "GET", "/api/version"))
        assert b'"version"' in read_until(last, 1, b"}")
    finally:
        proc.send_signal(signal.SIGCONT)
        for sock in socks:
            sock.close()
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        finally:
            proc.kill()
            proc.wait()
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()


def test_cli_bad_fault_is_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    from streamkit.cli import main

    assert main(["emulate", "--fault", "cut,after=x"]) == 2
    assert "after='x' is not an integer" in capsys.readouterr().err


def test_server_durations_add_up_to_no_more_than_the_total() -> None:
    # Ollama's durations are parts of total_duration: load + prompt eval +
    # eval can never exceed it, with or without a first-token delay.
    for delay in (0.0, 0.05):
        with Emulator(EmulatorConfig(tokens_per_second=200, first_token_delay=delay)) as emu:
            body = {"model": "demo", "prompt": "durations", "stream": False,
                    "options": {"num_predict": 10}}
            with requests.post(emu.url + "/api/generate", json=body, timeout=10) as resp:
                reply = resp.json()
        parts = reply["load_duration"] + reply["prompt_eval_duration"] + reply["eval_duration"]
        assert parts <= reply["total_duration"], reply
        assert reply["eval_count"] == 10
        # 10 tokens at 200 tokens/s: the eval rate is close to the pacing
        assert 0.8 <= 10 / (reply["eval_duration"] / 1e9) / 200 <= 1.25, reply
