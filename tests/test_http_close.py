"""close() closes every socket; a failed Result never pins a pool; EMFILE says so.

Garbage collection is switched off where it matters: what must be closed
is closed by ``close()`` or by reference counting, not by a later sweep.
"""

from __future__ import annotations

import gc
import json
import socket
import subprocess
import sys
import threading
import types
from typing import Any, Iterator, List, Set

import pytest
from httphelpers import WAIT, open_, read_all
from leakcheck import socket_inodes
from rawserver import RawConn, RawServer
from urllib3.connectionpool import ConnectionPool

from streamkit import Client
from streamkit._http import Transport
from streamkit.emulator import Emulator, EmulatorConfig
from streamkit.errors import ConnectError

IDLE = 3  # connections left idle in the pool before the server goes away


def _ok(conn: RawConn) -> None:
    conn.send_head(200, {"Content-Length": "2"}, chunked=False)
    conn.send(b"{}")


@pytest.fixture
def no_gc() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _fill_pool_then_lose_the_server(transport: Transport) -> ConnectError:
    """Leave IDLE idle connections in the pool, stop the server, and return the
    ConnectError of the next open (urllib3 chains it to the pool)."""
    server = RawServer(_ok)
    url = server.url
    barrier = threading.Barrier(IDLE)
    responses = []

    def one() -> None:
        barrier.wait(WAIT)  # all at once, so each takes its own connection
        responses.append(open_(transport, url))

    threads = [threading.Thread(target=one) for _ in range(IDLE)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    for resp in responses:
        assert read_all(resp) == b"{}"  # read to the end: back to the pool
    server.close()
    with pytest.raises(ConnectError) as info:
        open_(transport, url)
    return info.value


def test_close_closes_idle_sockets_while_an_error_is_kept(no_gc: None) -> None:
    before = socket_inodes()
    transport = Transport(pool_size=IDLE)
    kept = _fill_pool_then_lose_the_server(transport)  # the caller keeps a failed Result
    transport.close()
    left = socket_inodes() - before
    assert not left, f"{len(left)} socket(s) still open after close() (error kept: {kept!r})"


def _reachable(root: object, limit: int = 20000) -> Iterator[object]:
    """Objects reachable from ``root`` (modules, classes and functions not followed)."""
    skip = (types.ModuleType, type, types.FunctionType, types.BuiltinFunctionType)
    seen: Set[int] = set()
    todo: List[Any] = [root]
    while todo and len(seen) < limit:
        obj = todo.pop()
        if id(obj) in seen or isinstance(obj, skip):
            continue
        seen.add(id(obj))
        yield obj
        todo.extend(gc.get_referents(obj))


def test_a_failed_result_does_not_reach_a_pool_or_a_socket() -> None:
    server = RawServer(_ok)
    url = server.url
    with Client(url) as c:
        assert c.generate("m", "hi").result(timeout=WAIT).error is not None  # not NDJSON
        server.close()
        result = c.generate("m", "hi").result(timeout=WAIT)
    assert isinstance(result.error, ConnectError)
    pinned = [type(o).__name__ for o in _reachable(result)
              if isinstance(o, (ConnectionPool, socket.socket))]
    assert not pinned, f"the failed Result reaches {pinned}"


_CHILD = """
import gc, json, logging, resource, sys
sys.path.insert(0, sys.argv[2])
from leakcheck import socket_inodes
from streamkit import GenerateRequest, Timeouts
from streamkit.dispatch import Dispatcher
logging.disable(logging.CRITICAL)
hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
gc.disable()
before = socket_inodes()
d = Dispatcher(host=sys.argv[1], workers=500, timeouts=Timeouts(connect=5, first_token=20))
results = list(d.map([GenerateRequest("demo", "p%d" % i) for i in range(600)],
                     return_exceptions=True))
d.close()
resource.setrlimit(resource.RLIMIT_NOFILE, (4096, hard))
print(json.dumps({"open": len(socket_inodes() - before),
                  "errors": [str(r.error) for r in results if r.error is not None]}))
"""


def test_500_workers_under_ulimit_256_close_every_socket_and_name_emfile() -> None:
    tests_dir = str(__import__("pathlib").Path(__file__).parent)
    # slow enough that all 500 streams are in flight at once: EMFILE for sure
    with Emulator(EmulatorConfig(tokens_per_second=20)) as emu:
        out = subprocess.run([sys.executable, "-c", _CHILD, emu.url, tests_dir],
                             capture_output=True, text=True, timeout=240, check=True)
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["open"] == 0, f"{seen['open']} socket(s) open after Dispatcher.close()"
    emfile = [e for e in seen["errors"]
              if "too many open files: lower workers or raise ulimit -n" in e]
    assert emfile, "no stream hit the file limit; the test proves nothing"
    misleading = [e for e in seen["errors"] if "is the server running" in e]
    assert not misleading, misleading[:3]
