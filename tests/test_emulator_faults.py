"""Every emulator fault kind and trigger, checked on the wire with raw clients."""

from __future__ import annotations

import json
import socket
import time
from email.utils import parsedate_to_datetime
from typing import Iterator, List

import ollama
import pytest
import requests
from test_emulator_wire import Wire, address, exchange, read_until, request_bytes

from streamkit.emulator import Emulator, Fault, expected, parse_faults
from streamkit.errors import ConfigError

GEN_BODY = {"model": "demo", "prompt": "fault please"}
BUSY = "server busy, please try again.  maximum pending requests exceeded"


@pytest.fixture
def emu() -> Iterator[Emulator]:
    with Emulator(response_tokens=(12, 12)) as emulator:
        yield emulator


def gen(emu: Emulator, **extra: object) -> Wire:
    return exchange(emu.url, "POST", "/api/generate", {**GEN_BODY, **extra})


# -- the spec syntax ----------------------------------------------------------------------

def test_parse_faults_full_syntax() -> None:
    faults = parse_faults("status:503,retry_after=2,first=2; cut,after=5,p=0.1;"
                          "slow_headers,delay=3,model=demo; error,message=a b,every=3")
    assert faults[0] == Fault("status", code=503, retry_after=2.0, first=2)
    assert (faults[1].kind, faults[1].after, faults[1].p) == ("cut", 5, 0.1)
    assert (faults[2].delay, faults[2].model) == (3.0, "demo")
    assert (faults[3].message, faults[3].every) == ("a b", 3)
    assert parse_faults("") == ()


@pytest.mark.parametrize(("spec", "needle"), [
    ("explode", "unknown kind 'explode'"),
    ("status", "status needs a code"),
    ("status:abc", "status='abc' is not an integer"),
    ("cut:3", "takes no ':' argument"),
    ("cut,after", "bad option 'after'"),
    ("cut,delay=1", "bad option 'delay=1'"),
    ("refuse,p=2", "p must be in 0..1"),
    ("blank; stall,nth=0", "'stall,nth=0'"),
])
def test_parse_faults_errors_name_the_bad_part(spec: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=None) as info:
        parse_faults(spec)
    assert needle in str(info.value)


# -- before the response ------------------------------------------------------------------

def test_refuse_closes_before_any_byte(emu: Emulator) -> None:
    emu.set_faults("refuse")
    wire = gen(emu)
    assert wire.raw == b"" and not wire.reset
    assert emu.counters()["faults"] == {"refuse": 1}


def test_reset_sends_rst(emu: Emulator) -> None:
    emu.set_faults("reset")
    wire = gen(emu)
    assert wire.reset and wire.raw == b""
    with pytest.raises(requests.ConnectionError):
        requests.post(emu.url + "/api/generate", json=GEN_BODY, timeout=5)


def test_status_503_with_retry_after_seconds(emu: Emulator) -> None:
    emu.set_faults("status:503,retry_after=2")
    wire = gen(emu)
    assert wire.status == 503 and wire.headers["retry-after"] == "2"
    assert wire.json() == {"error": BUSY}


def test_status_429_with_retry_after_date_and_message(emu: Emulator) -> None:
    emu.set_faults("status:429,retry_after_date=30,message=slow down")
    wire = gen(emu)
    assert wire.status == 429
    ahead = parsedate_to_datetime(wire.headers["retry-after"]).timestamp() - time.time()
    assert 25 <= ahead <= 31
    assert wire.json() == {"error": "slow down"}


@pytest.mark.parametrize("code", [500, 502, 504])
def test_status_codes_without_retry_after(emu: Emulator, code: int) -> None:
    emu.set_faults(f"status:{code}")
    wire = gen(emu)
    assert wire.status == code and "retry-after" not in wire.headers
    assert wire.headers["content-type"] == "application/json; charset=utf-8"
    assert wire.json()["error"]


def test_slow_headers_delays_the_status_line(emu: Emulator) -> None:
    emu.set_faults("slow_headers,delay=0.3")
    start = time.monotonic()
    reply = requests.post(emu.url + "/api/generate", json=GEN_BODY, stream=True, timeout=5)
    with reply:
        assert time.monotonic() - start >= 0.3
        assert reply.status_code == 200
        assert b'"done":true' in reply.content


# -- mid-body -------------------------------------------------------------------------------

def test_cut_closes_without_terminator(emu: Emulator) -> None:
    emu.set_faults("cut,after=3")
    wire = gen(emu)
    assert wire.status == 200 and not wire.terminated
    assert len(wire.json_lines()) == 3
    emu.set_faults("cut,after=3")
    reply = requests.post(emu.url + "/api/generate", json=GEN_BODY, stream=True, timeout=5)
    with reply, pytest.raises(requests.exceptions.ChunkedEncodingError):
        reply.content  # noqa: B018 - reading the body raises
    assert emu.counters()["faults"] == {"cut": 2}


def test_stall_holds_until_the_client_leaves(emu: Emulator) -> None:
    emu.set_faults("stall,after=2")
    with socket.create_connection(address(emu.url), timeout=5) as sock:
        sock.sendall(request_bytes(emu.url, "POST", "/api/generate", GEN_BODY))
        data = read_until(sock, 2)
        assert data.startswith(b"HTTP/1.1 200 OK") and data.count(b"}\n") == 2
        assert emu.wait_until(lambda c: c["chunks_sent"] == 2, 5)
        assert not emu.wait_until(lambda c: c["chunks_sent"] > 2, timeout=0.3)
        assert emu.counters()["in_flight"] == 1
    assert emu.wait_until(lambda c: c["disconnects"] == 1 and c["in_flight"] == 0, 5)


def test_error_in_band_after_chunks(emu: Emulator) -> None:
    emu.set_faults("error,after=2,message=boom")
    wire = gen(emu)
    assert wire.status == 200 and wire.terminated
    lines = wire.json_lines()
    assert len(lines) == 3 and lines[-1] == {"error": "boom"}
    assert not any(line.get("done") for line in lines)
    emu.set_faults("error,after=2")
    client = ollama.Client(host=emu.url)
    try:
        with pytest.raises(ollama.ResponseError) as info:
            list(client.generate("demo", "fault please", stream=True))
        assert info.value.status_code == -1
    finally:
        client._client.close()


def test_error_after_zero_is_the_pre_0_12_6_shape(emu: Emulator) -> None:
    emu.set_faults("error,after=0")
    wire = gen(emu)
    assert wire.status == 200
    assert wire.headers["content-type"] == "application/x-ndjson"
    assert [list(d) for d in wire.json_lines()] == [["error"]]


def test_error_on_non_stream_is_a_500(emu: Emulator) -> None:
    emu.set_faults("error")
    wire = gen(emu, stream=False)
    assert wire.status == 500 and "error" in wire.json()


def test_malformed_line_then_continue(emu: Emulator) -> None:
    emu.set_faults("malformed,after=1")
    lines = [line for line in gen(emu).lines if line]
    assert len(lines) == 12 + 2
    json.loads(lines[0])
    with pytest.raises(json.JSONDecodeError):
        json.loads(lines[1])
    assert json.loads(lines[-1])["done"] is True


def test_blank_lines_between_chunks(emu: Emulator) -> None:
    emu.set_faults("blank")
    wire = gen(emu)
    assert b"}\n\n" in wire.body and wire.terminated
    lines = wire.lines
    assert lines.count(b"") == 12
    text = "".join(json.loads(x)["response"] for x in lines if x)
    assert text == expected("demo", GEN_BODY, emu.config).text


def test_nodone_ends_cleanly_without_done_chunk(emu: Emulator) -> None:
    emu.set_faults("nodone")
    wire = gen(emu)
    assert wire.terminated
    lines = wire.json_lines()
    assert len(lines) == 12 and not any(line["done"] for line in lines)


# -- triggers ----------------------------------------------------------------------------

def _statuses(emu: Emulator, n: int) -> List[int]:
    return [gen(emu, stream=False).status for _ in range(n)]


def test_triggers_first_nth_every_p() -> None:
    with Emulator(response_tokens=(2, 2)) as emu:
        emu.set_faults("status:500,first=2")
        assert _statuses(emu, 4) == [500, 500, 200, 200]
        emu.set_faults("status:500,nth=3")
        assert _statuses(emu, 4) == [200, 200, 500, 200]
        emu.set_faults("status:500,every=2")
        assert _statuses(emu, 4) == [200, 500, 200, 500]
        emu.set_faults("status:500,p=0")
        assert _statuses(emu, 3) == [200] * 3
        emu.set_faults([Fault("status", code=502, p=1.0)])
        assert _statuses(emu, 2) == [502, 502]
        assert emu.counters()["faults"] == {"status": 7}


def test_model_filter_and_first_spec_wins() -> None:
    with Emulator(models=("demo", "other"), response_tokens=(2, 2)) as emu:
        emu.set_faults("status:503,model=other; status:500")
        assert _statuses(emu, 1) == [500]
        other = exchange(emu.url, "POST", "/api/generate",
                         {"model": "other:latest", "prompt": "x", "stream": False})
        assert other.status == 503
        # non-inference requests never match
        assert exchange(emu.url, "GET", "/api/tags").status == 200
        assert emu.counters()["faults"] == {"status": 2}
