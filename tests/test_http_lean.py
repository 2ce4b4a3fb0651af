"""The lean path: plain-HTTP requests opened without requests' layers (``_http/lean.py``)."""

from __future__ import annotations

import select
import socket
import struct
import time
from typing import Iterator, List, Tuple

import pytest
from httphelpers import FAST, WAIT, open_, read_all
from rawserver import RawConn, RawServer, chunk, ndjson_handler

from streamkit._http import CancelToken, Transport
from streamkit._http import transport as transport_module
from streamkit._http.lean import MAX_HEAD
from streamkit.config import Timeouts
from streamkit.errors import Cancelled, ConnectError, StreamTimeout


@pytest.fixture
def transport() -> Iterator[Transport]:
    with Transport(pool_size=4) as t:
        yield t


def _lean(resp: object) -> bool:
    """The response was opened on the lean path (it gives its socket back itself)."""
    return getattr(resp, "_give_back", None) is not None


def test_plain_http_is_lean_and_one_connection_serves_every_request(
        transport: Transport) -> None:
    with RawServer(ndjson_handler([b'{"a":1}'])) as server:
        for _ in range(5):
            resp = open_(transport, server.url)
            assert _lean(resp)
            assert read_all(resp) == b'{"a":1}\n'
            resp.close()
        assert server.connections.value == 1
        request = server.requests[0]
        assert request.method == "POST" and request.path == "/api/generate"
        assert request.body == b"{}" and request.headers["content-length"] == "2"
        assert request.headers["host"] == f"127.0.0.1:{server.port}"
        assert request.headers["accept-encoding"] == "identity"
        assert request.headers["user-agent"].startswith("streamkit/")


def test_the_requests_path_when_turned_off_or_proxied(
        transport: Transport, monkeypatch: pytest.MonkeyPatch) -> None:
    with RawServer(ndjson_handler([b"{}"])) as server:
        monkeypatch.setattr(transport_module, "LEAN_PATH", False)
        with Transport() as plain:
            resp = open_(plain, server.url)
            assert not _lean(resp) and read_all(resp) == b"{}\n"
            resp.close()
        monkeypatch.setattr(transport_module, "LEAN_PATH", True)
        monkeypatch.setenv("HTTP_PROXY", server.url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        with Transport() as proxied:
            resp = open_(proxied, "http://example.invalid")
            assert not _lean(resp)  # through the proxy, as requests sends it
            read_all(resp)
            resp.close()
        assert server.requests[-1].path == "http://example.invalid/api/generate"


def test_a_keep_alive_socket_the_server_closed_is_not_used_again(
        transport: Transport) -> None:
    def once_then_close(conn: RawConn) -> None:
        conn.respond(200, b"{}\n")
        conn.cut()  # after the reply: the client's pooled socket is now dead

    with RawServer(once_then_close) as server:
        for _ in range(3):
            resp = open_(transport, server.url)
            assert read_all(resp) == b"{}\n"
            resp.close()
        assert len(server.requests) == 3  # each sent once, on a fresh connection
        assert server.connections.value == 3


def test_a_stale_socket_that_fails_on_send_is_replaced_once(
        transport: Transport, monkeypatch: pytest.MonkeyPatch) -> None:
    # The server may close an idle connection between the liveness check and
    # the send; a reset before any reply byte sends the request on a new one.
    from streamkit._http import lean
    monkeypatch.setattr(lean, "_alive", lambda sock: True)

    def once_then_reset(conn: RawConn) -> None:
        conn.respond(200, b"{}\n")
        conn.reset()

    with RawServer(once_then_reset) as server:
        for _ in range(3):
            resp = open_(transport, server.url)
            assert read_all(resp) == b"{}\n"
            resp.close()
        assert len(server.requests) == 3 and server.connections.value == 3


def test_informational_replies_are_skipped_and_headers_parsed_as_http_does(
        transport: Transport) -> None:
    def handler(conn: RawConn) -> None:
        conn.send(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n")
        conn.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Folded: one\r\n"
                  b"\ttwo\r\nX-Twice: a\r\nx-twice: b\r\nContent-Type: application/x-ndjson"
                  b"\r\n\r\n" + chunk(b'{"a":1}\n') + b"0\r\n\r\n")

    with RawServer(handler) as server:
        resp = open_(transport, server.url)
        assert resp.status == 200 and _lean(resp)
        assert resp.headers["x-folded"] == "one two"
        assert resp.headers["x-twice"] == "a, b"
        assert "link" not in resp.headers
        assert read_all(resp) == b'{"a":1}\n'
        resp.close()


@pytest.mark.parametrize("reply, words", [
    (b"SMTP ready\r\n\r\n", "status line"),
    (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "malformed header"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n", "Content-Length"),
    (b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * (MAX_HEAD + 10), "over"),
    (b"HTTP/1.1 20", "without a reply"),
])
def test_a_bad_reply_head_is_a_connect_error_naming_it(
        transport: Transport, reply: bytes, words: str) -> None:
    def handler(conn: RawConn) -> None:
        conn.send(reply)
        conn.cut()

    with RawServer(handler) as server, pytest.raises(ConnectError, match=words):
        open_(transport, server.url)


def test_the_head_deadline_holds_however_the_bytes_trickle(transport: Transport) -> None:
    def trickle(conn: RawConn) -> None:
        for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 100:
            if not conn.send(bytes([byte])) or conn.wait_disconnect(0.02):
                return

    with RawServer(trickle) as server:
        started = time.monotonic()
        with pytest.raises(StreamTimeout) as info:
            open_(transport, server.url, timeouts=Timeouts(connect=2, first_token=0.3, idle=5))
        assert time.monotonic() - started < 1.5  # the trickle lasts 2.5 s: a deadline, in all
        assert info.value.phase == "first_token"
        assert server.disconnects.wait(WAIT)


def test_cancel_while_waiting_for_the_head_ends_it_and_the_server_sees_it(
        transport: Transport) -> None:
    token = CancelToken()

    def handler(conn: RawConn) -> None:
        token.cancel()
        conn.stall(WAIT)

    with RawServer(handler) as server:
        with pytest.raises(Cancelled):
            open_(transport, server.url, cancel=token)
        assert server.disconnects.wait(WAIT)


def test_connection_refused_and_closed_ports_are_connect_errors(transport: Transport) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nobody listens here once it closes
    with pytest.raises(ConnectError, match="could not connect"):
        open_(transport, f"http://127.0.0.1:{port}")


@pytest.mark.parametrize("headers, body, reused", [
    ({"Connection": "close"}, b"{}\n", False),
    ({}, b"{}\n", True),
])
def test_a_connection_is_reused_only_when_the_server_keeps_it(
        transport: Transport, headers: dict, body: bytes, reused: bool) -> None:
    with RawServer(lambda conn: conn.respond(200, body, headers)) as server:
        for _ in range(2):
            resp = open_(transport, server.url)
            assert read_all(resp) == body
            resp.close()
        assert server.connections.value == (1 if reused else 2)


def test_bytes_past_a_content_length_body_are_not_read_as_the_next_reply(
        transport: Transport) -> None:
    def handler(conn: RawConn) -> None:
        conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n{}\nHTTP/1.1 200 OK\r\n")

    with RawServer(handler) as server:
        resp = open_(transport, server.url)
        assert read_all(resp) == b"{}\n"
        resp.close()
        resp = open_(transport, server.url, timeouts=FAST)
        assert resp.status == 200
        resp.close()
        assert server.connections.value == 2  # the first one was not put back


def _tcp_pairs(n: int) -> List[Tuple[socket.socket, socket.socket]]:
    """``n`` loopback TCP connections as (client end, server end)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        pairs = []
        for _ in range(n):
            mine = socket.create_connection(listener.getsockname())
            peer, _ = listener.accept()
            pairs.append((mine, peer))
        return pairs


def test_the_pool_hands_out_only_sockets_the_server_has_not_given_up() -> None:
    # Checked before reuse: a server that closed, reset or sent bytes nobody
    # asked for makes an idle socket useless; it is closed, not handed out.
    from streamkit._http.lean import LeanPool

    key = ("127.0.0.1", 1)
    pool = LeanPool(8)
    pairs = _tcp_pairs(4)
    live, closed, chatty, reset = pairs
    closed[1].close()
    chatty[1].sendall(b"HTTP/1.1 408 Request Timeout\r\n\r\n")
    reset[1].setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    reset[1].close()
    try:
        for mine, _ in pairs[1:]:  # wait until each server end's news has arrived
            assert select.select([mine], [], [], WAIT)[0], "nothing came from the server end"
        for mine, _ in pairs:  # the live one is given first, so taken last
            pool.give(key, mine)
        assert pool.take(key) is live[0]
        assert all(mine.fileno() == -1 for mine, _ in (closed, chatty, reset))
        assert pool.take(key) is None
        assert live[0].fileno() != -1
    finally:
        pool.close()
        for mine, peer in pairs:
            mine.close()
            peer.close()
