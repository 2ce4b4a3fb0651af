"""Open-loop arrival schedules: when each request is due, in seconds from the start.

Schedules are computed before a point starts and then followed on an
absolute clock (see :mod:`.load`), so a slow server never slows them down.

- ``constant``: every 1/rate s.
- ``poisson``: exponential gaps with mean 1/rate (memoryless arrivals).
- ``gamma``: gamma-distributed gaps with mean 1/rate and shape ``k``: k = 1
  is poisson, k < 1 burstier (clumps and lulls), k > 1 more regular.
- A *ramp* (``ramp_to``) makes the rate rise (or fall) linearly from
  ``rate`` to ``ramp_to`` over the run: the same gaps are drawn at rate 1
  and mapped through the inverse of the cumulative rate, so a ramp keeps the
  chosen arrival shape.

Everything is drawn from ``random.Random(seed)``: same seed, same schedule.
"""

from __future__ import annotations

import math
import random
from typing import Callable, List, Optional

from ..errors import ConfigError

__all__ = ["ARRIVALS", "arrival_offsets"]

ARRIVALS = ("constant", "poisson", "gamma")


def _gaps(arrival: str, shape: float, rng: random.Random) -> Callable[[float], float]:
    """A function rate -> the next gap (s) for the arrival process."""
    if arrival == "poisson":
        return rng.expovariate
    if arrival == "gamma":
        return lambda rate: rng.gammavariate(shape, 1.0 / (rate * shape))
    return lambda rate: 1.0 / rate


def _check(rate: float, arrival: str, shape: float, count: Optional[int],
           duration: Optional[float], ramp_to: Optional[float]) -> None:
    if not rate > 0:
        raise ConfigError(f"rate must be > 0 requests/s, got {rate!r}")
    if arrival not in ARRIVALS:
        raise ConfigError(f"arrival must be one of {ARRIVALS}, got {arrival!r}")
    if not shape > 0:
        raise ConfigError(f"the gamma shape must be > 0, got {shape!r}")
    if ramp_to is not None and not ramp_to > 0:
        raise ConfigError(f"a ramp must end at a rate > 0, got {ramp_to!r}")
    if count is None and duration is None:
        raise ConfigError("an open-loop schedule needs a request count or a duration")


def arrival_offsets(rate: float, arrival: str, *, count: Optional[int] = None,
                    duration: Optional[float] = None, seed: int = 0, shape: float = 1.0,
                    ramp_to: Optional[float] = None) -> List[float]:
    """Send times in seconds from the start, the first at 0.

    Stops at ``count`` requests or before ``duration`` seconds, whichever is
    first. With ``ramp_to`` the rate goes linearly from ``rate`` at 0 to
    ``ramp_to`` at the end: at ``duration`` when given, else when ``count``
    requests have been scheduled (their mean rate is the midpoint).

    Raises ConfigError on a bad rate, arrival, shape or missing bound.
    """
    _check(rate, arrival, shape, count, duration, ramp_to)
    rng = random.Random(seed)
    gap = _gaps(arrival, shape, rng)
    if ramp_to is not None:
        return _ramped(rate, ramp_to, gap, count, duration)
    offsets: List[float] = []
    t = 0.0
    while (count is None or len(offsets) < count) and (duration is None or t < duration):
        offsets.append(t)
        t += gap(rate)
    return offsets


def _ramped(start: float, end: float, gap: Callable[[float], float], count: Optional[int],
            duration: Optional[float]) -> List[float]:
    """Arrivals of a unit-rate process mapped through the inverse of the cumulative
    rate L(t) = start t + (end - start) t^2 / (2 T), so the rate at t is linear."""
    span = duration if duration is not None else 2.0 * float(count or 0) / (start + end)
    slope = (end - start) / (2.0 * span)      # L(t) = start t + slope t^2
    total = start * span + slope * span * span

    def at(u: float) -> float:
        if abs(slope) < 1e-12:
            return u / start
        return (-start + math.sqrt(max(0.0, start * start + 4.0 * slope * u))) / (2.0 * slope)

    offsets: List[float] = []
    u = 0.0
    # a count-bound ramp keeps its count even when random gaps overshoot the span
    while (count is None or len(offsets) < count) and (duration is None or u < total):
        offsets.append(at(u))
        u += gap(1.0)
    return offsets
