"""streamkit.bench.load: schedules, closed/open loop runners and process shards,
driven by fake send functions (no server)."""

from __future__ import annotations

import statistics
import threading
import time
from typing import Any, Callable, List, Tuple

import pytest

from streamkit.bench.load import (
    Job,
    LoadPlan,
    SendFn,
    arrival_offsets,
    run_plan,
    run_sharded,
    split_plan,
)
from streamkit.bench.metrics import RequestRecord
from streamkit.errors import ConfigError

MS = 1_000_000


def test_constant_schedule_is_absolute_and_bounded() -> None:
    assert arrival_offsets(4.0, "constant", count=5) == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert arrival_offsets(4.0, "constant", duration=1.0) == [0.0, 0.25, 0.5, 0.75]
    assert len(arrival_offsets(4.0, "constant", count=3, duration=10.0)) == 3


def test_poisson_schedule_is_seeded_with_the_right_mean() -> None:
    a = arrival_offsets(10.0, "poisson", count=3000, seed=7)
    assert a == arrival_offsets(10.0, "poisson", count=3000, seed=7)
    assert a != arrival_offsets(10.0, "poisson", count=3000, seed=8)
    gaps = [y - x for x, y in zip(a, a[1:])]
    assert statistics.mean(gaps) == pytest.approx(0.1, rel=0.08)
    assert statistics.pstdev(gaps) == pytest.approx(0.1, rel=0.15)  # exponential: std = mean
    assert a == sorted(a) and a[0] == 0.0


@pytest.mark.parametrize("rate,arrival,kwargs", [
    (0.0, "constant", {"count": 1}), (1.0, "weibull", {"count": 1}), (1.0, "constant", {})])
def test_bad_schedules(rate: float, arrival: str, kwargs: Any) -> None:
    with pytest.raises(ConfigError):
        arrival_offsets(rate, arrival, **kwargs)


class FakeServer:
    """A send function that 'serves' each request for ``service_s`` with ``slots`` slots,
    tracking the most requests in flight at once."""

    def __init__(self, service_s: float = 0.0, slots: int = 1000) -> None:
        self.service_s = service_s
        self.slots = threading.Semaphore(slots)
        self.lock = threading.Lock()
        self.in_flight = 0
        self.peak = 0
        self.jobs: List[Job] = []

    def send(self, job: Job) -> RequestRecord:
        with self.lock:
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
            self.jobs.append(job)
        rec = RequestRecord(index=job.index, scheduled_ns=job.scheduled_ns,
                            dispatched_ns=job.dispatched_ns, picked_ns=job.picked_ns,
                            warmup=job.warmup)
        with self.slots:
            rec.sent_ns = rec.started_ns = time.perf_counter_ns()
            if self.service_s:
                time.sleep(self.service_s)  # simulated service time, not a wait for an event
            rec.last_token_ns = rec.done_ns = time.perf_counter_ns()
        with self.lock:
            self.in_flight -= 1
        return rec


def test_closed_loop_keeps_concurrency_and_runs_each_index_once() -> None:
    fake = FakeServer(service_s=0.01)
    out = run_plan(fake.send, LoadPlan(concurrency=4, requests=40))
    assert sorted(r.index for r in out.records) == list(range(40))
    assert fake.peak == 4
    assert all(r.scheduled_ns == r.dispatched_ns for r in out.records)
    assert len(out.cpu_share) == 1 and 0 <= out.cpu_share[0] <= 2.0


def test_closed_loop_duration_bound() -> None:
    fake = FakeServer(service_s=0.01)
    t0 = time.perf_counter()
    out = run_plan(fake.send, LoadPlan(concurrency=2, duration=0.2))
    elapsed = time.perf_counter() - t0
    assert 0.2 <= elapsed < 2.0
    assert 4 <= len(out.records) <= 60
    assert max(r.scheduled_ns for r in out.records) < out.base_ns + int(0.2e9)


def test_open_loop_releases_on_the_absolute_schedule() -> None:
    fake = FakeServer()
    offsets = tuple(i * 0.02 for i in range(10))
    out = run_plan(fake.send, LoadPlan(rate=50.0, offsets=offsets))
    assert [r.index for r in sorted(out.records, key=lambda r: r.index)] == list(range(10))
    for r in out.records:
        assert r.scheduled_ns == out.base_ns + int(offsets[r.index] * 1e9)
        slip_ms = (r.dispatched_ns - r.scheduled_ns) / MS
        assert 0 <= slip_ms < 50  # honest tolerance for a loaded 2-core machine


def test_open_loop_with_max_concurrency_queues_in_the_client() -> None:
    # 50 offered per second, one worker serving 40 ms each: the client queue grows
    fake = FakeServer(service_s=0.04)
    offsets = tuple(i * 0.02 for i in range(10))
    out = run_plan(fake.send, LoadPlan(rate=50.0, max_concurrency=1, offsets=offsets))
    assert fake.peak == 1
    waits = [((r.sent_ns or 0) - r.scheduled_ns) / MS
             for r in sorted(out.records, key=lambda r: r.index)]
    assert waits[-1] > waits[0] + 100  # ~9 x 20 ms behind by the end


def test_stop_event_ends_an_open_loop_early() -> None:
    fake = FakeServer()
    stop = threading.Event()
    offsets = (0.0, 0.01, 5.0, 10.0)

    def send_then_stop_after_two(job: Job) -> RequestRecord:
        # stop as soon as the second request went out: no race with a timer
        record = fake.send(job)
        with fake.lock:
            if len(fake.jobs) >= 2:
                stop.set()
        return record

    t0 = time.perf_counter()
    out = run_plan(send_then_stop_after_two, LoadPlan(rate=1.0, offsets=offsets), stop=stop)
    assert time.perf_counter() - t0 < 3.0  # the 5 s and 10 s arrivals were never waited for
    assert len(out.records) == 2


def test_send_errors_propagate() -> None:
    def boom(job: Job) -> RequestRecord:
        raise RuntimeError("bug in sender")

    with pytest.raises(RuntimeError):
        run_plan(boom, LoadPlan(concurrency=2, requests=4))
    with pytest.raises(RuntimeError):
        run_plan(boom, LoadPlan(rate=100.0, offsets=(0.0, 0.01)))


def test_split_plan_open_loop_partitions_the_schedule() -> None:
    plan = LoadPlan(rate=10.0, max_concurrency=5, offsets=tuple(i / 10 for i in range(7)))
    parts = split_plan(plan, 2)
    assert [p.indices for p in parts] == [(0, 2, 4, 6), (1, 3, 5)]
    assert parts[1].offsets == (0.1, 0.3, 0.5)
    assert [p.max_concurrency for p in parts] == [3, 2]


def test_split_plan_closed_loop_divides_streams_and_requests() -> None:
    parts = split_plan(LoadPlan(concurrency=5, requests=11), 2)
    assert [(p.concurrency, p.requests, p.first_index) for p in parts] == [(3, 6, 0), (2, 5, 6)]
    assert len(split_plan(LoadPlan(concurrency=1, requests=4), 3)) == 1
    with pytest.raises(ConfigError):
        split_plan(LoadPlan(), 0)


# Module level so spawned shard processes can import them.
def fake_factory(service_s: float) -> Tuple[SendFn, Callable[[], None]]:
    return FakeServer(service_s).send, lambda: None


def failing_factory(_: Any) -> Tuple[SendFn, Callable[[], None]]:
    raise ConfigError("cannot build sender")


def test_sharded_run_merges_records_on_one_base() -> None:
    plan = LoadPlan(rate=20.0, offsets=tuple(i / 20 for i in range(8)))
    out = run_sharded(fake_factory, 0.01, plan, 2)
    assert sorted(r.index for r in out.records) == list(range(8))
    assert {r.process for r in out.records} == {0, 1}
    assert len(out.cpu_share) == 2
    for r in out.records:
        assert r.scheduled_ns == out.base_ns + int(plan.offsets[r.index] * 1e9)
        assert (r.dispatched_ns - r.scheduled_ns) / MS < 100


def test_sharded_run_reports_a_failing_shard() -> None:
    from streamkit.errors import StreamkitError

    with pytest.raises(StreamkitError, match="cannot build sender"):
        run_sharded(failing_factory, None, LoadPlan(concurrency=2, requests=2), 2)
