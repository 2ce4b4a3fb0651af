"""The client's own floor: how accurate are its timestamps at a given load?

Before a load point runs, the same load (same concurrency or rate, same
number of processes) is run against a built-in emulator that stamps every
chunk with its send time (``raw["_sent_ns"]``, ``perf_counter_ns`` in the
server process). Both processes read the same monotonic clock, so

    lag = chunk.received_ns - raw["_sent_ns"]

is the error the client adds to every chunk stamp (plus loopback, tens of
µs). The emulator has no first-token delay, so the TTFT it measures is the
client's TTFT floor (request out, parse, first token back). The emulator
runs in its own process, like a real server.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any, Dict, Optional

from ..config import Timeouts
from .load import LoadPlan, RunOutcome, run_plan, run_sharded
from .metrics import Distribution, PointSummary, summarize
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


@dataclass
class Calibration:
    """The measured floor. ``lag_ms``: per-chunk timestamp error; ``ttft_ms``: TTFT
    against a server that answers at once; ``chunks_per_s``: the chunk rate reached."""

    tokens_per_second: float
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
        floor = f"TTFT floor {ttft.p50:.1f} ms p50" if ttft.p50 is not None else ""
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


def _emulator_config(tokens_per_second: float, streams: int) -> Any:
    from ..emulator import EmulatorConfig

    return EmulatorConfig(tokens_per_second=tokens_per_second, first_token_delay=0.0,
                          stamp=True, parallel=max(1, streams), max_queue=100_000,
                          response_tokens=(CALIBRATION_TOKENS, CALIBRATION_TOKENS))


def calibrate(plan: LoadPlan, *, tokens_per_second: float = 50.0, processes: int = 1,
              timeouts: Optional[Timeouts] = None, in_process: bool = False) -> Calibration:
    """Run ``calibration_plan(plan)`` against a stamping emulator; return the floor.

    Blocks for about a second or two. ``in_process`` runs the emulator on a
    thread of this process (faster to start; the lag then also includes
    contention with the server for the interpreter lock).

    Raises StreamkitError when the emulator cannot start.
    """
    short = calibration_plan(plan)
    streams = short.max_concurrency or short.concurrency
    if short.open_loop:
        streams = short.max_concurrency or len(short.offsets)
    config = _emulator_config(tokens_per_second, streams)
    with emulator_process(config, in_process=in_process) as url:
        args = SenderArgs(host=url, model="demo", options={"num_predict": CALIBRATION_TOKENS},
                          prompt_words=8, timeouts=timeouts or Timeouts(),
                          pool_size=streams)
        outcome = _run(args, short, processes)
    summary = summarize(outcome.records, label="calibration",
                        mode="open" if short.open_loop else "closed",
                        base_ns=outcome.base_ns,
                        client_cpu=max(outcome.cpu_share) if outcome.cpu_share else None)
    return _from_summary(summary, tokens_per_second, streams)


def _run(args: SenderArgs, plan: LoadPlan, processes: int) -> RunOutcome:
    if processes > 1:
        return run_sharded(make_sender, args, plan, processes)
    with Sender(args) as sender:
        return run_plan(sender.send, plan)


def _from_summary(summary: PointSummary, tps: float, streams: int) -> Calibration:
    m = summary.metrics
    chunks = m["icl_ms"].count + summary.ok  # gaps + one first chunk per request
    return Calibration(tokens_per_second=tps, streams=streams,
                       chunks_per_s=chunks / summary.window_s if summary.window_s else 0.0,
                       lag_ms=m.get("lag_ms", Distribution()), ttft_ms=m["ttft_ms"],
                       dispatch_ms=m["dispatch_ms"], coalesced_frac=summary.coalesced_frac,
                       client_cpu=summary.client_cpu)
