"""Soak: 5,000 requests through 64 workers with ~10% random faults, and 5,000
over three emulator processes killed and restarted during the run (slow; CI
runs them).

Every request must end exactly once, as a success with the right text or as
a typed StreamkitError; nothing hangs; threads, sockets and RSS come back to
their baseline after close().
"""

from __future__ import annotations

import collections
import gc
import os
import random
import threading
import time
from typing import Dict, List

import pytest
from emuprocs import EmulatorProcess, start_hosts, stop_hosts
from leakcheck import socket_inodes

from streamkit.config import RetryPolicy, Timeouts
from streamkit.dispatch import Dispatcher
from streamkit.emulator import Emulator, EmulatorConfig, expected
from streamkit.errors import StreamkitError
from streamkit.records import GenerateRequest, Result
from streamkit.wire import get_dialect

FAULTS = ("cut,after=3,p=0.02;stall,after=2,p=0.02;status:503,p=0.02;"
          "error,after=1,p=0.02;malformed,after=2,p=0.02")
REQUESTS = 5000
WORKERS = 64
RSS_TOLERANCE_MB = 40.0


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _sockets() -> int:
    return len(socket_inodes())


def _describe_sockets(server_port: int) -> str:
    """Which side (emulator or client) each open TCP socket is on, with its TCP state."""
    states: Dict[str, str] = {}
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            local_port = int(fields[1].split(":")[1], 16)
            side = "server" if local_port == server_port else "client"
            states[fields[9]] = f"{side}/{fields[3]}"
    return str(collections.Counter(states.get(i, "other") for i in socket_inodes()))


def _request(i: int) -> GenerateRequest:
    return GenerateRequest("demo", f"soak {i}", options={"num_predict": 12})


def _run(d: Dispatcher, n: int, offset: int = 0) -> List[Result]:
    return list(d.map((_request(offset + i) for i in range(n)), return_exceptions=True))


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc (Linux)")
def test_soak_every_request_ends_exactly_once_and_resources_come_back() -> None:
    threads_before = threading.active_count()
    sockets_before = _sockets()
    config = EmulatorConfig(parallel=WORKERS, tokens_per_second=0, faults=FAULTS, seed=7)
    # Tight idle timeout so stalls end quickly; quick backoff keeps the run short.
    timeouts = Timeouts(connect=2.0, first_token=10.0, idle=0.5)
    retry = RetryPolicy(attempts=3, backoff_base=0.02, backoff_max=0.2)
    with Emulator(config) as emu:
        port = emu.port
        with Dispatcher(host=emu.url, workers=WORKERS, timeouts=timeouts, retry=retry) as d:
            _run(d, 500, offset=10**6)  # warm-up: pools, caches, allocator arenas
            gc.collect()
            rss_warm = _rss_mb()
            started = time.monotonic()
            results = _run(d, REQUESTS)
            elapsed = time.monotonic() - started
        counters = emu.counters()
    gc.collect()
    rss_after = _rss_mb()

    ids = collections.Counter(r.id for r in results)
    assert len(results) == REQUESTS and set(ids) == {str(i) for i in range(REQUESTS)}
    assert max(ids.values()) == 1
    kinds: Dict[str, int] = collections.Counter(
        "ok" if r.ok else type(r.error).__name__ for r in results)
    untyped = [r for r in results if r.error is not None
               and not isinstance(r.error, StreamkitError)]
    assert not untyped, f"untyped errors: {[repr(r.error) for r in untyped[:5]]}"
    dialect = get_dialect("ollama")
    wrong = [r.id for r in results if r.ok and r.text != expected(
        "demo", dialect.generate(_request(int(r.id or 0)))[1], config).text]
    assert not wrong
    assert kinds["ok"] >= REQUESTS * 0.8, kinds
    print(f"\nsoak: {REQUESTS} requests in {elapsed:.1f} s; outcomes {dict(kinds)}; "
          f"faults fired {counters.get('faults')}; RSS {rss_warm:.0f} -> {rss_after:.0f} MB")

    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and (threading.active_count() > threads_before
                                           or _sockets() > sockets_before):
        time.sleep(0.05)  # polling a condition with a deadline: sockets have no event
    assert threading.active_count() <= threads_before
    assert _sockets() <= sockets_before, _describe_sockets(port)
    assert rss_after - rss_warm < RSS_TOLERANCE_MB


CHURN_HOSTS = 3
CHURN_PARALLEL = 16
CHURN_WORKERS = 48
CHURN_TOKENS_PER_SECOND = 400


def _churn(hosts: List[EmulatorProcess], stop: threading.Event, kills: List[int]) -> None:
    """Kill a random host (SIGKILL), restart it on its port shortly after; repeat."""
    rng = random.Random(11)
    while not stop.wait(rng.uniform(0.3, 0.8)):
        victim = rng.choice(hosts)
        victim.kill()
        kills.append(victim.port)
        stop.wait(rng.uniform(0.1, 0.6))
        victim.restart()


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc (Linux)")
def test_soak_with_host_churn_every_request_ends_exactly_once() -> None:
    threads_before = threading.active_count()
    sockets_before = _sockets()
    hosts = start_hosts(CHURN_HOSTS, "--parallel", str(CHURN_PARALLEL),
                        "--tokens-per-second", str(CHURN_TOKENS_PER_SECOND))
    stop, kills = threading.Event(), []  # kills: the ports killed, in order
    churn = threading.Thread(target=_churn, args=(hosts, stop, kills), name="churn")
    timeouts = Timeouts(connect=2.0, first_token=10.0, idle=2.0)
    retry = RetryPolicy(attempts=4, backoff_base=0.05, backoff_max=0.5)
    try:
        with Dispatcher(hosts=[(h.url, CHURN_PARALLEL) for h in hosts],
                        workers=CHURN_WORKERS, timeouts=timeouts, retry=retry) as d:
            churn.start()
            started = time.monotonic()
            results = _run(d, REQUESTS)
            elapsed = time.monotonic() - started
            stop.set()
            churn.join(30)
    finally:
        stop.set()
        if churn.is_alive():
            churn.join(30)
        stop_hosts(hosts)

    ids = collections.Counter(r.id for r in results)
    assert len(results) == REQUESTS and set(ids) == {str(i) for i in range(REQUESTS)}
    assert max(ids.values()) == 1
    untyped = [r for r in results if r.error is not None
               and not isinstance(r.error, StreamkitError)]
    assert not untyped, f"untyped errors: {[repr(r.error) for r in untyped[:5]]}"
    kinds: Dict[str, int] = collections.Counter(
        "ok" if r.ok else type(r.error).__name__ for r in results)
    dialect = get_dialect("ollama")
    config = EmulatorConfig(parallel=CHURN_PARALLEL, tokens_per_second=CHURN_TOKENS_PER_SECOND)
    wrong = [r.id for r in results if r.ok and r.text != expected(
        "demo", dialect.generate(_request(int(r.id or 0)))[1], config).text]
    assert not wrong
    restarted = sum(1 for r in results if r.restarts)
    print(f"\nchurn soak: {REQUESTS} requests in {elapsed:.1f} s; {len(kills)} kills; "
          f"outcomes {dict(kinds)}; {restarted} restarted")
    assert len(kills) >= 3
    assert kinds["ok"] >= REQUESTS * 0.98, kinds

    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and (threading.active_count() > threads_before
                                           or _sockets() > sockets_before):
        time.sleep(0.05)  # polling a condition with a deadline: sockets have no event
    assert threading.active_count() <= threads_before
    assert _sockets() <= sockets_before
