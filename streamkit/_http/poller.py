"""Poller: one thread that reads many streams' sockets as they become readable.

With hundreds of slow streams each read carries one small chunk, and a
thread blocked in ``recv`` per stream pays a thread wake-up (and a fight for
the GIL) per chunk. A poller waits on all of their sockets at once
(``selectors``: epoll, kqueue) and runs each ready stream's step in its own
thread, many per wake-up: the shape an event loop has, without asking the
caller for one. A stream's worker thread keeps everything else (connecting,
retries, restarts, deadlines) and sleeps on its :class:`Watch` meanwhile.

A step must not block: it reads the socket without waiting and hands chunks
on only where that cannot wait (a full queue makes it stop and leave the
rest to its worker thread). Lock rules: ``Poller._lock`` guards the selector
and every watch's ``active``; a step runs under it, so :meth:`Poller.unwatch`
never returns while the step of that watch is running.

The thread starts with the first watch and ends after :data:`IDLE_EXIT_S`
with nothing to watch, or at :meth:`Poller.close`.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
import time
from typing import Callable, List, Optional

__all__ = ["IDLE_EXIT_S", "Poller", "Watch"]

IDLE_EXIT_S = 0.5
"""How long the poller thread waits with nothing to watch before it ends."""

_SELECT_S = 0.25
"""Longest single wait (a backstop: registrations and close wake it)."""

# These see a socket registered while another thread waits in them; others
# (select, poll) are woken through the socket pair for each registration too.
_LIVE_REGISTRATION = tuple(getattr(selectors, name) for name in
                           ("EpollSelector", "KqueueSelector", "DevpollSelector")
                           if hasattr(selectors, name))


class Watch:
    """A socket and the step to run when it is readable.

    ``step()`` runs in the poller thread and returns True to stop watching
    (done, failed or paused: what it means is the owner's business). The
    owner waits for that with :meth:`wait`.
    """

    __slots__ = ("_ended", "active", "sock", "step")

    def __init__(self, sock: socket.socket, step: Callable[[], bool]) -> None:
        self.sock = sock
        self.step = step
        self.active = False
        self._ended = threading.Lock()
        self._ended.acquire()

    def wait(self, timeout: Optional[float]) -> bool:
        """Block until the poller stopped watching (True) or ``timeout`` passed
        (None: no limit)."""
        if timeout is None:
            return self._ended.acquire()
        return self._ended.acquire(timeout=max(0.0, timeout))

    def _end(self) -> None:
        self._ended.release()


class Poller:
    """Reads many sockets in one thread. Thread-safe; see the module docstring."""

    def __init__(self, name: str = "streamkit-poller") -> None:
        self._name = name
        self._lock = threading.Lock()
        self._selector = selectors.DefaultSelector()
        self._watched = 0
        self._thread: Optional[threading.Thread] = None
        self._closed = False
        # Every selector needs waking at close (else close waits out a whole
        # select); only some need it for each new registration.
        self._wake_on_watch = not isinstance(self._selector, _LIVE_REGISTRATION)
        self._wake_in, self._waker = socket.socketpair()
        self._wake_in.setblocking(False)
        self._selector.register(self._wake_in, selectors.EVENT_READ, None)

    def watch(self, watch: Watch) -> bool:
        """Start watching; False if the poller is closed (then read in your own thread)."""
        with self._lock:
            if self._closed:
                return False
            try:
                self._selector.register(watch.sock, selectors.EVENT_READ, watch)
            except KeyError:  # a closed socket still registered holds this fd number
                for closed in self._end_closed():
                    closed._end()
                self._selector.register(watch.sock, selectors.EVENT_READ, watch)
            watch.active = True
            self._watched += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name,
                                                daemon=True)
                self._thread.start()
        if self._wake_on_watch:
            self._wake()
        return True

    def unwatch(self, watch: Watch) -> bool:
        """Stop watching, never during its step; True if this call stopped it
        (False: the poller had already ended it and released :meth:`Watch.wait`)."""
        with self._lock:
            if not watch.active:
                return False
            self._forget(watch)
            return True

    def close(self) -> None:
        """End the thread (joined, a bounded wait) and free the selector; watches
        still active are ended as if their step had said so. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
            for key in list(self._selector.get_map().values()):
                if isinstance(key.data, Watch):
                    self._forget(key.data)
                    key.data._end()
            if thread is None:
                self._free()
        if thread is not None:
            self._wake()
            if thread is not threading.current_thread():
                thread.join(2 * _SELECT_S)

    # -- the thread ------------------------------------------------------------
    def _forget(self, watch: Watch) -> None:
        """Unregister ``watch`` (lock held)."""
        watch.active = False
        self._selector.unregister(watch.sock)
        self._watched -= 1

    def _run(self) -> None:
        idle_since: Optional[float] = None
        stop = False
        while not stop:
            ended: List[Watch] = []
            try:
                events = self._selector.select(_SELECT_S)
            except (OSError, ValueError):  # a watched socket was closed by its owner
                events = []
                with self._lock:
                    ended = self._end_closed()
            with self._lock:
                for key, _ in events:
                    watch = key.data
                    if watch is None:
                        self._drain_waker()
                    elif watch.active and self._step(watch):
                        self._forget(watch)
                        ended.append(watch)
                if self._watched:
                    idle_since = None
                elif idle_since is None:
                    idle_since = time.monotonic()
                stop = self._closed or (idle_since is not None
                                        and time.monotonic() - idle_since >= IDLE_EXIT_S)
                if stop:
                    self._thread = None
                    if self._closed:
                        self._free()
            for watch in ended:
                watch._end()

    def _end_closed(self) -> List[Watch]:
        """Forget the watches whose socket was closed while watched (a misuse:
        unwatch first); they end as if their step had said so (lock held).
        The caller releases them (:meth:`Watch._end`)."""
        closed = [key.data for key in list(self._selector.get_map().values())
                  if isinstance(key.data, Watch) and key.data.sock.fileno() < 0]
        for watch in closed:
            self._forget(watch)
        return closed

    @staticmethod
    def _step(watch: Watch) -> bool:
        try:
            return watch.step()
        except BaseException:  # a step reports its own errors; never kill the thread
            return True

    def _wake(self) -> None:
        # OSError: closed, or its buffer is full (a wake is pending anyway).
        with contextlib.suppress(OSError):
            self._waker.send(b"\0")

    def _free(self) -> None:
        """Close the selector and the wake-up pair (lock held; no thread uses them)."""
        self._selector.close()
        self._waker.close()
        self._wake_in.close()

    def _drain_waker(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while self._wake_in.recv(4096):
                pass
