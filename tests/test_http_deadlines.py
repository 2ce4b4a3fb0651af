"""Phase timeouts are deadlines for the whole phase, not for each ``recv``.

A hostile server that keeps sending a few bytes (a status line one byte at
a time, endless ``100 Continue`` replies, a body that never completes a
record) must not keep a timeout from firing.
"""

from __future__ import annotations

import time
from typing import Callable, Iterator

import pytest
from httphelpers import open_
from rawserver import NDJSON, RawConn, RawServer

import streamkit.client as client_module
from streamkit import Client
from streamkit._http import Transport
from streamkit.config import Timeouts
from streamkit.errors import StreamTimeout

DRIP_S = 0.1  # far below every timeout here: a per-recv timeout never fires
LIMIT_S = 1.0  # the phase timeout under test
SLACK_S = 2.5  # how late past LIMIT_S a deadline may fire on a loaded machine


def _drip(conn: RawConn, data: bytes) -> None:
    """Send ``data`` one byte every DRIP_S until done or the client leaves."""
    for i in range(len(data)):
        if not conn.send(data[i:i + 1]) or conn.wait_disconnect(DRIP_S):
            return
    conn.stall(10)


def _trickled_status(conn: RawConn) -> None:
    _drip(conn, b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
          b"X-Padding: " + b"x" * 200 + b"\r\nContent-Length: 2\r\n\r\n{}")


def _continue_storm(conn: RawConn) -> None:
    for _ in range(400):
        if not conn.send(b"HTTP/1.1 100 Continue\r\n\r\n") or conn.wait_disconnect(DRIP_S):
            return
    conn.stall(10)


def _trickled_body(conn: RawConn) -> None:
    conn.send_head(200, {"Content-Type": NDJSON})
    for _ in range(400):  # one byte per HTTP chunk, never a whole line
        if not conn.send_chunk(b" ") or conn.wait_disconnect(DRIP_S):
            return
    conn.stall(10)


def _first_then_trickle(conn: RawConn) -> None:
    conn.send_head(200, {"Content-Type": NDJSON})
    conn.send_chunk(b'{"model":"m","response":"hi","done":false}\n')
    for _ in range(400):
        if not conn.send_chunk(b" ") or conn.wait_disconnect(DRIP_S):
            return
    conn.stall(10)


@pytest.fixture
def transport() -> Iterator[Transport]:
    with Transport(pool_size=2) as t:
        yield t


def _timed(fn: Callable[[], object]) -> float:
    started = time.monotonic()
    fn()
    return time.monotonic() - started


@pytest.mark.parametrize("handler", [_trickled_status, _continue_storm],
                         ids=["trickled-status", "continue-storm"])
def test_open_first_token_is_a_deadline_for_the_head(transport: Transport,
                                                    handler: Callable[[RawConn], None]) -> None:
    timeouts = Timeouts(connect=2, first_token=LIMIT_S, idle=LIMIT_S)
    with RawServer(handler) as server:
        def run() -> None:
            with pytest.raises(StreamTimeout) as info:
                open_(transport, server.url, timeouts=timeouts)
            assert info.value.phase == "first_token"
        assert _timed(run) < LIMIT_S + SLACK_S


@pytest.mark.parametrize(("handler", "timeouts", "phase"), [
    (_trickled_status, Timeouts(connect=2, first_token=LIMIT_S), "first_token"),
    (_continue_storm, Timeouts(connect=2, first_token=LIMIT_S), "first_token"),
    (_trickled_body, Timeouts(connect=2, first_token=LIMIT_S), "first_token"),
    (_trickled_status, Timeouts(connect=2, first_token=30, total=LIMIT_S), "total"),
    (_trickled_body, Timeouts(connect=2, first_token=30, total=LIMIT_S), "total"),
    (_first_then_trickle, Timeouts(connect=2, first_token=30, idle=LIMIT_S), "idle"),
    (_first_then_trickle, Timeouts(connect=2, first_token=30, total=LIMIT_S), "total"),
], ids=["status-first_token", "continue-first_token", "body-first_token", "status-total",
        "body-total", "body-idle", "midstream-total"])
def test_stream_phase_timeouts_fire_against_a_trickling_server(
        handler: Callable[[RawConn], None], timeouts: Timeouts, phase: str) -> None:
    with RawServer(handler) as server, Client(server.url, timeouts=timeouts) as c:
        started = time.monotonic()
        result = c.generate("m", "hi").result(timeout=LIMIT_S + 3 * SLACK_S)
        elapsed = time.monotonic() - started
    assert isinstance(result.error, StreamTimeout), result.error
    assert result.error.phase == phase
    assert elapsed < LIMIT_S + SLACK_S


@pytest.mark.parametrize("handler", [_trickled_status, _continue_storm, _trickled_body],
                         ids=["trickled-status", "continue-storm", "trickled-body"])
def test_info_endpoints_have_a_deadline(handler: Callable[[RawConn], None],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client_module, "INFO_TIMEOUT_S", LIMIT_S)
    monkeypatch.setattr(client_module, "PING_TIMEOUT_S", LIMIT_S)
    with RawServer(handler) as server, Client(server.url) as c:
        for call in (c.models, c.version):
            started = time.monotonic()
            with pytest.raises(StreamTimeout):
                call()
            assert time.monotonic() - started < LIMIT_S + SLACK_S
        ping_took = _timed(lambda: c.ping() is False or pytest.fail("ping said True"))
        assert ping_took < LIMIT_S + SLACK_S


def test_pull_idle_is_a_deadline_for_the_next_record() -> None:
    with RawServer(_first_then_trickle) as server, \
            Client(server.url, timeouts=Timeouts(connect=2, first_token=5, idle=LIMIT_S)) as c:
        started = time.monotonic()
        records = c.pull("m")
        assert next(records)["response"] == "hi"
        with pytest.raises(StreamTimeout) as info:
            next(records)
        records.close()
    assert info.value.phase == "idle"
    assert time.monotonic() - started < LIMIT_S + SLACK_S
