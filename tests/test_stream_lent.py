"""A body read by the consumer's own thread while it iterates (``SendEnd.lend``).

An iterating consumer that waits with nothing queued is lent the worker's
read: its ``next()`` reads, decodes and takes the chunks, and the worker
sleeps. These tests pin what must not change when that happens: every
chunk once and in order, the consumer's other ways of waiting, a consumer
that stops iterating, timeouts, cancel and Ctrl-C.
"""

from __future__ import annotations

import threading
import time
from typing import Iterator, List

import pytest

import streamkit._stream.channel as channel
from streamkit._http import Transport
from streamkit._stream.lent import LentBody
from streamkit.config import RetryPolicy, Timeouts
from streamkit.emulator import Emulator, EmulatorConfig
from streamkit.errors import Cancelled, StreamTimeout
from streamkit.records import Chunk, GenerateRequest, Result
from streamkit.stream import FixedRoute, Stream
from streamkit.wire import get_dialect

WAIT = 10.0
TOKENS = 40
PACED = EmulatorConfig(tokens_per_second=200, response_tokens=(TOKENS, TOKENS))
NO_RETRY = RetryPolicy(attempts=1)


@pytest.fixture
def transport() -> Iterator[Transport]:
    with Transport(pool_size=2) as t:
        yield t


@pytest.fixture
def steps(monkeypatch: pytest.MonkeyPatch) -> List[str]:
    """The thread name of every lent read, as it starts."""
    names: List[str] = []
    real = LentBody.step

    def step(self: LentBody):  # type: ignore[no-untyped-def]
        names.append(threading.current_thread().name)
        return real(self)

    monkeypatch.setattr(LentBody, "step", step)
    return names


def start(url: str, transport: Transport, *, idle: float = 60.0) -> Stream:
    s = Stream(GenerateRequest("demo", "hi", id="s1"), dialect=get_dialect("ollama"),
               transport=transport, route=FixedRoute(url),
               timeouts=Timeouts(connect=2, first_token=10, idle=idle), retry=NO_RETRY,
               queue_size=256)
    s._start()
    return s


def worker_of(s: Stream) -> threading.Thread:
    t = next((t for t in threading.enumerate() if t.name == f"streamkit-stream-{s.id}"), None)
    assert t is not None
    return t


def in_order_once(chunks: List[Chunk]) -> bool:
    return [c.index for c in chunks] == list(range(len(chunks)))


def test_an_iterating_consumer_reads_the_body_in_its_own_thread(
        transport: Transport, steps: List[str]) -> None:
    with Emulator(PACED) as emu, start(emu.url, transport) as s:
        chunks = list(s)
        result = s.result(WAIT)
    assert result.ok and "".join(c.text for c in chunks) == result.text
    assert in_order_once(chunks) and chunks[-1].done
    me = threading.current_thread().name
    # Nearly every read ran here; the worker handed over one chunk or two
    # before the first lend, and woke this thread for those alone.
    assert steps.count(me) >= TOKENS - 5, steps
    assert s._rx.wakes <= 3


def test_a_consumer_that_stops_iterating_still_gets_its_stream_finished(
        transport: Transport, steps: List[str]) -> None:
    done = threading.Event()
    with Emulator(PACED) as emu, start(emu.url, transport) as s:
        s.add_done_callback(lambda r: done.set())
        taken = [next(s) for _ in range(5)]
        assert steps  # the consumer was reading: the worker had lent it the body
        # The consumer walks away, keeping the stream. The worker takes the
        # read back and finishes the stream into the queue, in the background.
        assert done.wait(WAIT)
        rest = list(s)
        result = s.result(0)
    assert result.ok
    assert in_order_once(taken + rest) and "".join(c.text for c in taken + rest) == result.text


def test_get_with_a_timeout_after_iterating_takes_the_read_back(
        transport: Transport, steps: List[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(channel, "AWAY_S", 60.0)  # only the take gives the read back
    with Emulator(PACED) as emu, start(emu.url, transport) as s:
        chunks = [next(s) for _ in range(5)]
        lent_reads = len(steps)
        assert lent_reads
        while True:
            c = s.get(timeout=WAIT)  # each call would give up at once on a lent read
            if c is None:
                break
            chunks.append(c)
        result = s.result(WAIT)
    assert result.ok and s.done
    assert in_order_once(chunks) and "".join(c.text for c in chunks) == result.text
    assert len(steps) == lent_reads  # get() read nothing itself


def test_result_after_a_partial_iteration_ends_the_stream(
        transport: Transport, steps: List[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(channel, "AWAY_S", 60.0)  # only result() gives the read back
    with Emulator(PACED) as emu, start(emu.url, transport) as s:
        first = [next(s) for _ in range(3)]
        assert steps
        result = s.result(WAIT)
    assert result.ok and result.text.startswith("".join(c.text for c in first))


def test_an_idle_timeout_in_a_lent_read_ends_the_stream(
        transport: Transport, steps: List[str]) -> None:
    with Emulator(EmulatorConfig(tokens_per_second=200, response_tokens=(TOKENS, TOKENS),
                                 faults="stall,after=8")) as emu, \
            start(emu.url, transport, idle=0.3) as s:
        got: List[Chunk] = []
        with pytest.raises(StreamTimeout) as info:
            for c in s:
                got.append(c)
        worker_of_s_gone = s.result(WAIT)
    assert info.value.phase == "idle"
    assert info.value.partial == "".join(c.text for c in got) and len(got) == 8
    assert threading.current_thread().name in steps  # the timeout came in a lent read
    assert isinstance(worker_of_s_gone.error, StreamTimeout)


def test_cancel_while_the_consumer_waits_in_a_lent_read(
        transport: Transport, steps: List[str]) -> None:
    with Emulator(EmulatorConfig(tokens_per_second=200, response_tokens=(TOKENS, TOKENS),
                                 faults="stall,after=8")) as emu:
        s = start(emu.url, transport)
        worker = worker_of(s)
        got = [next(s) for _ in range(8)]
        timer = threading.Timer(0.1, s.cancel)
        timer.start()
        started = time.monotonic()
        with pytest.raises(Cancelled) as info:
            next(s)  # blocked in the lent read of a stalled body
        took = time.monotonic() - started
        timer.join(WAIT)
        worker.join(WAIT)
        assert not worker.is_alive()
        assert emu.wait_until(lambda c: c["disconnects"] >= 1, timeout=WAIT)
    assert threading.current_thread().name in steps
    assert took < 1.0
    assert info.value.partial == "".join(c.text for c in got)


def test_ctrl_c_in_a_lent_read_reaches_the_consumer_and_cancels_the_stream(
        transport: Transport, steps: List[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from streamkit._http import Response

    real = Response.read_some
    me = threading.current_thread()
    calls = {"n": 0}

    def read_some(self: Response, timeout: float, *, phase: str = "idle") -> bytes:
        if threading.current_thread() is me:
            calls["n"] += 1
            if calls["n"] == 3:
                raise KeyboardInterrupt
        return real(self, timeout, phase=phase)

    monkeypatch.setattr(Response, "read_some", read_some)
    with Emulator(PACED) as emu:
        s = start(emu.url, transport)
        worker = worker_of(s)
        with pytest.raises(KeyboardInterrupt):
            for _ in s:
                pass
        with pytest.raises(Cancelled):
            next(s)
        result: Result = s.result(WAIT)
        worker.join(WAIT)
        assert not worker.is_alive()
        assert emu.wait_until(lambda c: c["disconnects"] >= 1, timeout=WAIT)
    assert isinstance(result.error, Cancelled)
