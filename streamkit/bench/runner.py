"""One bench run: configuration, model load, calibration, each load point, health.

:func:`run_bench` is the whole pipeline; it does no printing itself (pass
``on_point`` to report as points finish). Everything it measures ends up
in a :class:`BenchRun`, which :mod:`streamkit.bench.report` writes out.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import statistics
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Tuple, Union

from ..config import Timeouts
from ..errors import ConfigError, StreamkitError
from .arrival import ARRIVALS, arrival_offsets
from .calibrate import Calibration, calibrate
from .health import health_warnings, once_per_run
from .load import Job, LoadPlan, RunOutcome, run_plan, run_sharded
from .metrics import NS_PER_MS, PointSummary, RequestRecord, Slo, derive, summarize
from .search import DEFAULT_MAX_PROBES, DEFAULT_TOLERANCE, MIN_RATE, SearchResult, search_rate
from .target import PromptSpec, Sender, SenderArgs, emulator_process, make_sender
from .workload import PromptFit, fit_prompt_words, prompt_size_report

__all__ = [
    "BUILTIN",
    "BenchConfig",
    "BenchRun",
    "PointResult",
    "builtin_emulator_config",
    "health_warnings",
    "run_bench",
]

BUILTIN = "builtin"
DEFAULT_NUM_PREDICT = 64
# Realistic pacing for `--host builtin`: a small local model on a laptop GPU.
BUILTIN_TOKENS_PER_SECOND = 50.0
BUILTIN_FIRST_TOKEN_DELAY = 0.3
BUILTIN_PARALLEL = 4          # Ollama's usual OLLAMA_NUM_PARALLEL
# A search probe without --requests/--duration: at least this many requests (and 10 s),
# so a 95% goodput target is judged on more than a handful of requests.
SEARCH_MIN_REQUESTS = 20


@dataclass(frozen=True)
class BenchConfig:
    """What to benchmark and how (validated; frozen; picklable).

    Load: ``concurrency`` (closed loop, one point each) unless ``rates`` is
    given (open loop, one point each, ``arrival`` constant or poisson,
    optional ``max_concurrency``). Each point runs ``requests`` requests
    and/or for ``duration`` seconds; when neither is set, ``max(10, 4 x
    concurrency)`` requests (closed) or 10 s worth of arrivals (open).
    ``warmup`` requests run at the same load first and are discarded.
    ``host="builtin"`` benchmarks an emulator (``emulator``, default: 50
    tok/s, 300 ms to the first token, 4 slots) started in a child process.
    """

    model: str
    host: Optional[str] = None
    dialect: str = "ollama"
    concurrency: Tuple[int, ...] = (1,)
    rates: Tuple[float, ...] = ()
    arrival: str = "constant"
    max_concurrency: Optional[int] = None
    requests: Optional[int] = None
    duration: Optional[float] = None
    warmup: int = 0
    prompts: Tuple[PromptSpec, ...] = ()
    prompt_file: Optional[str] = None
    prompt_words: int = 32
    num_predict: Optional[int] = DEFAULT_NUM_PREDICT
    options: Mapping[str, Any] = field(default_factory=dict)
    think: Optional[Union[bool, str]] = None
    slo: Optional[Slo] = None
    seed: int = 0
    processes: int = 1
    calibrate: bool = True
    load_model: bool = True
    timeouts: Timeouts = field(default_factory=Timeouts)
    emulator: Any = None
    emulator_in_process: bool = False
    repeat: int = 1
    search: bool = False
    goodput_target: float = 0.95
    search_tolerance: float = DEFAULT_TOLERANCE
    search_max_probes: int = DEFAULT_MAX_PROBES
    arrival_shape: float = 1.0
    ramp: bool = False
    replay: Tuple[Tuple[str, Tuple[int, ...], Tuple[float, ...]], ...] = ()
    replay_file: Optional[str] = None
    input_tokens: Optional[int] = None

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model:
            raise ConfigError("bench needs a model name (-m MODEL)")
        object.__setattr__(self, "concurrency", tuple(self.concurrency))
        object.__setattr__(self, "rates", tuple(float(r) for r in self.rates))
        if not self.rates and (not self.concurrency or min(self.concurrency) < 1):
            raise ConfigError(f"concurrency must be integers >= 1, got {self.concurrency!r}")
        if any(not r > 0 for r in self.rates):
            raise ConfigError(f"rate must be > 0 requests/s, got {self.rates!r}")
        if self.arrival not in ARRIVALS:
            raise ConfigError(f"arrival must be one of {ARRIVALS}, got {self.arrival!r}")
        self._check_positive("max_concurrency", self.max_concurrency)
        self._check_positive("requests", self.requests)
        self._check_positive("processes", self.processes)
        self._check_positive("prompt_words", self.prompt_words)
        if self.duration is not None and not self.duration > 0:
            raise ConfigError(f"duration must be > 0 seconds, got {self.duration!r}")
        if self.warmup < 0:
            raise ConfigError(f"warmup must be >= 0, got {self.warmup!r}")
        if self.num_predict is not None and self.num_predict < 1:
            raise ConfigError(f"num_predict must be >= 1, got {self.num_predict!r}")
        self._check_positive("repeat", self.repeat)
        if not 0 < self.goodput_target <= 1:
            raise ConfigError(f"goodput target must be in (0, 1], got {self.goodput_target!r}")
        if self.search and self.slo is None:
            raise ConfigError("--search needs --slo (e.g. --slo ttft=500,tpot=50): the "
                              "search looks for the highest rate that meets it")
        if self.search and len(self.rates) > 1:
            raise ConfigError("--search takes at most one --rate (where to start)")
        self._check_workload()

    def _check_workload(self) -> None:
        if not self.arrival_shape > 0:
            raise ConfigError(f"the gamma shape must be > 0, got {self.arrival_shape!r}")
        if self.ramp and (len(self.rates) != 2 or self.search):
            raise ConfigError("--ramp needs --rate FROM,TO (two rates) and no --search")
        if self.replay and (self.rates or self.search):
            raise ConfigError("--replay runs the recorded schedule: no --rate or --search")
        self._check_positive("input_tokens", self.input_tokens)
        if self.input_tokens is not None and self.prompts:
            raise ConfigError("--input-tokens sizes generated prompts: not with a prompt file")

    @staticmethod
    def _check_positive(name: str, value: Optional[int]) -> None:
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value < 1):
            raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")

    @property
    def open_loop(self) -> bool:
        return bool(self.rates) or self.search or bool(self.replay)

    def sender_args(self, host: str, pool_size: int) -> SenderArgs:
        options = dict(self.options)
        if self.num_predict is not None:
            options["num_predict"] = self.num_predict
        return SenderArgs(host=host, model=self.model, dialect=self.dialect,
                          prompts=self.prompts, prompt_words=self.prompt_words,
                          options=options, think=self.think, timeouts=self.timeouts,
                          pool_size=pool_size, seed=self.seed)

    def as_dict(self) -> Dict[str, Any]:
        """The configuration for run.json (prompts summarized, never the API key)."""
        return {
            "model": self.model, "host": self.host, "dialect": self.dialect,
            "mode": "open" if self.open_loop else "closed",
            "concurrency": list(self.concurrency) if not self.open_loop else None,
            "rates": list(self.rates) or None, "arrival": self.arrival,
            "max_concurrency": self.max_concurrency, "requests": self.requests,
            "duration": self.duration, "warmup": self.warmup,
            "prompt_file": self.prompt_file, "prompts": len(self.prompts) or None,
            "prompt_words": None if self.prompts else self.prompt_words,
            "num_predict": self.num_predict, "options": dict(self.options),
            "think": self.think, "slo": self.slo.as_dict() if self.slo else None,
            "seed": self.seed, "processes": self.processes, "calibrate": self.calibrate,
            "timeouts": {k: getattr(self.timeouts, k)
                         for k in ("connect", "first_token", "idle", "total")},
            "emulator": _emulator_dict(self.emulator) if self.host == BUILTIN else None,
            "repeat": self.repeat, "search": self.search,
            "goodput_target": self.goodput_target if self.search else None,
            "arrival_shape": self.arrival_shape if self.arrival == "gamma" else None,
            "ramp": self.ramp, "replay": self.replay_file, "input_tokens": self.input_tokens,
        }


def _emulator_dict(config: Any) -> Optional[Dict[str, Any]]:
    if config is None:
        return None
    keys = ("tokens_per_second", "first_token_delay", "load_time", "parallel",
            "tokens_per_chunk", "max_queue")
    return {k: getattr(config, k) for k in keys if hasattr(config, k)}


@dataclass
class PointResult:
    """One load point: its summary, raw records (warm-up included, flagged), floor, warnings."""

    summary: PointSummary
    records: List[RequestRecord]
    base_ns: int
    calibration: Optional[Calibration] = None
    warnings: List[str] = field(default_factory=list)


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


def _streams(plan: LoadPlan) -> int:
    if plan.open_loop:
        return plan.max_concurrency or min(len(plan.offsets), 512)
    return plan.concurrency


def _warmup_plan(plan: LoadPlan, count: int) -> LoadPlan:
    if plan.open_loop:
        return replace(plan, offsets=plan.offsets[:count], indices=(),
                       first_index=-count, warmup=True)
    return replace(plan, requests=count, duration=None, first_index=-count, warmup=True)


def _measure(config: BenchConfig, host: str, plan: LoadPlan, warmup: Optional[LoadPlan],
             stop: threading.Event) -> RunOutcome:
    """Warm-up then the measured plan on the same connections (or in each shard).

    The returned records hold both phases (warm-up flagged); ``base_ns`` is
    the measured phase's schedule zero.
    """
    args = config.sender_args(host, _streams(plan))
    if config.processes > 1:
        return run_sharded(make_sender, args, plan, config.processes, warmup=warmup)
    with Sender(args) as sender:
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
                pace = (_calibration_pace(config, host, emulator, results) if config.calibrate
                        else (0.0, 0.0))
                tag = f"{label} (run {k + 1}/{config.repeat})" if config.repeat > 1 else label
                def tagged(msg: str, tag: str = tag) -> None:
                    status(msg.replace(label, tag, 1))

                result = _run_point(config, host, pace, label, plan, stop, tagged)
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
    return max(MIN_RATE, round(1.0 / e2e, 3))


def _run_point(config: BenchConfig, host: str, pace: Tuple[float, float], label: str,
               plan: LoadPlan, stop: threading.Event,
               status: Callable[[str], None]) -> PointResult:
    calibration = None
    if config.calibrate:
        tps, delay = pace
        status(f"{label}: calibrating the client floor at this load ({tps:.0f} tok/s, "
               f"{delay * 1000:.0f} ms to the first token) ...")
        calibration = calibrate(plan, tokens_per_second=tps, first_token_delay=delay,
                                processes=config.processes,
                                timeouts=config.timeouts, in_process=config.emulator_in_process)
    warmup = _warmup_plan(plan, config.warmup) if config.warmup else None
    status(f"{label}: measuring" + (f" after {config.warmup} warm-up requests" if warmup else "")
           + " ...")
    outcome = _measure(config, host, plan, warmup, stop)
    summary = summarize(outcome.records, label=label,
                        mode="open" if plan.open_loop else "closed",
                        concurrency=None if plan.open_loop else plan.concurrency,
                        rate=plan.rate, base_ns=outcome.base_ns, slo=config.slo,
                        client_cpu=max(outcome.cpu_share) if outcome.cpu_share else None,
                        processes=config.processes)
    warnings = health_warnings(summary, outcome.records, calibration, plan)
    return PointResult(summary=summary, records=outcome.records, base_ns=outcome.base_ns,
                       calibration=calibration, warnings=warnings)
