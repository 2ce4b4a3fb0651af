"""The client's own floor: how accurate are its timestamps at a given load?

Before a load point runs, the same load (same concurrency or rate, same
number of processes) is run against a built-in emulator that stamps every
chunk with its send time (``raw["_sent_ns"]``, ``perf_counter_ns`` in the
server process). Both processes read the same monotonic clock, so

    lag = chunk.received_ns - raw["_sent_ns"]

is the error the client adds to every chunk stamp (plus loopback, tens of
µs). The emulator waits the same first-token delay as the server under test
(as measured), so first chunks burst the way they will in the real run; its
TTFT minus that delay is the client's TTFT floor (request out, headers and
first chunk back, parse), an upper bound as it includes the emulator's own
overhead. The emulator
runs in its own process, like a real server, and a first wave of one
request per stream (discarded) opens the connections before measuring.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any, Dict, List, Optional

from ..config import Timeouts
from .load import LoadPlan, RunOutcome, run_plan, run_sharded
from .metrics import RequestRecord, derive
from .summary import Distribution, PointSummary, distribution, summarize
from .target import Sender, SenderArgs, emulator_process, make_sender

__all__ = [
    "CALIBRATION_TOKENS",
    "Calibration",
    "calibrate",
    "calibration_plan",
]

CALIBRATION_TOKENS = 25        # tokens per calibration request (~0.5 s at 50 tok/s)
CALIBRATION_SECONDS = 1.5      # open loop: schedule this much of the real rate
MIN_CALIBRATION_REQUESTS = 4
MAX_PRIME_STREAMS = 64


@dataclass
class Calibration:
    """The measured floor. ``lag_ms``: per-chunk timestamp error; ``ttft_ms``: TTFT
    minus the emulator's first-token delay; ``chunks_per_s``: the chunk rate reached."""

    tokens_per_second: float
    first_token_delay: float
    streams: int
    chunks_per_s: float
    lag_ms: Distribution
    ttft_ms: Distribution
    dispatch_ms: Distribution
    coalesced_frac: Optional[float]
    client_cpu: Optional[float]

    def sentence(self) -> str:
        """One line for the console: the promise the numbers can keep."""
        lag, ttft = self.lag_ms, self.ttft_ms
        if lag.count == 0 or lag.p99 is None:
            return "client floor: not measured (the emulator sent no stamped chunks)"
        floor = (f"TTFT floor {ttft.p50:.1f} ms p50, {ttft.p99:.1f} ms p99"
                 if ttft.p50 is not None and ttft.p99 is not None else "")
        return (f"client floor: timestamps accurate to ±{lag.p99:.1f} ms p99 at this load "
                f"(lag p50 {lag.p50:.2f} ms, max {lag.max:.1f} ms over {lag.count} chunks, "
                f"{self.chunks_per_s:.0f} chunks/s); {floor}")

    def as_dict(self) -> Dict[str, Any]:
        return asdict(self)


def calibration_plan(plan: LoadPlan) -> LoadPlan:
    """The plan's load shape, cut short: two waves (closed) or ~1.5 s of arrivals (open)."""
    if plan.open_loop:
        assert plan.rate is not None
        count = max(MIN_CALIBRATION_REQUESTS, math.ceil(plan.rate * CALIBRATION_SECONDS))
        return replace(plan, offsets=plan.offsets[:count], indices=(), first_index=0,
                       duration=None, requests=None, warmup=False)
    count = max(MIN_CALIBRATION_REQUESTS, 2 * plan.concurrency)
    return replace(plan, requests=count, duration=None, first_index=0, warmup=False)


def _emulator_config(tokens_per_second: float, first_token_delay: float, streams: int) -> Any:
    from ..emulator import EmulatorConfig

    return EmulatorConfig(tokens_per_second=tokens_per_second,
                          first_token_delay=first_token_delay,
                          stamp=True, parallel=max(1, streams), max_queue=100_000,
                          response_tokens=(CALIBRATION_TOKENS, CALIBRATION_TOKENS))


def calibrate(plan: LoadPlan, *, tokens_per_second: float = 50.0,
              first_token_delay: float = 0.0, processes: int = 1,
              timeouts: Optional[Timeouts] = None, in_process: bool = False) -> Calibration:
    """Run ``calibration_plan(plan)`` against a stamping emulator paced like the
    server under test (``tokens_per_second``, ``first_token_delay`` in s); return the floor.

    Blocks for a few seconds. ``in_process`` runs the emulator on a
    thread of this process (faster to start; the lag then also includes
    contention with the server for the interpreter lock).

    Raises StreamkitError when the emulator cannot start.
    """
    short = calibration_plan(plan)
    streams = short.max_concurrency or short.concurrency
    if short.open_loop:
        streams = short.max_concurrency or len(short.offsets)
    config = _emulator_config(tokens_per_second, first_token_delay, streams)
    with emulator_process(config, in_process=in_process) as url:
        args = SenderArgs(host=url, model="demo", options={"num_predict": CALIBRATION_TOKENS},
                          prompt_words=8, timeouts=timeouts or Timeouts(),
                          pool_size=streams)
        outcome = _run(args, short, streams, processes)
    summary = summarize(outcome.records, label="calibration",
                        mode="open" if short.open_loop else "closed",
                        base_ns=outcome.base_ns,
                        client_cpu=max(outcome.cpu_share) if outcome.cpu_share else None)
    return _from_summary(summary, outcome.records, tokens_per_second, first_token_delay,
                         streams)


def _prime_plan(streams: int) -> LoadPlan:
    """One request per stream first: connections open and the server warm, discarded."""
    n = min(streams, MAX_PRIME_STREAMS)
    return LoadPlan(concurrency=n, requests=n, first_index=-n, warmup=True)


def _run(args: SenderArgs, plan: LoadPlan, streams: int, processes: int) -> RunOutcome:
    prime = _prime_plan(streams)
    if processes > 1:
        return run_sharded(make_sender, args, plan, processes, warmup=prime)
    with Sender(args) as sender:
        warm = run_plan(sender.send, prime).records
        outcome = run_plan(sender.send, plan)
    outcome.records = warm + outcome.records
    return outcome


def _from_summary(summary: PointSummary, records: List[RequestRecord], tps: float,
                  delay: float, streams: int) -> Calibration:
    m = summary.metrics
    chunks = m["icl_ms"].count + summary.ok  # gaps + one first chunk per request
    floor = distribution(v - delay * 1000.0 for r in records if r.ok and not r.warmup
                         for v in (derive(r)["ttft_ms"],) if v is not None)
    return Calibration(tokens_per_second=tps, first_token_delay=delay, streams=streams,
                       chunks_per_s=chunks / summary.window_s if summary.window_s else 0.0,
                       lag_ms=m.get("lag_ms", Distribution()), ttft_ms=floor,
                       dispatch_ms=m["dispatch_ms"], coalesced_frac=summary.coalesced_frac,
                       client_cpu=summary.client_cpu)
