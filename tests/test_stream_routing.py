"""Routing: parse_hosts, which errors mark a host as failing, and the HostRouter
(limits, least-loaded choice, cooldowns, waiting and waking). No I/O.
"""

from __future__ import annotations

import threading
import time
from typing import Any, List

import pytest

from streamkit._stream.routing import (
    FixedRoute,
    HostRouter,
    is_cut,
    is_host_failure,
    parse_hosts,
)
from streamkit.errors import (
    Cancelled,
    ConfigError,
    ConnectError,
    ModelNotFound,
    ProtocolError,
    ResponseError,
    ServerBusy,
    ServerStreamError,
    StreamDiverged,
    StreamInterrupted,
    StreamTimeout,
)

WAIT = 5.0  # generous bound for "this happens soon" on a loaded 2-core machine


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# ---------------------------------------------------------------------------
# parse_hosts / is_host_failure


def test_parse_hosts_defaults_parallel_to_one_and_normalises() -> None:
    assert parse_hosts(["localhost:1234", ("http://10.0.0.2:11434/", 4)]) == [
        ("http://localhost:1234", 1), ("http://10.0.0.2:11434", 4)]


@pytest.mark.parametrize("hosts", [[], "http://a:1", [("http://a:1", 0)],
                                   [("http://a:1", True)], ["a:1", "http://a:1"]])
def test_parse_hosts_rejects_bad_lists(hosts: Any) -> None:
    with pytest.raises(ConfigError):
        parse_hosts(hosts)


@pytest.mark.parametrize("error, failure", [
    (ConnectError("refused"), True),
    (StreamTimeout("slow connect", phase="connect"), True),
    (StreamTimeout("cold load", phase="first_token"), False),
    (ServerBusy("busy", status_code=503), True),
    (ServerBusy("slow down", status_code=429), True),
    (ResponseError("boom", status_code=500), True),
    (ResponseError("bad", status_code=400), False),
    (ModelNotFound("no", model="m"), False),
    (Cancelled(), False),
    # After the first chunk: a cut is the host's failure, a bad reply is not.
    (StreamInterrupted("cut"), True),
    (StreamTimeout("stalled", phase="idle"), True),
    (StreamTimeout("too long", phase="total"), False),
    (StreamDiverged("other text", delivered="a", replayed="b"), False),
    (ServerStreamError("in-band error"), False),
    (ProtocolError("bad json"), False),
])
def test_is_host_failure(error: BaseException, failure: bool) -> None:
    assert is_host_failure(error) is failure
    cut = isinstance(error, (StreamInterrupted, StreamTimeout)) and failure
    assert is_cut(error) is (cut and getattr(error, "phase", "") != "connect")


# ---------------------------------------------------------------------------
# HostRouter


def _router(*hosts: Any, **kw: Any) -> HostRouter:
    return HostRouter(parse_hosts(list(hosts)), **kw)


def test_router_picks_fewest_in_flight_and_respects_limits() -> None:
    router = _router(("http://a:1", 2), ("http://b:1", 1))
    never = threading.Event()
    first = router.acquire([], never)
    second = router.acquire([], never)
    assert {first, second} == {"http://a:1", "http://b:1"}
    assert router.acquire([], never) == "http://a:1"  # b is full
    snap = router.snapshot()
    assert snap["http://a:1"]["in_flight"] == 2 and snap["http://b:1"]["in_flight"] == 1


def test_router_prefers_hosts_not_tried() -> None:
    router = _router(("http://a:1", 4), ("http://b:1", 4))
    never = threading.Event()
    router.acquire([], never)  # a has 1 in flight now
    assert router.acquire(["http://b:1"], never) == "http://a:1"


def test_router_blocks_until_a_slot_frees() -> None:
    router = _router("http://a:1")
    never = threading.Event()
    router.acquire([], never)
    got: List[str] = []
    acquired = threading.Event()

    def waiter() -> None:
        got.append(router.acquire([], never))
        acquired.set()

    thread = threading.Thread(target=waiter)
    thread.start()
    assert not acquired.wait(0.2)  # the only slot is taken
    router.release("http://a:1", None, True)
    assert acquired.wait(WAIT)
    thread.join(WAIT)
    assert got == ["http://a:1"]


def test_router_cancel_wakes_a_waiting_acquire() -> None:
    router = _router("http://a:1")
    router.acquire([], threading.Event())
    cancel = threading.Event()
    raised: List[BaseException] = []

    def waiter() -> None:
        try:
            router.acquire([], cancel)
        except Cancelled as exc:
            raised.append(exc)

    thread = threading.Thread(target=waiter)
    thread.start()
    time.sleep(0.05)  # let it block (not a synchronisation: the assert below holds either way)
    started = time.monotonic()
    cancel.set()
    thread.join(WAIT)
    assert raised and time.monotonic() - started < 1.0


def test_router_close_wakes_waiters() -> None:
    router = _router("http://a:1")
    router.acquire([], threading.Event())
    raised = threading.Event()

    def waiter() -> None:
        with pytest.raises(Cancelled):
            router.acquire([], threading.Event())
        raised.set()

    thread = threading.Thread(target=waiter)
    thread.start()
    router.close()
    assert raised.wait(WAIT)
    thread.join(WAIT)


def test_router_cools_down_a_failing_host_then_uses_it_again() -> None:
    clock = FakeClock()
    router = _router(("http://a:1", 4), ("http://b:1", 4), clock=clock)
    never = threading.Event()
    host = router.acquire([], never)
    other = "http://b:1" if host == "http://a:1" else "http://a:1"
    router.release(host, ConnectError("refused"), False)
    assert router.cooled_down(host)
    # While cooled down, every pick goes to the other host, even one it tried.
    assert [router.acquire([other], never) for _ in range(3)] == [other] * 3
    clock.now += 1.01  # first cooldown is 1 s
    assert not router.cooled_down(host)
    assert router.acquire([], never) == host


def test_router_cooldown_doubles_and_resets_after_success() -> None:
    clock = FakeClock()
    router = _router(("http://a:1", 8), clock=clock)
    never = threading.Event()
    lefts = []
    for _ in range(7):
        router.acquire([], never)
        router.release("http://a:1", ServerBusy("busy", status_code=503), False)
        left = router.snapshot()["http://a:1"]["cooldown_left"]
        lefts.append(left)
        clock.now += left + 0.001
    assert lefts == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    router.acquire([], never)
    router.release("http://a:1", None, True)
    assert router.snapshot()["http://a:1"]["failures"] == 0


def test_router_in_flight_failures_of_one_outage_do_not_lengthen_the_cooldown() -> None:
    clock = FakeClock()
    router = _router(("http://a:1", 8), clock=clock)
    never = threading.Event()
    for _ in range(5):
        router.acquire([], never)
    for _ in range(5):
        router.release("http://a:1", ConnectError("refused"), False)
    snap = router.snapshot()["http://a:1"]
    assert snap["failures"] == 1 and snap["cooldown_left"] == 1.0 and snap["in_flight"] == 0


def test_router_success_of_a_request_in_flight_during_an_outage_keeps_the_cooldown() -> None:
    # A stopping server refuses new connections while it drains old ones: the
    # drained successes must not make it healthy (no probation, then a flood).
    clock = FakeClock()
    a, b = "http://a:1", "http://b:1"
    router = _router((a, 4), (b, 4), clock=clock)
    never = threading.Event()
    assert [router.acquire([], never) for _ in range(2)] == [a, b]
    assert router.acquire([], never) == a  # two in flight on a
    router.release(a, ConnectError("refused"), False)
    router.release(a, None, True)  # the older request on a finishes well
    assert router.snapshot()[a]["failures"] == 1 and router.cooled_down(a)
    clock.now += 1.01
    assert router.acquire([], never) == a  # one probe, not a flood
    assert [router.acquire([], never) for _ in range(3)] == [b] * 3


def test_router_ignores_bad_replies_after_streaming_and_request_errors() -> None:
    router = _router("http://a:1")
    never = threading.Event()
    router.acquire([], never)
    router.release("http://a:1", ServerStreamError("in-band error"), True)
    router.acquire([], never)
    router.release("http://a:1", ModelNotFound("no", model="m"), False)
    assert not router.cooled_down("http://a:1")


def test_router_cools_down_a_host_that_cut_a_stream_like_a_refusal() -> None:
    clock = FakeClock()
    router = _router(("http://a:1", 4), ("http://b:1", 4), clock=clock)
    never = threading.Event()
    router.acquire([], never)
    router.release("http://a:1", StreamInterrupted("cut"), True)
    assert router.cooled_down("http://a:1")
    assert router.snapshot()["http://a:1"]["failures"] == 1
    assert [router.acquire([], never) for _ in range(3)] == ["http://b:1"] * 3


def test_router_probes_a_host_after_its_cooldown_with_one_request() -> None:
    clock = FakeClock()
    a, b = "http://a:1", "http://b:1"
    router = _router((a, 4), (b, 4), clock=clock)
    never = threading.Event()
    router.acquire([], never)
    router.release(a, ConnectError("refused"), False)
    router.acquire([], never)  # b: 1 in flight, a: none (least loaded, if it were healthy)
    clock.now += 1.01
    assert router.acquire([], never) == a  # the probe
    assert [router.acquire([], never) for _ in range(3)] == [b] * 3  # not a flood
    router.release(a, ConnectError("refused"), False)  # the probe failed: 2 s now
    assert router.snapshot()[a]["cooldown_left"] == 2.0
    clock.now += 2.01
    assert router.acquire([], never) == a
    router.release(a, None, True)  # the probe streamed: healthy again
    assert router.snapshot()[a]["failures"] == 0
    assert [router.acquire([], never) for _ in range(3)] == [a, a, a]


def test_router_waits_for_a_healthy_host_rather_than_retrying_where_it_failed() -> None:
    # b is full, a has free slots: a stream that failed on a waits for b.
    a, b = "http://a:1", "http://b:1"
    router = _router((a, 4), (b, 1))
    never = threading.Event()
    assert router.acquire([], never) == a
    assert router.acquire([], never) == b
    got: List[str] = []
    acquired = threading.Event()

    def waiter() -> None:
        got.append(router.acquire([a], never))
        acquired.set()
    thread = threading.Thread(target=waiter)
    thread.start()
    assert not acquired.wait(0.2)
    assert router.acquire([], never) == a  # fresh streams still use a
    router.release(b, None, True)
    assert acquired.wait(WAIT)
    thread.join(WAIT)
    assert got == [b]


def test_router_goes_back_to_a_tried_host_when_no_healthy_one_is_left() -> None:
    clock = FakeClock()
    a, b = "http://a:1", "http://b:1"
    router = _router((a, 4), (b, 4), clock=clock)
    never = threading.Event()
    assert router.acquire([a], never) == b
    router.release(b, ConnectError("refused"), False)  # b cooling: only a is left
    assert router.acquire([a, b], never) == a
    assert _router(a).acquire([a, a], never) == a  # one host: nowhere else to go


def test_router_waits_for_the_earliest_cooldown_when_all_hosts_are_down() -> None:
    router = _router("http://a:1", "http://b:1", cooldown_base=0.3)
    never = threading.Event()
    for _ in range(2):
        host = router.acquire([], never)
        router.release(host, ConnectError("refused"), False)
    started = time.monotonic()
    assert router.acquire([], never) in ("http://a:1", "http://b:1")
    assert 0.2 <= time.monotonic() - started < WAIT


def test_fixed_route_always_gives_its_one_host() -> None:
    route = FixedRoute("http://a:1")
    never = threading.Event()
    assert route.acquire([], never) == "http://a:1"
    assert route.acquire(["http://a:1"], never) == "http://a:1"
    route.release("http://a:1", ConnectError("refused"), streamed=False)
    assert route.acquire(["http://a:1"], never) == "http://a:1"
