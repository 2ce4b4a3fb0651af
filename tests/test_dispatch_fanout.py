"""The merged channel of map/events on its own: O(1) wakes per chunk, fair order.

Pure unit tests: fake jobs, threads, no sockets. Wake-ups are counted with an
instrumented Condition, so a herd (every waiting worker woken for each chunk
taken) fails the count however it is written.
"""

from __future__ import annotations

import threading
import time
from typing import Any, List

import pytest

import streamkit._dispatch.fanout as fanout
from streamkit._dispatch.fanout import Merged

WAIT = 5.0  # generous bound for "this happens soon" on a loaded 2-core machine
LIMIT = 4
PRODUCERS = 24


class FakeJob:
    def __init__(self) -> None:
        self.cancelled = False


class CountingCondition(threading.Condition):
    """Counts the times a worker thread ("producer-*") returns from a wait."""

    wakes = 0
    lock = threading.Lock()

    def wait(self, timeout: Any = None) -> bool:
        woke = super().wait(timeout)
        if threading.current_thread().name.startswith("producer-"):
            with CountingCondition.lock:
                CountingCondition.wakes += 1
        return woke


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> type:
    monkeypatch.setattr(fanout, "Condition", CountingCondition)
    monkeypatch.setattr(fanout, "BACKSTOP_S", 60.0)  # no backstop wakes in the count
    CountingCondition.wakes = 0
    return CountingCondition


def _wait_queued(channel: Merged, n: int) -> None:
    deadline = time.monotonic() + WAIT
    while len(channel._queue) < n:  # polling with a deadline: the queue has no event
        assert time.monotonic() < deadline, f"only {len(channel._queue)} of {n} queued"
        time.sleep(0.005)


def _start_producers(channel: Merged, jobs: List[FakeJob]) -> List[threading.Thread]:
    """One blocked producer per job, queued in job order (each waits before the next starts)."""
    threads = []
    for i, job in enumerate(jobs):
        thread = threading.Thread(target=channel.put_chunk, args=(i, job),
                                  name=f"producer-{i}")
        thread.start()
        threads.append(thread)
        _wait_queued(channel, i + 1)
    return threads


def test_a_taken_chunk_wakes_one_waiting_worker_in_arrival_order(counted: type) -> None:
    channel = Merged(LIMIT)
    for i in range(LIMIT):
        channel.put_chunk(f"pre{i}", FakeJob())
    threads = _start_producers(channel, [FakeJob() for _ in range(PRODUCERS)])
    got = []
    for i in range(LIMIT + PRODUCERS):
        got.append(channel.get(WAIT))  # frees a slot: producer-i's chunk takes it
        if i < PRODUCERS:
            threads[i].join(WAIT)  # a consumer slow enough for woken workers to run
    assert [item for _, item in got if item is not None] == (
        [f"pre{i}" for i in range(LIMIT)] + list(range(PRODUCERS)))  # FIFO: fair
    # One wake per freed slot: a notify_all (or waking every waiter) for each
    # chunk taken would be ~PRODUCERS**2 / 2 wakes here.
    assert counted.wakes <= PRODUCERS  # type: ignore[attr-defined]
    assert channel._chunks == 0 and not channel._queue


def test_a_worker_arriving_later_queues_behind_the_waiting_ones(counted: type) -> None:
    channel = Merged(1)
    channel.put_chunk("first", FakeJob())
    threads = _start_producers(channel, [FakeJob()])
    assert channel.get(WAIT) == (True, "first")  # its slot goes to producer-0...
    late = threading.Thread(target=channel.put_chunk, args=("late", FakeJob()),
                            name="producer-late")
    late.start()
    _wait_queued(channel, 1)  # ...so the late one waits, even if it ran first
    assert channel.get(WAIT) == (True, 0)
    assert channel.get(WAIT) == (True, "late")
    for thread in [*threads, late]:
        thread.join(WAIT)


def test_cancelling_a_waiting_job_wakes_only_its_worker_and_drops_its_chunk(
        counted: type) -> None:
    channel = Merged(1)
    channel.put_chunk("first", FakeJob())
    jobs = [FakeJob() for _ in range(3)]
    threads = _start_producers(channel, jobs)
    jobs[1].cancelled = True
    channel.wake(jobs[1])
    threads[1].join(WAIT)
    assert not threads[1].is_alive() and len(channel._queue) == 2
    assert counted.wakes == 1  # type: ignore[attr-defined]
    got = [channel.get(WAIT) for _ in range(3)]
    assert [item for _, item in got] == ["first", 0, 2]
    assert channel.get(0.01) is None
    for thread in threads:
        thread.join(WAIT)


def test_close_releases_every_waiting_worker() -> None:
    channel = Merged(1)
    channel.put_chunk("first", FakeJob())
    threads = _start_producers(channel, [FakeJob() for _ in range(5)])
    channel.close()
    for thread in threads:
        thread.join(WAIT)
    assert not any(t.is_alive() for t in threads)
    assert channel.get(0) == (True, "first") and channel.get(0.01) is None


def test_results_are_never_bounded_by_chunks() -> None:
    channel = Merged(1)
    channel.put_chunk("c", FakeJob())
    for i in range(10):
        channel.put_result(i)  # would deadlock if results counted against the limit
    assert [channel.get(0) for _ in range(11)][-1] == (False, 9)


def test_a_waiting_read_goes_in_whole_with_one_wake(counted: type) -> None:
    # A worker held back by a slow consumer brings every chunk of its next read
    # at once; they are queued together when a slot frees, with one wake-up,
    # not one wait and one wake per chunk.
    channel = Merged(2)
    channel.put_chunks(["a", "b"], FakeJob())
    producer = threading.Thread(target=channel.put_chunks,
                                args=([0, 1, 2, 3, 4], FakeJob()), name="producer-0")
    producer.start()
    _wait_queued(channel, 1)
    assert channel.get(WAIT) == (True, "a")  # frees a slot: the whole read goes in
    producer.join(WAIT)
    assert not producer.is_alive()
    assert counted.wakes == 1  # type: ignore[attr-defined]
    assert [channel.get(0) for _ in range(6)] == [(True, x) for x in ["b", 0, 1, 2, 3, 4]]
    assert channel._chunks == 0 and channel.get(0.01) is None
