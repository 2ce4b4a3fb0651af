"""The Poller on its own, over socket pairs: one thread runs every watch's step.

Each test runs with the platform's selector (epoll on Linux, which sees a
registration made while it waits) and with ``select`` (which needs the
poller's wake-up pair for each registration; both need it at close). The
autouse leak check fails a test that leaves the poller thread or a wake-up
socket behind; the selector's own descriptor is checked here.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import socket
import threading
import time
from typing import Callable, Iterator, List, Optional, Set, Tuple

import pytest

import streamkit._http.poller as poller_module
from streamkit._http import Poller, Watch

WAIT = 5.0  # generous bound for "this happens soon" on a loaded 2-core machine
NAME = "test-poller"
MANY = 100

Pair = Tuple[socket.socket, socket.socket]


@pytest.fixture(params=["default", "select"])
def selector_kind(request: pytest.FixtureRequest,
                  monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "select":
        monkeypatch.setattr(selectors, "DefaultSelector", selectors.SelectSelector)
    return str(request.param)


@pytest.fixture
def poller(selector_kind: str) -> Iterator[Poller]:
    p = Poller(NAME)
    yield p
    p.close()


@pytest.fixture
def pairs() -> Iterator[Callable[[], Pair]]:
    """Makes socket pairs: (writer, reader), the reader non-blocking; all closed after."""
    made: List[socket.socket] = []

    def make() -> Pair:
        writer, reader = socket.socketpair()
        reader.setblocking(False)
        made.extend((writer, reader))
        return writer, reader
    yield make
    for sock in made:
        sock.close()


class Reader:
    """A step reading one socket: keeps what came, ends at b"!" (or EOF)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.got = bytearray()
        self.threads: Set[str] = set()
        self.steps = 0
        self.read = threading.Event()  # set once a step has read some bytes
        self.watch = Watch(sock, self.step)

    def step(self) -> bool:
        self.threads.add(threading.current_thread().name)
        self.steps += 1
        try:
            data = self.sock.recv(4096)
        except BlockingIOError:
            return False
        self.got += data
        self.read.set()
        return not data or self.got.endswith(b"!")


def _poller_threads() -> List[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == NAME and t.is_alive()]


def _the_thread() -> threading.Thread:
    threads = _poller_threads()
    assert len(threads) == 1, threads
    return threads[0]


def _epoll_fds() -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if "eventpoll" in os.readlink(f"/proc/self/fd/{fd}"):
                count += 1
        except OSError:
            continue
    return count


# -- steps ---------------------------------------------------------------------

def test_every_step_of_many_watches_runs_in_the_poller_thread(
        poller: Poller, pairs: Callable[[], Pair]) -> None:
    readers = []
    for _ in range(MANY):
        writer, reader = pairs()
        readers.append((writer, Reader(reader)))
        assert poller.watch(readers[-1][1].watch)
    for i, (writer, _) in enumerate(readers):
        writer.sendall(b"part %d;" % i)
    for i, (writer, _) in enumerate(readers):
        writer.sendall(b"end %d!" % i)
    for i, (_, r) in enumerate(readers):
        assert r.watch.wait(WAIT), f"watch {i} never ended"
        assert bytes(r.got) == b"part %d;end %d!" % (i, i)
        assert r.threads == {NAME}
    assert all(poller.unwatch(r.watch) is False for _, r in readers)  # the poller ended them


def test_one_wake_up_runs_the_steps_of_every_ready_watch(
        poller: Poller, pairs: Callable[[], Pair]) -> None:
    # Many sockets readable at once are stepped after one select, not one
    # wake-up each: what the poller is for.
    sizes: List[int] = []
    selector = poller._selector
    real_select = selector.select

    def counting_select(timeout: Optional[float] = None) -> List[Tuple[object, int]]:
        events = real_select(timeout)
        sizes.append(len(events))
        return events
    selector.select = counting_select  # type: ignore[method-assign]
    hold, release = threading.Event(), threading.Event()
    gate_writer, gate_reader = pairs()

    def gate_step() -> bool:
        gate_reader.recv(16)
        hold.set()
        release.wait(WAIT)  # holds the poller thread while the others become ready
        return True

    readers, writers = [], []
    for _ in range(MANY):
        writer, reader = pairs()
        writers.append(writer)
        readers.append(Reader(reader))
        assert poller.watch(readers[-1].watch)
    assert poller.watch(Watch(gate_reader, gate_step))
    gate_writer.sendall(b"x")
    assert hold.wait(WAIT)
    for writer in writers:  # all made ready while the poller thread is busy
        writer.sendall(b"!")
    release.set()
    for r in readers:
        assert r.watch.wait(WAIT) and r.steps == 1
    assert max(sizes) >= MANY


# -- unwatch -------------------------------------------------------------------

def _held_step(poller: Poller, pairs: Callable[[], Pair]
               ) -> Tuple[socket.socket, Watch, threading.Event, List[str]]:
    """A watch whose step is running now and returns (logging it) once
    ``release`` is set: (writer, watch, release, log)."""
    writer, reader = pairs()
    in_step, release = threading.Event(), threading.Event()
    log: List[str] = []

    def step() -> bool:
        in_step.set()
        release.wait(WAIT)
        reader.recv(4096)
        log.append("step returned")
        return False
    watch = Watch(reader, step)
    assert poller.watch(watch)
    writer.sendall(b"x")
    assert in_step.wait(WAIT)
    return writer, watch, release, log


def test_unwatch_never_returns_while_a_step_of_that_watch_runs(
        poller: Poller, pairs: Callable[[], Pair]) -> None:
    writer, watch, release, log = _held_step(poller, pairs)
    unwatched: List[bool] = []

    def unwatch() -> None:
        unwatched.append(poller.unwatch(watch))
        log.append("unwatch returned")
    caller = threading.Thread(target=unwatch)
    caller.start()
    caller.join(0.3)  # it must still be waiting for the step
    assert caller.is_alive() and log == []
    release.set()
    caller.join(WAIT)
    assert log == ["step returned", "unwatch returned"] and unwatched == [True]
    assert not watch.wait(0)  # unwatch stops it without ending it: the caller knows

    # Readable again, but no longer watched: a barrier watch made ready after it
    # is stepped, and by then the old one would have been too.
    steps = len(log)
    writer.sendall(b"y")
    barrier_writer, barrier_reader = pairs()
    barrier = Reader(barrier_reader)
    assert poller.watch(barrier.watch)
    barrier_writer.sendall(b"!")
    assert barrier.watch.wait(WAIT)
    assert len(log) == steps


def test_unwatch_and_steps_never_overlap_under_churn(
        poller: Poller, pairs: Callable[[], Pair]) -> None:
    writer, reader = pairs()
    state = {"inside": 0, "unwatched": False, "late": 0, "overlap": 0}

    def step() -> bool:
        if state["unwatched"]:
            state["late"] += 1  # started after unwatch returned
        state["inside"] += 1
        with contextlib.suppress(BlockingIOError):
            reader.recv(1)  # one byte a step: it stays readable, steps keep coming
        state["inside"] -= 1
        return False

    writer.sendall(b"x" * 4096)
    for _ in range(200):
        state["unwatched"] = False
        watch = Watch(reader, step)
        assert poller.watch(watch)
        assert poller.unwatch(watch)
        if state["inside"]:
            state["overlap"] += 1
        state["unwatched"] = True
    barrier_writer, barrier_reader = pairs()
    barrier = Reader(barrier_reader)
    assert poller.watch(barrier.watch)
    barrier_writer.sendall(b"!")
    assert barrier.watch.wait(WAIT)
    assert state["overlap"] == 0 and state["late"] == 0


def test_unwatch_of_a_watch_the_poller_ended_says_false(
        poller: Poller, pairs: Callable[[], Pair]) -> None:
    writer, reader = pairs()
    r = Reader(reader)
    assert poller.watch(r.watch)
    writer.sendall(b"!")
    assert r.watch.wait(WAIT)
    assert poller.unwatch(r.watch) is False


# -- failures --------------------------------------------------------------------

def test_a_step_that_raises_ends_only_its_watch(
        poller: Poller, pairs: Callable[[], Pair]) -> None:
    bad_writer, bad_reader = pairs()
    good_writer, good_reader = pairs()
    good = Reader(good_reader)
    raised = threading.Event()

    def bad_step() -> bool:
        raised.set()
        raise RuntimeError("a step failed")
    bad = Watch(bad_reader, bad_step)
    assert poller.watch(bad) and poller.watch(good.watch)
    good_writer.sendall(b"before;")
    bad_writer.sendall(b"x")
    assert bad.wait(WAIT) and raised.is_set()
    thread = _the_thread()
    assert poller.unwatch(bad) is False
    bad_writer.sendall(b"more")  # no longer watched: its step is not run again
    good_writer.sendall(b"after!")
    assert good.watch.wait(WAIT)
    assert bytes(good.got) == b"before;after!" and good.threads == {NAME}
    assert _the_thread() is thread  # the same thread carried on


@pytest.mark.parametrize("exc", [KeyboardInterrupt, SystemExit, MemoryError])
def test_a_step_raising_a_base_exception_does_not_kill_the_thread(
        poller: Poller, pairs: Callable[[], Pair], exc: type) -> None:
    bad_writer, bad_reader = pairs()

    def bad_step() -> bool:
        raise exc()
    bad = Watch(bad_reader, bad_step)
    assert poller.watch(bad)
    bad_writer.sendall(b"x")
    assert bad.wait(WAIT)
    writer, reader = pairs()
    r = Reader(reader)
    assert poller.watch(r.watch)
    writer.sendall(b"!")
    assert r.watch.wait(WAIT) and r.threads == {NAME}


# -- close -------------------------------------------------------------------------

def test_close_ends_every_active_watch_and_joins_the_thread(
        poller: Poller, pairs: Callable[[], Pair]) -> None:
    readers = []
    for _ in range(5):
        writer, reader = pairs()
        readers.append((writer, Reader(reader)))
        assert poller.watch(readers[-1][1].watch)
    for writer, _ in readers:
        writer.sendall(b"not yet")
    for _, r in readers:  # stepped, still watched
        assert r.read.wait(WAIT)
    thread = _the_thread()
    started = time.monotonic()
    poller.close()
    assert time.monotonic() - started < 2.0
    assert not thread.is_alive() and not _poller_threads()
    for _, r in readers:
        assert r.watch.wait(0)  # ended as if its step had said so
        assert poller.unwatch(r.watch) is False
    poller.close()  # idempotent


def test_close_wakes_the_thread_instead_of_waiting_out_its_select(
        poller: Poller, pairs: Callable[[], Pair], monkeypatch: pytest.MonkeyPatch) -> None:
    # The backstop wait pushed far away: close must wake the thread (with epoll too,
    # which needs no wake for a registration). Without that, close took one whole
    # select, 0.25 s at the end of every Dispatcher that had polled a stream.
    monkeypatch.setattr(poller_module, "_SELECT_S", 2 * WAIT)
    writer, reader = pairs()
    r = Reader(reader)
    assert poller.watch(r.watch)
    writer.sendall(b"not yet")
    assert r.read.wait(WAIT)  # stepped once, so the thread goes back to select
    thread = _the_thread()
    started = time.monotonic()
    poller.close()
    assert time.monotonic() - started < WAIT
    assert not thread.is_alive() and r.watch.wait(0)


def test_close_waits_for_a_running_step(poller: Poller, pairs: Callable[[], Pair]) -> None:
    _, watch, release, log = _held_step(poller, pairs)
    closer = threading.Thread(target=lambda: (poller.close(), log.append("closed")))
    closer.start()
    closer.join(0.3)
    assert closer.is_alive() and log == []
    release.set()
    closer.join(WAIT)
    assert log == ["step returned", "closed"]
    assert watch.wait(0) and not _poller_threads()


def test_watch_after_close_returns_false_and_starts_nothing(
        poller: Poller, pairs: Callable[[], Pair]) -> None:
    writer, reader = pairs()
    first = Reader(reader)
    assert poller.watch(first.watch)
    writer.sendall(b"!")
    assert first.watch.wait(WAIT)
    poller.close()
    assert not _poller_threads()
    late = Reader(reader)
    assert poller.watch(late.watch) is False
    writer.sendall(b"!")
    assert not late.watch.wait(0.1) and late.steps == 0  # the caller reads it itself
    assert not _poller_threads()


def test_a_poller_closed_unused_frees_everything(selector_kind: str) -> None:
    epolls = _epoll_fds()
    p = Poller(NAME)
    p.close()
    p.close()
    assert not _poller_threads()
    assert _epoll_fds() == epolls


def test_close_frees_the_selector(selector_kind: str, pairs: Callable[[], Pair]) -> None:
    epolls = _epoll_fds()
    p = Poller(NAME)
    try:
        writer, reader = pairs()
        r = Reader(reader)
        assert p.watch(r.watch)
        writer.sendall(b"!")
        assert r.watch.wait(WAIT)
    finally:
        p.close()
    assert not _poller_threads()
    assert _epoll_fds() == epolls


# -- the thread's life -------------------------------------------------------------------

@pytest.fixture
def quick_idle(monkeypatch: pytest.MonkeyPatch) -> float:
    monkeypatch.setattr(poller_module, "IDLE_EXIT_S", 0.05)
    monkeypatch.setattr(poller_module, "_SELECT_S", 0.02)
    return 0.05


def test_no_thread_before_the_first_watch(poller: Poller) -> None:
    assert not _poller_threads()


def test_the_thread_ends_when_idle_and_a_later_watch_starts_a_new_one(
        poller: Poller, pairs: Callable[[], Pair], quick_idle: float) -> None:
    writer, reader = pairs()
    first = Reader(reader)
    assert poller.watch(first.watch)
    thread = _the_thread()
    writer.sendall(b"!")
    assert first.watch.wait(WAIT)
    thread.join(WAIT)
    assert not thread.is_alive() and not _poller_threads()

    second = Reader(reader)
    assert poller.watch(second.watch)
    again = _the_thread()
    assert again is not thread
    writer.sendall(b"!")
    assert second.watch.wait(WAIT) and second.threads == {NAME}


def test_the_thread_stays_while_a_watch_is_active(
        poller: Poller, pairs: Callable[[], Pair], quick_idle: float) -> None:
    writer, reader = pairs()
    r = Reader(reader)
    assert poller.watch(r.watch)
    thread = _the_thread()
    thread.join(10 * quick_idle)  # far past the idle exit: it must not end
    assert thread.is_alive()
    writer.sendall(b"!")
    assert r.watch.wait(WAIT) and r.threads == {NAME}


def test_the_thread_stays_after_an_unwatch_while_another_watch_is_active(
        poller: Poller, pairs: Callable[[], Pair], quick_idle: float) -> None:
    _, r1 = pairs()
    w2, r2 = pairs()
    a, b = Reader(r1), Reader(r2)
    assert poller.watch(a.watch) and poller.watch(b.watch)
    thread = _the_thread()
    assert poller.unwatch(a.watch)
    thread.join(10 * quick_idle)
    assert thread.is_alive()
    w2.sendall(b"!")
    assert b.watch.wait(WAIT) and a.steps == 0


def test_a_watch_racing_the_idle_exit_is_always_served(
        poller: Poller, pairs: Callable[[], Pair], quick_idle: float) -> None:
    # Watches arriving around the moment the idle thread decides to end must
    # still be stepped (by it or by the thread they start).
    writer, reader = pairs()
    for i in range(30):
        r = Reader(reader)
        assert poller.watch(r.watch)
        writer.sendall(b"!")
        assert r.watch.wait(WAIT), f"watch {i} was never stepped"
        threads = _poller_threads()
        if threads:
            threads[0].join(i % 3 * quick_idle)  # vary the phase against the idle clock


@pytest.mark.parametrize("selector_kind", ["default", "select"], indirect=True)
def test_a_watched_socket_closed_by_its_owner_does_not_kill_the_thread(
        poller: Poller, pairs: Callable[[], Pair]) -> None:
    writer, reader = pairs()  # made first: the closed socket's fd number is not reused
    doomed_writer, doomed_reader = socket.socketpair()
    lost = Reader(doomed_reader)
    assert poller.watch(lost.watch)
    thread = _the_thread()
    doomed_reader.close()  # a misuse (unwatch first), but it must not take the others down
    doomed_writer.close()
    try:
        r = Reader(reader)
        assert poller.watch(r.watch)
        writer.sendall(b"!")
        assert r.watch.wait(1.0) and r.threads == {NAME}
        assert _the_thread() is thread
        # epoll forgets a closed fd (the owner's unwatch stops it); select fails
        # on it, and the poller ends that watch itself, releasing its waiter.
        assert poller.unwatch(lost.watch) or lost.watch.wait(1.0)
    finally:
        if not thread.is_alive():  # the thread died: free what it would have
            poller.close()
            poller._free()
