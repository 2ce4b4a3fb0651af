"""Cancellation of HTTP attempts: a token that shuts sockets down from any thread.

Cancelling an Ollama generation means closing its connection: the server
sees the disconnect and stops. A :class:`CancelToken` knows the connections
(or bare sockets) of the attempt in progress; ``cancel()`` shuts them down,
so a ``recv`` blocked in another thread returns at once. The connection
layer registers and unregisters what an attempt holds.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import Any, Set

__all__ = ["CancelToken", "shutdown"]


def shutdown(conn: Any) -> None:
    """Shut down a socket, or the socket of a urllib3 connection if it has one yet."""
    sock = conn if isinstance(conn, socket.socket) else getattr(conn, "sock", None)
    if sock is None:
        return
    # socket.socket.shutdown, not SSLSocket.shutdown: the latter also drops
    # the TLS object under a read that may be running in another thread;
    # shutting the fd down is all it takes to wake that read.
    with contextlib.suppress(OSError):  # already closed, or never connected
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class CancelToken:
    """Cancels the HTTP attempts of one stream, from any thread.

    ``event`` is set once cancelled (the retry layer waits on it between
    attempts). Lock-free on purpose: ``cancel()`` may run inside a garbage
    collector finalizer, on a thread that is itself in the middle of
    attaching a connection, where taking a lock could deadlock.
    """

    __slots__ = ("_conns", "_once", "event")

    def __init__(self) -> None:
        self.event = threading.Event()
        self._once = threading.Lock()  # acquired once, never released: "first cancel wins"
        self._conns: Set[Any] = set()

    @property
    def cancelled(self) -> bool:
        return self.event.is_set()

    def cancel(self) -> bool:
        """Cancel; True if this call did it, False if it was already cancelled.

        Idempotent, any thread, never blocks: sets ``event`` first, then shuts
        down the socket of the attempt in progress so a blocked read returns.
        """
        if not self._once.acquire(blocking=False):
            return False
        self.event.set()  # before the snapshot: a racing attach sees one or the other
        for conn in tuple(self._conns):  # tuple() of a set is atomic under the GIL
            shutdown(conn)
        return True

    def attach(self, conn: Any) -> None:
        """Register a urllib3 connection or a bare socket for shutdown on cancel
        (shut down at once if already cancelled)."""
        if not isinstance(conn, socket.socket):
            conn._streamkit_token = self
        self._conns.add(conn)
        if self.event.is_set():
            shutdown(conn)

    def detach(self, conn: Any) -> None:
        """Forget ``conn``: it goes back to the pool, where it may serve another stream."""
        if getattr(conn, "_streamkit_token", None) is self:
            conn._streamkit_token = None
        self._conns.discard(conn)

    def detach_all(self) -> None:
        for conn in tuple(self._conns):
            self.detach(conn)

    def __repr__(self) -> str:
        return f"<CancelToken cancelled={self.cancelled}>"
