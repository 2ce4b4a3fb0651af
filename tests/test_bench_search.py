"""--search (the highest rate that meets the SLO) and --repeat (confidence intervals)."""

from __future__ import annotations

import json
import math
from typing import Any, List

import pytest

from streamkit.bench import BenchConfig, Slo, report, run_bench
from streamkit.bench.search import search_rate
from streamkit.bench.stats import mean_ci, repeat_intervals, t_critical
from streamkit.emulator import EmulatorConfig
from streamkit.errors import ConfigError

# --- the pure search ---------------------------------------------------------------


def shares_below(limit: float, calls: List[float]) -> Any:
    """A server that meets the SLO for every request up to ``limit`` req/s, none past it."""
    def measure(rate: float) -> List[float]:
        calls.append(rate)
        return [1.0 if rate <= limit else 0.5]
    return measure


@pytest.mark.parametrize("start", [0.3, 7.0, 40.0])
def test_search_brackets_then_bisects_to_within_the_tolerance(start: float) -> None:
    calls: List[float] = []
    result = search_rate(shares_below(7.3, calls), start, tolerance=0.02, max_probes=30)
    assert result.max_rate is not None and 7.3 / 1.02 <= result.max_rate <= 7.3
    assert [p.rate for p in result.probes] == calls
    assert all(p.passed == (p.rate <= 7.3) for p in result.probes)
    assert result.stopped.startswith("converged")


def test_search_reports_when_nothing_passes_or_the_budget_ends() -> None:
    none = search_rate(lambda rate: [0.0], 1.0, max_probes=5)
    assert none.max_rate is None and "failed" in none.stopped and len(none.probes) == 5
    short = search_rate(shares_below(7.3, []), 1.0, tolerance=0.001, max_probes=6)
    assert short.max_rate is not None and "budget" in short.stopped


def test_search_uses_the_mean_of_repeated_runs() -> None:
    result = search_rate(lambda rate: [1.0, 0.9] if rate <= 2 else [0.9, 0.9], 2.0,
                         goodput_target=0.95, max_probes=4)
    first = result.probes[0]
    assert first.runs == 2 and first.goodput_frac == pytest.approx(0.95) and first.passed


def test_search_needs_an_slo_and_one_start_rate() -> None:
    with pytest.raises(ConfigError, match="--slo"):
        BenchConfig(model="m", search=True)
    with pytest.raises(ConfigError, match="at most one"):
        BenchConfig(model="m", search=True, slo=Slo(ttft=1), rates=(1.0, 2.0))
    assert BenchConfig(model="m", search=True, slo=Slo(ttft=1)).open_loop


# --- confidence intervals ------------------------------------------------------------


def test_t_interval_matches_the_textbook() -> None:
    assert t_critical(1) == pytest.approx(12.706)
    assert t_critical(30) == pytest.approx(2.042)
    assert t_critical(35) == pytest.approx(2.030, abs=0.002)
    assert t_critical(10_000) == pytest.approx(1.960, abs=0.002)
    ci = mean_ci([1.0, 2.0, 3.0])  # sd 1, n 3
    assert ci.mean == 2.0 and ci.half_width == pytest.approx(4.303 / math.sqrt(3))
    assert ci.cv == pytest.approx(0.5)
    one = mean_ci([5.0])
    assert one.half_width is None and one.text() == "5.0"


def test_repeat_intervals_group_runs_of_the_same_point() -> None:
    def summary(label: str, rps: float) -> Any:
        return {"label": label, "req_per_s": rps, "metrics": {"ttft_ms": {"p50": 10 * rps}}}
    groups = repeat_intervals([summary("a", 1.0), summary("a", 3.0), summary("b", 2.0)])
    assert [g["label"] for g in groups] == ["a"]
    assert groups[0]["intervals"]["req_per_s"]["mean"] == 2.0
    assert groups[0]["intervals"]["ttft_ms_p50"]["mean"] == 20.0


# --- against the emulator --------------------------------------------------------------

PARALLEL = 4
TPS = 50.0
DELAY = 0.2          # s from slot to first token
NUM_PREDICT = 16
REQUESTS = 32        # per probe
SLO_TTFT_MS = 350.0  # DELAY + 150 ms of queueing allowed
SLO_TPOT_MS = 30.0   # the emulator decodes at 20 ms/token: TPOT never breaks it


def predicted_goodput(rate: float) -> float:
    """Share of REQUESTS meeting the SLO at ``rate`` (constant arrivals), from the
    emulator's capacity: PARALLEL slots, each busy for S = DELAY + (NUM_PREDICT - 1)
    / TPS seconds per request (first token DELAY after the slot is taken, then one
    token every 1/TPS s). Request k arrives at k / rate and takes the first free slot
    (FIFO); its TTFT is its wait for a slot plus DELAY."""
    service = DELAY + (NUM_PREDICT - 1) / TPS
    free = [0.0] * PARALLEL
    met = 0
    for k in range(REQUESTS):
        arrival = k / rate
        slot = min(range(PARALLEL), key=lambda i: free[i])
        start = max(arrival, free[slot])
        free[slot] = start + service
        met += (start - arrival + DELAY) * 1000 <= SLO_TTFT_MS
    return met / REQUESTS


def predicted_max_rate(target: float = 0.95) -> float:
    """The highest rate whose predicted goodput share is >= target (it falls
    monotonically with the rate), by bisection to 0.1%. With the numbers above:
    capacity PARALLEL / S = 8 req/s, and the 150 ms of allowed queueing lets the
    first 31 of 32 requests through up to ~8.36 req/s."""
    lo, hi = 0.5, 64.0
    while hi - lo > 0.001 * lo:
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if predicted_goodput(mid) >= target else (lo, mid)
    return lo


@pytest.mark.timeout(300)
def test_search_finds_the_emulators_limit_within_10_percent(tmp_path: Any) -> None:
    expected = predicted_max_rate()
    assert 8.0 <= expected <= 8.6  # the derivation in the docstring above
    emulator = EmulatorConfig(tokens_per_second=TPS, first_token_delay=DELAY,
                              parallel=PARALLEL, response_tokens=(4096, 4096))
    run = run_bench(BenchConfig(model="demo", host="builtin", emulator=emulator, search=True,
                                slo=Slo(ttft=SLO_TTFT_MS, tpot=SLO_TPOT_MS), rates=(4.0,),
                                requests=REQUESTS, num_predict=NUM_PREDICT, calibrate=False,
                                load_model=False, search_tolerance=0.04))
    assert run.search is not None
    found = run.search.max_rate
    assert found is not None and abs(found - expected) <= 0.10 * expected, run.search
    # every probe is a point of the run, and run.json holds the search
    assert len(run.points) == len(run.search.probes) >= 3
    report.write_outputs(run, str(tmp_path), plots=False)
    data = json.loads((tmp_path / "run.json").read_text())
    assert data["search"]["max_rate"] == pytest.approx(found)
    assert [p["rate"] for p in data["search"]["probes"]] == [p.rate for p in run.search.probes]
    assert f"{found:.2f} req/s" in (tmp_path / "report.html").read_text(encoding="utf-8")


def test_repeat_runs_each_point_k_times_and_reports_an_interval(tmp_path: Any) -> None:
    emulator = EmulatorConfig(tokens_per_second=200.0, first_token_delay=0.02)
    run = run_bench(BenchConfig(model="demo", host="builtin", emulator=emulator, repeat=3,
                                concurrency=(1, 2), requests=2, num_predict=4,
                                calibrate=False, load_model=False))
    assert [(p.summary.label, p.summary.repeat) for p in run.points] == [
        ("concurrency 1", 0), ("concurrency 1", 1), ("concurrency 1", 2),
        ("concurrency 2", 0), ("concurrency 2", 1), ("concurrency 2", 2)]
    report.write_outputs(run, str(tmp_path), plots=False)
    data = json.loads((tmp_path / "run.json").read_text())
    groups = {g["label"]: g for g in data["repeats"]}
    ttft = groups["concurrency 1"]["intervals"]["ttft_ms_p50"]
    assert groups["concurrency 1"]["n"] == 3
    assert ttft["low"] <= ttft["mean"] <= ttft["high"] and ttft["half_width"] > 0
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "95% confidence interval" in html and "concurrency 1 #3" in html
