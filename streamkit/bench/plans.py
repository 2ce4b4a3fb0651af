"""The load points of a run: each a label and a precomputed :class:`~.load.LoadPlan`."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import List, Tuple

from .arrival import arrival_offsets
from .benchconfig import BenchConfig
from .load import OPEN_LOOP_MAX_THREADS, LoadPlan

__all__ = ["SEARCH_MIN_REQUESTS", "plans", "rate_plan", "streams_of", "warmup_plan"]

# A search probe without --requests/--duration: at least this many requests (and 10 s),
# so a 95% goodput target is judged on more than a handful of requests.
SEARCH_MIN_REQUESTS = 20


def rate_plan(config: BenchConfig, rate: float, index: int = 0,
              default_requests: int = 10) -> Tuple[str, LoadPlan]:
    """One open-loop point at ``rate`` (schedule seeded by seed + index), labelled."""
    count = config.requests
    if count is None and config.duration is None:
        count = max(default_requests, math.ceil(rate * 10))
    offsets = arrival_offsets(rate, config.arrival, count=count, duration=config.duration,
                              seed=config.seed + index, shape=config.arrival_shape)
    plan = LoadPlan(rate=rate, max_concurrency=config.max_concurrency,
                    requests=count, duration=config.duration, offsets=tuple(offsets))
    return f"rate {rate:.4g}/s", plan


def _ramp_plan(config: BenchConfig) -> Tuple[str, LoadPlan]:
    """One point whose rate goes linearly from the first rate to the second; its
    ``rate`` is the mean of the two (what the achieved send rate is checked against)."""
    start, end = config.rates
    mean = (start + end) / 2
    count = config.requests
    if count is None and config.duration is None:
        count = max(10, math.ceil(mean * 10))
    offsets = arrival_offsets(start, config.arrival, count=count, duration=config.duration,
                              seed=config.seed, shape=config.arrival_shape, ramp_to=end)
    plan = LoadPlan(rate=mean, max_concurrency=config.max_concurrency, requests=count,
                    duration=config.duration, offsets=tuple(offsets))
    return f"ramp {start:g}->{end:g}/s", plan


def _replay_plans(config: BenchConfig) -> List[Tuple[str, LoadPlan]]:
    """The recorded schedules, open loop, the same request indices (so the same
    generated prompts with the same --seed); ``rate`` is the recorded mean rate."""
    out = []
    for label, indices, offsets in config.replay:
        span = offsets[-1] - offsets[0]
        rate = (len(offsets) - 1) / span if span > 0 else float(len(offsets))
        out.append((f"replay {label}",
                    LoadPlan(rate=rate, max_concurrency=config.max_concurrency,
                             requests=len(offsets), offsets=offsets, indices=indices)))
    return out


def plans(config: BenchConfig) -> List[Tuple[str, LoadPlan]]:
    """The load points of a run, labelled, each with its precomputed schedule."""
    if config.replay:
        return _replay_plans(config)
    if config.ramp:
        return [_ramp_plan(config)]
    if config.open_loop:
        return [rate_plan(config, rate, i) for i, rate in enumerate(config.rates)]
    out: List[Tuple[str, LoadPlan]] = []
    for conc in config.concurrency:
        count = config.requests
        if count is None and config.duration is None:
            count = max(10, 4 * conc)
        out.append((f"concurrency {conc}",
                    LoadPlan(concurrency=conc, requests=count, duration=config.duration)))
    return out


def streams_of(plan: LoadPlan) -> int:
    """Threads (streams) a plan needs in flight at most."""
    if plan.open_loop:
        return plan.max_concurrency or min(len(plan.offsets), OPEN_LOOP_MAX_THREADS)
    return plan.concurrency


def warmup_plan(plan: LoadPlan, count: int) -> LoadPlan:
    """The first ``count`` requests of the plan's load shape, flagged as warm-up."""
    if plan.open_loop:
        return replace(plan, offsets=plan.offsets[:count], indices=(),
                       first_index=-count, warmup=True)
    return replace(plan, requests=count, duration=None, first_index=-count, warmup=True)
