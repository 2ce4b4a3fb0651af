"""Bench output: console tables, run.json, requests.jsonl, summary.csv.

``bench compare``'s table is in :mod:`.compare`.

File formats (stable; ``summary.csv`` columns are :data:`SUMMARY_COLUMNS`):

- ``run.json``: ``{"schema", "streamkit", "started_at", "duration_s",
  "config", "environment", "model_load", "formulas", "points": [{"summary",
  "calibration", "warnings", "sharding"}], "repeats", "search",
  "input_tokens"}`` (the last three null unless ``--repeat``, ``--search``,
  ``--input-tokens``).
- ``report.html``: all of it in one self-contained page (:mod:`.html`).
- ``requests.jsonl``: one object per request (warm-up included, flagged):
  stamps in ms from the point's schedule zero, derived metrics, server
  counts, errors, and ``chunk_ms`` (text-chunk arrivals in ms after ``sent``).
- ``summary.csv``: one row per load point. The column names are stable;
  new columns are only ever appended. When the server sent no token counts,
  ``output_tok_per_s`` and the ``tpot_ms_*`` columns are empty, ``token_counts``
  says ``none`` (or ``partial``) and the ``*_estimated`` columns hold the
  chunk-based estimates.
"""

from __future__ import annotations

import csv
import json
import os
import platform
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple

from .._version import __version__
from ..errors import ConfigError, StreamkitError
from ..records import TIMING_STAMPS
from .metrics import FORMULAS, LATENCY_METRICS, NS_PER_MS, derive
from .stats import repeat_intervals
from .summary import Distribution

__all__ = [
    "RUN_SCHEMA",
    "SUMMARY_COLUMNS",
    "environment",
    "format_point",
    "load_run",
    "request_rows",
    "run_dict",
    "summary_row",
    "write_outputs",
]

RUN_SCHEMA = "streamkit-bench/1"
_STATS = ("count", "mean", "p50", "p90", "p95", "p99", "max")
SUMMARY_COLUMNS: Tuple[str, ...] = (
    "label", "mode", "concurrency", "rate", "processes", "requests", "ok", "failed",
    "busy_503", "warmup_excluded", "window_s", "req_per_s", "output_tok_per_s",
    "input_tok_per_s", "goodput_req_per_s", "goodput_frac", "achieved_rate",
    "concurrency_mean", "concurrency_peak",
    *(f"{m}_{s}" for m in LATENCY_METRICS for s in _STATS),
    "eval_rate_mean", "prompt_eval_rate_mean", "client_tps_mean", "tokens_per_chunk_mean",
    "load_ms_mean", "dispatch_ms_p99", "client_cpu", "coalesced_frac",
    "floor_lag_ms_p50", "floor_lag_ms_p99", "floor_ttft_ms_p50", "warnings",
    # appended later; empty unless the server sent no token counts
    "token_counts", "output_tok_per_s_estimated",
    *(f"tpot_ms_estimated_{s}" for s in _STATS),
    "repeat",
)
NO_COUNTS = "server sent no token counts"
ESTIMATE_NOTE = "estimated: 1 text chunk counted as 1 token"
_STAMPS = ("scheduled_ns", "dispatched_ns", "picked_ns", *TIMING_STAMPS)
_SERVER = ("eval_count", "eval_duration", "prompt_eval_count", "prompt_eval_duration",
           "load_duration", "total_duration")
_DISPLAY = {"ttft_ms": "TTFT", "ttfc_ms": "TTFC", "tpot_ms": "TPOT", "icl_ms": "ICL (chunks)",
            "e2e_ms": "E2E (from send)", "queue_ms": "queue (sched->sent)",
            "sched_e2e_ms": "E2E (from sched)", "tpot_ms_estimated": "TPOT (estimated)"}


# --- environment ------------------------------------------------------------------


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_bytes() -> Optional[int]:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def _server_version(config: Any, host: str) -> Optional[str]:
    from ..client import Client

    try:
        with Client(host, dialect=config.dialect, timeouts=config.timeouts) as client:
            return client.version()
    except StreamkitError:
        return None


def environment(config: Any, host: str) -> Dict[str, Any]:
    """Where the run happened: CPU, memory, OS, Python, streamkit, server version, model."""
    from .target import host_label

    return {
        "cpu": _cpu_name(), "cpu_count": os.cpu_count(), "memory_bytes": _memory_bytes(),
        "os": platform.platform(), "python": f"{platform.python_implementation()} "
                                            f"{platform.python_version()}",
        "streamkit": __version__, "server_version": _server_version(config, host),
        "host": host_label(host) if config.host != "builtin" else "builtin emulator",
        "dialect": config.dialect, "model": config.model,
        "clock": "time.perf_counter_ns (monotonic, system-wide)",
    }


# --- per-request rows and summaries ------------------------------------------------------


def _rel_ms(value: Optional[int], base: int) -> Optional[float]:
    return None if value is None else round((value - base) / NS_PER_MS, 3)


def _round(value: Optional[float], digits: int = 3) -> Optional[float]:
    return None if value is None else round(value, digits)


def request_rows(point: Any) -> Iterator[Dict[str, Any]]:
    """The requests.jsonl rows of one point (stamps in ms from its schedule zero)."""
    label, base = point.summary.label, point.base_ns
    for r in sorted(point.records, key=lambda rec: (rec.warmup is False, rec.scheduled_ns)):
        row: Dict[str, Any] = {"point": label, "index": r.index, "warmup": r.warmup,
                               "process": r.process, "ok": r.ok}
        for name in _STAMPS:
            row[name[:-3] + "_ms"] = _rel_ms(getattr(r, name), base)
        row.update({k: _round(v) for k, v in derive(r).items()})
        row.update({k: getattr(r, k) for k in _SERVER})
        row.update(chunks=r.chunks, text_chunks=len(r.chunk_ns), coalesced=r.coalesced,
                   done_reason=r.done_reason, attempts=r.attempts,
                   error_type=r.error_type, error=r.error, status_code=r.status_code)
        sent = r.sent_ns if r.sent_ns is not None else base
        row["chunk_ms"] = [round((t - sent) / NS_PER_MS, 3) for t in r.chunk_ns]
        if r.lags_ns:
            row["lag_ms_max"] = round(max(r.lags_ns) / NS_PER_MS, 3)
        yield row


def _dist(d: Optional[Distribution], stat: str) -> Optional[float]:
    if d is None:
        return None
    value = getattr(d, stat)
    return value if value is None or isinstance(value, int) else round(value, 4)


def summary_row(point: Any) -> Dict[str, Any]:
    """One summary.csv row (keys exactly SUMMARY_COLUMNS)."""
    s, cal = point.summary, point.calibration
    m = s.metrics
    row: Dict[str, Any] = {k: getattr(s, k) for k in SUMMARY_COLUMNS if hasattr(s, k)}
    for name in (*LATENCY_METRICS, "tpot_ms_estimated"):
        for stat in _STATS:
            row[f"{name}_{stat}"] = _dist(m.get(name), stat)
    for name in ("eval_rate", "prompt_eval_rate", "client_tps", "tokens_per_chunk", "load_ms"):
        row[f"{name}_mean"] = _dist(m.get(name), "mean")
    row["dispatch_ms_p99"] = _dist(m.get("dispatch_ms"), "p99")
    row["floor_lag_ms_p50"] = _dist(cal.lag_ms, "p50") if cal else None
    row["floor_lag_ms_p99"] = _dist(cal.lag_ms, "p99") if cal else None
    row["floor_ttft_ms_p50"] = _dist(cal.ttft_ms, "p50") if cal else None
    row["warnings"] = len(point.warnings)
    return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in
            ((k, row.get(k)) for k in SUMMARY_COLUMNS)}


def run_dict(run: Any) -> Dict[str, Any]:
    """The content of run.json."""
    return {
        "schema": RUN_SCHEMA, "streamkit": __version__, "started_at": run.started_at,
        "duration_s": round(run.duration_s, 3), "config": run.config.as_dict(),
        "environment": run.environment, "model_load": run.model_load, "formulas": FORMULAS,
        "points": [{"summary": p.summary.as_dict(),
                    "calibration": p.calibration.as_dict() if p.calibration else None,
                    "warnings": list(p.warnings),
                    "sharding": p.sharding.as_dict() if getattr(p, "sharding", None) else None}
                   for p in run.points],
        "repeats": repeat_intervals([p.summary.as_dict() for p in run.points]) or None,
        "search": run.search.as_dict() if getattr(run, "search", None) else None,
        "input_tokens": run.input_tokens.as_dict() if getattr(run, "input_tokens", None)
        else None,
    }


def write_outputs(run: Any, out_dir: str, *, plots: bool = True) -> List[str]:
    """Write run.json, requests.jsonl, summary.csv, charts and report.html into ``out_dir``.

    Charts need matplotlib (``pip install 'streamkit[plot]'``); without it
    they are skipped (the returned list says so by their absence) and
    report.html holds the tables and says how to get the charts.
    Returns the paths written. Raises ConfigError when the directory
    cannot be created or written.
    """
    try:
        os.makedirs(out_dir, exist_ok=True)
        paths = [_write_json(run, out_dir), _write_requests(run, out_dir),
                 _write_csv(run, out_dir)]
    except OSError as exc:
        raise ConfigError(f"cannot write bench output to {out_dir!r}: {exc}") from exc
    charts: List[Any] = []
    if plots:
        from .charts import render_run, run_charts
        from .plot import available

        if available():
            charts = run_charts(run)
            paths.extend(render_run(run, out_dir, charts))
    from .html import render_html

    path = os.path.join(out_dir, "report.html")
    try:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(render_html(json.loads(json.dumps(run_dict(run), default=str)), charts,
                                 plots=plots))
    except OSError as exc:
        raise ConfigError(f"cannot write bench output to {out_dir!r}: {exc}") from exc
    paths.append(path)
    return paths


def _write_json(run: Any, out_dir: str) -> str:
    path = os.path.join(out_dir, "run.json")
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(run_dict(run), fh, indent=2, default=str)
        fh.write("\n")
    return path


def _write_requests(run: Any, out_dir: str) -> str:
    path = os.path.join(out_dir, "requests.jsonl")
    with open(path, "w", encoding="utf-8") as fh:
        for point in run.points:
            for row in request_rows(point):
                fh.write(json.dumps(row, separators=(",", ":")) + "\n")
    return path


def _write_csv(run: Any, out_dir: str) -> str:
    path = os.path.join(out_dir, "summary.csv")
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(SUMMARY_COLUMNS))
        writer.writeheader()
        for point in run.points:
            writer.writerow(summary_row(point))
    return path


# --- console -----------------------------------------------------------------------


def fmt(value: Optional[float], digits: int = 1) -> str:
    """A number for a table cell (``-`` for none)."""
    return "-" if value is None else f"{value:.{digits}f}"


def _metric_table(metrics: Mapping[str, Distribution], token_counts: str) -> List[str]:
    head = f"  {'metric (ms)':<20}{'count':>7}" + "".join(
        f"{s:>9}" for s in ("mean", "p50", "p90", "p95", "p99", "max"))
    lines = [head]
    for name in LATENCY_METRICS:
        d = metrics.get(name)
        if name == "tpot_ms" and token_counts != "server":
            if token_counts == "none":
                lines.append(f"  {_DISPLAY[name]:<20}{'n/a':>7}  ({NO_COUNTS})")
            else:
                lines.append(_metric_row(name, d))
            lines.append(_metric_row("tpot_ms_estimated", metrics.get("tpot_ms_estimated"))
                         + f"  ({ESTIMATE_NOTE})")
            continue
        if d is None or d.count == 0:
            continue
        lines.append(_metric_row(name, d))
    return lines


def _metric_row(name: str, d: Optional[Distribution]) -> str:
    d = d or Distribution()
    return f"  {_DISPLAY[name]:<20}{d.count:>7}" + "".join(
        f"{fmt(getattr(d, s)):>9}" for s in ("mean", "p50", "p90", "p95", "p99", "max"))


def _throughput(s: Any) -> str:
    if s.output_tok_per_s is not None:
        return f"{s.output_tok_per_s:.1f} output tok/s"
    est = "-" if s.output_tok_per_s_estimated is None else f"{s.output_tok_per_s_estimated:.1f}"
    which = NO_COUNTS if s.token_counts == "none" else "server token counts missing for some"
    return f"output tok/s n/a ({which}; ~{est} estimated from text chunks)"


def _decode_rates(s: Any) -> str:
    m = s.metrics
    if s.token_counts == "none":
        est = m.get("client_tps_estimated", Distribution()).mean
        return (f"  decode rate: server n/a ({NO_COUNTS}) · client ~{fmt(est)} chunks/s "
                f"(1000/TPOT, {ESTIMATE_NOTE}) · prompt eval "
                f"{fmt(m['prompt_eval_rate'].mean)} tok/s")
    return (f"  decode rate: server eval {fmt(m['eval_rate'].mean)} tok/s · client "
            f"{fmt(m['client_tps'].mean)} tok/s (1000/TPOT) · prompt eval "
            f"{fmt(m['prompt_eval_rate'].mean)} tok/s · "
            f"{fmt(m['tokens_per_chunk'].mean, 2)} tokens/chunk")


def format_point(point: Any) -> str:
    """The console block of one load point: header, throughput, table, floor, health."""
    s, m = point.summary, point.summary.metrics
    errors = ", ".join(f"{k} {v}" for k, v in s.errors.items())
    lines = [f"== {s.label} · {s.requests} requests ({s.ok} ok, {s.failed} failed"
             + (f": {errors}" if errors else "") + f") · {s.window_s:.2f} s"
             + (f" · {s.processes} processes" if s.processes > 1 else "") + " =="]
    good = ""
    if s.goodput_req_per_s is not None:
        good = f" · goodput {s.goodput_req_per_s:.2f} req/s ({s.goodput_frac:.0%} meet the SLO)"
    lines.append(f"  throughput: {s.req_per_s:.2f} req/s · {_throughput(s)}"
                 f" · concurrency mean {s.concurrency_mean:.1f}, peak {s.concurrency_peak}"
                 + good)
    if s.achieved_rate is not None and s.rate is not None:
        lines.append(f"  send rate: {s.achieved_rate:.2f}/s achieved of {s.rate:g}/s target")
    lines.append(_decode_rates(s))
    lines.extend(_metric_table(m, s.token_counts))
    if point.calibration is not None:
        lines.append("  " + point.calibration.sentence())
    cpu = "-" if s.client_cpu is None else f"{s.client_cpu:.0%}"
    coalesced = "-" if s.coalesced_frac is None else f"{s.coalesced_frac:.1%}"
    lines.append(f"  health: client CPU {cpu} of a core · dispatch delay p50 "
                 f"{fmt(m['dispatch_ms'].p50, 2)} / p99 {fmt(m['dispatch_ms'].p99, 2)} ms · "
                 f"coalesced chunks {coalesced}")
    sharding = getattr(point, "sharding", None)
    if sharding is not None and (sharding.auto or sharding.processes > 1):
        lines.append(f"  client: {sharding.sentence()}")
    lines.extend(f"  WARNING: {w}" for w in point.warnings)
    return "\n".join(lines)


# --- compare -------------------------------------------------------------------------


def load_run(path: str) -> Dict[str, Any]:
    """Read a run.json (``path`` is the file or the --out directory that holds it).

    Raises ConfigError when it is missing or not a streamkit bench run.
    """
    file = os.path.join(path, "run.json") if os.path.isdir(path) else path
    try:
        with open(file, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read bench run {file!r}: {exc}") from exc
    if not isinstance(data, dict) or data.get("schema") != RUN_SCHEMA:
        raise ConfigError(f"{file!r} is not a streamkit bench run.json")
    return data
