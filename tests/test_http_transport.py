"""Transport: raw reads as they arrive, connection reuse, error mapping by phase, cancel."""

from __future__ import annotations

import logging
import socket
import threading
import time
import warnings
from typing import Callable, Iterator, List

import pytest
from rawserver import RawConn, RawServer, chunk, ndjson_handler

from streamkit.config import Secret, Timeouts
from streamkit.errors import (
    Cancelled,
    ConnectError,
    ProtocolError,
    StreamInterrupted,
    StreamTimeout,
)
from streamkit.transport import CancelToken, Response, Transport, _Dechunker

FAST = Timeouts(connect=2, first_token=5, idle=5)
WAIT = 5.0  # generous upper bound for events that normally take milliseconds


@pytest.fixture
def transport() -> Iterator[Transport]:
    with Transport(pool_size=4) as t:
        yield t


def _open(t: Transport, url: str, cancel: CancelToken | None = None,
          timeouts: Timeouts = FAST) -> Response:
    return t.open(url + "/api/generate", b"{}", timeouts=timeouts,
                  cancel=cancel or CancelToken())


def _read_all(resp: Response) -> bytes:
    parts = []
    while True:
        data = resp.read_some(WAIT)
        if not data:
            return b"".join(parts)
        parts.append(data)


# -- reading -------------------------------------------------------------------


def test_each_chunk_is_returned_as_soon_as_it_arrives(transport: Transport) -> None:
    release = threading.Event()

    def handler(conn: RawConn) -> None:
        conn.send_head(200)
        conn.send_chunk(b'{"a":1}\n')
        release.wait(WAIT)  # the second chunk waits for the client to have the first
        conn.send_chunk(b'{"b":2}\n')
        conn.end_chunks()

    with RawServer(handler) as server:
        resp = _open(transport, server.url)
        assert resp.status == 200
        assert resp.read_some(WAIT) == b'{"a":1}\n'
        release.set()
        assert resp.read_some(WAIT) == b'{"b":2}\n'
        assert resp.read_some(WAIT) == b""
        assert resp.read_some(WAIT) == b""  # and from then on
        resp.close()


def test_content_length_body_is_not_held_back_for_a_full_buffer(
        transport: Transport) -> None:
    release = threading.Event()

    def handler(conn: RawConn) -> None:
        conn.send_head(200, {"Content-Length": "21"}, chunked=False)
        conn.send(b'{"x":1}\n')  # 8 of 21 bytes, then a pause
        release.wait(WAIT)
        conn.send(b'{"yy":22222}\n')

    with RawServer(handler) as server:
        resp = _open(transport, server.url)
        assert resp.read_some(WAIT) == b'{"x":1}\n'
        release.set()
        assert _read_all(resp) == b'{"yy":22222}\n'
        resp.close()


def test_close_delimited_body_reads_to_eof(transport: Transport) -> None:
    def handler(conn: RawConn) -> None:
        conn.send_head(200, {"Connection": "close"}, chunked=False)
        conn.send(b"line one\nline two\n")
        conn.cut()

    with RawServer(handler) as server:
        resp = _open(transport, server.url)
        assert _read_all(resp) == b"line one\nline two\n"
        resp.close()


def test_many_chunks_in_one_read_come_back_in_one_call(transport: Transport) -> None:
    lines = [b'{"i":%d}' % i for i in range(500)]
    body = b"".join(chunk(line + b"\n") for line in lines) + b"0\r\n\r\n"

    def handler(conn: RawConn) -> None:
        conn.send_head(200)
        conn.send(body)  # one write: the client's first read gets many chunks

    with RawServer(handler) as server:
        resp = _open(transport, server.url)
        first = resp.read_some(WAIT)
        assert first.count(b"\n") > 1
        assert first + _read_all(resp) == b"".join(line + b"\n" for line in lines)
        resp.close()


def test_connections_are_reused_after_a_complete_body(transport: Transport) -> None:
    with RawServer(ndjson_handler([b'{"done":true}'])) as server:
        for _ in range(3):
            resp = _open(transport, server.url)
            assert _read_all(resp) == b'{"done":true}\n'
            resp.close()
        assert len(server.requests) == 3
        assert server.connections.value == 1


def test_a_half_read_connection_is_not_reused(transport: Transport) -> None:
    def handler(conn: RawConn) -> None:
        conn.send_head(200)
        conn.send_chunk(b'{"a":1}\n')
        conn.stall(WAIT)

    with RawServer([handler, ndjson_handler([b"{}"])]) as server:
        resp = _open(transport, server.url)
        resp.read_some(WAIT)
        resp.close()
        resp = _open(transport, server.url)
        _read_all(resp)
        resp.close()
        assert server.connections.value == 2


def test_read_body_reads_an_error_reply(transport: Transport) -> None:
    def handler(conn: RawConn) -> None:
        conn.respond(404, b'{"error":"model \'x\' not found"}',
                     {"Content-Type": "application/json; charset=utf-8"})

    with RawServer(handler) as server:
        resp = _open(transport, server.url)
        assert resp.status == 404
        assert resp.headers["content-type"].startswith("application/json")
        assert resp.read_body() == b'{"error":"model \'x\' not found"}'
        resp.close()


def test_request_headers_and_body(transport: Transport) -> None:
    with RawServer(ndjson_handler([b"{}"])) as server:
        resp = transport.open(server.url + "/api/chat", b'{"model":"m"}', timeouts=FAST,
                              cancel=CancelToken())
        _read_all(resp)
        resp.close()
        request = server.requests[0]
        assert (request.method, request.path, request.body) == (
            "POST", "/api/chat", b'{"model":"m"}')
        assert request.headers["accept-encoding"] == "identity"
        assert request.headers["content-type"] == "application/json"
        assert request.headers["user-agent"].startswith("streamkit/")
        assert "authorization" not in request.headers


def test_api_key_is_sent_but_never_shown_and_dropped_on_cross_host_redirect() -> None:
    def redirect(target: str) -> Callable[[RawConn], None]:
        def handler(conn: RawConn) -> None:
            conn.respond(307, b"", {"Location": target})
        return handler

    with RawServer(ndjson_handler([b"{}"])) as other, RawServer([]) as first, \
            Transport(api_key=Secret("sk-very-secret"), headers={"X-Team": "a"}) as t:
        first.handlers[:] = [redirect(first.url + "/moved"), ndjson_handler([b"{}"]),
                              redirect(other.url + "/api/generate")]
        for _ in range(2):
            resp = _open(t, first.url)
            _read_all(resp)
            resp.close()
        assert "sk-very-secret" not in repr(t)
        assert [r.headers.get("authorization") for r in first.requests] == [
            "Bearer sk-very-secret"] * 3  # same host: kept across the redirect
        assert first.requests[0].headers["x-team"] == "a"
        assert other.requests[0].headers.get("authorization") is None  # another port


def _clear_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


def test_environment_proxy_is_used_and_read_when_a_url_is_first_opened(
        monkeypatch: pytest.MonkeyPatch) -> None:
    _clear_proxy_env(monkeypatch)
    with RawServer(ndjson_handler([b"{}"])) as proxy, \
            RawServer(ndjson_handler([b"{}"])) as origin:
        url = origin.url + "/api/generate"
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        with Transport() as t:
            for _ in range(2):
                resp = t.open(url, b"{}", timeouts=FAST, cancel=CancelToken())
                _read_all(resp)
                resp.close()
                # Read once per Transport and URL: a later change is not seen.
                monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        assert [r.path for r in proxy.requests] == [url, url]  # absolute-form: via the proxy
        assert origin.requests == []
        with Transport() as t:  # a new Transport reads NO_PROXY
            resp = t.open(url, b"{}", timeouts=FAST, cancel=CancelToken())
            _read_all(resp)
            resp.close()
        assert [r.path for r in origin.requests] == ["/api/generate"]


def test_a_small_body_goes_out_with_the_head_and_a_large_one_whole(
        transport: Transport) -> None:
    with RawServer(ndjson_handler([b"{}"])) as server:
        for body in (b'{"a":1}', b"x" * (3 << 20)):
            resp = transport.open(server.url + "/api/generate", body, timeouts=FAST,
                                  cancel=CancelToken())
            _read_all(resp)
            resp.close()
        assert [len(r.body) for r in server.requests] == [7, 3 << 20]
        assert server.requests[1].body == b"x" * (3 << 20)


def test_request_json_decodes_json_and_falls_back_to_text(transport: Transport) -> None:
    def handler(conn: RawConn) -> None:
        if conn.request.path == "/api/tags":
            conn.respond(200, b'{"models":[]}', {"Content-Type": "application/json"})
        else:
            conn.respond(404, b"404 page not found", {"Content-Type": "text/plain"})

    with RawServer(handler) as server:
        assert transport.request_json("GET", server.url + "/api/tags",
                                      timeout=WAIT) == (200, {"models": []})
        assert transport.request_json("POST", server.url + "/nope", {"a": 1},
                                      timeout=WAIT) == (404, "404 page not found")
        assert server.requests[1].body == b'{"a": 1}'


def test_pool_sized_for_the_workers_does_not_warn() -> None:
    workers = 6
    with RawServer(ndjson_handler([b'{"done":true}'])) as server, \
            Transport(pool_size=workers) as t, warnings.catch_warnings():
        warnings.simplefilter("error")
        logged: List[logging.LogRecord] = []
        handler = logging.Handler()
        handler.emit = logged.append  # type: ignore[method-assign]
        logging.getLogger("urllib3").addHandler(handler)
        try:
            barrier = threading.Barrier(workers)
            errors: List[BaseException] = []

            def work() -> None:
                try:
                    barrier.wait(WAIT)
                    for _ in range(5):
                        resp = _open(t, server.url)
                        _read_all(resp)
                        resp.close()
                except BaseException as exc:  # pragma: no cover - reported below
                    errors.append(exc)

            threads = [threading.Thread(target=work) for _ in range(workers)]
            for th in threads:
                th.start()
            for th in threads:
                th.join(WAIT * 2)
        finally:
            logging.getLogger("urllib3").removeHandler(handler)
        assert not errors
        assert not [r for r in logged if "pool is full" in r.getMessage()]
        assert server.connections.value <= workers


# -- chunked decoding ------------------------------------------------------------


def test_dechunker_at_every_split_point() -> None:
    payload = [b'{"a":"x"}\n', b"", b'{"b":"\xc3\xa9"}\n', b"z" * 300]
    body = b"".join(chunk(p) for p in payload if p)
    body += b"0\r\nX-Trailer: 1\r\n\r\n"
    want = b"".join(payload)
    for split in range(len(body) + 1):
        d = _Dechunker()
        got = d.feed(body[:split]) + d.feed(body[split:])
        assert got == want, split
        assert d.finished
    d = _Dechunker()
    got = b"".join(d.feed(body[i:i + 1]) for i in range(len(body)))
    assert got == want and d.finished


@pytest.mark.parametrize("bad", [b"zz\r\nabc\r\n", b"3\r\nabcdef\r\n", b"-1\r\n",
                                 b"1" * 9000])
def test_dechunker_rejects_bad_framing(bad: bytes) -> None:
    d = _Dechunker()
    with pytest.raises(ProtocolError):
        d.feed(bad)
        d.feed(b"")  # payload before the bad part comes first, the error next


def test_dechunker_ignores_chunk_extensions() -> None:
    d = _Dechunker()
    assert d.feed(b"3;name=value\r\nabc\r\n0\r\n\r\n") == b"abc"
    assert d.finished


# -- errors by phase ---------------------------------------------------------------


def test_refused_is_connect_error_with_cause(transport: Transport) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    with pytest.raises(ConnectError) as info:
        _open(transport, f"http://127.0.0.1:{port}")
    assert info.value.__cause__ is not None
    assert "refused" in str(info.value).lower()


def test_reset_before_status_is_connect_error(transport: Transport) -> None:
    with RawServer(lambda conn: conn.reset()) as server, pytest.raises(ConnectError):
        _open(transport, server.url)


def test_close_before_status_is_connect_error(transport: Transport) -> None:
    with RawServer(lambda conn: conn.cut()) as server, pytest.raises(ConnectError):
        _open(transport, server.url)


def test_slow_headers_is_first_token_timeout(transport: Transport) -> None:
    def handler(conn: RawConn) -> None:
        conn.stall(WAIT)

    with RawServer(handler) as server, pytest.raises(StreamTimeout) as info:
        _open(transport, server.url, timeouts=Timeouts(connect=2, first_token=0.2))
    assert info.value.phase == "first_token"


def test_connect_timeout(transport: Transport) -> None:
    # A listener with a full accept queue drops further SYNs: connect hangs.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    fillers = []
    try:
        for _ in range(8):  # enough to fill the queue whatever the kernel rounds 0 to
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(listener.getsockname())
            fillers.append(s)
        started = time.monotonic()
        with pytest.raises((StreamTimeout, ConnectError)) as info:
            _open(transport, url, timeouts=Timeouts(connect=0.3, first_token=0.3))
        if isinstance(info.value, ConnectError):  # pragma: no cover - kernel dependent
            pytest.skip("this kernel answers a full accept queue instead of dropping")
        assert info.value.phase in ("connect", "first_token")
        assert time.monotonic() - started < 3
    finally:
        for s in fillers:
            s.close()
        listener.close()


def test_stall_mid_body_is_a_timeout_with_the_callers_phase(transport: Transport) -> None:
    def handler(conn: RawConn) -> None:
        conn.send_head(200)
        conn.send_chunk(b'{"a":1}\n')
        conn.stall(WAIT)

    with RawServer(handler) as server:
        resp = _open(transport, server.url)
        assert resp.read_some(WAIT)
        with pytest.raises(StreamTimeout) as info:
            resp.read_some(0.2, phase="idle")
        assert info.value.phase == "idle"
        resp.close()
        assert server.disconnects.wait(WAIT)


@pytest.mark.parametrize("how", ["cut", "reset"])
def test_cut_mid_chunked_body_is_interrupted(transport: Transport, how: str) -> None:
    def handler(conn: RawConn) -> None:
        conn.send_head(200)
        conn.send_chunk(b'{"a":1}\n')
        conn.send(b"10\r\n" + b'{"half":')  # half of a chunk, then the end
        conn.cut() if how == "cut" else conn.reset()

    with RawServer(handler) as server:
        resp = _open(transport, server.url)
        with pytest.raises(StreamInterrupted) as info:
            _read_all(resp)
        assert info.value.__cause__ is not None or how == "cut"
        resp.close()


def test_chunked_body_without_terminator_is_interrupted(transport: Transport) -> None:
    def handler(conn: RawConn) -> None:
        conn.send_head(200)
        conn.send_chunk(b'{"a":1}\n')
        conn.cut()

    with RawServer(handler) as server:
        resp = _open(transport, server.url)
        assert resp.read_some(WAIT) == b'{"a":1}\n'
        with pytest.raises(StreamInterrupted):
            resp.read_some(WAIT)
        resp.close()


def test_short_content_length_body_is_interrupted(transport: Transport) -> None:
    def handler(conn: RawConn) -> None:
        conn.send_head(200, {"Content-Length": "100"}, chunked=False)
        conn.send(b'{"a":1}\n')
        conn.cut()

    with RawServer(handler) as server:
        resp = _open(transport, server.url)
        with pytest.raises(StreamInterrupted):
            _read_all(resp)
        resp.close()


def test_bad_chunk_framing_is_protocol_error(transport: Transport) -> None:
    def handler(conn: RawConn) -> None:
        conn.send_head(200)
        conn.send(b"nothex\r\n")
        conn.stall(WAIT)

    with RawServer(handler) as server:
        resp = _open(transport, server.url)
        with pytest.raises(ProtocolError):
            resp.read_some(WAIT)
        resp.close()


# -- cancel --------------------------------------------------------------------


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
        resp = _open(transport, server.url, token)
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
            _open(transport, server.url, token, Timeouts(connect=2, first_token=30))
        assert time.monotonic() - started < WAIT / 2
        canceller.join(WAIT)
        assert server.disconnects.wait(WAIT)


def test_cancelled_token_refuses_to_open(transport: Transport) -> None:
    token = CancelToken()
    assert token.cancel() is True
    with pytest.raises(Cancelled):
        _open(transport, "http://127.0.0.1:9", token)


def test_late_cancel_does_not_touch_a_pooled_connection(transport: Transport) -> None:
    with RawServer(ndjson_handler([b'{"done":true}'])) as server:
        first = CancelToken()
        resp = _open(transport, server.url, first)
        _read_all(resp)  # complete: the connection is back in the pool
        resp.close()
        resp = _open(transport, server.url)  # reuses it
        first.cancel()  # must not shut down the connection now serving another stream
        assert _read_all(resp) == b'{"done":true}\n'
        resp.close()
        assert server.connections.value == 1


def test_closed_transport_refuses_work() -> None:
    t = Transport()
    t.close()
    t.close()  # idempotent
    with pytest.raises(RuntimeError):
        _open(t, "http://127.0.0.1:9")


def test_payload_before_bad_framing_is_returned_first(transport: Transport) -> None:
    def handler(conn: RawConn) -> None:
        conn.send_head(200)
        conn.send(chunk(b'{"a":1}\n') + b"zz\r\n")  # good chunk, then garbage, one write
        conn.stall(WAIT)

    with RawServer(handler) as server:
        resp = _open(transport, server.url)
        data = b""
        with pytest.raises(ProtocolError):
            while True:
                data += resp.read_some(WAIT)
        assert data == b'{"a":1}\n'
        resp.close()
        assert server.disconnects.wait(WAIT)  # a broken connection is not pooled


def test_dechunker_keeps_payload_before_bad_framing() -> None:
    d = _Dechunker()
    assert d.feed(chunk(b"abc") + b"zz\r\n") == b"abc"
    assert not d.finished
    with pytest.raises(ProtocolError):
        d.feed(b"")
