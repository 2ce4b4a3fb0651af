"""streamkit.bench metrics and reports on synthetic records (no I/O but tmp files)."""

from __future__ import annotations

import csv
import json
import math
from typing import Any, Optional

import pytest

from streamkit.bench import compare, report
from streamkit.bench.load import LoadPlan
from streamkit.bench.metrics import RequestRecord, Slo, derive
from streamkit.bench.runner import BenchConfig, BenchRun, PointResult, health_warnings
from streamkit.bench.summary import Distribution, distribution, percentile, summarize
from streamkit.errors import ConfigError

MS = 1_000_000


def rec(index: int = 0, *, sched: float = 0.0, sent: float = 1.0, ttft: float = 300.0,
        ttfc: Optional[float] = None, tokens: int = 11, per_chunk: int = 1,
        tpot: float = 20.0, ok: bool = True, warmup: bool = False,
        status: Optional[int] = None, error_type: str = "ServerBusy") -> RequestRecord:
    """A request scheduled at ``sched`` ms, sent at ``sched + sent`` ms, streaming
    ``tokens`` tokens in chunks of ``per_chunk`` at ``tpot`` ms per token."""
    base = 1_000_000_000_000
    s = base + int(sched * MS)
    sent_ns = s + int(sent * MS)
    r = RequestRecord(index=index, scheduled_ns=s, dispatched_ns=s, picked_ns=s,
                      started_ns=sent_ns, sent_ns=sent_ns, warmup=warmup)
    if not ok:
        r.error_type, r.error, r.status_code = error_type, "boom", status
        return r
    first = sent_ns + int(ttft * MS)
    chunks = math.ceil(tokens / per_chunk)
    # chunk j carries tokens up to (j+1)*per_chunk - 1 and arrives when its last token is due
    r.chunk_ns = [first + int(min((j + 1) * per_chunk, tokens) - per_chunk) * int(tpot * MS)
                  for j in range(chunks)]
    r.first_token_ns = first
    r.first_content_ns = sent_ns + int((ttfc if ttfc is not None else ttft) * MS)
    r.last_token_ns = r.chunk_ns[-1]
    r.done_ns = r.last_token_ns + MS
    r.headers_ns = first
    r.chunks = chunks + 1
    r.eval_count = tokens
    r.eval_duration = int(tokens * tpot * MS)
    r.prompt_eval_count, r.prompt_eval_duration = 50, 50 * MS
    r.total_duration = int((ttft + tokens * tpot) * MS)
    return r


def test_percentile_interpolates_like_numpy() -> None:
    data = [float(v) for v in range(1, 11)]
    assert percentile(data, 50) == pytest.approx(5.5)
    assert percentile(data, 90) == pytest.approx(9.1)
    assert percentile(data, 99) == pytest.approx(9.91)
    assert percentile([7.0], 99) == 7.0
    with pytest.raises(ValueError):
        percentile([], 50)


def test_distribution_counts_and_ignores_none() -> None:
    d = distribution([3.0, None, 1.0, 2.0])
    assert (d.count, d.min, d.max, d.mean, d.p50) == (3, 1.0, 3.0, 2.0, 2.0)
    assert distribution([]) == Distribution()


def test_derive_basic_latencies() -> None:
    d = derive(rec(sched=0, sent=5, ttft=300, tokens=11, tpot=20))
    assert d["ttft_ms"] == pytest.approx(300)
    assert d["tpot_ms"] == pytest.approx(20)
    assert d["e2e_ms"] == pytest.approx(300 + 10 * 20)
    assert d["queue_ms"] == pytest.approx(5)
    assert d["sched_e2e_ms"] == pytest.approx(5 + 300 + 200)
    assert d["eval_rate"] == pytest.approx(50)
    assert d["client_tps"] == pytest.approx(50)
    assert d["prompt_eval_rate"] == pytest.approx(1000)


def test_thinking_first_token_counts_for_ttft_not_ttfc() -> None:
    d = derive(rec(ttft=300, ttfc=460))
    assert d["ttft_ms"] == pytest.approx(300)
    assert d["ttfc_ms"] == pytest.approx(460)


def test_tpot_uses_server_tokens_not_chunks() -> None:
    r = rec(tokens=64, per_chunk=4, tpot=20)
    assert len(r.chunk_ns) == 16
    d = derive(r)
    assert d["tpot_ms"] == pytest.approx(20.0, rel=1e-6)
    assert d["tokens_per_chunk"] == pytest.approx(4)
    gaps = summarize([r], label="x", mode="closed").metrics["icl_ms"]
    assert gaps.count == 15 and gaps.p50 == pytest.approx(80.0)


def test_tpot_absent_for_single_token() -> None:
    assert derive(rec(tokens=1))["tpot_ms"] is None


def test_slo_parse_and_check() -> None:
    slo = Slo.parse("ttft=350, tpot=25")
    assert slo == Slo(ttft=350.0, tpot=25.0)
    assert slo.met({"ttft_ms": 300.0, "tpot_ms": 20.0, "e2e_ms": 9e9})
    assert not slo.met({"ttft_ms": 360.0, "tpot_ms": 20.0})
    assert slo.met({"ttft_ms": 10.0, "tpot_ms": None})  # one token: no TPOT
    for bad in ("", "ttft", "foo=3", "ttft=x", "ttft=-1"):
        with pytest.raises(ConfigError):
            Slo.parse(bad)


def test_summarize_excludes_warmup_and_counts_errors() -> None:
    records = [rec(0, warmup=True, ttft=5000)]
    records += [rec(i, sched=i * 100.0, ttft=300 + i) for i in range(1, 9)]
    records.append(rec(9, sched=900, ok=False, status=503))
    records.append(rec(10, sched=1000, ok=False, error_type="StreamInterrupted"))
    s = summarize(records, label="c", mode="closed", concurrency=2,
                  slo=Slo(ttft=305), base_ns=records[1].scheduled_ns - 100 * MS)
    assert (s.requests, s.ok, s.failed, s.warmup_excluded) == (10, 8, 2, 1)
    assert s.errors == {"ServerBusy": 1, "StreamInterrupted": 1}
    assert s.busy_503 == 1
    assert s.metrics["ttft_ms"].count == 8
    assert s.metrics["ttft_ms"].max == pytest.approx(308)
    assert s.output_tokens == 8 * 11
    assert s.req_per_s == pytest.approx(8 / s.window_s)
    assert s.goodput_req_per_s == pytest.approx(5 / s.window_s)  # ttft 301..305
    assert s.goodput_frac == pytest.approx(5 / 10)


def test_peak_concurrency_and_achieved_rate() -> None:
    # in flight from sched+1 to sched+502 ms, one every 250 ms: three overlap briefly
    records = [rec(i, sched=i * 250.0, ttft=300, tokens=11) for i in range(4)]
    s = summarize(records, label="r", mode="open", rate=4.0)
    assert s.concurrency_peak == 3
    assert summarize(records[::3], label="r", mode="open").concurrency_peak == 1
    assert s.achieved_rate == pytest.approx(4.0, rel=1e-3)
    assert summarize(records[:1], label="r", mode="open").achieved_rate is None
    with pytest.raises(ValueError):
        summarize([rec(warmup=True)], label="w", mode="closed")


def test_saturation_warning_shows_both_latencies() -> None:
    # capacity 1 request per 500 ms, 4 offered per second: the client queue grows
    records = []
    free = 0.0
    for i in range(12):
        sched = i * 250.0
        start = max(sched, free)
        records.append(rec(i, sched=sched, sent=start - sched, ttft=300, tokens=11))
        free = start + 500.0
    plan = LoadPlan(rate=4.0, max_concurrency=1, offsets=tuple(i * 0.25 for i in range(12)))
    s = summarize(records, label="rate 4/s", mode="open", rate=4.0)
    warnings = health_warnings(s, records, None, plan)
    assert s.metrics["e2e_ms"].max == pytest.approx(500, rel=1e-3)
    assert s.metrics["sched_e2e_ms"].max > 2500
    text = " ".join(warnings)
    assert "achieved send rate" in text
    assert "offered load exceeds capacity" in text and "from the scheduled time" in text


def test_health_warns_on_client_limits() -> None:
    records = [rec(i) for i in range(4)]
    records[1].coalesced = 10
    for r in records:
        r.started_ns = (r.sent_ns or 0)
        r.picked_ns = r.scheduled_ns
        r.dispatched_ns = r.scheduled_ns + 20 * MS
    s = summarize(records, label="c", mode="closed", client_cpu=0.97)
    warnings = " ".join(health_warnings(s, records, None, LoadPlan()))
    assert "dispatch delay" in warnings
    assert "same read" in warnings
    assert "client CPU 97%" in warnings
    ok = summarize([rec(i) for i in range(4)], label="c", mode="closed", client_cpu=0.1)
    assert not [w for w in health_warnings(ok, [], None, LoadPlan()) if "samples" not in w]


# --- files --------------------------------------------------------------------------------

EXPECTED_COLUMNS = [
    "label", "mode", "concurrency", "rate", "processes", "requests", "ok", "failed",
    "busy_503", "warmup_excluded", "window_s", "req_per_s", "output_tok_per_s",
    "input_tok_per_s", "goodput_req_per_s", "goodput_frac", "achieved_rate",
    "concurrency_mean", "concurrency_peak",
] + [f"{m}_{s}" for m in ("ttft_ms", "ttfc_ms", "tpot_ms", "icl_ms", "e2e_ms", "queue_ms",
                          "sched_e2e_ms")
     for s in ("count", "mean", "p50", "p90", "p95", "p99", "max")] + [
    "eval_rate_mean", "prompt_eval_rate_mean", "client_tps_mean", "tokens_per_chunk_mean",
    "load_ms_mean", "dispatch_ms_p99", "client_cpu", "coalesced_frac",
    "floor_lag_ms_p50", "floor_lag_ms_p99", "floor_ttft_ms_p50", "warnings",
    # appended for servers that send no token counts
    "token_counts", "output_tok_per_s_estimated",
] + [f"tpot_ms_estimated_{s}" for s in ("count", "mean", "p50", "p90", "p95", "p99", "max")
     ] + ["repeat"]  # appended with --repeat


def make_run(ttft: float = 300.0, name: str = "m") -> BenchRun:
    points = []
    for conc in (1, 4):
        records = [rec(i, sched=i * 100.0, ttft=ttft + i, tokens=21) for i in range(8)]
        records.append(rec(8, ok=False, status=503))
        s = summarize(records, label=f"concurrency {conc}", mode="closed", concurrency=conc,
                      base_ns=records[0].scheduled_ns)
        points.append(PointResult(summary=s, records=records, base_ns=records[0].scheduled_ns,
                                  warnings=["example warning"]))
    config = BenchConfig(model=name, host="http://127.0.0.1:1", concurrency=(1, 4))
    return BenchRun(config=config, points=points, environment={"cpu": "x"},
                    model_load={"wall_ms": 1.0}, started_at="now", duration_s=1.0)


def test_summary_csv_columns_are_stable(tmp_path: object) -> None:
    assert list(report.SUMMARY_COLUMNS) == EXPECTED_COLUMNS
    out = str(tmp_path)
    report.write_outputs(make_run(), out, plots=False)
    with open(f"{out}/summary.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == EXPECTED_COLUMNS
    assert len(rows) == 3
    row = dict(zip(rows[0], rows[1]))
    assert row["label"] == "concurrency 1" and row["busy_503"] == "1"
    assert float(row["ttft_ms_p50"]) == pytest.approx(303.5)


def test_run_json_and_requests_jsonl(tmp_path: object) -> None:
    out = str(tmp_path)
    paths = report.write_outputs(make_run(), out, plots=False)
    assert sorted(p.rsplit("/", 1)[1] for p in paths) == ["report.html", "requests.jsonl",
                                                          "run.json", "summary.csv"]
    data = report.load_run(out)
    assert data["schema"] == report.RUN_SCHEMA
    assert "tpot_ms" in data["formulas"] and data["config"]["model"] == "m"
    assert data["points"][1]["summary"]["metrics"]["ttft_ms"]["count"] == 8
    with open(f"{out}/requests.jsonl") as fh:
        rows = [json.loads(line) for line in fh]
    assert len(rows) == 18
    first = next(r for r in rows if r["ok"])
    assert first["ttft_ms"] == pytest.approx(300.0) and first["sent_ms"] == pytest.approx(1.0)
    assert len(first["chunk_ms"]) == 21 and first["chunk_ms"][0] == pytest.approx(300.0)
    failed = [r for r in rows if not r["ok"]]
    assert len(failed) == 2 and all(r["status_code"] == 503 for r in failed)
    assert all(r["error_type"] == "ServerBusy" for r in failed)


def test_console_block_names_metrics_and_warnings() -> None:
    text = report.format_point(make_run().points[0])
    for needle in ("concurrency 1", "TTFT", "TPOT", "ICL (chunks)", "E2E (from sched)",
                   "ServerBusy 1", "WARNING: example warning", "health:"):
        assert needle in text


def test_compare_two_runs(tmp_path: object) -> None:
    a, b = f"{tmp_path}/a", f"{tmp_path}/b"
    report.write_outputs(make_run(300.0, "fast"), a, plots=False)
    report.write_outputs(make_run(330.0, "slow"), b, plots=False)
    runs = [("a", report.load_run(a)), ("b", report.load_run(b))]
    text = compare.format_compare(runs)
    lines = text.splitlines()
    assert lines[0].split()[:2] == ["point", "run"]
    assert sum(1 for line in lines if line.startswith("concurrency 1")) == 2
    assert "vs a: tok/s " in text and "TTFT p50 +9.9%, TPOT p50 +0.0%" in text
    with pytest.raises(ConfigError):
        report.load_run(f"{tmp_path}/missing")


def test_png_charts_render(tmp_path: object) -> None:
    pytest.importorskip("matplotlib")
    out = str(tmp_path)
    paths = report.write_outputs(make_run(), out)
    pngs = sorted(p.rsplit("/", 1)[1] for p in paths if p.endswith(".png"))
    # one timeline per point, not only the last
    assert pngs == ["ecdf.png", "latency-throughput.png", "load.png",
                    "timeline-concurrency-1.png", "timeline-concurrency-4.png"]
    for name in pngs:
        with open(f"{out}/{name}", "rb") as fh:
            assert fh.read(8) == b"\x89PNG\r\n\x1a\n"



# --- servers that send no token counts (llama.cpp ignores include_usage) -----------------

def uncounted(index: int = 0, **kw: Any) -> RequestRecord:
    r = rec(index, **kw)
    r.eval_count = r.eval_duration = None
    r.prompt_eval_count = r.prompt_eval_duration = r.total_duration = None
    return r


def make_uncounted_run(points: int = 2) -> BenchRun:
    results = []
    for conc in range(1, points + 1):
        records = [uncounted(i, sched=i * 100.0, tokens=21, tpot=20.0) for i in range(6)]
        s = summarize(records, label=f"concurrency {conc}", mode="closed", concurrency=conc,
                      base_ns=records[0].scheduled_ns)
        results.append(PointResult(summary=s, records=records, base_ns=records[0].scheduled_ns,
                                   warnings=health_warnings(s, records, None, LoadPlan())))
    config = BenchConfig(model="m", host="http://127.0.0.1:1", dialect="openai")
    return BenchRun(config=config, points=results, environment={}, model_load={},
                    started_at="now", duration_s=1.0)


def test_no_token_counts_gives_no_tpot_and_an_estimate_from_chunks() -> None:
    d = derive(uncounted(tokens=11, tpot=20.0))
    assert d["tpot_ms"] is None and d["client_tps"] is None and d["tokens_per_chunk"] is None
    assert d["tpot_ms_estimated"] == pytest.approx(20.0)
    assert d["client_tps_estimated"] == pytest.approx(50.0)
    assert derive(rec(tokens=11))["tpot_ms_estimated"] is None  # counted: no estimate
    s = summarize([uncounted(i, sched=i * 10.0, tokens=11) for i in range(4)],
                  label="c", mode="closed")
    assert s.token_counts == "none"
    assert s.output_tokens is None and s.output_tok_per_s is None
    assert s.output_tok_per_s_estimated == pytest.approx(44 / s.window_s)
    assert s.metrics["tpot_ms"].count == 0
    assert s.metrics["tpot_ms_estimated"].p50 == pytest.approx(20.0)


def test_partial_token_counts_are_flagged_not_summed() -> None:
    s = summarize([rec(0, tokens=10), uncounted(1, sched=5.0, tokens=6)],
                  label="c", mode="closed")
    assert s.token_counts == "partial" and s.output_tok_per_s is None
    assert s.output_tok_per_s_estimated == pytest.approx(16 / s.window_s)
    assert s.metrics["tpot_ms"].count == 1 and s.metrics["tpot_ms_estimated"].count == 1
    counted = summarize([rec(0)], label="c", mode="closed")
    assert counted.token_counts == "server" and counted.output_tok_per_s_estimated is None


def test_tpot_slo_uses_the_estimate_without_counts() -> None:
    slo = Slo(tpot=25)
    assert slo.met({"tpot_ms": None, "tpot_ms_estimated": 20.0})
    assert not slo.met({"tpot_ms": None, "tpot_ms_estimated": 30.0})


def test_no_token_counts_console_says_so_and_shows_estimates() -> None:
    point = make_uncounted_run(1).points[0]
    text = report.format_point(point)
    assert "0.0 output tok/s" not in text
    assert "output tok/s n/a (server sent no token counts; ~" in text
    tpot_lines = [line for line in text.splitlines() if line.strip().startswith("TPOT")]
    assert "n/a" in tpot_lines[0] and "server sent no token counts" in tpot_lines[0]
    assert "TPOT (estimated)" in tpot_lines[1] and "20.0" in tpot_lines[1]
    assert "decode rate: server n/a" in text and "~50.0 chunks/s" in text
    assert sum("WARNING: server sent no token counts" in line
               for line in text.splitlines()) == 1


def test_no_token_counts_files_keep_columns_and_flag(tmp_path: Any) -> None:
    out = str(tmp_path)
    report.write_outputs(make_uncounted_run(), out, plots=False)
    with open(f"{out}/summary.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == EXPECTED_COLUMNS
    row = rows[0]
    assert row["token_counts"] == "none"
    assert row["output_tok_per_s"] == "" and row["tpot_ms_p50"] == ""
    assert row["client_tps_mean"] == "" and row["eval_rate_mean"] == ""
    assert float(row["output_tok_per_s_estimated"]) > 0
    assert float(row["tpot_ms_estimated_p50"]) == pytest.approx(20.0)
    data = report.load_run(out)
    summary = data["points"][0]["summary"]
    assert summary["output_tok_per_s"] is None and summary["token_counts"] == "none"
    assert summary["metrics"]["tpot_ms_estimated"]["count"] == 6
    assert "ESTIMATE" in data["formulas"]["tpot_ms_estimated"]
    with open(f"{out}/requests.jsonl") as fh:
        first = json.loads(fh.readline())
    assert first["tpot_ms"] is None and first["tpot_ms_estimated"] == pytest.approx(20.0)


def test_compare_marks_estimates(tmp_path: Any) -> None:
    a, b = f"{tmp_path}/a", f"{tmp_path}/b"
    report.write_outputs(make_run(), a, plots=False)
    report.write_outputs(make_uncounted_run(), b, plots=False)
    text = compare.format_compare([("a", report.load_run(a)), ("b", report.load_run(b))])
    assert "~20.00" in text and "~ = estimated" in text
    assert "TPOT p50 -" in text  # an estimate is not compared with a server count


def test_charts_of_a_run_without_token_counts_warn_nothing(tmp_path: Any) -> None:
    pytest.importorskip("matplotlib")
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*[Nn]o artists")
        paths = report.write_outputs(make_uncounted_run(), str(tmp_path))
    assert len([p for p in paths if p.endswith(".png")]) == 5
