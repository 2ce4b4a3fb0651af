"""Dispatcher: the worker pool, map/events, close, Ctrl-C, hosts end to end.

The first half drives the pool with fake streams (no I/O); the second half
runs against the emulator. The router's own tests are in test_stream_routing.py.
"""

from __future__ import annotations

import _thread
import gc
import logging
import threading
import time
from typing import Any, Callable, Dict, Iterator, List, Optional

import pytest

from streamkit.dispatch import Dispatcher
from streamkit.errors import (
    Cancelled,
    ConfigError,
    ConnectError,
    StreamInterrupted,
)
from streamkit.records import Chunk, GenerateRequest, Result

WAIT = 5.0  # generous bound for "this happens soon" on a loaded 2-core machine


# ---------------------------------------------------------------------------
# The pool, with fake streams. A request's prompt says what its stream does:
# "ok:N" sends N chunks, "fail" fails before streaming, "block" waits until
# cancelled, "sleep:S" sends one chunk after S seconds, "gate" waits for
# FakeClient.gate.


class FakeStream:
    def __init__(self, request: GenerateRequest, client: FakeClient) -> None:
        self.request = request
        self.id = request.id
        self.host: Optional[str] = None
        self.chunks: List[Chunk] = []
        self.thread_name = ""
        self._client = client
        self._cancel = threading.Event()
        self._done = threading.Event()
        self._result: Optional[Result] = None

    def _run(self, sink: Optional[Callable[[Chunk], None]] = None,
             poller: Optional[object] = None) -> None:
        self.thread_name = threading.current_thread().name
        self._client.enter()
        error: Optional[BaseException] = None
        text = ""
        try:
            kind, _, arg = self.request.prompt.partition(":")
            if self._cancel.is_set():
                raise Cancelled()
            if kind == "fail":
                raise ConnectError("fake refusal")
            if kind == "block" and self._cancel.wait(30):
                raise Cancelled()
            if kind == "gate" and not self._client.gate.wait(30):
                raise AssertionError("gate never opened")
            if kind == "sleep" and self._cancel.wait(float(arg)):
                raise Cancelled()
            for i in range(int(arg) if kind == "ok" else 1):
                chunk = Chunk(f"{self.request.prompt}/{i} ", index=i)
                text += chunk.text
                (sink or self.chunks.append)(chunk)
        except BaseException as exc:
            error = exc
        finally:
            self._result = Result(id=self.id, model=self.request.model, host="http://fake:1",
                                  text=text, error=error)
            self._client.leave()
            self._done.set()

    def cancel(self) -> bool:
        self._cancel.set()
        return True

    def result(self, timeout: Optional[float] = None) -> Result:
        assert self._done.wait(timeout if timeout is not None else 30)
        assert self._result is not None
        return self._result


class FakeClient:
    dialect = "ollama"
    host = "http://fake:1"

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.streams: List[FakeStream] = []
        self.running = 0
        self.max_running = 0
        self.lock = threading.Condition()

    def wait_running(self, n: int) -> bool:
        with self.lock:
            return self.lock.wait_for(lambda: self.running >= n, WAIT)

    def _new_stream(self, request: GenerateRequest, route: Any = None) -> FakeStream:
        stream = FakeStream(request, self)
        with self.lock:
            self.streams.append(stream)
        return stream

    def enter(self) -> None:
        with self.lock:
            self.running += 1
            self.max_running = max(self.max_running, self.running)
            self.lock.notify_all()

    def leave(self) -> None:
        with self.lock:
            self.running -= 1

    def close(self) -> None:
        pass


def req(prompt: str, id: Optional[str] = None) -> GenerateRequest:
    return GenerateRequest("demo", prompt, id=id)


def test_workers_are_fixed_and_named_and_never_exceed_the_pool() -> None:
    client = FakeClient()
    with Dispatcher(client, workers=3) as d:  # type: ignore[arg-type]
        streams = [d.submit(req("gate")) for _ in range(12)]
        names = {t.name for t in threading.enumerate() if t.name.startswith("streamkit-dis")}
        assert names == {"streamkit-dispatch-1", "streamkit-dispatch-2", "streamkit-dispatch-3"}
        assert client.wait_running(3)
        client.gate.set()
        results = [s.result(WAIT) for s in streams]
    assert all(r.ok for r in results)
    assert client.max_running == 3
    assert {s.thread_name for s in streams} <= names  # type: ignore[attr-defined]


def test_submit_after_close_raises_and_close_is_idempotent() -> None:
    d = Dispatcher(FakeClient(), workers=2)  # type: ignore[arg-type]
    d.submit(req("ok:1")).result(WAIT)
    d.close()
    d.close()
    with pytest.raises(RuntimeError):
        d.submit(req("ok:1"))
    with pytest.raises(RuntimeError):
        d.map([req("ok:1")])
    assert not [t for t in threading.enumerate() if t.name.startswith("streamkit-dispatch")]


def test_close_cancels_queued_and_running_streams_and_joins() -> None:
    client = FakeClient()
    d = Dispatcher(client, workers=2)  # type: ignore[arg-type]
    streams = [d.submit(req("block")) for _ in range(10)]
    started = time.monotonic()
    d.close()
    assert time.monotonic() - started < 2.0
    results = [s.result(0) for s in streams]
    assert all(isinstance(r.error, Cancelled) for r in results)


def test_close_without_cancel_lets_pending_work_finish() -> None:
    d = Dispatcher(FakeClient(), workers=2)  # type: ignore[arg-type]
    streams = [d.submit(req("sleep:0.02")) for _ in range(6)]
    d.close(cancel_pending=False)
    assert all(s.result(0).ok for s in streams)


def test_close_without_cancel_is_bounded_by_its_timeout() -> None:
    d = Dispatcher(FakeClient(), workers=1)  # type: ignore[arg-type]
    stream = d.submit(req("block"))
    started = time.monotonic()
    d.close(cancel_pending=False, timeout=0.2)
    assert time.monotonic() - started < 2.0
    assert isinstance(stream.result(0).error, Cancelled)


def test_a_forgotten_dispatcher_stops_its_workers() -> None:
    d = Dispatcher(FakeClient(), workers=2)  # type: ignore[arg-type]
    d.submit(req("ok:1")).result(WAIT)
    threads = [t for t in threading.enumerate() if t.name.startswith("streamkit-dispatch")]
    assert len(threads) == 2
    del d
    gc.collect()
    for thread in threads:
        thread.join(WAIT)
        assert not thread.is_alive()


def test_map_yields_every_result_once_with_ids_from_the_input_index() -> None:
    with Dispatcher(FakeClient(), workers=4) as d:  # type: ignore[arg-type]
        results = list(d.map([req("ok:3") for _ in range(50)] + [req("ok:1", id="mine")]))
    assert sorted(r.id or "" for r in results) == sorted([str(i) for i in range(50)] + ["mine"])
    assert all(r.text == "ok:3/0 ok:3/1 ok:3/2 " for r in results if r.id != "mine")


def test_map_ordered_yields_in_input_order() -> None:
    # Earlier requests finish later, so completion order is reversed.
    prompts = [f"sleep:{0.01 * (8 - i % 8):.2f}" for i in range(24)]
    with Dispatcher(FakeClient(), workers=8, max_pending=4) as d:  # type: ignore[arg-type]
        ids = [r.id for r in d.map([req(p) for p in prompts], ordered=True)]
    assert ids == [str(i) for i in range(24)]


def _counted(n: int, prompt: str, alive: List[int], pulled: List[int]) -> Iterator[GenerateRequest]:
    for _ in range(n):
        alive[0] += 1
        alive[1] = max(alive[1], alive[0])
        pulled[0] += 1
        yield req(prompt)


@pytest.mark.parametrize("ordered", [False, True])
def test_map_reads_input_lazily(ordered: bool) -> None:
    alive, pulled = [0, 0], [0]
    with Dispatcher(FakeClient(), workers=4, max_pending=16) as d:  # type: ignore[arg-type]
        results = d.map(_counted(10**6, "ok:1", alive, pulled), ordered=ordered)
        for n, result in enumerate(results, 1):
            assert result.ok
            alive[0] -= 1
            if n == 3000:
                break
    assert alive[1] <= 16 + 4
    assert pulled[0] <= 3000 + 16 + 4


def test_map_raises_the_first_error_and_cancels_the_rest() -> None:
    client = FakeClient()
    with Dispatcher(client, workers=2) as d:  # type: ignore[arg-type]
        results = d.map([req("block"), req("fail"), req("block"), req("block")])
        with pytest.raises(ConnectError):
            next(results)
        for stream in client.streams:
            assert isinstance(stream.result(WAIT).error, (Cancelled, ConnectError))


def test_map_return_exceptions_yields_failed_results() -> None:
    with Dispatcher(FakeClient(), workers=2) as d:  # type: ignore[arg-type]
        results = list(d.map([req("ok:1"), req("fail"), req("ok:2")], ordered=True,
                             return_exceptions=True))
    assert [type(r.error) for r in results] == [type(None), ConnectError, type(None)]


def test_leaving_map_early_cancels_its_requests() -> None:
    client = FakeClient()
    with Dispatcher(client, workers=2) as d:  # type: ignore[arg-type]
        results = d.map([req("ok:1")] + [req("block") for _ in range(5)])
        assert next(results).ok
        results.close()  # type: ignore[attr-defined]
        errors = [s.result(WAIT).error for s in client.streams[1:]]
    assert all(isinstance(e, Cancelled) for e in errors)


def test_events_merges_chunks_then_results() -> None:
    with Dispatcher(FakeClient(), workers=3) as d:  # type: ignore[arg-type]
        events = list(d.events([req(f"ok:{n}") for n in (5, 1, 3, 40)]))
    by_id: Dict[str, List[Any]] = {}
    for request_id, item in events:
        by_id.setdefault(request_id, []).append(item)
    assert set(by_id) == {"0", "1", "2", "3"}
    for request_id, n in zip("0123", (5, 1, 3, 40)):
        items = by_id[request_id]
        assert [c.index for c in items[:-1]] == list(range(n))
        assert isinstance(items[-1], Result) and items[-1].ok
        assert items[-1].text == "".join(c.text for c in items[:-1])


def test_events_backpressure_then_early_exit_does_not_hang(monkeypatch: pytest.MonkeyPatch) -> None:
    import streamkit._dispatch.fanout as fanout
    monkeypatch.setattr(fanout, "EVENTS_BUFFER", 4)
    with Dispatcher(FakeClient(), workers=2) as d:  # type: ignore[arg-type]
        events = d.events([req("ok:1000") for _ in range(4)])
        first = next(events)
        assert isinstance(first[1], Chunk)
        events.close()  # type: ignore[attr-defined]


def test_ctrl_c_in_the_map_consumer_cancels_everything_within_a_second() -> None:
    client = FakeClient()
    d = Dispatcher(client, workers=4)  # type: ignore[arg-type]
    try:
        side = d.submit(req("block"))
        timer = threading.Timer(0.3, _thread.interrupt_main)
        timer.start()
        started = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            for _ in d.map(req("block") for _ in range(100)):
                pass
        elapsed = time.monotonic() - started - 0.3
        timer.join()
        assert elapsed < 1.0
        assert isinstance(side.result(WAIT).error, Cancelled)
        assert all(isinstance(s.result(WAIT).error, Cancelled) for s in client.streams)
    finally:
        d.close()


def test_dispatcher_validates_its_arguments() -> None:
    with pytest.raises(ConfigError):
        Dispatcher(FakeClient(), workers=0)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        Dispatcher(FakeClient(), max_pending=-1)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        Dispatcher(FakeClient(), timeouts=None)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        Dispatcher(FakeClient(), hosts=[])  # type: ignore[arg-type]


# ---------------------------------------------------------------------------
# Against the emulator


emulator = pytest.importorskip("streamkit.emulator")
Emulator, EmulatorConfig, expected = emulator.Emulator, emulator.EmulatorConfig, emulator.expected


def _gen(i: int, tokens: int = 8) -> GenerateRequest:
    return GenerateRequest("demo", f"prompt {i}", options={"num_predict": tokens})


def _expected_text(request: GenerateRequest, config: Any) -> str:
    from streamkit.wire import get_dialect
    _, body = get_dialect("ollama").generate(request)
    return str(expected("demo", body, config).text)


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    import os
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _dispatch_threads() -> List[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("streamkit-dispatch")]


def test_2000_requests_through_32_workers_each_once_with_the_right_text(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    import urllib3.util.connection as u3conn
    connects = [0]
    real_connect = u3conn.create_connection

    def counting_connect(*args: Any, **kwargs: Any) -> Any:
        connects[0] += 1
        return real_connect(*args, **kwargs)

    monkeypatch.setattr(u3conn, "create_connection", counting_connect)
    caplog.set_level(logging.WARNING)
    requests = [_gen(i) for i in range(2000)]
    with Emulator(EmulatorConfig(parallel=32, tokens_per_second=0)) as emu:
        with Dispatcher(host=emu.url, workers=32) as d:
            results = list(d.map(requests))
        assert not _dispatch_threads()
        config = emu.config
    assert sorted(int(r.id or -1) for r in results) == list(range(2000))
    wrong = [r.id for r in results
             if r.text != _expected_text(requests[int(r.id or 0)], config) or r.host != emu.url]
    assert not wrong
    assert not [rec for rec in caplog.records if "pool is full" in rec.getMessage()]
    assert connects[0] <= 32 + 4  # connections are reused across requests


def test_submitted_streams_iterate_like_client_streams() -> None:
    with Emulator(EmulatorConfig(parallel=4, tokens_per_second=0)) as emu, \
            Dispatcher(host=emu.url, workers=2) as d:
        streams = [d.submit(_gen(i, 20)) for i in range(6)]
        texts = ["".join(c.text for c in s) for s in streams]
        config = emu.config
    assert texts == [_expected_text(_gen(i, 20), config) for i in range(6)]


def test_events_and_ordered_map_against_the_emulator() -> None:
    requests = [_gen(i, 30) for i in range(40)]
    with Emulator(EmulatorConfig(parallel=8, tokens_per_second=0)) as emu:
        with Dispatcher(host=emu.url, workers=8, max_pending=4) as d:
            texts: Dict[str, str] = {}
            finals: Dict[str, Result] = {}
            for request_id, item in d.events(requests):
                if isinstance(item, Chunk):
                    assert request_id not in finals
                    texts[request_id] = texts.get(request_id, "") + item.text
                else:
                    finals[request_id] = item
            ordered = [r.id for r in d.map(requests, ordered=True)]
        config = emu.config
    assert ordered == [str(i) for i in range(40)]
    assert set(finals) == {str(i) for i in range(40)}
    for request_id, result in finals.items():
        want = _expected_text(requests[int(request_id)], config)
        assert result.ok and result.text == want and texts[request_id] == want


def test_lazy_input_of_a_million_requests_keeps_memory_flat() -> None:
    alive, pulled = [0, 0], [0]

    def generator() -> Iterator[GenerateRequest]:
        for i in range(10**6):
            alive[0] += 1
            alive[1] = max(alive[1], alive[0])
            pulled[0] += 1
            yield _gen(i, 4)

    with Emulator(EmulatorConfig(parallel=8, tokens_per_second=0)) as emu, \
            Dispatcher(host=emu.url, workers=8, max_pending=16) as d:
        rss_early = 0.0
        for n, result in enumerate(d.map(generator()), 1):
            assert result.ok
            alive[0] -= 1
            if n == 300:
                gc.collect()
                rss_early = _rss_mb()
            if n == 2000:
                break
        gc.collect()
        growth = _rss_mb() - rss_early
    assert alive[1] <= 16 + 8
    assert pulled[0] <= 2000 + 16 + 8
    assert growth < 20, f"RSS grew {growth:.1f} MB over 1700 requests"


def test_a_host_stopped_mid_run_is_skipped_and_every_request_completes(
        caplog: pytest.LogCaptureFixture) -> None:
    # caplog keeps the retry warnings: they must not keep sockets open.
    retry = sk_retry(attempts=6, on_interrupt="replay")
    emus = [Emulator(EmulatorConfig(parallel=4, tokens_per_second=0)).start() for _ in range(3)]
    try:
        urls = [e.url for e in emus]
        dead = urls[1]
        with Dispatcher(hosts=[(u, 4) for u in urls], workers=12, retry=retry) as d:
            results: List[Result] = []
            served_at_stop = 0
            for result in d.map(_gen(i, 16) for i in range(900)):
                results.append(result)
                if len(results) == 150:
                    emus[1].stop()
                    served_at_stop = d._router.snapshot()[dead]["served"]  # type: ignore
                    after_stop = len(results)
            snapshot = d._router.snapshot()  # type: ignore[union-attr]
    finally:
        for e in emus:
            e.stop()
    assert len(results) == 900 and all(r.ok for r in results)
    assert sorted(int(r.id or -1) for r in results) == list(range(900))
    # Results reach us in completion order, at most workers + max_pending
    # (12 + 24) behind: anything that finished on the dead host came before.
    late = results[after_stop + 36:]
    assert all(r.host in (urls[0], urls[2]) for r in late)
    assert {urls[0], urls[2]} <= {r.host for r in late}
    assert snapshot[dead]["failures"] >= 1
    # While cooled down it gets nothing; each time the cooldown ends, at most
    # its 4 slots probe it (1 + 2 + 4 + 8 + 16 s: a handful of cooldowns).
    assert snapshot[dead]["served"] - served_at_stop <= 4 * 6
    assert any(r.attempts > 1 for r in results)


def sk_retry(**kw: Any) -> Any:
    from streamkit.config import RetryPolicy
    return RetryPolicy(backoff_base=0.02, backoff_max=0.1, **kw)


def test_ctrl_c_while_iterating_map_cancels_every_stream_within_a_second() -> None:
    config = EmulatorConfig(parallel=16, tokens_per_second=0, faults="stall,after=1")
    with Emulator(config) as emu, Dispatcher(host=emu.url, workers=8) as d:
        side = d.submit(_gen(999))
        timer = threading.Timer(0.5, _thread.interrupt_main)
        timer.start()
        started = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            for _ in d.map(_gen(i) for i in range(200)):
                pass
        interrupted_in = time.monotonic() - started - 0.5
        timer.join()
        assert interrupted_in < 1.0
        assert isinstance(side.result(WAIT).error, Cancelled)
        # The server sees every running stream leave (8 workers: 8 streams).
        assert emu.wait_until(lambda c: c["disconnects"] >= 8 and c["in_flight"] == 0, WAIT)


def test_a_client_pool_smaller_than_the_workers_is_reported(
        caplog: pytest.LogCaptureFixture) -> None:
    from streamkit.client import Client
    with Client("http://127.0.0.1:9", pool_size=4) as client:
        caplog.set_level(logging.WARNING, logger="streamkit")
        Dispatcher(client, workers=16).close()
        assert "pool_size=16" in caplog.text
        caplog.clear()
        Dispatcher(client, hosts=[("http://127.0.0.1:9", 2)], workers=16).close()
        assert "pool_size" not in caplog.text


@pytest.mark.parametrize("fault", ["cut,after=3,first=1", "stall,after=3,first=1"])
def test_map_restarts_a_cut_or_stalled_stream_from_scratch(fault: str) -> None:
    from streamkit.config import Timeouts
    config = EmulatorConfig(parallel=2, tokens_per_second=0, faults=fault)
    with Emulator(config) as emu, Dispatcher(host=emu.url, workers=1, retry=sk_retry(),
                                             timeouts=Timeouts(idle=0.3)) as d:
        (result,) = d.map([_gen(0, 12)])
    assert result.ok and result.text == _expected_text(_gen(0, 12), config)
    assert (result.attempts, result.restarts) == (2, 1)
    assert result.hosts_tried == (emu.url, emu.url) and result.timing.chunks == 13


def test_events_never_restarts_a_stream_whose_chunks_went_out() -> None:
    config = EmulatorConfig(parallel=2, tokens_per_second=0, faults="cut,after=3,first=1")
    with Emulator(config) as emu, Dispatcher(host=emu.url, workers=1, retry=sk_retry()) as d:
        events = list(d.events([_gen(0, 12)]))
        counters = emu.counters()
    chunks = [item for _, item in events if isinstance(item, Chunk)]
    result = events[-1][1]
    assert isinstance(result, Result) and isinstance(result.error, StreamInterrupted)
    assert (result.attempts, result.restarts, counters["requests"]) == (1, 0, 1)
    assert "".join(c.text for c in chunks) == result.text != ""
