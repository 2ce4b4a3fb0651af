"""Find the limit: the highest open-loop rate whose goodput stays above a target.

:func:`search_rate` is the pure search; it calls ``measure(rate)`` for each
probe, which runs that rate (open loop, on its own schedule) once or more
(``--repeat``) and returns the share of requests that met every SLO in
each run. A probe passes when the mean share is at least the target.

1. Bracket: from the start rate, double while probes pass (or halve while
   they fail) until one passing and one failing rate are known.
2. Bisect between them until the bracket is narrower than ``tolerance`` of
   the passing rate, or the probe budget is spent.

The answer is the highest passing rate probed: a lower bound on the true
limit, at most ``tolerance`` below it when goodput falls monotonically
with the offered rate. Open loop matters here: a closed loop slows its
arrivals when the server slows, and would hide the very saturation the
search looks for.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from ..errors import ConfigError

__all__ = ["Probe", "SearchResult", "search_rate"]

DEFAULT_TOLERANCE = 0.05
DEFAULT_MAX_PROBES = 12
MIN_RATE = 0.01           # requests/s: below this nothing will pass
MAX_RATE = 100_000.0


@dataclass(frozen=True)
class Probe:
    """One probed rate: the goodput share of each run, their mean, pass or fail."""

    rate: float
    goodput_frac: float
    passed: bool
    runs: int
    fracs: Sequence[float] = ()


@dataclass
class SearchResult:
    """What the search found (``max_rate`` None when no probed rate passed)."""

    max_rate: Optional[float]
    goodput_target: float
    slo: Mapping[str, float]
    tolerance: float
    probes: List[Probe] = field(default_factory=list)
    stopped: str = ""

    def as_dict(self) -> Dict[str, Any]:
        out = asdict(self)
        out["slo"] = dict(self.slo)
        out["probes"] = [dict(asdict(p), fracs=list(p.fracs)) for p in self.probes]
        return out

    def sentence(self) -> str:
        """One line for the console."""
        slo = ", ".join(f"{k} <= {v:g} ms" for k, v in self.slo.items())
        if self.max_rate is None:
            return (f"search: no probed rate kept {self.goodput_target:.0%} of requests within "
                    f"the SLO ({slo}); {self.stopped}")
        return (f"search: max rate {self.max_rate:.3g} req/s keeps >= "
                f"{self.goodput_target:.0%} of requests within the SLO ({slo}); "
                f"{len(self.probes)} probes, {self.stopped}")


def search_rate(measure: Callable[[float], Sequence[float]], start: float, *,
                goodput_target: float = 0.95, slo: Optional[Mapping[str, float]] = None,
                tolerance: float = DEFAULT_TOLERANCE, max_probes: int = DEFAULT_MAX_PROBES,
                should_stop: Callable[[], bool] = lambda: False) -> SearchResult:
    """Bracket, then bisect, the highest rate whose mean goodput share >= the target.

    ``measure(rate)`` runs one probe and returns one goodput share (0..1) per
    run. Blocks for as long as the probes take; ``should_stop()`` is asked
    between probes (Ctrl-C or a stop event). Raises ConfigError on a bad
    start rate, target, tolerance or budget.
    """
    if not start > 0:
        raise ConfigError(f"the search needs a start rate > 0, got {start!r}")
    if not 0 < goodput_target <= 1:
        raise ConfigError(f"goodput target must be in (0, 1], got {goodput_target!r}")
    if not 0 < tolerance < 1:
        raise ConfigError(f"search tolerance must be in (0, 1), got {tolerance!r}")
    if max_probes < 2:
        raise ConfigError(f"the search needs at least 2 probes, got {max_probes!r}")
    result = SearchResult(max_rate=None, goodput_target=goodput_target, slo=dict(slo or {}),
                          tolerance=tolerance)

    def probe(rate: float) -> bool:
        fracs = list(measure(rate))
        mean = math.fsum(fracs) / len(fracs) if fracs else 0.0
        passed = bool(fracs) and mean >= goodput_target
        result.probes.append(Probe(rate=rate, goodput_frac=mean, passed=passed,
                                   runs=len(fracs), fracs=tuple(fracs)))
        return passed

    lo, hi = _bracket(probe, start, max_probes, should_stop)
    while (lo is not None and hi is not None and hi - lo > tolerance * lo
           and len(result.probes) < max_probes and not should_stop()):
        mid = (lo + hi) / 2
        if probe(mid):
            lo = mid
        else:
            hi = mid
    result.max_rate = lo
    result.stopped = _why(result, lo, hi, max_probes, should_stop())
    return result


def _bracket(probe: Callable[[float], bool], start: float, max_probes: int,
             should_stop: Callable[[], bool]) -> tuple[Optional[float], Optional[float]]:
    """(highest passing, lowest failing) rates found by doubling or halving from start."""
    lo: Optional[float] = None
    hi: Optional[float] = None
    rate = start
    for _ in range(max_probes):
        if should_stop() or not MIN_RATE <= rate <= MAX_RATE:
            break
        if probe(rate):
            lo = rate
            if hi is not None:
                break
            rate *= 2
        else:
            hi = rate
            if lo is not None:
                break
            rate /= 2
    return lo, hi


def _why(result: SearchResult, lo: Optional[float], hi: Optional[float], max_probes: int,
         stopped: bool) -> str:
    if stopped:
        return "stopped early"
    if lo is None:
        return f"every rate down to {result.probes[-1].rate:.3g} req/s failed"
    if hi is None:
        return f"every rate up to {result.probes[-1].rate:.3g} req/s passed (no limit found)"
    width = (hi - lo) / lo
    if width <= result.tolerance:
        return f"converged: the limit is between {lo:.3g} and {hi:.3g} req/s"
    return (f"probe budget ({max_probes}) spent: the limit is between {lo:.3g} and "
            f"{hi:.3g} req/s")
