"""The stream channel on its own: bound, end once, take timeout, cancel, callbacks.

Pure unit tests: no sockets, no worker; a plain cancel token, a recorder
that lists what it was told, and result builders made here.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Callable, List, Optional, Tuple

import pytest

from streamkit._stream import channel as channel_module
from streamkit._stream.channel import (
    BatchSink,
    ReceiveEnd,
    SendEnd,
    Stopped,
    discard,
    open_channel,
)
from streamkit.errors import Cancelled, StreamError
from streamkit.records import Chunk, Result

WAIT = 5.0  # generous bound for "this happens soon" on a loaded 2-core machine


class Token:
    """The smallest Cancellable: an Event, no sockets."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.cancels = 0

    @property
    def cancelled(self) -> bool:
        return self.event.is_set()

    def cancel(self) -> bool:
        self.cancels += 1
        first = not self.event.is_set()
        self.event.set()
        return first


class Recorder:
    def __init__(self) -> None:
        self.batches: List[List[Chunk]] = []

    def record(self, chunks: List[Chunk]) -> None:
        self.batches.append(chunks)

    def reset(self) -> None:
        self.batches = []


def build(error: Optional[BaseException]) -> Result:
    return Result(id="t", model="m", host="h", text="end", error=error)


def chunks(*texts: str, start: int = 0) -> List[Chunk]:
    return [Chunk(text, index=start + i) for i, text in enumerate(texts)]


def channel(capacity: int = 4) -> Tuple[SendEnd, ReceiveEnd, Token, Recorder]:
    token, recorder = Token(), Recorder()
    tx, rx = open_channel(capacity, token, recorder)
    return tx, rx, token, recorder


def in_thread(fn: Callable[[], object]) -> Tuple[threading.Thread, List[object]]:
    """Run ``fn`` in a thread; its return value or exception lands in the list."""
    out: List[object] = []

    def run() -> None:
        try:
            out.append(fn())
        except BaseException as exc:  # handed to the test, which asserts on it
            out.append(exc)
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


# -- sending and taking -------------------------------------------------------------


def test_batches_come_out_in_order_then_the_end_record() -> None:
    tx, rx, _, recorder = channel()
    assert tx.claim(None)
    tx.send(chunks("a", "b"))
    tx.send(chunks("c", start=2))
    assert tx.finish(None, build)
    assert [c.text for c in rx.take(0)] == ["a", "b"]  # type: ignore[union-attr]
    assert [c.text for c in rx.take(0)] == ["c"]  # type: ignore[union-attr]
    end = rx.take(0)
    assert isinstance(end, Result) and end.ok and end.text == "end"
    assert rx.take(0) is end  # the end record stays; taking it again does not block
    assert [len(b) for b in recorder.batches] == [2, 1]


def test_take_times_out_with_none_and_zero_polls() -> None:
    _, rx, _, _ = channel()
    assert rx.take(0) is None
    started = time.monotonic()
    assert rx.take(0.05) is None
    assert time.monotonic() - started >= 0.04


def test_take_wakes_when_a_batch_arrives() -> None:
    tx, rx, _, _ = channel()
    tx.claim(None)
    thread, out = in_thread(lambda: rx.take(WAIT))
    time.sleep(0.02)  # let the taker block first (the assert holds either way)
    tx.send(chunks("x"))
    thread.join(WAIT)
    assert isinstance(out[0], list) and out[0][0].text == "x"


def _wait_until(predicate: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting for the condition"
        time.sleep(0.001)


def test_a_send_to_a_consumer_that_is_not_waiting_wakes_nobody() -> None:
    tx, rx, _, _ = channel(capacity=100)
    tx.claim(None)
    for i in range(50):
        tx.send(chunks(str(i), start=i))
    assert [rx.take(0) is not None for _ in range(50)] == [True] * 50
    assert rx.wakes == 0


def test_a_waiting_consumer_is_woken_once_per_send() -> None:
    tx, rx, _, _ = channel(capacity=100)
    tx.claim(None)
    state = rx._state
    got: List[str] = []

    def consume() -> None:
        for _ in range(20):
            batch = rx.take(WAIT)
            assert isinstance(batch, list)
            got.extend(c.text for c in batch)

    thread, out = in_thread(consume)
    for i in range(20):
        _wait_until(lambda: state.ringing)  # the consumer waits on the bell
        tx.send(chunks(str(i), start=i))
    thread.join(WAIT)
    assert out == [None] and got == [str(i) for i in range(20)]
    assert rx.wakes == 20


def test_a_ring_that_races_a_timed_out_wait_is_taken_back() -> None:
    # The producer rings just as the consumer's wait times out: the consumer
    # must take the ring back, else the bell stays released and every later
    # wait returns at once (a busy loop instead of a wait).
    tx, rx, _, _ = channel()
    tx.claim(None)
    state = rx._state
    real = threading.Lock()
    real.acquire()

    class RacingBell:
        def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
            if blocking:  # the wait: time out, with a ring arriving meanwhile
                with state.lock:
                    state.ringing = False
                    real.release()
                return False
            return real.acquire(False)

        def release(self) -> None:
            real.release()

    state.bell = RacingBell()  # type: ignore[assignment]
    assert rx.take(0.01) is None
    assert real.locked()  # the ring was taken back: the next wait will block


def test_a_second_concurrent_taker_is_served_too() -> None:
    tx, rx, _, _ = channel()
    tx.claim(None)
    state = rx._state
    first, out1 = in_thread(lambda: rx.take(WAIT))
    _wait_until(lambda: state.ringing)
    second, out2 = in_thread(lambda: rx.take(WAIT))
    _wait_until(lambda: state.taking == 1)
    tx.send(chunks("a"))
    tx.send(chunks("b", start=1))
    first.join(WAIT)
    second.join(WAIT)
    assert sorted(c.text for out in (out1, out2) for c in out[0]) == ["a", "b"]  # type: ignore


def test_a_producer_waits_while_the_channel_holds_capacity_chunks() -> None:
    tx, rx, _, _ = channel(capacity=2)
    tx.claim(None)
    tx.send(chunks("a", "b"))  # now full
    sent = threading.Event()

    def producer() -> None:
        tx.send(chunks("c", start=2))
        sent.set()
    thread, out = in_thread(producer)
    assert not sent.wait(0.1)  # blocked on the bound
    assert rx.queued == 2
    rx.take(0)  # frees space: wakes the producer
    assert sent.wait(WAIT)
    thread.join(WAIT)
    assert out == [None]
    assert rx.peak_queued == 2 and rx.largest_batch == 2


def test_one_batch_may_exceed_the_bound_but_then_the_next_waits() -> None:
    tx, rx, _, _ = channel(capacity=2)
    tx.claim(None)
    tx.send(chunks("a"))
    tx.send(chunks("b", "c", "d", start=1))  # 1 < 2: accepted whole
    assert rx.queued == 4 and rx.peak_queued == 4


def test_lift_bound_releases_a_waiting_producer() -> None:
    tx, rx, _, _ = channel(capacity=1)
    tx.claim(None)
    tx.send(chunks("a"))
    thread, out = in_thread(lambda: tx.send(chunks("b", start=1)))
    time.sleep(0.02)
    rx.lift_bound()
    thread.join(WAIT)
    assert not thread.is_alive() and out == [None]
    assert rx.queued == 2


def test_a_sink_gets_the_chunks_instead_of_the_queue() -> None:
    tx, rx, _, recorder = channel(capacity=1)
    got: List[str] = []
    assert tx.claim(lambda c: got.append(c.text))
    tx.send(chunks("a", "b"))
    tx.send(chunks("c", start=2))  # never waits: nothing is queued
    assert got == ["a", "b", "c"]
    assert rx.queued == 0 and not rx.has_unread()
    assert len(recorder.batches) == 2  # the record is kept either way


def test_only_one_producer_may_claim() -> None:
    tx, _, _, _ = channel()
    assert tx.claim(None)
    assert not tx.claim(None)


# -- the end record -------------------------------------------------------------------


def test_the_end_record_is_written_once_first_caller_wins() -> None:
    tx, rx, _, _ = channel()
    built: List[Optional[BaseException]] = []

    def counting(error: Optional[BaseException]) -> Result:
        built.append(error)
        return build(error)
    first = StreamError("first")
    assert tx.finish(first, counting)
    assert not tx.finish(None, counting)
    assert not tx.cancel(counting)
    assert built == [first]  # the builder ran once, for the winner
    end = rx.end
    assert end is not None and end.error is first
    assert tx.ended


def test_many_threads_racing_to_end_write_one_record() -> None:
    tx, rx, _, _ = channel()
    barrier = threading.Barrier(8)
    wins: List[bool] = []
    lock = threading.Lock()

    def racer() -> None:
        barrier.wait(WAIT)
        won = tx.finish(None, build)
        with lock:
            wins.append(won)
    threads = [threading.Thread(target=racer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    assert sorted(wins) == [False] * 7 + [True]
    assert rx.end is not None


def test_send_after_the_end_raises_stopped_and_records_nothing() -> None:
    tx, _, _, recorder = channel()
    tx.claim(None)
    tx.finish(None, build)
    with pytest.raises(Stopped):
        tx.send(chunks("late"))
    assert recorder.batches == []


def test_queued_chunks_stay_readable_after_the_end() -> None:
    tx, rx, _, _ = channel()
    tx.claim(None)
    tx.send(chunks("a"))
    tx.cancel(build)
    assert rx.has_unread()
    assert isinstance(rx.take(0), list)
    end = rx.take(0)
    assert isinstance(end, Result) and isinstance(end.error, Cancelled)


def test_wait_end_times_out_then_sees_the_end() -> None:
    tx, rx, _, _ = channel()
    assert not rx.wait_end(0.02)
    thread, out = in_thread(lambda: rx.wait_end(WAIT))
    time.sleep(0.02)
    tx.finish(None, build)
    thread.join(WAIT)
    assert out == [True]
    assert rx.wait_end(0)


# -- cancel ---------------------------------------------------------------------------


def test_cancel_ends_with_cancelled_then_cancels_the_token() -> None:
    tx, rx, token, _ = channel()
    seen: List[bool] = []

    def builder(error: Optional[BaseException]) -> Result:
        seen.append(token.cancelled)  # the end comes before the token is cancelled
        return build(error)
    assert tx.cancel(builder)
    assert seen == [False]
    assert token.cancelled and token.cancels == 1
    end = rx.end
    assert end is not None and isinstance(end.error, Cancelled)
    assert not tx.cancel(builder) and token.cancels == 1


def test_cancel_wakes_a_blocked_taker_and_a_blocked_producer(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(channel_module, "PUT_POLL_S", 60.0)  # only a wake-up can free it
    tx, rx, _, _ = channel(capacity=1)
    tx.claim(None)
    tx.send(chunks("a"))
    producer, produced = in_thread(lambda: tx.send(chunks("b", start=1)))
    time.sleep(0.02)
    tx.cancel(build)
    producer.join(WAIT)
    assert produced and isinstance(produced[0], Stopped)
    rx.take(0)  # the queued batch
    taker, taken = in_thread(lambda: rx.take(WAIT))
    taker.join(WAIT)
    assert isinstance(taken[0], Result) and isinstance(taken[0].error, Cancelled)


def test_a_token_cancelled_without_an_end_stops_a_blocked_producer(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The garbage-collector path: the finalizer only cancels the token (no lock,
    # no notify), so the producer sees it at its next poll.
    monkeypatch.setattr(channel_module, "PUT_POLL_S", 0.01)
    tx, rx, token, _ = channel(capacity=1)
    tx.claim(None)
    tx.send(chunks("a"))
    thread, out = in_thread(lambda: tx.send(chunks("b", start=1)))
    time.sleep(0.02)
    token.cancel()
    thread.join(WAIT)
    assert isinstance(out[0], Cancelled)
    assert rx.end is None  # the producer's own finally writes the end


# -- callbacks and asyncio waiters ------------------------------------------------------


def test_callbacks_run_once_with_the_end_record_also_when_added_late() -> None:
    tx, rx, _, _ = channel()
    early: List[Result] = []
    late: List[Result] = []
    rx.add_callback(early.append)
    tx.finish(None, build)
    tx.finish(StreamError("again"), build)
    rx.add_callback(late.append)
    assert len(early) == 1 and early[0].ok
    assert late == early


def test_a_raising_callback_is_logged_and_the_others_still_run(
        caplog: pytest.LogCaptureFixture) -> None:
    tx, rx, _, _ = channel()
    got: List[Result] = []

    def bad(result: Result) -> None:
        raise ValueError("callback bug")
    rx.add_callback(bad)
    rx.add_callback(got.append)
    assert tx.finish(None, build)
    assert len(got) == 1
    assert "done-callback raised" in caplog.text


def test_an_asyncio_waiter_is_woken_by_a_batch() -> None:
    tx, rx, _, _ = channel()
    tx.claim(None)

    async def wait_for_batch() -> object:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        assert rx.add_waiter(loop, fut)
        sender = threading.Thread(target=tx.send, args=(chunks("x"),))
        sender.start()
        try:
            await asyncio.wait_for(fut, WAIT)
        finally:
            rx.remove_waiter(fut)
            sender.join(WAIT)
        return rx.take(0)

    got = asyncio.run(wait_for_batch())
    assert isinstance(got, list) and got[0].text == "x"


def test_add_waiter_refuses_when_there_is_something_to_take() -> None:
    tx, rx, _, _ = channel()
    tx.claim(None)
    tx.send(chunks("x"))
    loop = asyncio.new_event_loop()
    try:
        assert not rx.add_waiter(loop, loop.create_future())
    finally:
        loop.close()


# -- rewind: a restart from scratch, only if the consumer saw nothing ----------------


def test_rewind_drops_unseen_chunks_and_the_record() -> None:
    tx, rx, _, recorder = channel()
    tx.claim(None)
    tx.send(chunks("a", "b"))
    assert tx.rewind()
    assert rx.queued == 0 and not rx.has_unread() and recorder.batches == []
    tx.send(chunks("x"))
    assert rx.take(0) == chunks("x")


def test_rewind_refuses_once_the_consumer_took_a_chunk() -> None:
    tx, rx, _, recorder = channel()
    tx.claim(None)
    tx.send(chunks("a"))
    tx.send(chunks("b", start=1))
    assert rx.take(0) == chunks("a")
    assert not tx.rewind()
    assert rx.take(0) == chunks("b", start=1) and len(recorder.batches) == 2


def test_rewind_and_take_race_one_winner() -> None:
    # Whoever takes the lock first wins: either the consumer got the old
    # chunk and the rewind is refused, or it never sees the old chunk at all.
    for _ in range(200):
        tx, rx, _, _ = channel()
        tx.claim(None)
        tx.send(chunks("old"))
        start = threading.Barrier(2)

        def consume(rx: ReceiveEnd = rx, start: threading.Barrier = start) -> object:
            start.wait(WAIT)
            return rx.take(WAIT)
        thread, out = in_thread(consume)
        start.wait(WAIT)
        rewound = tx.rewind()
        if rewound:
            tx.send(chunks("new"))
        thread.join(WAIT)
        assert out == [chunks("new" if rewound else "old")]


def test_a_sink_that_hands_chunks_on_counts_as_seen_and_discard_never_does() -> None:
    tx, _, _, _ = channel()
    got: List[Chunk] = []
    tx.claim(got.append)
    tx.send(chunks("a"))
    assert got == chunks("a") and not tx.rewind() and not tx.discarding
    tx, rx, _, recorder = channel()
    tx.claim(discard)
    tx.send(chunks("a"))
    assert tx.discarding and rx.queued == 0 and recorder.batches == [chunks("a")]
    assert tx.rewind() and recorder.batches == []


def test_rewind_after_the_end_is_refused() -> None:
    tx, _, _, _ = channel()
    tx.claim(None)
    tx.finish(None, build)
    assert not tx.rewind()


def test_a_batch_sink_gets_each_read_in_one_call() -> None:
    tx, rx, _, _ = channel()
    reads: List[List[Chunk]] = []
    assert tx.claim(BatchSink(reads.append))
    tx.send(chunks("a", "b", "c"))
    tx.send(chunks("d", start=3))
    assert [[c.text for c in read] for read in reads] == [["a", "b", "c"], ["d"]]
    assert rx.queued == 0  # nothing queued: the sink took them
    plain: List[Chunk] = []
    BatchSink(plain.extend)(chunks("e")[0])  # called as a plain sink, it passes a list
    assert [c.text for c in plain] == ["e"]
