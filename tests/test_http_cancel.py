"""CancelToken: a cancel wakes a blocked read or open at once, and only its own."""

from __future__ import annotations

import threading
import time
from typing import Iterator

import pytest
from httphelpers import WAIT, open_, read_all
from rawserver import RawConn, RawServer, ndjson_handler

from streamkit._http import CancelToken, Transport
from streamkit.config import Timeouts
from streamkit.errors import Cancelled


@pytest.fixture
def transport() -> Iterator[Transport]:
    with Transport(pool_size=4) as t:
        yield t



def _cancel_soon(token: CancelToken, after: threading.Event) -> threading.Thread:
    def run() -> None:
        after.wait(WAIT)
        token.cancel()
    t = threading.Thread(target=run)
    t.start()
    return t


def test_cancel_unblocks_a_read_at_once_and_the_server_sees_it(
        transport: Transport) -> None:
    stalled = threading.Event()

    def handler(conn: RawConn) -> None:
        conn.send_head(200)
        conn.send_chunk(b'{"a":1}\n')
        stalled.set()
        conn.stall(WAIT)

    with RawServer(handler) as server:
        token = CancelToken()
        resp = open_(transport, server.url, token)
        resp.read_some(WAIT)
        canceller = _cancel_soon(token, stalled)
        started = time.monotonic()
        with pytest.raises(Cancelled):
            resp.read_some(None)  # no timeout: only the cancel can end this
        elapsed = time.monotonic() - started
        canceller.join(WAIT)
        resp.close()
        assert server.disconnects.wait(WAIT)
    assert elapsed < WAIT / 2
    assert token.cancel() is False  # idempotent


def test_cancel_while_waiting_for_the_status_line(transport: Transport) -> None:
    waiting = threading.Event()

    def handler(conn: RawConn) -> None:
        waiting.set()
        conn.stall(WAIT)

    with RawServer(handler) as server:
        token = CancelToken()
        canceller = _cancel_soon(token, waiting)
        started = time.monotonic()
        with pytest.raises(Cancelled):
            open_(transport, server.url, token, Timeouts(connect=2, first_token=30))
        assert time.monotonic() - started < WAIT / 2
        canceller.join(WAIT)
        assert server.disconnects.wait(WAIT)


def test_cancelled_token_refuses_to_open(transport: Transport) -> None:
    token = CancelToken()
    assert token.cancel() is True
    with pytest.raises(Cancelled):
        open_(transport, "http://127.0.0.1:9", token)


def test_late_cancel_does_not_touch_a_pooled_connection(transport: Transport) -> None:
    with RawServer(ndjson_handler([b'{"done":true}'])) as server:
        first = CancelToken()
        resp = open_(transport, server.url, first)
        read_all(resp)  # complete: the connection is back in the pool
        resp.close()
        resp = open_(transport, server.url)  # reuses it
        first.cancel()  # must not shut down the connection now serving another stream
        assert read_all(resp) == b'{"done":true}\n'
        resp.close()
        assert server.connections.value == 1
