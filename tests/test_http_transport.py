"""Transport: the request sent, environment and redirects, errors by phase at open."""

from __future__ import annotations

import socket
import time
from typing import Callable, Iterator

import pytest
from httphelpers import FAST, WAIT, open_, read_all
from rawserver import RawConn, RawServer, ndjson_handler

from streamkit._http import CancelToken, Transport
from streamkit.config import Secret, Timeouts
from streamkit.errors import ConnectError, StreamTimeout


@pytest.fixture
def transport() -> Iterator[Transport]:
    with Transport(pool_size=4) as t:
        yield t



def test_request_headers_and_body(transport: Transport) -> None:
    with RawServer(ndjson_handler([b"{}"])) as server:
        resp = transport.open(server.url + "/api/chat", b'{"model":"m"}', timeouts=FAST,
                              cancel=CancelToken())
        read_all(resp)
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
            resp = open_(t, first.url)
            read_all(resp)
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
                read_all(resp)
                resp.close()
                # Read once per Transport and URL: a later change is not seen.
                monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        assert [r.path for r in proxy.requests] == [url, url]  # absolute-form: via the proxy
        assert origin.requests == []
        with Transport() as t:  # a new Transport reads NO_PROXY
            resp = t.open(url, b"{}", timeouts=FAST, cancel=CancelToken())
            read_all(resp)
            resp.close()
        assert [r.path for r in origin.requests] == ["/api/generate"]


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


def test_refused_is_connect_error_with_cause(transport: Transport) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    with pytest.raises(ConnectError) as info:
        open_(transport, f"http://127.0.0.1:{port}")
    assert info.value.__cause__ is not None
    assert "refused" in str(info.value).lower()


def test_reset_before_status_is_connect_error(transport: Transport) -> None:
    with RawServer(lambda conn: conn.reset()) as server, pytest.raises(ConnectError):
        open_(transport, server.url)


def test_close_before_status_is_connect_error(transport: Transport) -> None:
    with RawServer(lambda conn: conn.cut()) as server, pytest.raises(ConnectError):
        open_(transport, server.url)


def test_slow_headers_is_first_token_timeout(transport: Transport) -> None:
    def handler(conn: RawConn) -> None:
        conn.stall(WAIT)

    with RawServer(handler) as server, pytest.raises(StreamTimeout) as info:
        open_(transport, server.url, timeouts=Timeouts(connect=2, first_token=0.2))
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
            open_(transport, url, timeouts=Timeouts(connect=0.3, first_token=0.3))
        if isinstance(info.value, ConnectError):  # pragma: no cover - kernel dependent
            pytest.skip("this kernel answers a full accept queue instead of dropping")
        assert info.value.phase in ("connect", "first_token")
        assert time.monotonic() - started < 3
    finally:
        for s in fillers:
            s.close()
        listener.close()


def test_closed_transport_refuses_work() -> None:
    t = Transport()
    t.close()
    t.close()  # idempotent
    with pytest.raises(RuntimeError):
        open_(t, "http://127.0.0.1:9")
