"""One bench run: configuration, model load, calibration, each load point, health.

:func:`run_bench` is the whole pipeline; it does no printing itself (pass
``on_point`` to report as points finish). Everything it measures ends up
in a :class:`BenchRun`, which :mod:`streamkit.bench.report` writes out.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import statistics
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from ..errors import StreamkitError
from .benchconfig import BUILTIN, DEFAULT_NUM_PREDICT, BenchConfig
from .calibrate import Calibration, calibrate
from .health import health_warnings, once_per_run
from .load import Job, LoadPlan, RunOutcome, run_plan, run_sharded
from .metrics import NS_PER_MS, RequestRecord, derive
from .plans import SEARCH_MIN_REQUESTS, plans, rate_plan, streams_of, warmup_plan
from .search import MIN_RATE, SearchResult, search_rate
from .sharding import ShardDecision, expected_chunks_per_s, plan_processes, recheck_processes
from .summary import PointSummary, summarize
from .target import Sender, emulator_process, make_sender
from .workload import PromptFit, fit_prompt_words, prompt_size_report

__all__ = [
    "BUILTIN",
    "BenchConfig",
    "BenchRun",
    "PointResult",
    "builtin_emulator_config",
    "health_warnings",
    "plans",
    "run_bench",
]

# Realistic pacing for `--host builtin`: a small local model on a laptop GPU.
BUILTIN_TOKENS_PER_SECOND = 50.0
BUILTIN_FIRST_TOKEN_DELAY = 0.3
BUILTIN_PARALLEL = 4          # Ollama's usual OLLAMA_NUM_PARALLEL


@dataclass
class PointResult:
    """One load point: its summary, raw records (warm-up included, flagged), floor, warnings."""

    summary: PointSummary
    records: List[RequestRecord]
    base_ns: int
    calibration: Optional[Calibration] = None
    warnings: List[str] = field(default_factory=list)
    sharding: Optional[ShardDecision] = None


@dataclass
class BenchRun:
    """A finished run: what was asked, where it ran, and what each point measured."""

    config: BenchConfig
    points: List[PointResult]
    environment: Dict[str, Any]
    model_load: Dict[str, Any]
    started_at: str
    duration_s: float
    search: Optional[SearchResult] = None
    input_tokens: Optional[PromptFit] = None


def builtin_emulator_config(config: BenchConfig) -> Any:
    """The emulator `--host builtin` benchmarks (config.emulator, or realistic defaults)."""
    from ..emulator import EmulatorConfig

    if config.emulator is not None:
        return config.emulator
    # Long natural replies so --num-predict decides the length, as with ignore-EOS.
    return EmulatorConfig(models=(config.model,), tokens_per_second=BUILTIN_TOKENS_PER_SECOND,
                          first_token_delay=BUILTIN_FIRST_TOKEN_DELAY,
                          parallel=BUILTIN_PARALLEL, response_tokens=(4096, 4096))


@contextlib.contextmanager
def _server(config: BenchConfig) -> Iterator[Tuple[str, Any]]:
    if config.host != BUILTIN:
        yield (config.host or "", None)
        return
    emulator = builtin_emulator_config(config)
    with emulator_process(emulator, in_process=config.emulator_in_process) as url:
        yield (url, emulator)


def _measure(config: BenchConfig, host: str, plan: LoadPlan, warmup: Optional[LoadPlan],
             stop: threading.Event, processes: int) -> RunOutcome:
    """Warm-up then the measured plan on the same connections (or in each shard).

    The returned records hold both phases (warm-up flagged); ``base_ns`` is
    the measured phase's schedule zero.
    """
    args = config.sender_args(host, streams_of(plan))
    if processes > 1:
        return run_sharded(make_sender, args, plan, processes, warmup=warmup)
    with Sender(args) as sender:
        sender.prime()
        try:
            warm = run_plan(sender.send, warmup, stop=stop).records if warmup else []
            outcome = run_plan(sender.send, plan, stop=stop)
        except BaseException:
            stop.set()
            sender.cancel_all()
            raise
    outcome.records = warm + outcome.records
    return outcome


def _pace_of(records: List[RequestRecord]) -> Optional[Tuple[float, float]]:
    """Median client decode rate (tok/s) and TTFT (s) of the successful records."""
    derived = [derive(r) for r in records if r.ok and not r.warmup]
    # without server token counts the chunk estimate is the best pace there is
    paces = (d["client_tps"] or d["client_tps_estimated"] for d in derived)
    rates = [tps for tps in paces if tps]
    ttfts = [d["ttft_ms"] for d in derived if d["ttft_ms"] is not None]
    if not rates or not ttfts:
        return None
    return float(statistics.median(rates)), float(statistics.median(ttfts)) / 1000.0


def _probe(config: BenchConfig, host: str) -> Optional[Tuple[float, float]]:
    """Decode rate and TTFT of one request, to calibrate at the server's pace."""
    with Sender(config.sender_args(host, 1)) as sender:
        records = run_plan(sender.send, LoadPlan(requests=1, first_index=-1)).records
    return _pace_of(records)


def _calibration_pace(config: BenchConfig, host: str, emulator: Any,
                      previous: List[PointResult]) -> Tuple[float, float]:
    """(tokens/s, first-token delay in s) for the calibration emulator: the built-in
    emulator's settings, else the last point's medians, else one probe request's,
    else 50 tok/s and no delay."""
    paced = float(getattr(emulator, "tokens_per_second", 0.0) or 0.0)
    if paced > 0:
        return paced, float(getattr(emulator, "first_token_delay", 0.0))
    pace = _pace_of(previous[-1].records) if previous else None
    return pace or _probe(config, host) or (BUILTIN_TOKENS_PER_SECOND, 0.0)


def load_model(config: BenchConfig, host: str) -> Dict[str, Any]:
    """Load the model before measuring (Ollama: the empty-prompt request; OpenAI: one token).

    Returns ``{"wall_ms", "server_load_ms"}``. Raises what a stream raises
    (e.g. ModelNotFound).
    """
    from ..client import Client

    with Client(host, dialect=config.dialect, timeouts=config.timeouts) as client:
        t0 = time.perf_counter_ns()
        if config.dialect == "ollama":
            result = client.load(config.model)
        else:
            stream = client.generate(config.model, "hi", options={"num_predict": 1})
            with stream:
                result = stream.result()
            if result.error is not None:
                raise result.error
        wall = (time.perf_counter_ns() - t0) / NS_PER_MS
    load_ns = result.stats.load_duration
    return {"wall_ms": wall, "server_load_ms": load_ns / NS_PER_MS if load_ns else None}


def run_bench(config: BenchConfig, *,
              on_point: Optional[Callable[[PointResult], None]] = None,
              on_status: Optional[Callable[[str], None]] = None,
              stop: Optional[threading.Event] = None) -> BenchRun:
    """Run every load point of ``config`` and return the measurements.

    Blocks for the whole run. ``on_point`` is called as each point
    finishes; ``on_status`` with short progress notes. Setting ``stop``
    (or Ctrl-C) ends the current point early; KeyboardInterrupt propagates.

    Raises:
        ConfigError: bad configuration or prompt file.
        StreamkitError: the server cannot be reached or lacks the model
            (from the model-load step), or a shard process failed.
    """
    from .report import environment

    stop = stop or threading.Event()
    status = on_status or (lambda _msg: None)
    started_at = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    t0 = time.perf_counter()
    with _server(config) as (host, emulator):
        env = environment(config, host)
        loaded: Dict[str, Any] = {}
        if config.load_model:
            status(f"loading {config.model} ...")
            loaded = load_model(config, host)
        fit = None
        if config.input_tokens is not None:
            status(f"sizing prompts for ~{config.input_tokens} input tokens ...")
            fit = fit_prompt_words(config.input_tokens, _prompt_counter(config, host))
            config = replace(config, prompt_words=fit.words)
        results: List[PointResult] = []

        def measure(label: str, plan: LoadPlan) -> List[PointResult]:
            """Run one point ``config.repeat`` times; report and keep every run."""
            runs: List[PointResult] = []
            for k in range(config.repeat):
                pace = (_calibration_pace(config, host, emulator, results)
                        if config.calibrate or config.processes is None else (0.0, 0.0))
                if emulator is not None:  # the built-in server's own pace (0: unpaced)
                    pace_for_shards = (float(emulator.tokens_per_second),
                                       float(emulator.first_token_delay))
                else:
                    pace_for_shards = pace
                tag = f"{label} (run {k + 1}/{config.repeat})" if config.repeat > 1 else label
                def tagged(msg: str, tag: str = tag) -> None:
                    status(msg.replace(label, tag, 1))

                result = _run_point(config, host, (pace, pace_for_shards), label, plan, stop,
                                    tagged)
                result.summary.repeat = k
                if any(once_per_run(w) for p in results for w in p.warnings):
                    result.warnings = [w for w in result.warnings if not once_per_run(w)]
                results.append(result)
                runs.append(result)
                if on_point is not None:
                    on_point(result)
                if stop.is_set():
                    break
            return runs

        search = None
        if config.search:
            search = _search(config, host, measure, stop, status)
        else:
            for label, plan in plans(config):
                measure(label, plan)
                if stop.is_set():
                    break
    if fit is not None:
        prompt_size_report(fit, [r.prompt_eval_count for p in results for r in p.records
                                 if r.ok and not r.warmup])
    return BenchRun(config=config, points=results, environment=env, model_load=loaded,
                    started_at=started_at, duration_s=time.perf_counter() - t0, search=search,
                    input_tokens=fit)


def _prompt_counter(config: BenchConfig, host: str) -> Callable[[int], Optional[int]]:
    """words -> the server's prompt token count for one generated prompt of that size
    (one output token; an index of its own, so no prompt cache helps)."""
    def count(words: int) -> Optional[int]:
        args = replace(config, prompt_words=words, num_predict=1).sender_args(host, 1)
        with Sender(args) as sender:
            now = time.perf_counter_ns()
            record = sender.send(Job(-1_000_000 - words, now, now, now, warmup=True))
        if not record.ok:
            raise StreamkitError(f"sizing prompts: the probe request failed: {record.error}")
        return record.prompt_eval_count
    return count


def _search(config: BenchConfig, host: str,
            measure: Callable[[str, LoadPlan], List[PointResult]], stop: threading.Event,
            status: Callable[[str], None]) -> SearchResult:
    """The SLO search over open-loop rates, every probe a (repeated) point."""
    start = config.rates[0] if config.rates else _search_start(config, host)
    probes = itertools.count()

    def goodput_shares(rate: float) -> List[float]:
        label, plan = rate_plan(config, rate, next(probes), default_requests=SEARCH_MIN_REQUESTS)
        status(f"search: probing {rate:.4g} req/s ...")
        return [r.summary.goodput_frac or 0.0 for r in measure(label, plan)]

    assert config.slo is not None  # validated by BenchConfig
    return search_rate(goodput_shares, start, goodput_target=config.goodput_target,
                       slo=config.slo.as_dict(), tolerance=config.search_tolerance,
                       max_probes=config.search_max_probes, should_stop=stop.is_set)


def _search_start(config: BenchConfig, host: str) -> float:
    """Where the search starts without --rate: what one stream sustains (1 / E2E of a
    probe request), a rate any server that answers at all should meet."""
    pace = _probe(config, host)
    if pace is None:
        return 1.0
    tps, ttft_s = pace
    e2e = ttft_s + (config.num_predict or DEFAULT_NUM_PREDICT) / tps
    return max(MIN_RATE, float(f"{1.0 / e2e:.2g}"))  # two digits: readable probe rates


def _shard_plan(config: BenchConfig, pace: Tuple[float, float], plan: LoadPlan
                ) -> ShardDecision:
    """How many processes the point needs before it runs (see :mod:`.sharding`)."""
    tps, delay = pace
    chunks = expected_chunks_per_s(streams=streams_of(plan), tokens_per_second=tps,
                                   first_token_s=delay, rate=plan.rate,
                                   tokens_per_request=config.num_predict or DEFAULT_NUM_PREDICT)
    return plan_processes(config.processes, streams=streams_of(plan), chunks_per_s=chunks,
                          cpus=os.cpu_count() or 1)


def _calibrated(config: BenchConfig, pace: Tuple[float, float], label: str, plan: LoadPlan,
                decision: ShardDecision, status: Callable[[str], None]
                ) -> Tuple[Calibration, ShardDecision]:
    """The floor at this load; re-measured with more processes when it shows the client
    as the bottleneck and the process count is automatic."""
    tps, delay = pace
    while True:
        status(f"{label}: calibrating the client floor at this load ({tps:.0f} tok/s, "
               f"{delay * 1000:.0f} ms to the first token, {decision.processes} "
               f"process{'es' if decision.processes > 1 else ''}) ...")
        calibration = calibrate(plan, tokens_per_second=tps, first_token_delay=delay,
                                processes=decision.processes, timeouts=config.timeouts,
                                in_process=config.emulator_in_process)
        more = recheck_processes(decision, client_cpu=calibration.client_cpu,
                                 lag_p99_ms=calibration.lag_ms.p99,
                                 coalesced_frac=calibration.coalesced_frac,
                                 cpus=os.cpu_count() or 1)
        if more is None:
            return calibration, decision
        decision = more
        status(f"{label}: {decision.sentence()}")


def _run_point(config: BenchConfig, host: str,
               paces: Tuple[Tuple[float, float], Tuple[float, float]], label: str,
               plan: LoadPlan, stop: threading.Event,
               status: Callable[[str], None]) -> PointResult:
    """Shard decision, calibration, warm-up, measurement and health of one point.
    ``paces``: (tokens/s, first-token s) to calibrate at, and to size the shards by."""
    pace, pace_for_shards = paces
    decision = _shard_plan(config, pace_for_shards, plan)
    status(f"{label}: {decision.sentence()}")
    calibration = None
    if config.calibrate:
        calibration, decision = _calibrated(config, pace, label, plan, decision, status)
    warmup = warmup_plan(plan, config.warmup) if config.warmup else None
    status(f"{label}: measuring" + (f" after {config.warmup} warm-up requests" if warmup else "")
           + " ...")
    outcome = _measure(config, host, plan, warmup, stop, decision.processes)
    summary = summarize(outcome.records, label=label,
                        mode="open" if plan.open_loop else "closed",
                        concurrency=None if plan.open_loop else plan.concurrency,
                        rate=plan.rate, base_ns=outcome.base_ns, slo=config.slo,
                        client_cpu=max(outcome.cpu_share) if outcome.cpu_share else None,
                        processes=decision.processes)
    warnings = health_warnings(summary, outcome.records, calibration, plan)
    return PointResult(summary=summary, records=outcome.records, base_ns=outcome.base_ns,
                       calibration=calibration, warnings=warnings, sharding=decision)
