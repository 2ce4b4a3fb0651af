"""A stream's body read by its consumer's thread, lent by the worker.

A consumer iterating a stream (``for chunk in stream``) waits for every
chunk, and handing each one from the worker thread to it costs a wake-up
of a second thread per read. While the consumer waits with nothing queued,
the worker lends it its read instead (``SendEnd.lend``) and sleeps: the
consumer's ``next()`` reads the socket, decodes and takes the chunks
itself, one thread per chunk as in ``Client.run``. Anything but chunks
(the end of the body, a failure, the consumer going away) gives the read
back to the worker, which carries on as if it had read all along: the
end record, a restart, a replay and salvage stay the worker's.
"""

from __future__ import annotations

import time
from typing import List, Optional, Tuple

from .._http import Response
from ..errors import Cancelled
from ..records import Chunk
from ..wire import Decoder
from .deadlines import Deadlines


class LentBody:
    """The rest of a body, read in the worker's thread (:meth:`read`) or, while
    lent, in the iterating consumer's (:meth:`step`).

    The channel lock orders the two threads. ``last`` is the last chunk list
    handed over (the worker's salvage needs it), ``error`` a failure of a
    lent read for the worker to raise, ``ended`` the body ended (the decoder
    is closed).
    """

    __slots__ = ("_deadlines", "_idle", "decoder", "ended", "error", "last", "response")

    def __init__(self, response: Response, decoder: Decoder, deadlines: Deadlines,
                 idle: Optional[float], last: List[Chunk]) -> None:
        self.response = response
        self.decoder = decoder
        self._deadlines = deadlines
        self._idle = idle
        self.last = last
        self.error: Optional[BaseException] = None
        self.ended = False

    def read(self) -> List[Chunk]:
        """Read until chunks come or the body ends; the chunks (maybe none at
        the end). Blocks within the idle and total deadlines.

        The idle clock starts here: time spent handing the last chunks on
        (a full channel, a consumer away between two ``next()`` calls) is
        not the server's silence; SSE comments do not restart it.

        Raises what ``read_some`` and the decoder raise (StreamTimeout,
        StreamInterrupted, ProtocolError, Cancelled, ...).
        """
        decoder, response, idle = self.decoder, self.response, self._idle
        budget = self._deadlines.budget
        deadline = None if idle is None else time.monotonic() + idle
        while True:
            timeout, phase = budget(deadline, "idle")
            data = response.read_some(timeout, phase=phase)
            ns = response.read_ns
            if not data:
                self.ended = True
                chunks = decoder.close(ns)
                if chunks:
                    self.last = chunks
                return chunks
            chunks = decoder.feed(data, ns)
            if idle is not None and decoder.activity():
                deadline = time.monotonic() + idle
            if chunks:
                self.last = chunks
                return chunks

    def step(self) -> Tuple[List[Chunk], bool]:
        """:meth:`read` in the consumer's thread, lent: the chunks, and True
        while the consumer may keep reading.

        Never raises an Exception: it goes to ``error`` for the worker. A
        KeyboardInterrupt (the consumer is the main thread) passes through,
        and the stream is then cancelled: the decoder may be half fed.
        """
        try:
            chunks = self.read()
        except Exception as exc:
            self.error = exc
            return [], False
        except BaseException:
            self.error = Cancelled("the consumer was interrupted while reading the stream")
            raise
        return chunks, not (self.ended or self.decoder.done)
