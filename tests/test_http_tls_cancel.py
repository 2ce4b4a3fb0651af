"""cancel() ends a stream stuck in a TLS handshake with a server that never speaks TLS.

During the handshake the connection's plain socket has been handed to the
TLS socket (its fd is -1), so shutting "the connection's socket" down finds
nothing; with ``connect=None`` nothing else would ever end the wait. The
leak-check fixture asserts that no thread or socket is left behind.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import List

import pytest
from httphelpers import WAIT

from streamkit import Client
from streamkit._http import CancelToken, Transport
from streamkit.config import Timeouts
from streamkit.errors import Cancelled

NO_LIMITS = Timeouts(connect=None, first_token=None, idle=None, total=None)


class SilentServer:
    """Accepts TCP connections on loopback, reads what comes, never answers.

    ``hello`` is set once a client's first bytes (its TLS ClientHello) are in:
    from then on the client is inside the handshake, waiting for a reply.
    """

    def __init__(self) -> None:
        self.hello = threading.Event()
        self.closing = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self.url = f"https://127.0.0.1:{self._listener.getsockname()[1]}"
        self._thread = threading.Thread(target=self._serve, name="silent-tls-server")
        self._thread.start()

    def _serve(self) -> None:
        held: List[socket.socket] = []
        try:
            while not self.closing.is_set():
                with contextlib.suppress(socket.timeout):
                    sock, _ = self._listener.accept()
                    sock.settimeout(0.05)
                    held.append(sock)
                for sock in held:
                    with contextlib.suppress(socket.timeout, OSError):
                        if sock.recv(65536):
                            self.hello.set()
        finally:
            for sock in held:
                sock.close()
            self._listener.close()

    def __enter__(self) -> SilentServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.closing.set()
        self._thread.join(WAIT)


def test_cancel_interrupts_a_tls_handshake_at_the_transport() -> None:
    with SilentServer() as server, Transport(pool_size=1) as transport:
        token = CancelToken()
        errors: List[BaseException] = []

        def run() -> None:
            try:
                transport.open(server.url + "/api/generate", b"{}", timeouts=NO_LIMITS,
                               cancel=token)
            except BaseException as exc:  # the assertion below reports it
                errors.append(exc)

        opener = threading.Thread(target=run)
        opener.start()
        assert server.hello.wait(WAIT)  # the client is in the handshake now
        started = time.monotonic()
        token.cancel()
        opener.join(WAIT)
        elapsed = time.monotonic() - started
        alive = opener.is_alive()
        if alive:  # leave nothing behind even when failing: end the wait from the server
            server.closing.set()
            opener.join(WAIT)
    assert not alive, "cancel() did not end the TLS handshake"
    assert elapsed < 1.0
    assert len(errors) == 1 and isinstance(errors[0], Cancelled), errors


@pytest.mark.parametrize("in_handshake", [False, True], ids=["at-once", "in-handshake"])
def test_stream_cancel_ends_a_stream_in_a_tls_handshake(in_handshake: bool) -> None:
    with SilentServer() as server, Client(server.url, timeouts=NO_LIMITS) as c:
        stream = c.generate("m", "hi")
        if in_handshake:
            assert server.hello.wait(WAIT)
        assert stream.cancel() is True
        result = stream.result(timeout=WAIT)
        assert isinstance(result.error, Cancelled)
        # The consumer saw the end at once; the worker must end too, while the
        # server still holds the connection open (it never would by itself).
        workers = [t for t in threading.enumerate() if t.name.startswith("streamkit-stream")]
        for t in workers:
            t.join(1.0)
        assert not any(t.is_alive() for t in workers), "the worker is stuck in the handshake"
