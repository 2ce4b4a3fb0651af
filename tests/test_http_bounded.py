"""Non-streaming replies are bounded: no inflating, a size cap, a typed error.

The client runs in a subprocess so its peak RSS (``ru_maxrss``) can be
measured around the call; the hostile server runs here.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zlib
from typing import Callable, Iterator, List

import pytest
from rawserver import RawConn, RawServer

from streamkit import Client
from streamkit._http import INFO_BODY_LIMIT
from streamkit.errors import ProtocolError, ResponseTooLarge

BOMB_INFLATED = 256 << 20  # what the gzip bomb inflates to
PLAIN_BODY = 512 << 20
MAX_GROWTH_KB = 64 * 1024  # a capped read stays far below this; an uncapped one far above
SUBPROCESS_TIMEOUT_S = 120


def _gzip_bomb() -> bytes:
    """About 256 KB of gzip that inflates to BOMB_INFLATED zero bytes."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: gzip container
    block = bytes(1 << 20)
    parts: List[bytes] = [packer.compress(block) for _ in range(BOMB_INFLATED >> 20)]
    parts.append(packer.flush())
    return b"".join(parts)


@pytest.fixture(scope="module")
def bomb() -> bytes:
    return _gzip_bomb()


def _bomb_handler(bomb: bytes) -> Callable[[RawConn], None]:
    def handler(conn: RawConn) -> None:
        conn.keep_alive = False
        conn.respond(200, bomb, {"Content-Type": "application/json",
                                 "Content-Encoding": "gzip"})
    return handler


def _plain_handler(conn: RawConn) -> None:
    """512 MB of JSON-ish bytes, chunked (no length to refuse up front)."""
    conn.keep_alive = False
    conn.send_head(200, {"Content-Type": "application/json"})
    block = b"[" + b"0," * (32 << 10)
    sent = 0
    while sent < PLAIN_BODY and conn.send_chunk(block):
        sent += len(block)
    conn.end_chunks()


_CHILD = """
import json, resource, sys
from streamkit import Client
c = Client(sys.argv[1])
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    c.models()
    error = None
except Exception as exc:
    error = type(exc).__name__
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
c.close()
print(json.dumps({"error": error, "growth_kb": after - before}))
"""


def _child_models(url: str) -> dict:  # type: ignore[type-arg]
    out = subprocess.run([sys.executable, "-c", _CHILD, url], capture_output=True, text=True,
                         timeout=SUBPROCESS_TIMEOUT_S, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


@pytest.fixture
def plain_server() -> Iterator[RawServer]:
    with RawServer(_plain_handler) as server:
        yield server


def test_gzip_bomb_on_an_info_endpoint_is_refused_in_small_memory(bomb: bytes) -> None:
    with RawServer(_bomb_handler(bomb)) as server:
        seen = _child_models(server.url)
        assert server.requests[0].headers.get("accept-encoding") == "identity"
    assert seen["error"] == "ProtocolError", seen
    assert seen["growth_kb"] < MAX_GROWTH_KB, seen


def test_plain_512mb_body_on_an_info_endpoint_is_too_large_in_small_memory(
        plain_server: RawServer) -> None:
    seen = _child_models(plain_server.url)
    assert seen["error"] == "ResponseTooLarge", seen
    assert seen["growth_kb"] < MAX_GROWTH_KB, seen


def test_typed_errors_in_process(bomb: bytes, plain_server: RawServer) -> None:
    with RawServer(_bomb_handler(bomb)) as server, Client(server.url) as c:
        with pytest.raises(ProtocolError, match="compressed"):
            c.version()
        assert c.ping() is False  # a misbehaving server is "not answering", not a crash
    with Client(plain_server.url) as c, pytest.raises(ResponseTooLarge) as info:
        c.models()
    assert info.value.limit == INFO_BODY_LIMIT


def test_an_announced_oversized_body_is_refused_before_reading() -> None:
    def handler(conn: RawConn) -> None:
        conn.keep_alive = False
        conn.send_head(200, {"Content-Length": str(PLAIN_BODY)}, chunked=False)
        conn.stall(10)  # sends nothing: only the announced length can fail it

    with RawServer(handler) as server, Client(server.url) as c, \
            pytest.raises(ResponseTooLarge):
        c.models()


def test_a_compressed_embed_reply_is_refused() -> None:
    body = zlib.compress(b'{"embeddings":[[0.1]]}')

    def handler(conn: RawConn) -> None:
        conn.respond(200, body, {"Content-Type": "application/json",
                                 "Content-Encoding": "deflate"})

    with RawServer(handler) as server, Client(server.url) as c, \
            pytest.raises(ProtocolError, match="compressed"):
        c.embed("m", "hi")
