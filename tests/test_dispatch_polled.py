"""Dispatcher streams whose body is read by the pool's poller thread, end to end.

A Dispatcher stream's worker opens the request and delivers the first
chunks; the poller thread (``streamkit-dispatch-poller``) reads the rest
while the worker sleeps. These tests drive that through the public
Dispatcher against the raw test server and check it changes nothing a
caller can see: deadlines, cancel, restarts, backpressure, keep-alive,
errors and close behave as on the thread path, and every stream ends once.

Servers here send the head and the first record, then wait (on a spy
counter, with a timeout) until the stream's body is watched by the poller,
so what follows is read by the poller thread, not by the worker's first read.
"""

from __future__ import annotations

import itertools
import threading
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Set, Tuple

import pytest
from rawserver import Counter, RawConn, RawServer, Wire, wire_handler

import streamkit._dispatch.fanout as fanout
import streamkit._http.poller as poller_module
from streamkit._http import Poller, Response
from streamkit._stream.channel import SendEnd
from streamkit._stream.polled import PolledBody
from streamkit.config import RetryPolicy, Timeouts
from streamkit.dispatch import Dispatcher
from streamkit.errors import (
    Cancelled,
    ProtocolError,
    StreamInterrupted,
    StreamkitError,
    StreamTimeout,
)
from streamkit.records import Chunk, GenerateRequest, Result
from streamkit.stream import Stream

WAIT = 5.0  # generous bound for "this happens soon" on a loaded 2-core machine
POLLER = "streamkit-dispatch-poller"
LIMIT_S = 0.5  # the phase timeout under test
SLACK_S = 1.0  # how late past LIMIT_S a deadline may fire on a loaded machine
DRIP_S = 0.05  # far below LIMIT_S: a per-read timeout would never fire
WIRE = Wire("ollama", "generate")
TOKENS = [f"t{i} " for i in range(6)]
FAST = Timeouts(connect=2, first_token=5, idle=5)
ONCE = RetryPolicy(attempts=1)


# -- spies ---------------------------------------------------------------------------------

class Spy:
    """What the poller path did: watches, steps (thread, error), pauses, pending sends."""

    def __init__(self) -> None:
        self.watch_calls = Counter()  # Poller.watch called (whatever it returned)
        self.watches = Counter()      # ... and it watched
        self.unwatched = Counter()    # Poller.unwatch stopped a watch (a deadline)
        self.pauses = Counter()       # a step left chunks to its worker (consumer full)
        self.lock = threading.Lock()
        self.steps: List[Tuple[str, Optional[BaseException]]] = []
        self.pending: List[List[Chunk]] = []
        self.pending_sent: List[List[Chunk]] = []
        self.reads: List[Tuple[str, str, bytes]] = []  # (method, thread, payload)

    def step_threads(self) -> set:
        with self.lock:
            return {name for name, _ in self.steps}

    def step_errors(self) -> List[BaseException]:
        with self.lock:
            return [err for _, err in self.steps if err is not None]


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> Spy:
    s = Spy()
    real_watch, real_unwatch = Poller.watch, Poller.unwatch
    real_step, real_send = PolledBody.step, SendEnd.send
    real_ready, real_some = Response.read_ready, Response.read_some

    def watch(self: Poller, w: Any) -> bool:
        ok = real_watch(self, w)
        if ok:
            s.watches.add()
        s.watch_calls.add()
        return ok

    def unwatch(self: Poller, w: Any) -> bool:
        stopped = real_unwatch(self, w)
        if stopped:
            s.unwatched.add()
        return stopped

    def step(self: PolledBody) -> bool:
        done = real_step(self)
        pending = self._pending
        with s.lock:
            s.steps.append((threading.current_thread().name, self.error))
            if pending is not None:
                s.pending.append(pending)
        if pending is not None:
            s.pauses.add()
        return done

    def send(self: SendEnd, chunks: List[Chunk]) -> None:
        with s.lock:
            if any(chunks is p for p in s.pending):
                s.pending_sent.append(chunks)
        real_send(self, chunks)

    def read_ready(self: Response) -> Optional[bytes]:
        data = real_ready(self)
        with s.lock:
            s.reads.append(("read_ready", threading.current_thread().name, data or b""))
        return data

    def read_some(self: Response, timeout: Optional[float], *, phase: str = "idle") -> bytes:
        data = real_some(self, timeout, phase=phase)
        with s.lock:
            s.reads.append(("read_some", threading.current_thread().name, data))
        return data

    monkeypatch.setattr(Poller, "watch", watch)
    monkeypatch.setattr(Poller, "unwatch", unwatch)
    monkeypatch.setattr(PolledBody, "step", step)
    monkeypatch.setattr(SendEnd, "send", send)
    monkeypatch.setattr(Response, "read_ready", read_ready)
    monkeypatch.setattr(Response, "read_some", read_some)
    return s


# -- servers -------------------------------------------------------------------------------

Tail = Callable[[RawConn], None]


def gated(spy: Spy, first: bytes, tail: Tail,
          numbers: Optional[Iterator[int]] = None) -> Callable[[RawConn], None]:
    """Head and ``first``, then wait until this request's body is watched (the
    n-th request, counted by ``numbers``, waits for the n-th watch call), then
    ``tail(conn)``."""
    numbers = itertools.count(1) if numbers is None else numbers

    def handler(conn: RawConn) -> None:
        n = next(numbers)
        conn.send_head(200, {"Content-Type": WIRE.content_type})
        conn.send_chunk(first)
        if not spy.watch_calls.wait(WAIT, at_least=n):
            conn.cut()  # the test fails on its own assertions; never hang
            return
        tail(conn)
    return handler


def rest_of(tokens: List[str]) -> Tail:
    """Each token after the first as its own HTTP chunk, the done record, the end."""
    def tail(conn: RawConn) -> None:
        for token in tokens[1:]:
            if not conn.send_chunk(WIRE.token(token)):
                return
        conn.send_chunk(WIRE.end(len(tokens)))
        conn.end_chunks()
    return tail


def good(spy: Spy, tokens: List[str] = TOKENS) -> Callable[[RawConn], None]:
    return gated(spy, WIRE.token(tokens[0]), rest_of(tokens))


def stall_after(*records: bytes) -> Tail:
    def tail(conn: RawConn) -> None:
        for record in records:
            conn.send_chunk(record)
        conn.stall(10)
    return tail


def drip_forever(make: Callable[[int], bytes]) -> Tail:
    """``make(i)`` as a chunk every DRIP_S until the client leaves."""
    def tail(conn: RawConn) -> None:
        for i in itertools.count():
            if not conn.send_chunk(make(i)) or conn.wait_disconnect(DRIP_S):
                return
    return tail


def req(i: int = 0) -> GenerateRequest:
    return GenerateRequest("demo", f"prompt {i}")


def drain(stream: Stream) -> Tuple[List[Chunk], Optional[BaseException]]:
    """Every chunk of ``stream`` and the error its iteration raised (None: none)."""
    chunks: List[Chunk] = []
    try:
        for chunk in stream:
            chunks.append(chunk)
    except StreamkitError as exc:
        return chunks, exc
    return chunks, None


def _indices_once_in_order(chunks: List[Chunk]) -> bool:
    return [c.index for c in chunks] == list(range(len(chunks)))


def _poller_threads() -> List[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == POLLER and t.is_alive()]


# -- (1) who reads -------------------------------------------------------------------------

def test_a_submitted_streams_body_is_read_by_the_poller_thread(spy: Spy) -> None:
    with RawServer(good(spy)) as server, \
            Dispatcher(host=server.url, workers=1, timeouts=FAST, retry=ONCE) as d:
        chunks, error = drain(d.submit(req()))
    assert error is None and "".join(c.text for c in chunks) == "".join(TOKENS)
    assert spy.watches.value >= 1 and spy.step_threads() == {POLLER}
    # Every record after the first came off the socket in the poller thread; the
    # worker read the first one (and at most an empty end after the done record).
    polled = b"".join(data for kind, name, data in spy.reads
                      if kind == "read_ready" and name == POLLER)
    worker = b"".join(data for kind, name, data in spy.reads if name != POLLER)
    for token in TOKENS[1:]:
        assert WIRE.token(token) in polled
    assert WIRE.end(len(TOKENS)) in polled
    assert worker == WIRE.token(TOKENS[0])


def test_events_chunks_after_the_first_are_handed_on_by_the_poller_thread(
        spy: Spy, monkeypatch: pytest.MonkeyPatch) -> None:
    admitted: List[Tuple[str, str]] = []  # (thread, chunk text) as the fan-in takes them
    real_admit = fanout.Merged._admit

    def admit(self: fanout.Merged, items: List[Any]) -> None:
        name = threading.current_thread().name
        admitted.extend((name, item[1].text) for item in items)
        real_admit(self, items)
    monkeypatch.setattr(fanout.Merged, "_admit", admit)
    with RawServer(good(spy)) as server, \
            Dispatcher(host=server.url, workers=1, timeouts=FAST, retry=ONCE) as d:
        events = list(d.events([req()]))
    result = events[-1][1]
    assert isinstance(result, Result) and result.ok
    assert [text for _, text in admitted] == [*TOKENS, ""]
    assert admitted[0][0].startswith("streamkit-dispatch-") and admitted[0][0] != POLLER
    assert {name for name, _ in admitted[1:]} == {POLLER}


def test_map_streams_are_polled_too(spy: Spy) -> None:
    with RawServer(good(spy)) as server, \
            Dispatcher(host=server.url, workers=1, timeouts=FAST, retry=ONCE) as d:
        (result,) = list(d.map([req()]))
    assert result.ok and result.text == "".join(TOKENS)
    assert spy.watches.value >= 1 and spy.step_threads() == {POLLER}


# -- (2) deadlines -------------------------------------------------------------------------

@pytest.mark.parametrize("tail", [
    stall_after(WIRE.token("second ")),
    drip_forever(lambda i: b" "),  # bytes that never complete a record: not activity
], ids=["stall", "trickle"])
def test_idle_timeout_mid_body_ends_a_polled_stream(spy: Spy, tail: Tail) -> None:
    timeouts = Timeouts(connect=2, first_token=5, idle=LIMIT_S)
    with RawServer(gated(spy, WIRE.token("first "), tail)) as server, \
            Dispatcher(host=server.url, workers=1, timeouts=timeouts, retry=ONCE) as d:
        started = time.monotonic()
        stream = d.submit(req())
        chunks, error = drain(stream)
        elapsed = time.monotonic() - started
        assert server.disconnects.wait(WAIT)
    assert isinstance(error, StreamTimeout) and error.phase == "idle", error
    assert LIMIT_S * 0.9 <= elapsed < LIMIT_S + SLACK_S
    assert chunks and chunks[0].text == "first "
    assert spy.watches.value >= 1 and spy.unwatched.value == 1  # the worker's deadline
    assert stream.result(0).error is error


def test_total_timeout_mid_body_ends_a_polled_stream(spy: Spy) -> None:
    timeouts = Timeouts(connect=2, first_token=5, idle=5, total=LIMIT_S)
    tail = drip_forever(lambda i: WIRE.token(f"d{i} "))  # busy: idle never fires
    with RawServer(gated(spy, WIRE.token("first "), tail)) as server, \
            Dispatcher(host=server.url, workers=1, timeouts=timeouts, retry=ONCE) as d:
        started = time.monotonic()
        chunks, error = drain(d.submit(req()))
        elapsed = time.monotonic() - started
        assert server.disconnects.wait(WAIT)
    assert isinstance(error, StreamTimeout) and error.phase == "total", error
    assert LIMIT_S * 0.9 <= elapsed < LIMIT_S + SLACK_S
    assert len(chunks) > 2 and _indices_once_in_order(chunks)
    assert spy.unwatched.value == 1 and spy.step_threads() == {POLLER}


def test_sse_comments_do_not_hold_off_the_idle_timeout_of_a_polled_stream(spy: Spy) -> None:
    sse = Wire("openai", "generate")
    timeouts = Timeouts(connect=2, first_token=5, idle=LIMIT_S)
    tail = drip_forever(lambda i: b": keep-alive\n\n")
    with RawServer(gated(spy, sse.token("first "), tail)) as server, \
            Dispatcher(host=server.url, workers=1, timeouts=timeouts, retry=ONCE,
                       dialect="openai") as d:
        started = time.monotonic()
        chunks, error = drain(d.submit(req()))
        elapsed = time.monotonic() - started
    assert isinstance(error, StreamTimeout) and error.phase == "idle", error
    assert LIMIT_S * 0.9 <= elapsed < LIMIT_S + SLACK_S
    assert [c.text for c in chunks] == ["first "]
    assert spy.unwatched.value == 1 and spy.step_threads() == {POLLER}


# -- (3) cancel ----------------------------------------------------------------------------

def test_cancel_mid_body_ends_a_polled_stream_at_once(spy: Spy) -> None:
    tail = stall_after(WIRE.token("second "))
    with RawServer([gated(spy, WIRE.token("first "), tail), good(spy)]) as server, \
            Dispatcher(host=server.url, workers=1, timeouts=FAST, retry=ONCE) as d:
        stream = d.submit(req())
        it = iter(stream)
        assert [next(it).text, next(it).text] == ["first ", "second "]  # polled by now
        started = time.monotonic()
        assert stream.cancel()
        result = stream.result(WAIT)
        assert time.monotonic() - started < 0.5
        assert isinstance(result.error, Cancelled)
        assert server.disconnects.wait(WAIT)  # the server sees the client leave
        # The worker is free again: the next stream runs on it.
        follow = d.submit(req(1)).result(WAIT)
    assert follow.ok and follow.text == "".join(TOKENS)
    assert any(isinstance(e, Cancelled) for e in spy.step_errors())


def test_cancel_while_paused_by_a_full_queue_ends_the_stream_at_once(spy: Spy) -> None:
    tail = stall_after(*[WIRE.token(f"s{i} ") for i in range(8)])
    paused = gated(spy, WIRE.token("first "), tail)
    with RawServer([paused, wire_handler(WIRE, TOKENS)]) as server, \
            Dispatcher(host=server.url, workers=1, timeouts=FAST, retry=ONCE,
                       queue_size=1) as d:
        stream = d.submit(req())
        assert spy.pauses.wait(WAIT)  # the worker waits to send what the poller could not
        started = time.monotonic()
        assert stream.cancel()
        result = stream.result(WAIT)
        assert time.monotonic() - started < 0.5
        assert isinstance(result.error, Cancelled)
        assert server.disconnects.wait(WAIT)
        follow, error = drain(d.submit(req(1)))  # the worker is free again
        assert error is None and "".join(c.text for c in follow) == "".join(TOKENS)
    chunks, error = drain(stream)  # what was queued before the cancel, then the end
    assert isinstance(error, Cancelled) and _indices_once_in_order(chunks)


# -- (4) a cut mid-body --------------------------------------------------------------------

@pytest.mark.parametrize("how", ["cut", "reset"])
def test_map_restarts_a_polled_stream_cut_mid_body_on_another_host(spy: Spy, how: str) -> None:
    def cut(conn: RawConn) -> None:
        conn.send_chunk(WIRE.token("second "))
        conn.reset() if how == "reset" else conn.cut()

    retry = RetryPolicy(attempts=3, backoff_base=0.01, backoff_max=0.05)
    # Whichever host gets the first attempt cuts it; the restart goes to the other
    # one (the router cools a host that cut a stream) and is answered in full.
    numbers = itertools.count(1)
    cutter = gated(spy, WIRE.token("first "), cut, numbers)
    fine = gated(spy, WIRE.token(TOKENS[0]), rest_of(TOKENS), numbers)
    served = itertools.count()

    def handler(conn: RawConn) -> None:
        (cutter if next(served) == 0 else fine)(conn)
    servers = [RawServer(handler) for _ in range(2)]
    try:
        urls = [s.url for s in servers]
        with Dispatcher(hosts=urls, workers=1, timeouts=FAST, retry=retry) as d:
            results = list(d.map([req()]))
    finally:
        for s in servers:
            s.close()
    (result,) = results
    assert result.ok and result.text == "".join(TOKENS)
    assert result.restarts == 1 and result.attempts == 2
    assert len(set(result.hosts_tried)) == 2 and result.host == result.hosts_tried[1]
    assert sum(len(s.requests) for s in servers) == 2
    assert any(isinstance(e, StreamInterrupted) for e in spy.step_errors())  # seen by the poller


def test_a_polled_stream_cut_after_its_chunks_went_out_is_replayed_seamlessly(
        spy: Spy) -> None:
    taken = threading.Event()

    def cut(conn: RawConn) -> None:
        for token in TOKENS[1:3]:
            conn.send_chunk(WIRE.token(token))
        taken.wait(WAIT)  # cut once the consumer holds them (before, it is a restart)
        conn.cut()
    retry = RetryPolicy(attempts=2, backoff_base=0.01, backoff_max=0.05, on_interrupt="replay")
    # The replay is read by its worker (only a first reading is polled).
    handlers = [gated(spy, WIRE.token(TOKENS[0]), cut), wire_handler(WIRE, TOKENS)]
    with RawServer(handlers) as server, \
            Dispatcher(host=server.url, workers=1, timeouts=FAST, retry=retry) as d:
        stream = d.submit(req())
        it = iter(stream)
        seen = [next(it) for _ in range(3)]  # the consumer has these: no restart now
        taken.set()
        rest, error = drain(stream)
    chunks = seen + rest
    assert error is None and _indices_once_in_order(chunks)
    assert "".join(c.text for c in chunks) == "".join(TOKENS)
    result = stream.result(0)
    assert result.attempts == 2 and result.restarts == 0
    assert any(isinstance(e, StreamInterrupted) for e in spy.step_errors())


# -- (5) a slow consumer -------------------------------------------------------------------

def test_events_with_a_slow_consumer_loses_and_repeats_nothing(
        spy: Spy, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fanout, "EVENTS_BUFFER", 2)
    tokens = [f"w{i} " for i in range(40)]
    streams = 4

    tail = rest_of(tokens)

    def handler(conn: RawConn) -> None:
        # Any watch will do: the first stream polled finds the 2-chunk buffer full.
        conn.send_head(200, {"Content-Type": WIRE.content_type})
        conn.send_chunk(WIRE.token(tokens[0]))
        if spy.watches.wait(WAIT):
            tail(conn)
        else:
            conn.cut()

    with RawServer(handler) as server, \
            Dispatcher(host=server.url, workers=streams, timeouts=FAST, retry=ONCE) as d:
        events = d.events([req(i) for i in range(streams)])
        got: Dict[str, List[Chunk]] = {}
        finals: Dict[str, Result] = {}
        first = next(events)  # the call starts on the first next()
        paused_before_reading = spy.pauses.wait(WAIT)  # nothing else consumed yet
        for n, (request_id, item) in enumerate(itertools.chain([first], events)):
            if isinstance(item, Chunk):
                assert request_id not in finals
                got.setdefault(request_id, []).append(item)
            else:
                assert request_id not in finals
                finals[request_id] = item
            if n % 25 == 0:  # a slow consumer: let the streams hit the bound again
                spy.pauses.wait(0.05, at_least=spy.pauses.value + 1)
    assert paused_before_reading
    assert set(finals) == {str(i) for i in range(streams)}
    for request_id, result in finals.items():
        chunks = got[request_id]
        assert result.ok, result.error
        assert _indices_once_in_order(chunks), [c.index for c in chunks]
        assert "".join(c.text for c in chunks) == result.text == "".join(tokens)
    # The pause/resume path was taken, and each paused read went out exactly once.
    assert spy.pending and len(spy.pending_sent) == len(spy.pending)
    assert all(any(p is s for s in spy.pending_sent) for p in spy.pending)
    assert spy.step_threads() == {POLLER}


def test_a_submitted_stream_with_a_slow_reader_loses_and_repeats_nothing(spy: Spy) -> None:
    tokens = [f"q{i} " for i in range(30)]
    with RawServer(good(spy, tokens)) as server, \
            Dispatcher(host=server.url, workers=1, timeouts=FAST, retry=ONCE,
                       queue_size=1) as d:
        stream = d.submit(req())
        paused_before_reading = spy.pauses.wait(WAIT)
        chunks, error = drain(stream)
    assert paused_before_reading and error is None
    assert _indices_once_in_order(chunks)
    assert "".join(c.text for c in chunks) == "".join(tokens)
    assert spy.pending and len(spy.pending_sent) == len(spy.pending)


def test_leaving_events_early_cancels_the_polled_streams(spy: Spy) -> None:
    n = 3
    tail = drip_forever(lambda i: WIRE.token(f"d{i} "))
    with RawServer(gated(spy, WIRE.token("first "), tail)) as server, \
            Dispatcher(host=server.url, workers=n, timeouts=FAST, retry=ONCE) as d:
        for seen, (_, item) in enumerate(d.events([req(i) for i in range(n)]), 1):
            assert isinstance(item, Chunk)
            if spy.watches.value >= n and seen >= 3 * n:
                break  # every stream is polled and streaming
        assert server.disconnects.wait(WAIT, at_least=n)
        follow = d.submit(req(9))  # the workers are free again
        first = next(iter(follow))
        assert follow.cancel()
    assert first.text == "first "


def test_many_paced_streams_share_the_poller_and_arrive_whole(spy: Spy) -> None:
    emulator = pytest.importorskip("streamkit.emulator")
    config = emulator.EmulatorConfig(parallel=16, tokens_per_second=100)
    requests = [GenerateRequest("demo", f"paced {i}", options={"num_predict": 10})
                for i in range(16)]
    from streamkit.wire import get_dialect
    with emulator.Emulator(config) as emu, \
            Dispatcher(host=emu.url, workers=16, timeouts=FAST, retry=ONCE) as d:
        results = {r.id: r for r in d.map(requests)}
    for i, request in enumerate(requests):
        want = emulator.expected("demo", get_dialect("ollama").generate(request)[1], config)
        assert results[str(i)].ok and results[str(i)].text == want.text
    assert spy.watches.value >= 16 and spy.step_threads() == {POLLER}


def test_an_asyncio_consumer_is_woken_by_the_poller_thread(spy: Spy) -> None:
    import asyncio
    tokens = [f"a{i} " for i in range(20)]

    async def consume(stream: Stream) -> List[Chunk]:
        async def all_chunks() -> List[Chunk]:
            return [chunk async for chunk in stream]
        return await asyncio.wait_for(all_chunks(), WAIT)

    with RawServer(good(spy, tokens)) as server, \
            Dispatcher(host=server.url, workers=1, timeouts=FAST, retry=ONCE,
                       queue_size=2) as d:
        chunks = asyncio.run(consume(d.submit(req())))
    assert _indices_once_in_order(chunks)
    assert "".join(c.text for c in chunks) == "".join(tokens)
    assert spy.step_threads() == {POLLER}


def test_records_torn_across_many_small_reads_arrive_whole(spy: Spy) -> None:
    tokens = [f"r{i} " for i in range(12)]

    def dribble(conn: RawConn) -> None:
        body = b"".join(b"%x\r\n%s\r\n" % (len(WIRE.token(t)), WIRE.token(t))
                        for t in tokens[1:])
        body += b"%x\r\n%s\r\n0\r\n\r\n" % (len(WIRE.end(12)), WIRE.end(12))
        for i in range(0, len(body), 7):  # framing and JSON both torn mid-way
            if not conn.send(body[i:i + 7]):
                return
    with RawServer(gated(spy, WIRE.token(tokens[0]), dribble)) as server, \
            Dispatcher(host=server.url, workers=1, timeouts=FAST, retry=ONCE) as d:
        chunks, error = drain(d.submit(req()))
        opened = server.connections.value
        again, _ = drain(d.submit(req(1)))  # and the connection is reused after
        assert server.connections.value == opened == 1
    assert error is None and _indices_once_in_order(chunks)
    assert "".join(c.text for c in chunks) == "".join(tokens)
    assert "".join(c.text for c in again) == "".join(tokens)
    assert spy.step_threads() == {POLLER}


def test_result_of_a_paused_stream_lifts_the_bound_and_gets_it_whole(spy: Spy) -> None:
    tokens = [f"l{i} " for i in range(30)]
    with RawServer(good(spy, tokens)) as server, \
            Dispatcher(host=server.url, workers=1, timeouts=FAST, retry=ONCE,
                       queue_size=1) as d:
        stream = d.submit(req())
        assert spy.pauses.wait(WAIT)  # the worker waits for room nobody will make
        result = stream.result(WAIT)  # wants the reply whole: lifts the bound
    assert result.ok and result.text == "".join(tokens)
    assert len(spy.pending_sent) == len(spy.pending)


def test_many_submitted_streams_read_round_robin_with_cancels_each_end_once(spy: Spy) -> None:
    # Small queues, one reader taking from every stream in turn (each is paused
    # and resumed over and over), every third stream cancelled half-way.
    emulator = pytest.importorskip("streamkit.emulator")
    from streamkit.wire import get_dialect
    config = emulator.EmulatorConfig(parallel=16, tokens_per_second=400)
    n = 16
    requests = [GenerateRequest("demo", f"rr {i}", options={"num_predict": 24}, id=str(i))
                for i in range(n)]
    ends: Dict[int, List[Result]] = {i: [] for i in range(n)}
    got: Dict[int, List[Chunk]] = {i: [] for i in range(n)}
    with emulator.Emulator(config) as emu, \
            Dispatcher(host=emu.url, workers=n, timeouts=FAST, retry=ONCE,
                       queue_size=2) as d:
        streams = [d.submit(r) for r in requests]
        for i, stream in enumerate(streams):
            stream.add_done_callback(ends[i].append)
        assert spy.pauses.wait(WAIT)  # nothing taken yet: the poller fills a queue and stops
        deadline = time.monotonic() + WAIT
        live = set(range(n))
        cancelled: Set[int] = set()
        while live:
            assert time.monotonic() < deadline, f"streams {sorted(live)} never ended"
            for i in sorted(live):
                chunk = streams[i].get(0.005)
                if chunk is not None:
                    got[i].append(chunk)
                    if i % 3 == 0 and len(got[i]) == 12 and streams[i].cancel():
                        cancelled.add(i)  # False: its last read had brought its end
                elif streams[i].done:
                    live.discard(i)
    assert spy.pauses.value > 0 and spy.step_threads() == {POLLER}
    assert cancelled  # most of the six: a cancel loses only to an end already read
    for i, request in enumerate(requests):
        assert len(ends[i]) == 1, (i, ends[i])
        result = streams[i].result(0)
        assert _indices_once_in_order(got[i]), (i, [c.index for c in got[i]])
        if i in cancelled:
            assert isinstance(result.error, Cancelled)
            assert len(got[i]) >= 12
        else:
            want = emulator.expected("demo", get_dialect("ollama").generate(request)[1],
                                     config).text
            assert result.ok and "".join(c.text for c in got[i]) == result.text == want


# -- (6) keep-alive ------------------------------------------------------------------------

def test_sequential_polled_streams_reuse_one_connection_left_blocking(
        spy: Spy, monkeypatch: pytest.MonkeyPatch) -> None:
    polls: List[Tuple[Any, Optional[float], Optional[float]]] = []  # (socket, before, after)
    real_start, real_stop = Response.start_polling, Response.stop_polling

    def start(self: Response) -> None:
        sock = self.pollable()
        polls.append((sock, sock.gettimeout() if sock else None, None))
        real_start(self)

    def stop(self: Response) -> None:
        real_stop(self)
        sock, before, _ = polls[-1]
        polls[-1] = (sock, before, sock.gettimeout())
    monkeypatch.setattr(Response, "start_polling", start)
    monkeypatch.setattr(Response, "stop_polling", stop)
    rounds = 4
    polled = good(spy)
    with RawServer([polled] * rounds + [wire_handler(WIRE, TOKENS)]) as server, \
            Dispatcher(host=server.url, workers=1, timeouts=FAST, retry=ONCE) as d:
        for i in range(rounds):
            chunks, error = drain(d.submit(req(i)))
            assert error is None and "".join(c.text for c in chunks) == "".join(TOKENS)
            sock, before, after = polls[-1]
            assert before is not None and before != 0.0
            assert after == before and sock.getblocking()
        # A thread-path stream (a Client stream) of the same client reuses it too,
        # once the last job has put it back: the end record goes out first and the
        # worker then reads the body's last bytes and pools the connection. (With
        # one worker, each submitted job above waited for the one before it.)
        d._pool.wait_idle(WAIT)
        assert d.client.generate("demo", "after").result(WAIT).ok
        requests = len(server.requests)
        connections = server.connections.value
    assert len(polls) == rounds and len({id(s) for s, _, _ in polls}) == 1
    assert requests == rounds + 1 and connections == 1


BIG = [f"{i}" + "x" * 1500 + " " for i in range(8)]  # a body past the socket file's buffer


def _framed(spy: Spy, framing: str, tokens: List[str]) -> Callable[[RawConn], None]:
    """A reply in ``framing``: the first record, the gate, the rest; the done
    record and the end of a chunked body come apart (the worker drains the end).

    The gate holds the rest back until the body is watched (on the lean
    path every body is read from its socket directly, so every one is
    pollable once its first record is in, a short Content-Length body too;
    the requests path polls one only once the socket file's buffer is empty)."""
    numbers = itertools.count(1)
    rest = b"".join(WIRE.token(t) for t in tokens[1:]) + WIRE.end(len(tokens))

    def handler(conn: RawConn) -> None:
        n = next(numbers)
        first = WIRE.token(tokens[0])
        if framing == "chunked":
            conn.send_head(200, {"Content-Type": WIRE.content_type})
            conn.send_chunk(first)
        elif framing == "length":
            conn.send_head(200, {"Content-Type": WIRE.content_type,
                                 "Content-Length": str(len(first + rest))}, chunked=False)
            conn.send(first)
        else:
            conn.send_head(200, {"Content-Type": WIRE.content_type,
                                 "Connection": "close"}, chunked=False)
            conn.send(first)
        if not spy.watch_calls.wait(WAIT, at_least=n):
            conn.cut()
            return
        if framing == "chunked":
            conn.send_chunk(rest)
            conn.wait_disconnect(DRIP_S)  # the end comes a little after the done record
            conn.end_chunks()
        else:
            conn.send(rest)
            if framing == "close":
                conn.cut()
    return handler


@pytest.mark.parametrize(("framing", "tokens", "connections"), [
    ("chunked", TOKENS, 1), ("length", TOKENS, 1), ("length", BIG, 1), ("close", TOKENS, 3)],
    ids=["chunked", "length", "length-big", "close"])
def test_every_body_framing_is_read_to_its_end_and_kept_alive_where_it_can(
        spy: Spy, framing: str, tokens: List[str], connections: int) -> None:
    with RawServer(_framed(spy, framing, tokens)) as server, \
            Dispatcher(host=server.url, workers=1, timeouts=FAST, retry=ONCE) as d:
        for i in range(3):
            chunks, error = drain(d.submit(req(i)))
            assert error is None, error
            assert "".join(c.text for c in chunks) == "".join(tokens)
            assert _indices_once_in_order(chunks)
        opened = server.connections.value
    assert opened == connections
    assert spy.watches.value >= 3
    assert spy.step_threads() == {POLLER}


# -- (7) errors mid-body: the same as the thread path --------------------------------------

def _malformed_tail(conn: RawConn) -> None:
    # One HTTP chunk (one read): two good records, a line that is not JSON, one more.
    conn.send_chunk(WIRE.token("b ") + WIRE.token("c ") + b'{"response": "d\n'
                    + WIRE.token("e "))
    conn.send_chunk(WIRE.end(5))
    conn.end_chunks()


def _bad_framing_then(after: str) -> Tail:
    def tail(conn: RawConn) -> None:
        # A good HTTP chunk, then a chunk-size line that is not hex, in one write.
        conn.send(b"%x\r\n%s\r\nzz\r\n" % (len(WIRE.token("b ")), WIRE.token("b ")))
        if after == "close":
            conn.cut()
        else:
            conn.stall(10)
    return tail


def _run_one(url: str) -> Tuple[List[Tuple[int, str]], Optional[BaseException], Result]:
    timeouts = Timeouts(connect=2, first_token=5, idle=2 * LIMIT_S)
    with Dispatcher(host=url, workers=1, timeouts=timeouts, retry=ONCE) as d:
        stream = d.submit(req())
        chunks, error = drain(stream)
        return [(c.index, c.text) for c in chunks], error, stream.result(WAIT)


def _outcome(error: Optional[BaseException]) -> Tuple[type, str]:
    return type(error), str(error)


def _same_as_the_thread_path(tail: Tail, monkeypatch: pytest.MonkeyPatch
                             ) -> Dict[str, Tuple[Any, ...]]:
    """Run one stream over ``tail`` with the worker reading, then with the poller."""
    outcomes: Dict[str, Tuple[Any, ...]] = {}
    for mode in ("threaded", "polled"):
        with monkeypatch.context() as m:
            s = Spy()
            if mode == "threaded":
                m.setattr(Poller, "watch", lambda self, w: False)
            real_watch = Poller.watch

            def watch(self: Poller, w: Any, real: Any = real_watch, s: Spy = s) -> bool:
                ok = bool(real(self, w))
                if ok:
                    s.watches.add()
                s.watch_calls.add()
                return ok
            m.setattr(Poller, "watch", watch)
            with RawServer(gated(s, WIRE.token("a "), tail)) as server:
                chunks, error, result = _run_one(server.url)
            outcomes[mode] = (chunks, _outcome(error), result.text, s.watches.value)
    return outcomes


def test_a_malformed_record_mid_body_fails_as_on_the_thread_path(
        monkeypatch: pytest.MonkeyPatch) -> None:
    outcomes = _same_as_the_thread_path(_malformed_tail, monkeypatch)
    threaded, polled = outcomes["threaded"], outcomes["polled"]
    assert threaded[3] == 0 and polled[3] >= 1  # each run took the path it names
    assert threaded[1][0] is ProtocolError
    assert polled[:3] == threaded[:3]
    chunks = polled[0]
    assert [i for i, _ in chunks] == list(range(len(chunks)))  # salvaged, none twice
    assert [t for _, t in chunks] == ["a ", "b ", "c "]


@pytest.mark.parametrize("after", ["close", "stall"])
def test_bad_chunk_framing_mid_body_fails_as_on_the_thread_path(
        monkeypatch: pytest.MonkeyPatch, after: str) -> None:
    outcomes = _same_as_the_thread_path(_bad_framing_then(after), monkeypatch)
    threaded, polled = outcomes["threaded"], outcomes["polled"]
    assert threaded[3] == 0 and polled[3] >= 1
    assert threaded[1][0] is ProtocolError
    assert polled[:3] == threaded[:3]


# -- (8) close -----------------------------------------------------------------------------

def test_close_while_streams_are_polled_ends_each_once_and_leaves_nothing(spy: Spy) -> None:
    n = 4
    tail = stall_after(WIRE.token("second "))
    ends: Dict[int, List[Result]] = {i: [] for i in range(n)}
    with RawServer(gated(spy, WIRE.token("first "), tail)) as server:
        d = Dispatcher(host=server.url, workers=n, timeouts=FAST, retry=ONCE)
        try:
            streams = [d.submit(req(i)) for i in range(n)]
            for i, stream in enumerate(streams):
                stream.add_done_callback(ends[i].append)
            assert spy.watches.wait(WAIT, at_least=n)
            assert len(_poller_threads()) == 1
        finally:
            started = time.monotonic()
            d.close()
            took = time.monotonic() - started
        assert server.disconnects.wait(WAIT, at_least=n)
    assert took < 2.0
    assert all(len(e) == 1 for e in ends.values()), ends
    for stream in streams:
        assert isinstance(stream.result(0).error, Cancelled)
    assert not _poller_threads()


def test_close_while_map_streams_are_polled_yields_each_once(spy: Spy) -> None:
    n = 3
    tail = stall_after(WIRE.token("second "))
    results: List[Result] = []
    with RawServer(gated(spy, WIRE.token("first "), tail)) as server:
        d = Dispatcher(host=server.url, workers=n, timeouts=FAST, retry=ONCE)
        try:
            def consume() -> None:
                results.extend(d.map([req(i) for i in range(n)], return_exceptions=True))
            consumer = threading.Thread(target=consume, name="map-consumer")
            consumer.start()
            assert spy.watches.wait(WAIT, at_least=n)
        finally:
            d.close()
        consumer.join(WAIT)
        assert not consumer.is_alive()
    assert sorted(r.id or "" for r in results) == [str(i) for i in range(n)]
    assert all(isinstance(r.error, Cancelled) for r in results)
    assert not _poller_threads()


def test_close_without_cancel_lets_polled_streams_finish(spy: Spy) -> None:
    n = 3
    numbers = itertools.count(1)

    def slow_tail(conn: RawConn) -> None:
        for token in TOKENS[1:]:
            if not conn.send_chunk(WIRE.token(token)) or conn.wait_disconnect(DRIP_S):
                return
        conn.send_chunk(WIRE.end(len(TOKENS)))
        conn.end_chunks()
    with RawServer(gated(spy, WIRE.token(TOKENS[0]), slow_tail, numbers)) as server:
        d = Dispatcher(host=server.url, workers=n, timeouts=FAST, retry=ONCE)
        streams = [d.submit(req(i)) for i in range(n)]
        assert spy.watches.wait(WAIT, at_least=1)
        d.close(cancel_pending=False, timeout=WAIT)
    for stream in streams:
        result = stream.result(0)
        assert result.ok and result.text == "".join(TOKENS)
    assert not _poller_threads()


def test_a_dispatcher_polls_again_after_its_poller_thread_went_idle(
        spy: Spy, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(poller_module, "IDLE_EXIT_S", 0.05)
    monkeypatch.setattr(poller_module, "_SELECT_S", 0.02)
    with RawServer(good(spy)) as server, \
            Dispatcher(host=server.url, workers=1, timeouts=FAST, retry=ONCE) as d:
        assert d.submit(req(0)).result(WAIT).ok
        threads = _poller_threads()
        for thread in threads:
            thread.join(WAIT)
        assert not _poller_threads()
        steps = len(spy.steps)
        second = d.submit(req(1)).result(WAIT)
    assert second.ok and second.text == "".join(TOKENS)
    assert len(spy.steps) > steps and spy.step_threads() == {POLLER}


def test_a_forgotten_dispatcher_lets_its_poller_thread_go(spy: Spy) -> None:
    import gc
    with RawServer(good(spy)) as server:
        d = Dispatcher(host=server.url, workers=1, timeouts=FAST, retry=ONCE)
        assert d.submit(req()).result(WAIT).ok
        threads = [t for t in threading.enumerate() if t.name.startswith("streamkit-dispatch")]
        assert POLLER in {t.name for t in threads}
        del d
        gc.collect()
        for thread in threads:
            thread.join(WAIT)
        assert not [t for t in threads if t.is_alive()]


@pytest.fixture(autouse=True)
def _no_poller_thread_left() -> Iterator[None]:
    yield
    for thread in _poller_threads():
        thread.join(WAIT)


def test_a_polled_stream_paused_longer_than_the_idle_timeout_is_not_timed_out(
        spy: Spy) -> None:
    # A token every 5 ms, each its own read, and a submitted stream whose
    # queue holds one chunk: the poller parks the next read with the worker,
    # the consumer stops for twice the idle timeout. The server was never
    # silent, so the stream must end well, every chunk once.
    from streamkit.emulator import Emulator, EmulatorConfig

    config = EmulatorConfig(tokens_per_second=200, response_tokens=(40, 40))
    with Emulator(config) as paced, \
            Dispatcher(host=paced.url, workers=1, retry=ONCE, queue_size=1,
                       timeouts=Timeouts(connect=2, first_token=5, idle=0.3)) as d:
        stream = d.submit(GenerateRequest("demo", "hi"))
        chunks = [next(stream)]
        assert spy.pauses.wait(WAIT)  # the poller could not hand on: the worker waits
        time.sleep(0.6)  # the slow consumer under test
        chunks.extend(stream)
        result = stream.result(WAIT)
    assert result.ok, result.error
    assert _indices_once_in_order(chunks)
    assert "".join(c.text for c in chunks) == result.text and chunks[-1].done
