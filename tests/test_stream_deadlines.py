"""Timeouts by phase: which phase a wait is bounded by, and the total deadline. Pure."""

from __future__ import annotations

import time

import pytest

from streamkit._stream.deadlines import Deadlines
from streamkit.config import Timeouts
from streamkit.errors import StreamTimeout


def test_without_a_total_the_phase_deadline_bounds_the_wait() -> None:
    d = Deadlines(Timeouts(idle=5, total=None))
    d.start()
    assert d.budget(None, "idle") == (None, "idle")
    timeout, phase = d.budget(time.monotonic() + 5, "idle")
    assert phase == "idle" and timeout is not None and 4 < timeout <= 5
    assert d.for_attempt() is d.timeouts


def test_the_total_wins_when_it_expires_first() -> None:
    d = Deadlines(Timeouts(first_token=300, total=1))
    d.start()
    timeout, phase = d.budget(time.monotonic() + 300, "first_token")
    assert phase == "total" and timeout is not None and timeout <= 1
    assert d.budget(None, "idle")[1] == "total"
    cut = d.for_attempt()
    assert cut.first_token is not None and cut.first_token <= 1
    assert cut.connect is not None and cut.connect <= 1 and cut.total is None


def test_check_total_and_retag_once_the_total_has_passed() -> None:
    d = Deadlines(Timeouts(total=0.01))
    d.start()
    phase_timeout = StreamTimeout("slow", phase="first_token")
    time.sleep(0.02)  # let the total deadline pass (a clock condition, nothing to wait on)
    with pytest.raises(StreamTimeout) as info:
        d.check_total()
    assert info.value.phase == "total"
    retagged = d.retag(phase_timeout)
    assert isinstance(retagged, StreamTimeout) and retagged.phase == "total"
    assert retagged.__cause__ is phase_timeout


def test_retag_leaves_other_errors_and_early_timeouts_alone() -> None:
    d = Deadlines(Timeouts(total=60))
    d.start()
    early = StreamTimeout("slow", phase="connect")
    assert d.retag(early) is early
    other = ValueError("x")
    assert d.retag(other) is other
