"""The records of one load point in, its statistics out (pure: no I/O, no clock).

:func:`summarize` aggregates a point's :class:`~streamkit.bench.metrics.RequestRecord`
list into a :class:`PointSummary`: counts, errors, throughput over the
measured window, goodput against an SLO, concurrency, and a
:class:`Distribution` of each per-request metric
(:func:`~streamkit.bench.metrics.derive`) and of the chunk gaps. The
formulas, and the rules that keep the numbers honest, are in
:mod:`streamkit.bench.metrics`. Raises ValueError for no data.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence

from .metrics import (
    DERIVED_METRICS,
    LATENCY_METRICS,
    NS_PER_MS,
    NS_PER_S,
    RequestRecord,
    derive,
    icl_gaps_ms,
)
from .slo import Slo

__all__ = ["PERCENTILES", "Distribution", "PointSummary", "distribution", "percentile",
           "summarize"]

PERCENTILES = (50, 90, 95, 99)


@dataclass
class Distribution:
    """Summary statistics of one metric (all None when ``count`` is 0)."""

    count: int = 0
    mean: Optional[float] = None
    std: Optional[float] = None
    min: Optional[float] = None
    p50: Optional[float] = None
    p90: Optional[float] = None
    p95: Optional[float] = None
    p99: Optional[float] = None
    max: Optional[float] = None


def percentile(ordered: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) of sorted data, linear interpolation (numpy's default).

    Raises ValueError on empty data.
    """
    if not ordered:
        raise ValueError("percentile of no data")
    pos = (len(ordered) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def distribution(values: Iterable[Optional[float]]) -> Distribution:
    """Count, mean, std (population), min, p50/p90/p95/p99 and max of the non-None values."""
    data = sorted(v for v in values if v is not None)
    if not data:
        return Distribution()
    n = len(data)
    mean = math.fsum(data) / n
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in data) / n)
    pct = {f"p{q}": percentile(data, q) for q in PERCENTILES}
    return Distribution(count=n, mean=mean, std=std, min=data[0], max=data[-1], **pct)


@dataclass
class PointSummary:
    """Statistics of one load point (one concurrency or one rate)."""

    label: str
    mode: str
    concurrency: Optional[int]
    rate: Optional[float]
    requests: int
    ok: int
    failed: int
    busy_503: int
    errors: Dict[str, int]
    warmup_excluded: int
    window_s: float
    req_per_s: float
    output_tokens: Optional[int]
    output_tok_per_s: Optional[float]
    input_tok_per_s: float
    goodput_req_per_s: Optional[float]
    goodput_frac: Optional[float]
    achieved_rate: Optional[float]
    concurrency_mean: float
    concurrency_peak: int
    coalesced_frac: Optional[float]
    client_cpu: Optional[float] = None
    processes: int = 1
    metrics: Dict[str, Distribution] = field(default_factory=dict)
    token_counts: str = "server"
    output_tok_per_s_estimated: Optional[float] = None
    repeat: int = 0  # which run of a repeated point (--repeat), from 0

    def as_dict(self) -> Dict[str, Any]:
        return asdict(self)


def _peak_concurrency(records: Sequence[RequestRecord]) -> int:
    """Most requests in flight (sent → done) at any instant: a sweep over the intervals."""
    events: List[tuple[int, int]] = []
    for r in records:
        end = r.done_ns or r.last_token_ns
        if r.sent_ns is not None and end is not None:
            events.append((r.sent_ns, 1))
            events.append((end, -1))
    events.sort(key=lambda e: (e[0], e[1]))  # ends before starts at the same instant
    peak = level = 0
    for _, step in events:
        level += step
        peak = max(peak, level)
    return peak


def _error_counts(records: Iterable[RequestRecord]) -> tuple[Dict[str, int], int]:
    errors: Dict[str, int] = {}
    busy = 0
    for r in records:
        if r.error_type is None:
            continue
        errors[r.error_type] = errors.get(r.error_type, 0) + 1
        if r.status_code == 503:
            busy += 1
    return dict(sorted(errors.items())), busy


def _achieved_rate(records: Sequence[RequestRecord]) -> Optional[float]:
    sent = sorted(r.sent_ns for r in records if r.sent_ns is not None)
    if len(sent) < 2 or sent[-1] == sent[0]:
        return None
    return (len(sent) - 1) * NS_PER_S / (sent[-1] - sent[0])


def _window_ns(records: Sequence[RequestRecord], base_ns: Optional[int]) -> int:
    start = base_ns if base_ns is not None else min(r.scheduled_ns for r in records)
    ends = [r.done_ns or r.last_token_ns or r.sent_ns or r.scheduled_ns for r in records]
    return max(1, max(ends) - start)


def summarize(records: Sequence[RequestRecord], *, label: str, mode: str,
              concurrency: Optional[int] = None, rate: Optional[float] = None,
              base_ns: Optional[int] = None, slo: Optional[Slo] = None,
              client_cpu: Optional[float] = None, processes: int = 1) -> PointSummary:
    """Aggregate the records of one load point; warm-up records are left out.

    ``base_ns`` is the start of the measured phase (the schedule's zero); it
    defaults to the earliest scheduled time. Raises ValueError when no
    measured record is given.
    """
    warm = sum(1 for r in records if r.warmup)
    measured = [r for r in records if not r.warmup]
    if not measured:
        raise ValueError("no measured requests to summarize")
    good = [r for r in measured if r.ok]
    derived = [derive(r) for r in good]
    window_ns = _window_ns(measured, base_ns)
    window_s = window_ns / NS_PER_S
    errors, busy = _error_counts(measured)
    token_counts, out_tokens, estimated_tokens = _output_tokens(good)
    in_tokens = sum(r.prompt_eval_count or 0 for r in good)
    goodput = frac = None
    if slo is not None:
        met = sum(1 for d in derived if slo.met(d))
        goodput, frac = met / window_s, (met / len(measured))
    chunk_total = sum(len(r.chunk_ns) for r in good)
    coalesced = sum(r.coalesced for r in good)
    busy_ns = sum((r.done_ns or r.last_token_ns or r.sent_ns) - r.sent_ns
                  for r in measured if r.sent_ns is not None)
    metrics = _metric_distributions(good, derived)
    return PointSummary(
        label=label, mode=mode, concurrency=concurrency, rate=rate,
        requests=len(measured), ok=len(good), failed=len(measured) - len(good),
        busy_503=busy, errors=errors, warmup_excluded=warm, window_s=window_s,
        req_per_s=len(good) / window_s, output_tokens=out_tokens,
        output_tok_per_s=None if out_tokens is None else out_tokens / window_s,
        output_tok_per_s_estimated=(None if estimated_tokens is None
                                    else estimated_tokens / window_s),
        token_counts=token_counts, input_tok_per_s=in_tokens / window_s,
        goodput_req_per_s=goodput, goodput_frac=frac,
        achieved_rate=_achieved_rate(measured),
        concurrency_mean=busy_ns / window_ns,
        concurrency_peak=_peak_concurrency(measured),
        coalesced_frac=coalesced / chunk_total if chunk_total else None,
        client_cpu=client_cpu, processes=processes, metrics=metrics)


def _output_tokens(good: Sequence[RequestRecord]
                   ) -> tuple[str, Optional[int], Optional[int]]:
    """(token_counts flag, server-counted output tokens, estimated output tokens).

    The server total is None unless every successful request was counted
    (a partial sum would understate throughput); the estimate is None when
    it is not needed, else counts one text chunk as one token where the
    server gave no count.
    """
    missing = [r for r in good if r.eval_count is None]
    counted = sum(r.eval_count or 0 for r in good)
    if not missing:
        return "server", counted, None
    flag = "none" if len(missing) == len(good) else "partial"
    return flag, None, counted + sum(len(r.chunk_ns) for r in missing)


def _metric_distributions(good: Sequence[RequestRecord],
                          derived: Sequence[Mapping[str, Optional[float]]]
                          ) -> Dict[str, Distribution]:
    out = {name: distribution(d[name] for d in derived) for name in DERIVED_METRICS}
    out["icl_ms"] = distribution(g for r in good for g in icl_gaps_ms(r))
    lags = [lag / NS_PER_MS for r in good for lag in r.lags_ns]
    if lags:
        out["lag_ms"] = distribution(lags)
    ordered = {k: out[k] for k in LATENCY_METRICS if k in out}
    ordered.update({k: v for k, v in out.items() if k not in ordered})
    return ordered
