"""Response: raw reads as they arrive, framing, reuse, errors mid-body."""

from __future__ import annotations

import socket
import threading
import time
from typing import Callable, Iterator

import pytest
from httphelpers import WAIT, open_, read_all
from rawserver import RawConn, RawServer, chunk, ndjson_handler

from streamkit._http import Transport
from streamkit.errors import (
    ProtocolError,
    StreamInterrupted,
    StreamTimeout,
)

HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\n" \
       b"Transfer-Encoding: chunked\r\n\r\n"


@pytest.fixture
def transport() -> Iterator[Transport]:
    with Transport(pool_size=4) as t:
        yield t



def test_each_chunk_is_returned_as_soon_as_it_arrives(transport: Transport) -> None:
    release = threading.Event()

    def handler(conn: RawConn) -> None:
        conn.send_head(200)
        conn.send_chunk(b'{"a":1}\n')
        release.wait(WAIT)  # the second chunk waits for the client to have the first
        conn.send_chunk(b'{"b":2}\n')
        conn.end_chunks()

    with RawServer(handler) as server:
        resp = open_(transport, server.url)
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
        resp = open_(transport, server.url)
        assert resp.read_some(WAIT) == b'{"x":1}\n'
        release.set()
        assert read_all(resp) == b'{"yy":22222}\n'
        resp.close()


def test_close_delimited_body_reads_to_eof(transport: Transport) -> None:
    def handler(conn: RawConn) -> None:
        conn.send_head(200, {"Connection": "close"}, chunked=False)
        conn.send(b"line one\nline two\n")
        conn.cut()

    with RawServer(handler) as server:
        resp = open_(transport, server.url)
        assert read_all(resp) == b"line one\nline two\n"
        resp.close()


def test_many_chunks_in_one_read_come_back_in_one_call(transport: Transport) -> None:
    lines = [b'{"i":%d}' % i for i in range(500)]
    body = b"".join(chunk(line + b"\n") for line in lines) + b"0\r\n\r\n"

    def handler(conn: RawConn) -> None:
        conn.send_head(200)
        conn.send(body)  # one write: the client's first read gets many chunks

    with RawServer(handler) as server:
        resp = open_(transport, server.url)
        first = resp.read_some(WAIT)
        assert first.count(b"\n") > 1
        assert first + read_all(resp) == b"".join(line + b"\n" for line in lines)
        resp.close()


def test_connections_are_reused_after_a_complete_body(transport: Transport) -> None:
    with RawServer(ndjson_handler([b'{"done":true}'])) as server:
        for _ in range(3):
            resp = open_(transport, server.url)
            assert read_all(resp) == b'{"done":true}\n'
            resp.close()
        assert len(server.requests) == 3
        assert server.connections.value == 1


def test_a_half_read_connection_is_not_reused(transport: Transport) -> None:
    def handler(conn: RawConn) -> None:
        conn.send_head(200)
        conn.send_chunk(b'{"a":1}\n')
        conn.stall(WAIT)

    with RawServer([handler, ndjson_handler([b"{}"])]) as server:
        resp = open_(transport, server.url)
        resp.read_some(WAIT)
        resp.close()
        resp = open_(transport, server.url)
        read_all(resp)
        resp.close()
        assert server.connections.value == 2


def test_read_body_reads_an_error_reply(transport: Transport) -> None:
    def handler(conn: RawConn) -> None:
        conn.respond(404, b'{"error":"model \'x\' not found"}',
                     {"Content-Type": "application/json; charset=utf-8"})

    with RawServer(handler) as server:
        resp = open_(transport, server.url)
        assert resp.status == 404
        assert resp.headers["content-type"].startswith("application/json")
        assert resp.read_body() == b'{"error":"model \'x\' not found"}'
        resp.close()


def test_stall_mid_body_is_a_timeout_with_the_callers_phase(transport: Transport) -> None:
    def handler(conn: RawConn) -> None:
        conn.send_head(200)
        conn.send_chunk(b'{"a":1}\n')
        conn.stall(WAIT)

    with RawServer(handler) as server:
        resp = open_(transport, server.url)
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
        resp = open_(transport, server.url)
        with pytest.raises(StreamInterrupted) as info:
            read_all(resp)
        assert info.value.__cause__ is not None or how == "cut"
        resp.close()


def test_chunked_body_without_terminator_is_interrupted(transport: Transport) -> None:
    def handler(conn: RawConn) -> None:
        conn.send_head(200)
        conn.send_chunk(b'{"a":1}\n')
        conn.cut()

    with RawServer(handler) as server:
        resp = open_(transport, server.url)
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
        resp = open_(transport, server.url)
        with pytest.raises(StreamInterrupted):
            read_all(resp)
        resp.close()


def test_bad_chunk_framing_is_protocol_error(transport: Transport) -> None:
    def handler(conn: RawConn) -> None:
        conn.send_head(200)
        conn.send(b"nothex\r\n")
        conn.stall(WAIT)

    with RawServer(handler) as server:
        resp = open_(transport, server.url)
        with pytest.raises(ProtocolError):
            resp.read_some(WAIT)
        resp.close()


def test_payload_before_bad_framing_is_returned_first(transport: Transport) -> None:
    def handler(conn: RawConn) -> None:
        conn.send_head(200)
        conn.send(chunk(b'{"a":1}\n') + b"zz\r\n")  # good chunk, then garbage, one write
        conn.stall(WAIT)

    with RawServer(handler) as server:
        resp = open_(transport, server.url)
        data = b""
        with pytest.raises(ProtocolError):
            while True:
                data += resp.read_some(WAIT)
        assert data == b'{"a":1}\n'
        resp.close()
        assert server.disconnects.wait(WAIT)  # a broken connection is not pooled


# -- the per-read path: direct socket reads, timeouts armed once -----------------------


class CountingSocket:
    """Stands in for a response's socket: counts settimeout calls; ``early``
    recv calls time out at once first (a timeout armed a little early)."""

    def __init__(self, sock: object, early: int = 0) -> None:
        self.sock = sock
        self.settimeouts = 0
        self.early = early

    def settimeout(self, value: object) -> None:
        self.settimeouts += 1
        self.sock.settimeout(value)  # type: ignore[attr-defined]

    def recv(self, size: int) -> bytes:
        if self.early:
            self.early -= 1
            raise socket.timeout("timed out")
        return self.sock.recv(size)  # type: ignore[attr-defined, no-any-return]


def _paced(count: int, gate: threading.Event) -> Callable[[RawConn], None]:
    def handler(conn: RawConn) -> None:
        conn.send(HEAD + chunk(b'{"n":0}\n'))
        for n in range(1, count):
            gate.wait(WAIT)
            gate.clear()
            conn.send_chunk(b'{"n":%d}\n' % n)
        conn.end_chunks()
    return handler


def test_an_unchanged_timeout_is_not_set_again_on_every_read(transport: Transport) -> None:
    gate = threading.Event()
    with RawServer(_paced(20, gate)) as server:
        resp = open_(transport, server.url)
        assert resp.read_some(WAIT) == b'{"n":0}\n'  # the bytes that came with the head
        assert resp._direct is not None  # from now on the socket is read directly
        counting = CountingSocket(resp._direct)
        resp._direct = counting  # type: ignore[assignment]
        for n in range(1, 20):
            gate.set()
            assert resp.read_some(WAIT) == b'{"n":%d}\n' % n
        assert resp.read_some(WAIT) == b""
        resp.close()
    assert counting.settimeouts <= 1  # re-armed at most once, not once per read


def test_a_read_armed_a_little_early_waits_out_its_deadline(transport: Transport) -> None:
    gate = threading.Event()
    with RawServer(_paced(2, gate)) as server:
        resp = open_(transport, server.url)
        assert resp.read_some(WAIT) == b'{"n":0}\n'
        assert resp._direct is not None
        resp._direct = CountingSocket(resp._direct, early=1)  # type: ignore[assignment]
        gate.set()
        # The socket timed out before the read's deadline: that is no timeout
        # of the read, which goes on waiting and gets the chunk.
        assert resp.read_some(WAIT) == b'{"n":1}\n'
        resp.close()


def test_a_stall_after_direct_reads_is_still_a_timeout(transport: Transport) -> None:
    gate = threading.Event()
    with RawServer(_paced(3, gate)) as server:
        resp = open_(transport, server.url)
        assert resp.read_some(WAIT) == b'{"n":0}\n'
        gate.set()
        assert resp.read_some(WAIT) == b'{"n":1}\n'
        started = time.monotonic()
        with pytest.raises(StreamTimeout):
            resp.read_some(0.1)  # the server waits for the gate: nothing comes
        assert time.monotonic() - started >= 0.1 - 0.002  # not before its deadline
        resp.close()
        gate.set()
