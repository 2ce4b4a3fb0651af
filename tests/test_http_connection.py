"""Connections: head and body coalesced, arrival stamps, the shared pool."""

from __future__ import annotations

import http.client
import logging
import socket
import threading
import time
import warnings
from typing import Any, Iterator, List

import pytest
from httphelpers import FAST, WAIT, open_, read_all
from rawserver import RawConn, RawServer, chunk, ndjson_handler

from streamkit._http import CancelToken, Transport, connection
from streamkit._http import transport as transport_module


@pytest.fixture(autouse=True)
def requests_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """These are the tests of the urllib3/http.client connections: no lean path."""
    monkeypatch.setattr(transport_module, "LEAN_PATH", False)


@pytest.fixture
def transport() -> Iterator[Transport]:
    with Transport(pool_size=4) as t:
        yield t


def test_a_small_body_goes_out_with_the_head_and_a_large_one_whole(
        transport: Transport) -> None:
    with RawServer(ndjson_handler([b"{}"])) as server:
        for body in (b'{"a":1}', b"x" * (3 << 20)):
            resp = transport.open(server.url + "/api/generate", body, timeouts=FAST,
                                  cancel=CancelToken())
            read_all(resp)
            resp.close()
        assert [len(r.body) for r in server.requests] == [7, 3 << 20]
        assert server.requests[1].body == b"x" * (3 << 20)


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
                        resp = open_(t, server.url)
                        read_all(resp)
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


# -- head and body in one send ------------------------------------------------------


def _client_sends(monkeypatch: pytest.MonkeyPatch, port: int) -> List[bytes]:
    """Every ``sendall`` of a socket connected to ``port`` (the client's side), in order."""
    sends: List[bytes] = []
    real = socket.socket.sendall

    def spy(sock: socket.socket, data: Any, *args: Any) -> None:
        try:
            peer_port = sock.getpeername()[1]
        except OSError:
            peer_port = None
        if peer_port == port:
            sends.append(bytes(data))
        real(sock, data, *args)

    monkeypatch.setattr(socket.socket, "sendall", spy)
    return sends


def test_a_small_body_is_sent_in_the_same_send_as_its_head(
        transport: Transport, monkeypatch: pytest.MonkeyPatch) -> None:
    body = b'{"model":"m","prompt":"hi"}'
    with RawServer(ndjson_handler([b"{}"])) as server:
        sends = _client_sends(monkeypatch, server.port)
        resp = transport.open(server.url + "/api/generate", body, timeouts=FAST,
                              cancel=CancelToken())
        read_all(resp)
        resp.close()
        assert server.requests[0].body == body
    assert len(sends) == 1, [len(s) for s in sends]  # one system call, one segment
    head, _, rest = sends[0].partition(b"\r\n\r\n")
    assert head.startswith(b"POST /api/generate HTTP/1.1") and rest == body


# -- arrival stamps -------------------------------------------------------------------

HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\n" \
       b"Transfer-Encoding: chunked\r\n\r\n"


def test_bytes_that_came_with_the_headers_are_stamped_when_they_arrived(
        transport: Transport) -> None:
    sent: List[int] = []

    def handler(conn: RawConn) -> None:
        sent.append(time.perf_counter_ns())
        conn.send(HEAD + chunk(b'{"a":1}\n'))  # one write: headers and first chunk together
        conn.stall(WAIT)

    with RawServer(handler) as server:
        resp = open_(transport, server.url)
        opened_ns = time.perf_counter_ns()
        # The chunk was read off the socket with the headers and waited in the
        # buffer while they were parsed: its stamp is the read's, before open()
        # returned, not the time read_some() hands it over.
        assert resp.read_some(WAIT) == b'{"a":1}\n'
        assert resp.stamped
        assert sent[0] <= resp.head_ns <= resp.read_ns <= opened_ns
        resp.close()


def test_a_later_read_is_stamped_between_its_send_and_its_return(
        transport: Transport) -> None:
    release = threading.Event()
    sent: List[int] = []

    def handler(conn: RawConn) -> None:
        conn.send(HEAD + chunk(b'{"a":1}\n'))
        release.wait(WAIT)
        sent.append(time.perf_counter_ns())
        conn.send_chunk(b'{"b":2}\n')
        conn.stall(WAIT)

    with RawServer(handler) as server:
        resp = open_(transport, server.url)
        assert resp.read_some(WAIT) == b'{"a":1}\n'
        first_ns = resp.read_ns
        release.set()
        assert resp.read_some(WAIT) == b'{"b":2}\n'
        returned_ns = time.perf_counter_ns()
        assert first_ns < sent[0] <= resp.read_ns <= returned_ns
        resp.close()


def test_a_connection_without_the_stamped_reader_is_loud_not_silent(
        transport: Transport, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    # What a connection class that is not ours (a SOCKS proxy's) gives.
    monkeypatch.setattr(connection._HTTPConnection, "response_class",
                        http.client.HTTPResponse)
    monkeypatch.setattr(connection, "_warned_unstamped", threading.Event())
    caplog.set_level(logging.WARNING, logger="streamkit")
    with RawServer(ndjson_handler([b'{"a":1}'])) as server:
        for _ in range(2):
            resp = open_(transport, server.url)
            assert read_all(resp) == b'{"a":1}\n'
            assert resp.stamped is False
            resp.close()
    warned = [r for r in caplog.records if "stamped reader" in r.getMessage()]
    assert len(warned) == 1  # once per process, not per response
