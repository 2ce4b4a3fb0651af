"""Timeouts by phase for one stream: how long the next wait may block, and why.

``connect`` and ``first_token`` bound an attempt up to its first chunk,
``idle`` each later wait for data, and ``total`` the whole stream across
attempts; a read waits for whichever expires first, and a timeout says
which phase expired.
"""

from __future__ import annotations

import time
from typing import Optional, Tuple

from ..config import Timeouts
from ..errors import StreamTimeout

#: How close to the total deadline a phase timeout must fire to count as the total's.
TOTAL_SLACK_S = 0.001


class Deadlines:
    """The deadlines of one stream; used by its worker thread, or by the
    consumer's while it runs a lent read (the worker sleeps meanwhile)."""

    __slots__ = ("timeouts", "total")

    def __init__(self, timeouts: Timeouts) -> None:
        self.timeouts = timeouts
        self.total: Optional[float] = None  # time.monotonic() deadline of the whole stream

    def start(self) -> None:
        """The stream starts now: the total deadline runs from here."""
        if self.timeouts.total is not None:
            self.total = time.monotonic() + self.timeouts.total

    def after(self, seconds: Optional[float]) -> Optional[float]:
        """The deadline ``seconds`` from now (None: no limit)."""
        return None if seconds is None else time.monotonic() + seconds

    def budget(self, deadline: Optional[float], phase: str) -> Tuple[Optional[float], str]:
        """Seconds the next read may block, and the phase that expires first."""
        now = time.monotonic()
        timeout = None if deadline is None else deadline - now
        if self.total is not None:
            left = self.total - now
            if timeout is None or left < timeout:
                return left, "total"
        return timeout, phase

    def for_attempt(self) -> Timeouts:
        """The timeouts of the next HTTP attempt, cut to what the total leaves."""
        t = self.timeouts
        if self.total is None:
            return t
        left = self.total - time.monotonic()
        return Timeouts(connect=_min(t.connect, left), first_token=_min(t.first_token, left),
                        idle=t.idle, total=None)

    def check_total(self) -> None:
        """Raise StreamTimeout(phase="total") if the whole stream is out of time."""
        if self.total is not None and time.monotonic() >= self.total:
            raise total_timeout()

    def retag(self, exc: BaseException) -> BaseException:
        """A timeout cut short by the total deadline is a total timeout (never retried)."""
        if (isinstance(exc, StreamTimeout) and exc.phase != "total"
                and self.total is not None
                and time.monotonic() >= self.total - TOTAL_SLACK_S):
            err = total_timeout()
            err.__cause__ = exc
            return err
        return exc


def total_timeout() -> StreamTimeout:
    return StreamTimeout("the stream took longer than the total timeout; raise "
                         "Timeouts.total for long generations", phase="total")


def _min(a: Optional[float], b: float) -> float:
    return b if a is None else min(a, b)
