"""Sharding by default: how many client processes a point gets, and why."""

from __future__ import annotations

from typing import Any

import pytest

from streamkit.bench import BenchConfig, format_point, run_bench
from streamkit.bench import runner as bench_runner
from streamkit.bench.load import LoadPlan
from streamkit.bench.sharding import (
    CHUNKS_PER_PROCESS,
    expected_chunks_per_s,
    plan_processes,
    recheck_processes,
)
from streamkit.emulator import EmulatorConfig


def chunks(streams: int, rate: Any = None, n: int = 128) -> Any:
    return expected_chunks_per_s(streams=streams, tokens_per_second=50.0, first_token_s=0.3,
                                 tokens_per_request=n, rate=rate)


def test_expected_chunk_rate_closed_and_open_loop() -> None:
    per_stream = 128 / (0.3 + 128 / 50)
    assert chunks(4) == pytest.approx(4 * per_stream)
    assert chunks(512, rate=2.0) == pytest.approx(2.0 * 128)  # offered, below what streams carry
    assert chunks(2, rate=100.0) == pytest.approx(2 * per_stream)  # capped by the streams
    assert expected_chunks_per_s(streams=8, tokens_per_second=0.0, first_token_s=0.0,
                                 tokens_per_request=16) is None  # unpaced: unknown


def test_light_loads_stay_in_one_process() -> None:
    decision = plan_processes(None, streams=16, chunks_per_s=chunks(16), cpus=8)
    assert decision.processes == 1 and decision.auto
    assert "one process is enough" in decision.reason


def test_256_streams_shard_up_to_the_cpus() -> None:
    two = plan_processes(None, streams=256, chunks_per_s=chunks(256), cpus=2)
    assert two.processes == 2 and two.auto
    assert "256 streams" in two.reason and "capped at 2 CPUs" in two.reason
    eight = plan_processes(None, streams=256, chunks_per_s=chunks(256), cpus=8)
    assert eight.processes == -(-chunks(256) // CHUNKS_PER_PROCESS) == 4
    # streams alone (an unpaced server): 128 per process
    assert plan_processes(None, streams=300, chunks_per_s=None, cpus=8).processes == 3
    assert plan_processes(None, streams=300, chunks_per_s=None, cpus=1).processes == 1


def test_an_explicit_process_count_is_never_changed() -> None:
    forced = plan_processes(1, streams=256, chunks_per_s=chunks(256), cpus=8)
    assert forced.processes == 1 and not forced.auto and "--processes" in forced.sentence()
    assert recheck_processes(forced, client_cpu=1.0, lag_p99_ms=50.0, coalesced_frac=0.5,
                             cpus=8) is None


def test_calibration_evidence_doubles_the_processes() -> None:
    one = plan_processes(None, streams=64, chunks_per_s=chunks(64), cpus=4)
    assert one.processes == 1
    busy = recheck_processes(one, client_cpu=0.97, lag_p99_ms=1.0, coalesced_frac=0.0, cpus=4)
    assert busy is not None and busy.processes == 2 and "client CPU 97%" in busy.reason
    lagging = recheck_processes(one, client_cpu=0.6, lag_p99_ms=20.0, coalesced_frac=0.2,
                                cpus=4)
    assert lagging is not None and lagging.processes == 2 and "lagged 20.0 ms" in lagging.reason
    # a lag spike without coalesced reads is not evidence enough ...
    assert recheck_processes(one, client_cpu=0.6, lag_p99_ms=20.0, coalesced_frac=0.0,
                             cpus=4) is None
    # ... nor lag with an idle client: that is another process keeping the CPUs busy
    assert recheck_processes(one, client_cpu=0.01, lag_p99_ms=29.0, coalesced_frac=0.2,
                             cpus=4) is None
    assert recheck_processes(busy, client_cpu=0.97, lag_p99_ms=1.0, coalesced_frac=0.0,
                             cpus=2) is None  # already one per CPU


def test_the_runner_shards_a_256_stream_point_on_two_cpus(monkeypatch: Any) -> None:
    monkeypatch.setattr(bench_runner.os, "cpu_count", lambda: 2)
    config = BenchConfig(model="m", concurrency=(256,), num_predict=128)
    plan = LoadPlan(concurrency=256, requests=256)
    assert bench_runner._shard_plan(config, (50.0, 0.3), plan).processes == 2
    forced = BenchConfig(model="m", concurrency=(256,), num_predict=128, processes=1)
    assert bench_runner._shard_plan(forced, (50.0, 0.3), plan).processes == 1


def test_a_run_says_what_it_decided() -> None:
    emulator = EmulatorConfig(tokens_per_second=100.0, first_token_delay=0.01)
    run = run_bench(BenchConfig(model="demo", host="builtin", emulator=emulator,
                                concurrency=(2,), requests=2, num_predict=4, calibrate=False,
                                load_model=False))
    point = run.points[0]
    assert point.sharding is not None and point.sharding.auto
    assert point.summary.processes == point.sharding.processes == 1
    assert "client: 1 client process (auto: 2 streams" in format_point(point)
