"""Where each attempt of a stream goes: one host, or many with limits and cooldowns.

A stream calls its :class:`Route`'s ``acquire`` before each HTTP attempt and
``release`` after it, from its worker thread. A Client's streams use a
:class:`FixedRoute` (one host, no limits); a Dispatcher given ``hosts=``
shares one :class:`HostRouter` between all its streams, so all its state
sits under one lock.

Host router rules:

- A host takes at most ``parallel`` requests at once (default 1, like
  ``OLLAMA_NUM_PARALLEL``'s default). Beyond that, Ollama would only queue
  them server-side, where they can no longer move to an idle host.
- A host *fails* when an attempt on it fails before the first chunk with a
  connect error or connect timeout, 5xx or 429/503, or when it cuts a stream
  that had started (reset, end of body without the done record, idle
  timeout). A failed host is cooled down: ``1 s, 2 s, 4 s ... 30 s`` for
  consecutive failures. Failures of requests that were already in flight when
  the cooldown began do not lengthen it (one outage, one step), and their
  successes while it lasts do not make the host healthy.
- After its cooldown a host is on probation: it takes one request (the
  probe) and no other until that request releases it. A probe that succeeds
  or streams makes the host healthy again (the count resets); one that fails
  cools it down for the next, longer step. So a dead host costs one attempt
  per cooldown, not one per waiting request.
- ``acquire`` never sends a stream back to a host it already tried while a
  healthy host (not cooling, not on probation) exists that it has not tried:
  it waits for a slot there instead. Only when every healthy host has been
  tried (a single host, or all failed) may it go back to one.
- Among the hosts it may use, ``acquire`` picks one with a free slot that is
  not cooling down (a host on probation only without its probe out): untried
  first, then the fewest requests in flight, then the one picked least
  recently (spreads ties).
- With no usable host, ``acquire`` waits on the router's Condition: for a
  slot to free up, or the earliest cooldown to end. It wakes at least every
  ``WAIT_SLICE_S`` to check the stream's cancel Event and raises
  :class:`~streamkit.errors.Cancelled` when it is set or the router is closed.
  The wait is bounded by the streams on the healthy hosts, each bounded by
  its own timeouts.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Protocol, Sequence, Tuple

from ..config import HostSpec, check_count, parse_host
from ..errors import (
    Cancelled,
    ConfigError,
    ConnectError,
    ResponseError,
    StreamDiverged,
    StreamInterrupted,
    StreamTimeout,
)

__all__ = ["COOLDOWN_BASE_S", "COOLDOWN_MAX_S", "FixedRoute", "HostRouter", "Route",
           "is_cut", "is_host_failure", "parse_hosts"]

COOLDOWN_BASE_S = 1.0
COOLDOWN_MAX_S = 30.0
#: Longest sleep of a waiting ``acquire`` before it looks at its cancel Event again.
WAIT_SLICE_S = 0.05
DEFAULT_PARALLEL = 1

Clock = Callable[[], float]


class Route(Protocol):
    """Where each attempt of a stream goes (the Dispatcher spreads over many hosts)."""

    def acquire(self, tried: Sequence[str], cancel: threading.Event) -> str:
        """The base URL for the next attempt; may block, waking on ``cancel``.

        ``tried``: the host of each earlier attempt of the stream, in order
        (each of them failed, or cut the stream, since it asks again).
        """

    def release(self, host: str, error: Optional[BaseException], streamed: bool) -> None:
        """The attempt on ``host`` is over; ``streamed``: it delivered a first chunk."""


class FixedRoute:
    """One host, no limits: what a Client uses."""

    def __init__(self, url: str) -> None:
        self.url = url

    def acquire(self, tried: Sequence[str], cancel: threading.Event) -> str:
        return self.url

    def release(self, host: str, error: Optional[BaseException], streamed: bool) -> None:
        pass

    def __repr__(self) -> str:
        return f"FixedRoute({self.url!r})"


def parse_hosts(hosts: Sequence[HostSpec]) -> List[Tuple[str, int]]:
    """Normalise ``[url, (url, parallel), ...]`` into ``[(base_url, parallel)]``.

    URLs follow ``OLLAMA_HOST`` rules (:func:`streamkit.config.parse_host`).

    Raises:
        ConfigError: no hosts, a bad URL, a parallel limit that is not an
            int >= 1, or the same host listed twice.
    """
    if isinstance(hosts, (str, bytes)) or not hosts:
        raise ConfigError("hosts must be a non-empty list of URLs or (URL, parallel) pairs")
    parsed: List[Tuple[str, int]] = []
    for spec in hosts:
        url, parallel = _split(spec)
        limit = check_count(f"parallel limit for host {url!r}", parallel)
        base = parse_host(url)
        if any(base == seen for seen, _ in parsed):
            raise ConfigError(f"host {base} is listed twice; give it one (url, parallel) pair")
        parsed.append((base, limit))
    return parsed


def _split(spec: object) -> Tuple[str, object]:
    if isinstance(spec, str):
        return spec, DEFAULT_PARALLEL
    if isinstance(spec, (tuple, list)) and len(spec) == 2 and isinstance(spec[0], str):
        return spec[0], spec[1]
    raise ConfigError(f"a host must be a URL or a (URL, parallel) pair, got {spec!r}")


def is_cut(error: BaseException) -> bool:
    """Did the server or the network cut a stream that had started?

    A reset, an end of body without the done record, a truncated body or an
    idle timeout; not an in-band error, a protocol error, a replay that
    diverged or a total timeout (the request's, not the host's, fault).
    """
    if isinstance(error, StreamInterrupted):
        return not isinstance(error, StreamDiverged)
    return isinstance(error, StreamTimeout) and error.phase == "idle"


def is_host_failure(error: BaseException) -> bool:
    """Does this error say the host itself is down or overloaded?"""
    if isinstance(error, ConnectError) or is_cut(error):
        return True
    if isinstance(error, StreamTimeout):
        return error.phase == "connect"
    if isinstance(error, ResponseError):
        return error.status_code >= 500 or error.status_code == 429
    return False


@dataclass
class _Host:
    url: str
    limit: int
    in_flight: int = 0
    failures: int = 0          # consecutive failures (0: healthy)
    cool_until: float = 0.0    # clock() value; usable again (on probation) from then on
    probing: bool = False      # on probation, with its one probe in flight
    last_pick: int = 0         # tie-break: least recently picked first
    served: int = 0            # attempts routed here (observability)


class HostRouter:
    """Routes each attempt of many streams over several hosts (a :class:`Route`).

    Thread-safe. ``clock`` is injectable for tests (default ``time.monotonic``).
    """

    def __init__(self, hosts: Sequence[Tuple[str, int]], *,
                 cooldown_base: float = COOLDOWN_BASE_S,
                 cooldown_max: float = COOLDOWN_MAX_S,
                 clock: Clock = time.monotonic) -> None:
        if not hosts:
            raise ConfigError("a HostRouter needs at least one host")
        self._hosts: Dict[str, _Host] = {url: _Host(url, limit) for url, limit in hosts}
        self._cooldown_base = cooldown_base
        self._cooldown_max = cooldown_max
        self._clock = clock
        self._picks = itertools.count(1)
        self._closed = False
        # One lock for every host's counters; the Condition is notified when a
        # slot frees up, a host fails (waiters re-check) or the router closes.
        self._cond = threading.Condition(threading.Lock())

    @property
    def urls(self) -> List[str]:
        return list(self._hosts)

    @property
    def max_parallel(self) -> int:
        """The largest per-host parallel limit."""
        return max(h.limit for h in self._hosts.values())

    def acquire(self, tried: Sequence[str], cancel: threading.Event) -> str:
        """Reserve a slot on the best usable host and return its base URL.

        Blocks until a host has a free slot and is not cooled down.

        Raises:
            Cancelled: ``cancel`` was set, or the router closed, while waiting.
        """
        with self._cond:
            while True:
                if cancel.is_set() or self._closed:
                    raise Cancelled("cancelled while waiting for a free host")
                now = self._clock()
                host = self._pick(tried, now)
                if host is not None:
                    host.in_flight += 1
                    host.served += 1
                    host.last_pick = next(self._picks)
                    if host.failures:
                        host.probing = True
                    return host.url
                self._cond.wait(self._wait_time(now))

    def release(self, host: str, error: Optional[BaseException], streamed: bool) -> None:
        """Free the slot taken by ``acquire``; cool the host down if it failed early.

        ``streamed`` says whether the attempt delivered a first chunk: then
        only a cut (:func:`is_cut`) is the host's failure; anything else
        (success, an in-band error, a cancel) shows the host is alive.
        """
        with self._cond:
            entry = self._hosts.get(host)
            if entry is None:
                return
            entry.in_flight = max(0, entry.in_flight - 1)
            entry.probing = False  # whichever request it was, the host has answered
            if error is not None and is_host_failure(error):
                self._cool_down(entry)
            elif (error is None or streamed) and entry.cool_until <= self._clock():
                # A request that was in flight when the outage began may still
                # finish well (a server draining as it stops); that says nothing
                # about new connections, so it does not end the cooldown early.
                entry.failures = 0
            self._cond.notify_all()

    def close(self) -> None:
        """Wake every waiting ``acquire``; they raise Cancelled. Idempotent."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def wake(self) -> None:
        """Make waiting ``acquire`` calls re-check their cancel Events now."""
        with self._cond:
            self._cond.notify_all()

    def snapshot(self) -> Dict[str, Dict[str, float]]:
        """Per host: in_flight, failures, cooldown seconds left, attempts served."""
        with self._cond:
            now = self._clock()
            return {h.url: {"in_flight": h.in_flight, "failures": h.failures,
                            "cooldown_left": max(0.0, h.cool_until - now),
                            "served": h.served}
                    for h in self._hosts.values()}

    def cooled_down(self, host: str) -> bool:
        """True while ``host`` is being skipped after a failure."""
        with self._cond:
            return self._hosts[parse_host(host)].cool_until > self._clock()

    # -- internals (call with the lock held) --------------------------------

    def _pick(self, tried: Sequence[str], now: float) -> Optional[_Host]:
        hosts: Sequence[_Host] = list(self._hosts.values())
        if tried:
            fresh = [h for h in hosts if h.failures == 0 and h.url not in tried]
            if fresh:  # a healthy host this stream has not failed on: wait for it
                hosts = fresh
        usable = [h for h in hosts if h.in_flight < h.limit and h.cool_until <= now
                  and not h.probing]
        if not usable:
            return None
        return min(usable, key=lambda h: (tried.count(h.url), h.in_flight, h.last_pick))

    def _wait_time(self, now: float) -> float:
        cooling = [h.cool_until - now for h in self._hosts.values() if h.cool_until > now]
        soonest = min(cooling) if cooling else WAIT_SLICE_S
        return max(0.001, min(WAIT_SLICE_S, soonest))

    def _cool_down(self, host: _Host) -> None:
        now = self._clock()
        if host.cool_until > now:
            return  # already cooling: in-flight failures of the same outage
        host.failures += 1
        step = self._cooldown_base * 2.0 ** min(host.failures - 1, 30)
        host.cool_until = now + min(self._cooldown_max, step)
