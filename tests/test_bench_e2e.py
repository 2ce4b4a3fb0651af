"""streamkit bench against the emulator: the acceptance checks of the bench issue.

Each test keeps its load small (a few requests, 64 tokens or fewer) so the
module stays fast; heavier measurements live in benchmarks/bench_selfcheck.py.
"""

from __future__ import annotations

import csv
import json
import os
import statistics
import time
import warnings
from typing import Any, Tuple

import pytest
from rawserver import RawConn, RawServer, Wire, wire_handler

from streamkit.bench import SUMMARY_COLUMNS, BenchConfig, format_point, run_bench, write_outputs
from streamkit.cli import main
from streamkit.emulator import EmulatorConfig

TPS = 50.0
DELAY = 0.3


def paced(**changes: Any) -> EmulatorConfig:
    settings = dict(tokens_per_second=TPS, first_token_delay=DELAY, parallel=8,
                    response_tokens=(4096, 4096))
    settings.update(changes)
    return EmulatorConfig(**settings)


def bench(emulator: EmulatorConfig, **changes: Any) -> Any:
    settings = dict(model="demo", host="builtin", emulator=emulator, num_predict=24,
                    calibrate=False, load_model=False)
    settings.update(changes)
    return run_bench(BenchConfig(**settings))


def server_pace(records: Any) -> Tuple[float, float]:
    """What the emulator itself did (its own perf_counter stamps), median over requests:
    ms to the first token (slot acquired -> first chunk written: prompt_eval_duration
    plus the first token's own interval, which the emulator books as eval time) and ms
    per token after the first (eval_duration spans first -> last chunk plus that one
    interval). On a busy machine the emulator can slip; the client must then report
    the slip, not the configured pacing."""
    ok = [r for r in records if r.ok and not r.warmup]
    ttft = statistics.median(r.prompt_eval_duration / 1e6 + 1000 / TPS for r in ok)
    tpot = statistics.median((r.eval_duration / 1e6 - 1000 / TPS) / (r.eval_count - 1)
                             for r in ok)
    return ttft, tpot


@pytest.mark.parametrize("concurrency,requests", [(1, 3), (8, 8)])
def test_ttft_and_tpot_match_the_emulator_pacing(concurrency: int, requests: int) -> None:
    # a warm-up wave, as a careful user would run: cold emulator code paths and fresh
    # connections are not what this checks. 64 tokens, not 24: this shared VM stalls a
    # process for 2-20 ms at times (benchmarks/stalls.py), and 8 streams in lockstep take
    # one stall on their last chunk together, which moves the median TPOT by stall/(n-1);
    # at 24 tokens a 10 ms stall alone broke the 2% (CI, 20.36 against 19.92 ms)
    run = bench(paced(), concurrency=(concurrency,), requests=requests, calibrate=True,
                warmup=concurrency, load_model=True, num_predict=64)
    point = run.points[0]
    m = point.summary.metrics
    assert point.summary.ok == requests
    server_ttft, server_tpot = server_pace(point.records)
    assert server_ttft == pytest.approx(DELAY * 1000, rel=0.1)  # the emulator kept pace
    assert server_tpot == pytest.approx(1000 / TPS, rel=0.1)
    # TPOT within 2% of 20 ms, or of what the (slipping) emulator actually did
    assert m["tpot_ms"].p50 == pytest.approx(server_tpot, rel=0.02)
    floor = point.calibration.ttft_ms
    assert floor.p50 is not None and floor.p99 is not None and 0 < floor.p50 < 100
    # TTFT within 2% of the emulator's delay plus at most the client's measured floor
    # (its p99: the machine is shared, so contention varies between calibration and run)
    assert 0.98 * server_ttft <= m["ttft_ms"].p50 <= 1.02 * server_ttft + floor.p99
    assert point.calibration.lag_ms.count > 0  # the stamped emulator was measured


def test_open_loop_overload_shows_latency_from_the_schedule() -> None:
    # one slot, ~0.2 s per request (capacity ~5/s), 10/s offered, client capped at 1
    emulator = paced(parallel=1, first_token_delay=0.02)
    run = bench(emulator, rates=(10.0,), max_concurrency=1, requests=12, num_predict=10)
    point = run.points[0]
    m = point.summary.metrics
    assert point.summary.ok == 12
    assert m["e2e_ms"].max < 1.3 * m["e2e_ms"].p50        # from send: flat
    assert m["sched_e2e_ms"].max > 3 * m["e2e_ms"].p50    # from the schedule: grows
    assert m["queue_ms"].max > 800
    text = " ".join(point.warnings)
    assert "offered load exceeds capacity" in text
    assert "achieved send rate" in text


def test_open_loop_overload_without_client_cap_shows_server_queueing() -> None:
    emulator = paced(parallel=1, first_token_delay=0.02)
    run = bench(emulator, rates=(10.0,), requests=10, num_predict=10)
    point = run.points[0]
    m = point.summary.metrics
    assert m["queue_ms"].max < 100          # sent on time ...
    assert m["ttft_ms"].max > 500           # ... but the server made them wait
    assert any("TTFT grows" in w for w in point.warnings)


def test_thinking_stream_ttft_counts_thinking_ttfc_waits_for_content() -> None:
    run = bench(paced(think_tokens=8), think=True, requests=2)
    m = run.points[0].summary.metrics
    assert m["ttft_ms"].p50 == pytest.approx(DELAY * 1000, abs=30)
    assert m["ttfc_ms"].p50 - m["ttft_ms"].p50 == pytest.approx(8 * 1000 / TPS, abs=15)


def test_multi_token_chunks_keep_tpot_and_show_chunk_gaps() -> None:
    run = bench(paced(tokens_per_chunk=4), requests=2, num_predict=32)
    m = run.points[0].summary.metrics
    assert m["tpot_ms"].p50 == pytest.approx(1000 / TPS, rel=0.02)
    assert m["icl_ms"].p50 == pytest.approx(4 * 1000 / TPS, rel=0.05)
    assert m["tokens_per_chunk"].p50 == pytest.approx(4.0)


def test_two_processes_match_one_on_a_light_load() -> None:
    # 32 tokens: a VM stall on a wave's last chunks moves its TPOT by stall/(n-1); at 16
    # tokens two runs on this machine already differed by up to 1% of the 2% allowed
    one = bench(paced(first_token_delay=0.1), concurrency=(4,), requests=8, num_predict=32,
                warmup=4)
    two = bench(paced(first_token_delay=0.1), concurrency=(4,), requests=8, num_predict=32,
                warmup=4, processes=2)
    a, b = one.points[0].summary, two.points[0].summary
    assert b.ok == 8 and b.processes == 2
    assert {r.process for r in two.points[0].records} == {0, 1}
    assert b.metrics["tpot_ms"].p50 == pytest.approx(a.metrics["tpot_ms"].p50, rel=0.02)
    assert b.metrics["ttft_ms"].p50 == pytest.approx(a.metrics["ttft_ms"].p50, abs=15)
    assert b.output_tokens == a.output_tokens


def test_warmup_and_server_errors_are_reported_apart() -> None:
    emulator = paced(first_token_delay=0.0, faults="status:503,every=3")
    run = bench(emulator, requests=6, warmup=2, num_predict=4)
    s = run.points[0].summary
    assert s.warmup_excluded == 2 and s.requests == 6
    assert s.busy_503 >= 1 and s.errors.get("ServerBusy") == s.busy_503
    assert any("503" in w for w in run.points[0].warnings)


def test_cli_bench_writes_files_and_compare_reads_them(tmp_path: Any, capsys: Any) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("why is the sky blue?\nname three rivers\n")
    outs = []
    for name in ("a", "b"):
        out = str(tmp_path / name)
        code = main(["bench", "--host", "builtin", "-m", "demo", "--requests", "2",
                     "--num-predict", "4", "--prompt-file", str(prompts), "--no-calibrate",
                     "--slo", "ttft=1000", "--out", out, "--no-plot", "-q"])
        assert code == 0
        outs.append(out)
    printed = capsys.readouterr().out
    assert "concurrency 1" in printed and "goodput" in printed
    for name in ("run.json", "requests.jsonl", "summary.csv"):
        assert os.path.getsize(os.path.join(outs[0], name)) > 0
    with open(os.path.join(outs[0], "summary.csv"), newline="") as fh:
        assert tuple(next(csv.reader(fh))) == SUMMARY_COLUMNS
    assert main(["bench", "compare", *outs]) == 0
    table = capsys.readouterr().out
    assert table.count("concurrency 1") == 2 and "vs " in table


def test_cli_bench_usage_errors(capsys: Any) -> None:
    assert main(["bench"]) == 2
    assert "needs a model" in capsys.readouterr().err
    assert main(["bench", "compare", "/nonexistent/run"]) == 2
    with pytest.raises(SystemExit):
        main(["bench", "-m", "x", "--concurrency", "0"])


NO_USAGE_TOKENS = [f" tok{i}" for i in range(12)]
NO_USAGE_GAP_S = 0.01


def _no_usage_server(conn: RawConn) -> None:
    """An OpenAI-compatible server that, like llama.cpp's, ignores
    stream_options.include_usage: tokens every 10 ms, a finish chunk, [DONE]."""
    endpoint = "chat" if conn.request.path.endswith("/chat/completions") else "generate"
    if not conn.request.path.endswith("completions"):
        conn.respond(404, b'{"error":{"message":"not found","type":"not_found"}}')
        return
    wire = Wire("openai", endpoint, "demo", usage=False)
    # pacing the replay of a script, not waiting for anything
    wire_handler(wire, NO_USAGE_TOKENS, pace=lambda i: time.sleep(NO_USAGE_GAP_S) if i else None
                 )(conn)


def test_server_without_token_counts_is_reported_honestly(tmp_path: Any) -> None:
    with RawServer(_no_usage_server) as server:
        run = run_bench(BenchConfig(model="demo", host=server.url, dialect="openai",
                                    concurrency=(1, 2), requests=4, num_predict=12,
                                    calibrate=False))
        body = json.loads(server.requests[-1].body)
    assert body["stream_options"] == {"include_usage": True}  # asked, and ignored
    first, second = run.points
    for point in run.points:
        s = point.summary
        assert s.ok == 4 and s.token_counts == "none"
        assert s.output_tokens is None and s.output_tok_per_s is None
        assert s.metrics["tpot_ms"].count == 0 and s.metrics["eval_rate"].count == 0
        # 12 chunks per request, one token each here: the estimate is the real rate
        assert s.output_tok_per_s_estimated == pytest.approx(48 / s.window_s)
        # 11 gaps of >= 10 ms; the upper bound only guards against nonsense under load
        assert 9.5 <= s.metrics["tpot_ms_estimated"].p50 <= 40
    # warned once per run, not per point
    assert any(w.startswith("server sent no token counts") for w in first.warnings)
    assert not any("token counts" in w for w in second.warnings)
    text = format_point(first)
    assert "0.0 output tok/s" not in text and "server sent no token counts" in text
    assert "TPOT (estimated)" in text
    with warnings.catch_warnings():
        # matplotlib's "No artists with labels" legend warning fails the test; other
        # libraries' deprecation warnings (pyparsing on old Pythons) do not
        warnings.filterwarnings("error", message=".*[Nn]o artists")
        paths = write_outputs(run, str(tmp_path), plots=True)
    with open(tmp_path / "summary.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0]) == SUMMARY_COLUMNS
    assert [r["token_counts"] for r in rows] == ["none", "none"]
    assert all(r["output_tok_per_s"] == "" and r["tpot_ms_p50"] == "" for r in rows)
    assert all(float(r["tpot_ms_estimated_p50"]) > 0 for r in rows)
    assert any(p.endswith("load.png") for p in paths) or not _has_matplotlib()


def _has_matplotlib() -> bool:
    from streamkit.bench import plot

    return plot.available()
