"""A stream's body read by a :class:`~.._http.poller.Poller` instead of its own thread.

The worker thread has opened the request and delivered the first chunks;
from there a poller thread reads, decodes and hands on each read as its
socket becomes readable, and the worker sleeps until the body is done, it
fails, the consumer is full, or a deadline passes. The worker then carries
on exactly as after its own read loop: the same errors, the same restarts,
the same cleanup. Only the per-read work moved.

A full consumer (channel or fan-in at its bound) pauses the poller's side:
it hands the chunks it could not place back to the worker, which waits to
send them as it always did (its socket is left alone meanwhile, so the
server is held back by TCP), then hands the socket back to the poller.
"""

from __future__ import annotations

import time
from typing import List, Optional

from .._http import Poller, Response, Watch
from .._http.translate import timeout_error
from ..records import Chunk
from ..wire import Decoder
from .channel import SendEnd
from .deadlines import Deadlines

__all__ = ["PolledBody"]


class PolledBody:
    """One stream's body read by a poller: what its thread does, what it leaves.

    Written by the poller thread while the socket is watched, read by the
    worker once :meth:`Watch.wait` returned (the watch's lock orders the two);
    ``idle_deadline`` is also read while watched (one float, for a timeout).
    ``last`` is the last chunk list handed on (the worker's salvage needs it).
    """

    __slots__ = ("_pending", "decoder", "error", "idle", "idle_deadline", "last",
                 "response", "stopped", "tx")

    def __init__(self, response: Response, decoder: Decoder, tx: SendEnd,
                 idle: Optional[float], last: List[Chunk]) -> None:
        self.response = response
        self.decoder = decoder
        self.tx = tx
        self.idle = idle
        self.idle_deadline = None if idle is None else time.monotonic() + idle
        self.last = last
        self.error: Optional[BaseException] = None
        self._pending: Optional[List[Chunk]] = None
        self.stopped = False  # the body ended: the worker's own loop finishes it

    def pump(self, poller: Poller, deadlines: Deadlines) -> None:
        """Read through ``poller`` until the decoder is done or the body ended
        (then the worker's own loop closes the decoder), or the poller is
        closed (then it reads the rest). Blocks within the idle and total
        deadlines.

        Raises what the worker's own read loop raises (StreamInterrupted,
        StreamTimeout, ProtocolError, Cancelled, Stopped, ...).
        """
        sock = self.response.pollable()
        assert sock is not None
        # Broken framing after good bytes: no read may come to raise it here
        # (a server gone silent), so the worker's own read_some raises it.
        while not self.stopped and not self.response.broken:
            watch = Watch(sock, self.step)
            self.response.start_polling()
            try:
                if not poller.watch(watch):
                    return
                _wait(poller, watch, self, deadlines)
            finally:
                self.response.stop_polling()  # the poller has let go of the socket
            if self.error is not None:
                error, self.error = self.error, None
                raise error
            pending, self._pending = self._pending, None
            if pending is None:
                return
            self.tx.send(pending)  # waits for room, as the worker's own loop does
            if self.idle is not None:  # the wait for the consumer is not server silence
                self.idle_deadline = time.monotonic() + self.idle

    def step(self) -> bool:
        """One read (poller thread); True to stop watching. Never raises."""
        try:
            data = self.response.read_ready()
            if data is None:
                return False
            if not data:  # the body ended; the decoder is closed by the worker
                self.stopped = True
                return True
            chunks = self.decoder.feed(data, self.response.read_ns)
            if self.idle is not None and self.decoder.activity():
                self.idle_deadline = time.monotonic() + self.idle
            self.stopped = self.decoder.done or self.response.complete
            if chunks:
                self.last = chunks
                if not self.tx.offer(chunks):
                    self._pending = chunks
                    return True
            return self.stopped or self.response.broken
        except BaseException as exc:  # handed to the worker, raised there
            self.error = exc
            return True


def _wait(poller: Poller, watch: Watch, body: PolledBody, deadlines: Deadlines) -> None:
    """Sleep until the poller ends ``watch``; a deadline passed unwatches it and raises."""
    while True:
        timeout, phase = deadlines.budget(body.idle_deadline, "idle")
        if watch.wait(timeout):
            return
        timeout, phase = deadlines.budget(body.idle_deadline, "idle")  # it may have moved
        if timeout is not None and timeout <= 0:
            if poller.unwatch(watch):
                raise timeout_error(phase)
            watch.wait(None)  # the poller ended it just now; its release follows at once
            return
