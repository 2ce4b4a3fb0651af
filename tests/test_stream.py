"""Stream: worker → bounded channel → consumer, against the emulator and a raw server."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import queue
import subprocess
import sys
import textwrap
import threading
import time
from typing import Any, Dict, Iterator, List, Optional, Type

import pytest
from rawserver import RawConn, RawServer

from streamkit._http import Transport
from streamkit.config import RetryPolicy, Timeouts
from streamkit.emulator import Emulator, EmulatorConfig, expected
from streamkit.errors import (
    Cancelled,
    ConnectError,
    ModelNotFound,
    ProtocolError,
    ResponseError,
    ServerBusy,
    ServerStreamError,
    StreamDiverged,
    StreamError,
    StreamInterrupted,
    StreamkitError,
    StreamTimeout,
)
from streamkit.records import END, ChatRequest, Chunk, GenerateRequest, Request, Result
from streamkit.stream import FixedRoute, Stream
from streamkit.wire import get_dialect

OLLAMA = get_dialect("ollama")
FAST_RETRY = RetryPolicy(attempts=3, backoff_base=0.01, backoff_max=0.05)
NO_RETRY = RetryPolicy(attempts=1)
TIMEOUTS = Timeouts(connect=2, first_token=10, idle=10)
WAIT = 10.0  # upper bound for things that normally take milliseconds

GEN = GenerateRequest("demo", "Why is the sky blue?", id="g1")
CHAT = ChatRequest("demo", [{"role": "user", "content": "Hello"}], think=True, id="c1")


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    with Emulator(EmulatorConfig(response_tokens=(30, 30))) as e:
        yield e


@pytest.fixture
def transport() -> Iterator[Transport]:
    with Transport(pool_size=4) as t:
        yield t


def make(url: str, transport: Transport, request: Request = GEN, *,
         timeouts: Timeouts = TIMEOUTS, retry: RetryPolicy = FAST_RETRY,
         queue_size: int = 256, start: bool = True, **kw: Any) -> Stream:
    s = Stream(request, dialect=OLLAMA, transport=transport, route=FixedRoute(url),
               timeouts=timeouts, retry=retry, queue_size=queue_size, **kw)
    if start:
        s._start()
    return s


def body_of(request: Request) -> Dict[str, Any]:
    if isinstance(request, ChatRequest):
        return OLLAMA.chat(request)[1]
    return OLLAMA.generate(request)[1]


def worker_thread(stream: Stream) -> Optional[threading.Thread]:
    name = f"streamkit-stream-{stream.id}"
    return next((t for t in threading.enumerate() if t.name == name), None)


def wait_worker_gone(stream: Stream, timeout: float) -> float:
    """Seconds until the stream's worker thread has exited (fails after ``timeout``)."""
    started = time.monotonic()
    t = worker_thread(stream)
    if t is not None:
        t.join(timeout)
        assert not t.is_alive(), "the worker thread did not exit"
    return time.monotonic() - started


# -- the happy path --------------------------------------------------------------


@pytest.mark.parametrize("request_", [GEN, CHAT], ids=["generate", "chat"])
def test_text_thinking_and_stats_match_the_emulator(
        emu: Emulator, transport: Transport, request_: Request) -> None:
    want = expected("demo", body_of(request_), emu.config)
    with make(emu.url, transport, request_) as s:
        chunks = list(s)
        result = s.result()
    assert result.error is None and result.ok
    assert "".join(c.text for c in chunks) == result.text == want.text
    assert "".join(c.thinking for c in chunks) == result.thinking == want.thinking
    assert chunks[-1].done and not any(c.done for c in chunks[:-1])
    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert result.stats.eval_count == want.eval_count
    assert result.done_reason == want.done_reason
    assert (result.id, result.model, result.host) == (request_.id, "demo", emu.url)
    assert result.attempts == 1 and not result.cached
    t = result.timing
    assert t.chunks == len(chunks)
    stamps = [t.started_ns, t.sent_ns, t.headers_ns, t.first_byte_ns, t.first_token_ns,
              t.last_token_ns, t.done_ns]
    assert all(x is not None for x in stamps)
    assert stamps == sorted(stamps)  # type: ignore[type-var]
    assert t.first_token_ns == chunks[0].received_ns


def test_done_chunk_text_is_kept(transport: Transport) -> None:
    lines = [b'{"model":"m","response":"Hel","done":false}',
             b'{"model":"m","response":"lo!","done":true,"done_reason":"stop","eval_count":2}']
    with RawServer(ndjson(lines)) as server, make(server.url, transport) as s:
        assert s.text() == "Hello!"
        assert s.result().stats.eval_count == 2


def test_text_get_pipe_and_result(emu: Emulator, transport: Transport) -> None:
    want = expected("demo", body_of(GEN), emu.config).text
    with make(emu.url, transport) as s:
        assert s.text() == want
    with make(emu.url, transport) as s:
        got: List[Chunk] = []
        while not s.done:
            c = s.get(timeout=WAIT)
            if c is not None:
                got.append(c)
        assert "".join(c.text for c in got) == want
        assert s.get(0) is None and s.done
    with make(emu.url, transport) as s:
        q: queue.Queue[Any] = queue.Queue()
        result = s.pipe(q)
        items = []
        while True:
            item = q.get(timeout=WAIT)
            if item is END:
                break
            items.append(item)
        assert "".join(c.text for c in items) == result.text == want


def test_iterating_twice_is_an_error(emu: Emulator, transport: Transport) -> None:
    with make(emu.url, transport) as s:
        first = next(iter(s))
        rest = list(s)  # a partly read stream carries on, like a file
        assert first.index == 0 and rest[0].index == 1
        with pytest.raises(RuntimeError, match="only once"):
            iter(s)
        with pytest.raises(RuntimeError, match="only once"):
            s.pipe(queue.Queue())
        assert s.result().text == "".join(c.text for c in [first, *rest])


def test_result_timeout_and_no_raise(transport: Transport) -> None:
    with RawServer(stall_after([b'{"response":"a","done":false}'])) as server, \
            make(server.url, transport, timeouts=Timeouts(idle=0.3)) as s:
        with pytest.raises(TimeoutError):
            s.result(timeout=0.05)
        result = s.result(timeout=WAIT)  # ends with the idle timeout: no raise here
        assert isinstance(result.error, StreamTimeout)
        assert result.text == "a"
        with pytest.raises(StreamTimeout):
            s.text()


def test_run_in_the_calling_thread_with_a_sink(emu: Emulator, transport: Transport) -> None:
    got: List[Chunk] = []
    s = make(emu.url, transport, start=False)
    s._run(sink=got.append)
    assert s.result(timeout=0).text == "".join(c.text for c in got)
    assert s.result().ok


def test_done_callback(emu: Emulator, transport: Transport) -> None:
    seen: List[Result] = []
    with make(emu.url, transport) as s:
        s.add_done_callback(seen.append)
        result = s.result(timeout=WAIT)
        s.add_done_callback(seen.append)  # already ended: called at once
    assert seen == [result, result]


def test_repr(emu: Emulator, transport: Transport) -> None:
    with make(emu.url, transport) as s:
        s.result(timeout=WAIT)
        assert repr(s) == f"<streamkit Stream id='g1' model='demo' host='{emu.url}' ok>"


# -- faults → errors -------------------------------------------------------------

FAULTS = [
    # spec, timeouts, retry, expected error (None: success), partial chunks, attempts
    ("cut,after=5", TIMEOUTS, FAST_RETRY, StreamInterrupted, 5, 1),
    ("stall,after=3", Timeouts(idle=0.3), FAST_RETRY, StreamTimeout, 3, 1),
    ("error,after=2", TIMEOUTS, FAST_RETRY, ServerStreamError, 2, 1),
    ("error,after=0", TIMEOUTS, FAST_RETRY, ServerStreamError, 0, 1),
    ("malformed,after=2", TIMEOUTS, FAST_RETRY, ProtocolError, 2, 1),
    ("nodone", TIMEOUTS, FAST_RETRY, StreamInterrupted, None, 1),
    ("refuse", TIMEOUTS, FAST_RETRY, ConnectError, 0, 3),
    ("reset", TIMEOUTS, FAST_RETRY, ConnectError, 0, 3),
    ("refuse,first=1", TIMEOUTS, FAST_RETRY, None, None, 2),
    ("status:503,first=2", TIMEOUTS, FAST_RETRY, None, None, 3),
    ("status:503", TIMEOUTS, FAST_RETRY, ServerBusy, 0, 3),
    ("status:500", TIMEOUTS, RetryPolicy(attempts=2, backoff_base=0.01), ResponseError, 0, 2),
    ("status:400", TIMEOUTS, FAST_RETRY, ResponseError, 0, 1),
    ("slow_headers,delay=2", Timeouts(first_token=0.3), FAST_RETRY, StreamTimeout, 0, 1),
    ("blank", TIMEOUTS, FAST_RETRY, None, None, 1),
]


@pytest.mark.parametrize("request_", [GEN, CHAT], ids=["generate", "chat"])
@pytest.mark.parametrize("spec,timeouts,retry,error,partial_chunks,attempts", FAULTS,
                         ids=[f[0] for f in FAULTS])
def test_fault_gives_its_documented_outcome(
        transport: Transport, request_: Request, spec: str, timeouts: Timeouts,
        retry: RetryPolicy, error: Optional[Type[BaseException]],
        partial_chunks: Optional[int], attempts: int) -> None:
    want = expected("demo", body_of(request_), EmulatorConfig(response_tokens=(30, 30)))
    with Emulator(EmulatorConfig(response_tokens=(30, 30), faults=spec)) as emu, \
            make(emu.url, transport, request_, timeouts=timeouts, retry=retry) as s:
        got: List[Chunk] = []
        raised: Optional[BaseException] = None
        try:
            for c in s:
                got.append(c)
        except StreamkitError as exc:
            raised = exc
        result = s.result(timeout=WAIT)
    assert result.attempts == attempts
    if error is None:
        assert raised is None and result.error is None
        assert result.text == want.text
        return
    assert isinstance(raised, error) and result.error is raised
    assert raised.__cause__ is not None or isinstance(raised, (StreamError, ResponseError))
    text = "".join(c.text for c in got)
    assert result.text == text
    if hasattr(raised, "partial"):
        assert raised.partial == text
    if partial_chunks is not None:
        assert len(got) == partial_chunks
    if isinstance(raised, StreamTimeout):
        assert raised.phase == ("idle" if "stall" in spec else "first_token")


def test_unknown_model_is_not_retried(emu: Emulator, transport: Transport) -> None:
    before = emu.counters()["requests"]
    with make(emu.url, transport, GenerateRequest("nope", "hi")) as s, \
            pytest.raises(ModelNotFound, match="ollama pull nope"):
        list(s)
    assert emu.counters()["requests"] == before + 1


def test_total_timeout(transport: Transport) -> None:
    with Emulator(EmulatorConfig(tokens_per_second=20, response_tokens=(100, 100))) as emu, \
            make(emu.url, transport, timeouts=Timeouts(total=0.4)) as s:
        with pytest.raises(StreamTimeout) as info:
            list(s)
        assert info.value.phase == "total"
        assert info.value.partial == s.result().text != ""


def test_first_token_timeout_after_headers(transport: Transport) -> None:
    def handler(conn: RawConn) -> None:
        conn.send_head(200, {"Content-Type": "application/x-ndjson"})
        conn.stall(WAIT)

    with RawServer(handler) as server, \
            make(server.url, transport, timeouts=Timeouts(first_token=0.3)) as s:
        with pytest.raises(StreamTimeout) as info:
            list(s)
        assert info.value.phase == "first_token"


def test_sse_comments_do_not_reset_the_idle_deadline(transport: Transport) -> None:
    first = (b'data: {"id":"x","object":"chat.completion.chunk","choices":[{"index":0,'
             b'"delta":{"role":"assistant","content":"Hi"},"finish_reason":null}]}\n\n')
    keep_going = threading.Event()

    def handler(conn: RawConn) -> None:
        conn.send_head(200, {"Content-Type": "text/event-stream"})
        conn.send_chunk(first)
        while not keep_going.wait(0.05) and not conn.closed_by_server():
            if not conn.send_chunk(b": keep-alive\n\n"):
                return

    with RawServer(handler) as server:
        s = Stream(ChatRequest("m", [{"role": "user", "content": "x"}]),
                   dialect=get_dialect("openai"), transport=transport,
                   route=FixedRoute(server.url), timeouts=Timeouts(idle=0.4), retry=NO_RETRY)
        with s:
            s._start()
            started = time.monotonic()
            with pytest.raises(StreamTimeout) as info:
                list(s)
            keep_going.set()
        assert info.value.phase == "idle"
        assert info.value.partial == "Hi"
        assert time.monotonic() - started < WAIT / 2


@pytest.mark.parametrize("take", ["next", "get"])
def test_a_consumer_slower_than_the_idle_timeout_is_not_an_idle_timeout(
        transport: Transport, take: str) -> None:
    # A token every 5 ms, each in its own read; after five chunks the
    # consumer stops for twice the idle timeout. With ``next`` the read is
    # lent to it; with ``get(timeout)`` the worker reads, the channel fills
    # and it waits. The server was never silent either way: the time spent
    # waiting for the consumer must not count as idle.
    config = EmulatorConfig(tokens_per_second=200, response_tokens=(40, 40))
    with Emulator(config) as paced, \
            make(paced.url, transport, timeouts=Timeouts(idle=0.3), queue_size=2) as s:
        chunks: List[Chunk] = []
        for _ in range(5):
            c = next(s) if take == "next" else s.get(timeout=WAIT)
            assert c is not None
            chunks.append(c)
        time.sleep(0.6)  # the slow consumer under test
        chunks.extend(s)
        result = s.result(timeout=WAIT)
    assert result.ok, result.error
    assert "".join(c.text for c in chunks) == result.text
    assert chunks[-1].done


def test_decoder_crash_still_ends_the_stream(emu: Emulator, transport: Transport) -> None:
    class Broken:
        name = "broken"

        def __getattr__(self, name: str) -> Any:
            return getattr(OLLAMA, name)

        def decoder(self, **kw: Any) -> Any:
            inner = OLLAMA.decoder(**kw)

            class Crashy:
                def __getattr__(self, name: str) -> Any:
                    return getattr(inner, name)

                def feed(self, data: bytes, ns: int) -> List[Chunk]:
                    raise KeyError("boom")
            return Crashy()

    s = Stream(GEN, dialect=Broken(), transport=transport,  # type: ignore[arg-type]
               route=FixedRoute(emu.url), timeouts=TIMEOUTS, retry=NO_RETRY)
    with s:
        s._start()
        with pytest.raises(StreamError, match="KeyError") as info:
            list(s)
    assert isinstance(info.value.__cause__, KeyError)


# -- cancel ------------------------------------------------------------------------


def test_cancel_during_a_stall_is_prompt_and_the_server_sees_it(transport: Transport) -> None:
    with Emulator(EmulatorConfig(faults="stall,after=3")) as emu:
        s = make(emu.url, transport, timeouts=Timeouts(idle=60))
        it = iter(s)
        got = [next(it) for _ in range(3)]
        worker = worker_thread(s)
        assert worker is not None and worker.is_alive()
        started = time.monotonic()
        assert s.cancel() is True
        returned = time.monotonic() - started
        worker.join(WAIT)
        freed = time.monotonic() - started
        with pytest.raises(Cancelled) as info:
            next(it)
        assert info.value.partial == "".join(c.text for c in got)
        assert s.cancel() is False  # idempotent
        assert emu.wait_until(lambda c: c["disconnects"] >= 1, timeout=WAIT)
    assert returned < 0.1
    assert freed < 0.1, f"worker took {freed * 1000:.0f} ms to exit after cancel()"


def test_cancel_from_another_thread_ends_iteration(transport: Transport) -> None:
    with Emulator(EmulatorConfig(faults="stall,after=1")) as emu:
        s = make(emu.url, transport, timeouts=Timeouts(idle=60))
        first = next(iter(s))
        threading.Timer(0.05, s.cancel).start()
        with pytest.raises(Cancelled):
            next(s)
        assert first.index == 0
        wait_worker_gone(s, WAIT)


def test_cancel_while_waiting_for_headers(transport: Transport) -> None:
    with Emulator(EmulatorConfig(faults="slow_headers,delay=30")) as emu:
        s = make(emu.url, transport)
        assert emu.wait_until(lambda c: c["requests"] >= 1, timeout=WAIT)
        s.cancel()
        assert isinstance(s.result(timeout=1).error, Cancelled)
        assert wait_worker_gone(s, WAIT) < 1
        assert emu.wait_until(lambda c: c["disconnects"] >= 1, timeout=WAIT)


def test_cancel_during_backoff_is_prompt(transport: Transport) -> None:
    with Emulator(EmulatorConfig(faults="status:503,retry_after=30")) as emu:
        s = make(emu.url, transport, retry=RetryPolicy(attempts=3))
        assert emu.wait_until(lambda c: c["requests"] >= 1, timeout=WAIT)
        started = time.monotonic()
        s.cancel()
        assert isinstance(s.result(timeout=1).error, Cancelled)
        assert wait_worker_gone(s, WAIT) < 1
        assert time.monotonic() - started < 1


def test_cancel_before_start(emu: Emulator, transport: Transport) -> None:
    before = emu.counters()["requests"]
    s = make(emu.url, transport, start=False)
    assert s.cancel() is True
    s._run()  # a dispatcher reaching it later: returns at once, ends nothing twice
    assert isinstance(s.result(timeout=0).error, Cancelled)
    assert emu.counters()["requests"] == before


def test_leaving_the_with_block_early_cancels(transport: Transport) -> None:
    with Emulator(EmulatorConfig(tokens_per_second=50, response_tokens=(500, 500))) as emu:
        with make(emu.url, transport) as s:
            next(iter(s))
        assert isinstance(s.result(timeout=1).error, Cancelled)
        assert emu.wait_until(lambda c: c["disconnects"] >= 1, timeout=WAIT)
        wait_worker_gone(s, WAIT)


def test_an_abandoned_stream_is_cancelled(transport: Transport) -> None:
    with Emulator(EmulatorConfig(faults="stall,after=2")) as emu:
        s = make(emu.url, transport, timeouts=Timeouts(idle=60))
        next(iter(s))
        worker = worker_thread(s)
        assert worker is not None
        del s
        gc.collect()
        worker.join(WAIT)
        assert not worker.is_alive()
        assert emu.wait_until(lambda c: c["disconnects"] >= 1, timeout=WAIT)


def test_a_finished_stream_dropped_at_once_keeps_its_connection(transport: Transport) -> None:
    # The body's last bytes come after the done record; the worker reads them
    # (so the connection can be reused) after the Result is out. Dropping the
    # Stream then must not cancel it: that would shut the connection down.
    tail_sent = threading.Event()
    release_tail = threading.Event()

    def handler(conn: RawConn) -> None:
        conn.send_head()
        conn.send_chunk(b'{"response":"a","done":false}\n')
        conn.send_chunk(b'{"response":"","done":true,"done_reason":"stop"}\n')
        release_tail.wait(WAIT)
        conn.end_chunks()
        tail_sent.set()

    with RawServer(handler) as server:
        s = make(server.url, transport)
        assert s.result(timeout=WAIT).text == "a"
        worker = worker_thread(s)
        del s
        gc.collect()  # the finalizer runs while the worker waits for the tail
        release_tail.set()
        assert tail_sent.wait(WAIT)
        if worker is not None:
            worker.join(WAIT)
        release_tail.clear()
        second = make(server.url, transport)
        release_tail.set()
        assert second.result(timeout=WAIT).text == "a"
        assert server.connections.value == 1


# -- backpressure ------------------------------------------------------------------


def test_a_consumer_that_stops_reading_stops_the_worker(transport: Transport) -> None:
    tokens = 200_000  # ~20 MB: far more than the socket buffers hold
    queue_size = 32
    with Emulator(EmulatorConfig(response_tokens=(tokens, tokens))) as emu:
        s = make(emu.url, transport, queue_size=queue_size)
        it = iter(s)
        next(it)  # streaming has begun; now the consumer stops reading
        w = s._rx
        # The worker had lent its read to the iterating consumer; once the
        # consumer stays away (channel.AWAY_S) it reads ahead, into the bound.
        # (Checked as the emulator's counters move: it writes while the worker reads.)
        assert emu.wait_until(lambda c: w.queued >= queue_size, timeout=WAIT)
        # The emulator stops writing once the channel and the TCP buffers are full.
        assert emu.wait_until(lambda c: c["chunks_sent"] > 1000, timeout=WAIT)
        sent = -1
        while sent != emu.counters()["chunks_sent"]:
            sent = emu.counters()["chunks_sent"]
            emu.wait_until(lambda c, n=sent: c["chunks_sent"] > n, timeout=0.5)  # type: ignore[misc]
        assert sent < tokens / 2
        assert w.peak_queued <= queue_size + w.largest_batch
        assert w.queued >= queue_size  # the worker is parked on a full channel
        s.cancel()
        with pytest.raises(Cancelled):
            for _ in it:
                pass
        wait_worker_gone(s, WAIT)
        assert emu.wait_until(lambda c: c["disconnects"] >= 1, timeout=WAIT)


def test_a_slow_consumer_gets_everything(transport: Transport) -> None:
    with Emulator(EmulatorConfig(response_tokens=(5000, 5000))) as emu:
        request = GenerateRequest("demo", "long")
        s = make(emu.url, transport, request, queue_size=4)
        got = []
        for i, c in enumerate(s):
            got.append(c.text)
            if i % 500 == 0:
                time.sleep(0.01)  # a consumer that is slow now and then, on purpose
        assert "".join(got) == expected("demo", body_of(request), emu.config).text
        assert s._rx.peak_queued <= 4 + s._rx.largest_batch


# -- asyncio -----------------------------------------------------------------------


def test_async_iteration_does_not_block_the_loop(transport: Transport) -> None:
    with Emulator(EmulatorConfig(tokens_per_second=200, response_tokens=(40, 40))) as emu:
        want = expected("demo", body_of(GEN), emu.config).text

        async def main() -> tuple[str, int]:
            ticks = 0
            stop = asyncio.Event()

            async def ticker() -> None:
                nonlocal ticks
                while not stop.is_set():
                    ticks += 1
                    await asyncio.sleep(0.005)

            task = asyncio.create_task(ticker())
            text = ""
            with make(emu.url, transport) as s:
                async for c in s:
                    text += c.text
            stop.set()
            await task
            return text, ticks

        text, ticks = asyncio.run(main())
    assert text == want
    assert ticks >= 5  # the loop kept running during the ~0.2 s stream


def test_async_iteration_raises_the_stream_error(transport: Transport) -> None:
    with Emulator(EmulatorConfig(faults="cut,after=2")) as emu:
        async def main() -> List[Chunk]:
            got: List[Chunk] = []
            with make(emu.url, transport) as s:
                async for c in s:
                    got.append(c)
            return got

        with pytest.raises(StreamInterrupted) as info:
            asyncio.run(main())
        assert info.value.partial != ""


# -- replay ------------------------------------------------------------------------

REPLAY = RetryPolicy(attempts=3, backoff_base=0.01, on_interrupt="replay")


@pytest.mark.parametrize("request_", [GEN, CHAT], ids=["generate", "chat"])
def test_replay_after_a_cut_yields_exactly_the_uncut_text(
        transport: Transport, request_: Request) -> None:
    with Emulator(EmulatorConfig(response_tokens=(30, 30), faults="cut,after=5,first=1")) as emu:
        want = expected("demo", body_of(request_), emu.config)
        with make(emu.url, transport, request_, retry=REPLAY) as s:
            chunks = list(s)
            result = s.result()
    assert result.error is None and result.attempts == 2
    assert "".join(c.text for c in chunks) == result.text == want.text
    assert "".join(c.thinking for c in chunks) == result.thinking == want.thinking
    assert [c.index for c in chunks] == list(range(len(chunks)))


def test_replay_trims_a_chunk_straddling_the_boundary(transport: Transport) -> None:
    cut = [b'{"response":"ab","done":false}', b'{"response":"cd","done":false}']
    full = [b'{"response":"abc","done":false}', b'{"response":"def","done":false}',
            b'{"response":"","done":true,"done_reason":"stop"}']
    seen = threading.Event()
    with RawServer([cut_after(cut, seen), ndjson(full)]) as server, \
            make(server.url, transport, retry=REPLAY) as s:
        chunks = [next(s)]
        seen.set()
        chunks += list(s)
    assert [c.text for c in chunks] == ["ab", "cd", "ef", ""]
    assert [c.index for c in chunks] == [0, 1, 2, 3]
    assert s.result().text == "abcdef"


def test_replay_that_diverges_delivers_nothing_divergent(transport: Transport) -> None:
    cut = [b'{"response":"Hello ","done":false}', b'{"response":"wor","done":false}']
    other = [b'{"response":"Hello ","done":false}', b'{"response":"WORLD","done":false}',
             b'{"response":"!","done":true}']
    seen = threading.Event()
    with RawServer([cut_after(cut, seen), ndjson(other)]) as server, \
            make(server.url, transport, retry=REPLAY) as s:
        got: List[str] = []
        with pytest.raises(StreamDiverged) as info:
            for c in s:
                got.append(c.text)
                seen.set()
    assert got == ["Hello ", "wor"]
    assert info.value.delivered == "Hello wor" == info.value.partial
    assert info.value.replayed.startswith("Hello W")
    assert s.result().text == "Hello wor"


def test_replay_that_ends_short_diverges(transport: Transport) -> None:
    cut = [b'{"response":"Hello ","done":false}', b'{"response":"world","done":false}']
    short = [b'{"response":"Hello","done":true}']
    seen = threading.Event()
    with RawServer([cut_after(cut, seen), ndjson(short)]) as server, \
            make(server.url, transport, retry=REPLAY) as s, pytest.raises(StreamDiverged):
        for _ in s:
            seen.set()


# -- restart (nothing reached the caller) -------------------------------------------

RESTART = RetryPolicy(attempts=3, backoff_base=0.01, on_interrupt="restart")
CUT = [b'{"response":"Hello ","done":false}', b'{"response":"wor","done":false}']
OTHER = [b'{"response":"Good","done":false}', b'{"response":"bye","done":false}',
         b'{"response":"","done":true,"done_reason":"stop"}']


@pytest.mark.parametrize("retry", [RESTART, REPLAY], ids=["restart", "replay"])
def test_a_cut_nobody_saw_restarts_from_scratch(transport: Transport,
                                                 retry: RetryPolicy) -> None:
    # result() without iterating: no chunk reached the caller, so the partial
    # reply is thrown away and the new one (other text: no prefix check) is it.
    with RawServer([cut_after(CUT), ndjson(OTHER)]) as server, \
            make(server.url, transport, retry=retry) as s:
        result = s.result(timeout=WAIT)
        chunks = list(s)
    assert result.ok and result.text == "Goodbye" == "".join(c.text for c in chunks)
    assert [c.index for c in chunks] == [0, 1, 2]
    assert (result.attempts, result.restarts, len(result.hosts_tried)) == (2, 1, 2)
    assert result.timing.chunks == 3 and len(server.requests) == 2


def test_restart_never_restarts_a_stream_whose_caller_took_chunks(
        transport: Transport) -> None:
    seen = threading.Event()
    with RawServer([cut_after(CUT, seen), ndjson(OTHER)]) as server, \
            make(server.url, transport, retry=RESTART) as s:
        got = [next(s).text]
        seen.set()
        with pytest.raises(StreamInterrupted) as info:
            for c in s:
                got.append(c.text)
    assert got == ["Hello ", "wor"] and info.value.partial == "Hello wor"
    result = s.result()
    assert (result.text, result.attempts, result.restarts) == ("Hello wor", 1, 0)
    assert len(server.requests) == 1


def test_restart_is_bounded_by_the_attempt_budget(transport: Transport) -> None:
    with RawServer([cut_after(CUT)] * 3) as server, \
            make(server.url, transport, retry=RESTART) as s:
        result = s.result(timeout=WAIT)
    assert isinstance(result.error, StreamInterrupted)
    assert (result.attempts, result.restarts) == (3, 2) and len(server.requests) == 3


def test_no_replay_by_default(transport: Transport) -> None:
    cut = [b'{"response":"ab","done":false}']
    with RawServer([cut_after(cut), ndjson([b'{"response":"ab","done":true}'])]) as server, \
            make(server.url, transport) as s, pytest.raises(StreamInterrupted):
        list(s)
    assert len(server.requests) == 1


# -- cache -------------------------------------------------------------------------


class DictCache:
    def __init__(self) -> None:
        self.data: Dict[str, Result] = {}

    def get(self, request: Request) -> Optional[Result]:
        return self.data.get(repr(request))

    def put(self, request: Request, result: Result) -> None:
        self.data[repr(request)] = result


def test_cache_hit_is_one_chunk_then_the_end(emu: Emulator, transport: Transport) -> None:
    cache = DictCache()
    with make(emu.url, transport, cache=cache) as s:
        first = s.result(timeout=WAIT)
    assert first.ok and len(cache.data) == 1
    before = emu.counters()["requests"]
    with make(emu.url, transport, cache=cache) as s:
        chunks = list(s)
        hit = s.result()
    assert emu.counters()["requests"] == before
    assert [c.text for c in chunks] == [first.text] and chunks[0].done
    assert hit.cached and hit.attempts == 0 and hit.text == first.text
    assert hit.stats == first.stats


# -- memory: a 64 MiB line without a newline ----------------------------------------

_RSS_CLIENT = textwrap.dedent("""
    import json, sys
    from streamkit.config import RetryPolicy, Timeouts
    from streamkit.records import GenerateRequest
    from streamkit.stream import FixedRoute, Stream
    from streamkit._http import Transport
    from streamkit.wire import get_dialect

    def hwm_kib():
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])

    def run(t, path):
        s = Stream(GenerateRequest("m", path), dialect=get_dialect("ollama"), transport=t,
                   route=FixedRoute(sys.argv[1]), timeouts=Timeouts(idle=30),
                   retry=RetryPolicy(attempts=1))
        s._run()
        return s.result()

    with Transport() as t:
        run(t, "warm-up")
        before = hwm_kib()
        result = run(t, "huge")
        after = hwm_kib()
    print(json.dumps({"error": type(result.error).__name__, "growth_kib": after - before}))
""")


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux /proc")
def test_a_64_mib_line_is_a_protocol_error_with_flat_memory() -> None:
    block = b"x" * (64 * 1024)

    def handler(conn: RawConn) -> None:
        conn.send_head(200, {"Content-Type": "application/x-ndjson"})
        if b"warm-up" in conn.request.body:
            conn.send_chunk(b'{"response":"ok","done":true}\n')
            conn.end_chunks()
            return
        conn.send(b'%x\r\n{"response":"' % (64 * 1024 * 1024 + 13))
        for _ in range(1024):  # 64 MiB, no newline, in one huge HTTP chunk
            if not conn.send(block):
                return
        conn.send(b'"}\r\n0\r\n\r\n')

    with RawServer(handler) as server:
        out = subprocess.run([sys.executable, "-c", _RSS_CLIENT, server.url],
                             capture_output=True, text=True, timeout=50)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["error"] == "ProtocolError"
    assert report["growth_kib"] < 100 * 1024, report


# -- helpers -------------------------------------------------------------------------


def ndjson(lines: List[bytes]) -> Any:
    def handler(conn: RawConn) -> None:
        conn.send_head(200, {"Content-Type": "application/x-ndjson"})
        for line in lines:
            conn.send_chunk(line + b"\n")
        conn.end_chunks()
    return handler


def cut_after(lines: List[bytes], seen: Optional[threading.Event] = None) -> Any:
    """Send ``lines``, then cut; with ``seen``, cut only once it is set (the
    consumer took a chunk: a replay, not a restart, follows)."""
    def handler(conn: RawConn) -> None:
        conn.send_head(200, {"Content-Type": "application/x-ndjson"})
        for line in lines:
            conn.send_chunk(line + b"\n")
        if seen is not None:
            seen.wait(WAIT)
        conn.cut()
    return handler


def stall_after(lines: List[bytes]) -> Any:
    def handler(conn: RawConn) -> None:
        conn.send_head(200, {"Content-Type": "application/x-ndjson"})
        for line in lines:
            conn.send_chunk(line + b"\n")
        conn.stall(WAIT)
    return handler
