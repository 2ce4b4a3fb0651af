"""Load generation: arrival schedules, closed- and open-loop runners, process shards.

The runners know nothing about HTTP: they call a *send function*
``send(job) -> RequestRecord`` from worker threads and collect what it
returns. That keeps scheduling testable with fake senders and lets a child
process run the same code (see :func:`run_sharded`).

- Closed loop: ``concurrency`` workers, each sending its next request as soon
  as the previous one finished. A request is "scheduled" when its worker
  becomes free, so closed-loop latency never includes a client queue.
- Open loop: requests are released on an **absolute** precomputed schedule
  (``base + offset[i]``; sleeping relative gaps would drift). With
  ``max_concurrency`` a request whose time has come but finds every worker
  busy waits in the client; that wait shows as ``queue_ms`` and in
  ``sched_e2e_ms``.
"""

from __future__ import annotations

import gc
import itertools
import multiprocessing
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, Callable, List, Optional, Sequence, Tuple

from ..errors import ConfigError, StreamkitError
from .arrival import ARRIVALS, arrival_offsets
from .metrics import RequestRecord

__all__ = [
    "ARRIVALS",
    "Job",
    "LoadPlan",
    "RunOutcome",
    "SendFn",
    "arrival_offsets",
    "run_plan",
    "run_sharded",
    "split_plan",
]

# Threads an open loop without --max-concurrency may use; past this the client
# itself queues (visible as queue_ms), so it is set well above what one
# process can drive accurately anyway (~100 streams, benchmarking.md 5.6).
OPEN_LOOP_MAX_THREADS = 512
# Sleep in slices this long while waiting for a scheduled time, so a stop
# request is noticed promptly; the last stretch is slept precisely.
_WAIT_SLICE_S = 0.05
_FINE_SLEEP_S = 0.0002
# How long a shard process may take to import and report ready.
SHARD_READY_TIMEOUT_S = 60.0
# Margin between "all shards ready" and the shared schedule base.
SHARD_START_MARGIN_NS = 100_000_000


@dataclass
class Job:
    """One request handed to a send function.

    ``scheduled_ns`` intended send time; ``dispatched_ns`` when the load
    generator released it; ``picked_ns`` when a worker thread took it up.
    """

    index: int
    scheduled_ns: int
    dispatched_ns: int
    picked_ns: int = 0
    warmup: bool = False


SendFn = Callable[[Job], RequestRecord]


@dataclass(frozen=True)
class LoadPlan:
    """What one load point runs: closed loop (``rate`` None) or open loop.

    Bounded by ``requests`` and/or ``duration`` (seconds, from the base):
    whichever comes first. ``offsets`` (open loop) are seconds from the base,
    one per request, already cut to the bounds; ``indices`` are the request
    numbers they belong to (a shard runs a subset of them).
    """

    concurrency: int = 1
    rate: Optional[float] = None
    max_concurrency: Optional[int] = None
    requests: Optional[int] = None
    duration: Optional[float] = None
    offsets: Tuple[float, ...] = ()
    indices: Tuple[int, ...] = ()
    first_index: int = 0
    warmup: bool = False

    @property
    def open_loop(self) -> bool:
        return self.rate is not None


@dataclass
class RunOutcome:
    """Records of one run of a plan plus the client's own resource use."""

    records: List[RequestRecord]
    base_ns: int
    cpu_share: List[float] = field(default_factory=list)  # one per process


def _sleep_until(target_ns: int, stop: threading.Event) -> bool:
    """Sleep until perf_counter_ns() >= target_ns. False if ``stop`` was set first."""
    while True:
        remaining = (target_ns - time.perf_counter_ns()) / 1e9
        if remaining <= 0:
            return not stop.is_set()
        if remaining > 0.002:
            if stop.wait(min(remaining - 0.001, _WAIT_SLICE_S)):
                return False
        else:
            time.sleep(min(remaining, _FINE_SLEEP_S))


def _picked(send: SendFn, job: Job) -> RequestRecord:
    job.picked_ns = time.perf_counter_ns()
    return send(job)


def _run_closed(send: SendFn, plan: LoadPlan, base_ns: int,
                stop: threading.Event) -> List[RequestRecord]:
    counter = itertools.count(plan.first_index)
    lock = threading.Lock()
    last = plan.first_index + plan.requests if plan.requests is not None else None
    deadline = base_ns + int(plan.duration * 1e9) if plan.duration is not None else None
    records: List[RequestRecord] = []
    failures: List[BaseException] = []

    def worker() -> None:
        try:
            # Shards share a base a little in the future: starting before it would
            # put requests outside the measured window (throughput overstated).
            if not _sleep_until(base_ns, stop):
                return
            while not stop.is_set():
                now = time.perf_counter_ns()
                if deadline is not None and now >= deadline:
                    return
                with lock:
                    index = next(counter)
                if last is not None and index >= last:
                    return
                records.append(send(Job(index, now, now, now, plan.warmup)))
        except BaseException as exc:  # surfaced in the caller's thread below
            failures.append(exc)
            stop.set()

    threads = [threading.Thread(target=worker, name=f"streamkit-bench-{i}", daemon=True)
               for i in range(plan.concurrency)]
    for t in threads:
        t.start()
    _join_all(threads, stop)
    if failures:
        raise failures[0]
    return records


def _join_all(threads: Sequence[threading.Thread], stop: threading.Event) -> None:
    """Join with short timeouts so Ctrl-C reaches the main thread; on it, set stop."""
    try:
        for t in threads:
            while t.is_alive():
                t.join(0.1)
    except BaseException:
        stop.set()
        raise


def _run_open(send: SendFn, plan: LoadPlan, base_ns: int,
              stop: threading.Event) -> List[RequestRecord]:
    indices = plan.indices or tuple(range(plan.first_index, plan.first_index + len(plan.offsets)))
    workers = plan.max_concurrency or max(1, min(len(plan.offsets), OPEN_LOOP_MAX_THREADS))
    futures: List[Future[RequestRecord]] = []
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="streamkit-bench")
    try:
        for index, offset in zip(indices, plan.offsets):
            scheduled = base_ns + int(offset * 1e9)
            if not _sleep_until(scheduled, stop):
                break
            job = Job(index, scheduled, time.perf_counter_ns(), warmup=plan.warmup)
            futures.append(pool.submit(_picked, send, job))
    except BaseException:
        stop.set()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=stop.is_set())
    return [f.result() for f in futures if not f.cancelled()]


def run_plan(send: SendFn, plan: LoadPlan, *, base_ns: Optional[int] = None,
             stop: Optional[threading.Event] = None) -> RunOutcome:
    """Run one plan in this process; blocks until every request has finished.

    ``base_ns`` is the schedule's zero (default: now). Setting ``stop`` ends
    the run early: no new request starts; those in flight finish (the send
    function should cancel them on the same event). An exception raised by
    the send function stops the run and is re-raised here.
    """
    stop = stop or threading.Event()
    # Collect now and freeze what survives, so a full collection of earlier
    # garbage (a previous phase's records) cannot stall the measured threads.
    gc.collect()
    gc.freeze()
    base = base_ns if base_ns is not None else time.perf_counter_ns()
    wall0, cpu0 = time.perf_counter(), time.process_time()
    try:
        if plan.open_loop:
            records = _run_open(send, plan, base, stop)
        else:
            records = _run_closed(send, plan, base, stop)
    finally:
        gc.unfreeze()
    wall = time.perf_counter() - wall0
    share = (time.process_time() - cpu0) / wall if wall > 0 else 0.0
    return RunOutcome(records=records, base_ns=base, cpu_share=[share])


# --- process sharding ---------------------------------------------------------

SenderFactory = Callable[[Any], Tuple[SendFn, Callable[[], None]]]


def split_plan(plan: LoadPlan, shards: int) -> List[LoadPlan]:
    """Divide a plan over ``shards`` processes; together they run the same load.

    Open loop: request i goes to shard i % shards, keeping its offset on the
    shared absolute schedule. Closed loop: concurrency and request count are
    split as evenly as possible (a shard with no stream is dropped).
    """
    if shards < 1:
        raise ConfigError(f"processes must be >= 1, got {shards}")
    if plan.open_loop:
        indices = plan.indices or tuple(range(plan.first_index,
                                              plan.first_index + len(plan.offsets)))
        cap = plan.max_concurrency
        parts = []
        for s in range(shards):
            share_cap = None if cap is None else max(1, cap // shards + (s < cap % shards))
            parts.append(replace(plan, offsets=plan.offsets[s::shards],
                                 indices=indices[s::shards], max_concurrency=share_cap))
        return [p for p in parts if p.offsets]
    out = []
    next_first = plan.first_index
    for s in range(shards):
        conc = plan.concurrency // shards + (s < plan.concurrency % shards)
        reqs = None
        if plan.requests is not None:
            reqs = plan.requests // shards + (s < plan.requests % shards)
        if conc == 0 or reqs == 0:
            continue
        out.append(replace(plan, concurrency=conc, requests=reqs, first_index=next_first))
        next_first += reqs or 1_000_000_000  # duration-bound: disjoint index ranges
    return out


def _shard_main(factory: SenderFactory, factory_arg: Any, plan: LoadPlan,
                warmup: Optional[LoadPlan], conn: Any, shard: int) -> None:
    """Child process: build a sender, warm up, report ready, run on the parent's base,
    send the records back."""
    try:
        send, close = factory(factory_arg)
    except BaseException as exc:
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        conn.close()
        return
    try:
        warm = run_plan(send, warmup).records if warmup is not None else []
        conn.send(("ready", None))
        base_ns = conn.recv()
        outcome = run_plan(send, plan, base_ns=base_ns)
        records = warm + outcome.records
        for r in records:
            r.process = shard
        conn.send(("done", (records, outcome.cpu_share[0])))
    except BaseException as exc:
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        close()
        conn.close()


def _expect(conn: Any, kind: str, timeout: Optional[float]) -> Any:
    if timeout is not None and not conn.poll(timeout):
        raise StreamkitError(f"bench shard did not report {kind!r} within {timeout:.0f} s")
    try:
        got, payload = conn.recv()
    except EOFError:
        raise StreamkitError("a bench shard process died before reporting") from None
    if got == "error":
        raise StreamkitError(f"bench shard failed: {payload}")
    if got != kind:
        raise StreamkitError(f"bench shard sent {got!r}, expected {kind!r}")
    return payload


def run_sharded(factory: SenderFactory, factory_arg: Any, plan: LoadPlan,
                processes: int, *, warmup: Optional[LoadPlan] = None) -> RunOutcome:
    """Run ``plan`` split over ``processes`` child processes on one absolute base.

    ``warmup`` (split the same way) runs in each shard before it reports
    ready; its records come back flagged as warm-up (plan.warmup).
    ``factory(factory_arg) -> (send, close)`` must be a module-level function
    and ``factory_arg`` picklable. Children are spawned, not forked (forking a
    process that owns threads is unsafe), so a script using this needs the
    usual ``if __name__ == "__main__":`` guard. Every child reports ready before
    the shared base time is fixed, so start-up cost is not measured. Records
    come back tagged with their shard number. ``perf_counter_ns`` is a
    system-wide monotonic clock on Linux, macOS and Windows, so stamps from
    all shards are comparable.

    Blocks until every shard has finished. Raises StreamkitError when a shard
    fails or does not start.
    """
    ctx = multiprocessing.get_context("spawn")
    shards = split_plan(plan, processes)
    warm_parts = split_plan(warmup, len(shards)) if warmup is not None else []
    procs: List[Tuple[Any, Any]] = []
    try:
        for i, part in enumerate(shards):
            warm = warm_parts[i] if i < len(warm_parts) else None
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_shard_main, name=f"streamkit-bench-shard-{i}",
                               args=(factory, factory_arg, part, warm, child, i), daemon=True)
            proc.start()
            child.close()
            procs.append((proc, parent))
        for _, conn in procs:
            _expect(conn, "ready", SHARD_READY_TIMEOUT_S)
        base = time.perf_counter_ns() + SHARD_START_MARGIN_NS
        for _, conn in procs:
            conn.send(base)
        results: List[Tuple[List[RequestRecord], float]] = [
            _wait_result(proc, conn) for proc, conn in procs]
    finally:
        _reap(procs)
    records = [r for recs, _ in results for r in recs]
    return RunOutcome(records=records, base_ns=base, cpu_share=[c for _, c in results])


def _wait_result(proc: Any, conn: Any) -> Tuple[List[RequestRecord], float]:
    while not conn.poll(0.2):
        if not proc.is_alive() and not conn.poll(0):
            raise StreamkitError(f"bench shard {proc.name} exited with code {proc.exitcode}")
    result: Tuple[List[RequestRecord], float] = _expect(conn, "done", None)
    return result


def _reap(procs: Sequence[Tuple[Any, Any]]) -> None:
    for proc, conn in procs:
        proc.join(5.0)
        if proc.is_alive():
            proc.terminate()
            proc.join(5.0)
        conn.close()
        proc.close()

