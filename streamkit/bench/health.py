"""Measurement health: is the client, not the server, the bottleneck?

:func:`health_warnings` turns a point's summary, records and calibration
into warnings (thresholds of ``docs/bench.md``, *How far to trust the
numbers*): dispatch slip, client CPU, coalesced chunks, the calibrated
floor, 503s, an open loop that the server or the client cannot keep up
with, and too few samples for a stable p99.
"""

from __future__ import annotations

import statistics
from typing import List, Optional

from .calibrate import Calibration
from .load import LoadPlan
from .metrics import RequestRecord, derive
from .summary import PointSummary

__all__ = ["TOKEN_COUNT_WARNING", "health_warnings", "once_per_run", "token_count_warning"]

# Thresholds of benchmarking.md 5.5.
DISPATCH_P99_LIMIT_MS = 5.0
COALESCED_LIMIT = 0.05
CPU_LIMIT = 0.85
ACHIEVED_RATE_MIN = 0.95
LAG_P99_LIMIT_MS = 5.0
FEW_SAMPLES = 100
GROWTH_LIMIT_MS = 50.0        # last third vs first third of the schedule


TOKEN_COUNT_WARNING = "server sent no token counts"


def once_per_run(warning: str) -> bool:
    """Warnings about the server itself, given once per run rather than per point."""
    return warning.startswith(TOKEN_COUNT_WARNING)


def token_count_warning(summary: PointSummary) -> Optional[str]:
    """The warning for a server that did not count its output tokens (None if it did)."""
    if summary.token_counts == "server":
        return None
    some = "" if summary.token_counts == "none" else " for some requests"
    return (f"{TOKEN_COUNT_WARNING}{some} (no eval_count / usage.completion_tokens; e.g. a "
            "server that ignores stream_options.include_usage): output tok/s and TPOT are "
            "n/a; the figures marked 'estimated' count one text chunk as one token, "
            "which undercounts when a chunk carries several")


def health_warnings(summary: PointSummary, records: List[RequestRecord],
                    calibration: Optional[Calibration], plan: LoadPlan) -> List[str]:
    """Measurement-health warnings (benchmarking.md 5.5): is the client the bottleneck?"""
    out: List[str] = []
    counts = token_count_warning(summary)
    if counts is not None:
        out.append(counts)
    m = summary.metrics
    dispatch = m["dispatch_ms"].p99
    if dispatch is not None and dispatch > DISPATCH_P99_LIMIT_MS:
        out.append(f"client dispatch delay p99 {dispatch:.1f} ms > {DISPATCH_P99_LIMIT_MS:g} ms: "
                   "the client slips its schedule (shard with --processes N)")
    if summary.coalesced_frac is not None and summary.coalesced_frac > COALESCED_LIMIT:
        out.append(f"{summary.coalesced_frac:.0%} of chunks arrived in the same read as the "
                   "previous one: ICL percentiles are distorted (client too slow, or the "
                   "server batches chunks)")
    if summary.client_cpu is not None and summary.client_cpu > CPU_LIMIT:
        out.append(f"client CPU {summary.client_cpu:.0%} of one core > {CPU_LIMIT:.0%}: "
                   "the client may be the bottleneck (shard with --processes N)")
    if calibration is not None and calibration.lag_ms.p99 is not None \
            and calibration.lag_ms.p99 > LAG_P99_LIMIT_MS:
        out.append(f"client floor ±{calibration.lag_ms.p99:.1f} ms p99 > "
                   f"{LAG_P99_LIMIT_MS:g} ms at this load: shard with --processes N")
    if summary.busy_503:
        out.append(f"the server refused {summary.busy_503} request(s) with 503 (queue full): "
                   "lower the load or raise OLLAMA_MAX_QUEUE")
    out.extend(_saturation_warnings(summary, records, plan))
    ttft_n = m["ttft_ms"].count
    if 0 < ttft_n < FEW_SAMPLES:
        out.append(f"only {ttft_n} samples: p99 is rough (aim for >= 1000 for a stable p99)")
    return out


def _saturation_warnings(summary: PointSummary, records: List[RequestRecord],
                         plan: LoadPlan) -> List[str]:
    if not plan.open_loop or plan.rate is None:
        return []
    out: List[str] = []
    achieved = summary.achieved_rate
    if achieved is not None and achieved < ACHIEVED_RATE_MIN * plan.rate:
        out.append(f"achieved send rate {achieved:.2f}/s < {ACHIEVED_RATE_MIN:.0%} of the "
                   f"target {plan.rate:g}/s")
    m = summary.metrics
    queue, sched, e2e = m["queue_ms"], m["sched_e2e_ms"], m["e2e_ms"]
    ttft_growth = _growth_ms([r for r in records if r.ok], "ttft_ms")
    if ttft_growth is not None and ttft_growth > GROWTH_LIMIT_MS:
        out.append(f"TTFT grows by {ttft_growth:.0f} ms over the run: the server queues "
                   "requests (offered rate above its capacity)")
    if _queue_growing(records) and sched.p50 is not None and e2e.p50 is not None:
        out.append(f"offered load exceeds capacity: requests waited {queue.p50:.0f} ms p50 "
                   f"({queue.max:.0f} ms max) before being sent, and the wait grows; "
                   f"E2E from the scheduled time (p50 {sched.p50:.0f} ms, p99 {sched.p99:.0f} ms) "
                   f"is what arriving users see, not E2E from send (p50 {e2e.p50:.0f} ms)")
    return out


def _growth_ms(records: List[RequestRecord], metric: str) -> Optional[float]:
    """Mean of ``metric`` over the last third of the schedule minus the first third's."""
    values = sorted((r.scheduled_ns, v) for r in records if not r.warmup
                    for v in (derive(r).get(metric),) if v is not None)
    if len(values) < 6:
        return None
    third = len(values) // 3
    first = statistics.mean(v for _, v in values[:third])
    last = statistics.mean(v for _, v in values[-third:])
    return last - first


def _queue_growing(records: List[RequestRecord]) -> bool:
    """True when the client-side wait clearly grows over the run (a queue building up)."""
    growth = _growth_ms(records, "queue_ms")
    return growth is not None and growth > GROWTH_LIMIT_MS
