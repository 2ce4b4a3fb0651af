"""``report.html``: one self-contained file to share a bench run.

No network at all: no script, no stylesheet or font from elsewhere; the
charts are the same PNGs as ``--out`` writes, embedded as base64 data URIs.
Without matplotlib the report still holds every table and says that charts
need ``streamkit[plot]``. Built from the ``run.json`` content
(:func:`streamkit.bench.report.run_dict`), so it shows exactly what was saved.
"""

from __future__ import annotations

import base64
import html
from typing import Any, Iterable, List, Mapping, Optional, Sequence

from .plot import MISSING, Chart
from .stats import CI_FIGURES

__all__ = ["render_html"]

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px auto;
max-width:1480px;padding:0 16px;color:#1d1d1f;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;
border-bottom:1px solid #ddd;padding-bottom:4px}
.sub{color:#555;margin:0 0 16px}
table{border-collapse:collapse;margin:6px 0 12px;font-size:12.5px;font-variant-numeric:tabular-nums}
th,td{border:1px solid #ddd;padding:3px 6px;text-align:right;white-space:nowrap}
th{background:#f3f4f6;white-space:normal;vertical-align:bottom}td.l,th.l{text-align:left}
table.meta td{text-align:left;white-space:normal}
.warn{background:#fff4e5;border-left:4px solid #f0a020;padding:6px 10px;margin:4px 0}
.note{background:#eef4ff;border-left:4px solid #4a7bd0;padding:6px 10px;margin:8px 0}
figure{margin:18px 0}figure img{max-width:100%;border:1px solid #e5e5e5}
figcaption{color:#444;font-size:13px}
.scroll{overflow-x:auto}code{background:#f3f4f6;padding:0 3px}
"""


def _e(value: Any) -> str:
    return html.escape("-" if value is None else str(value))


def _num(value: Any, digits: int = 1) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _table(head: Sequence[str], rows: Iterable[Sequence[str]], left: int = 1,
           cls: str = "") -> str:
    """An HTML table; cells are already escaped; the first ``left`` columns align left."""
    th = "".join(f'<th class="l">{h}</th>' if i < left else f"<th>{h}</th>"
                 for i, h in enumerate(head))
    body = "".join("<tr>" + "".join(f'<td class="l">{c}</td>' if i < left else f"<td>{c}</td>"
                                     for i, c in enumerate(row)) + "</tr>" for row in rows)
    attr = f' class="{cls}"' if cls else ""
    header = f"<tr>{th}</tr>" if any(head) else ""
    return f'<div class="scroll"><table{attr}>{header}{body}</table></div>'


def _metric(summary: Mapping[str, Any], metric: str, stat: str) -> str:
    value = summary.get("metrics", {}).get(metric, {}).get(stat)
    if value is None and metric == "tpot_ms":
        estimate = summary.get("metrics", {}).get("tpot_ms_estimated", {}).get(stat)
        return "~" + _num(estimate) if isinstance(estimate, (int, float)) else "-"
    return _num(value)


def _floor(point: Mapping[str, Any]) -> str:
    cal = point.get("calibration") or {}
    lag = (cal.get("lag_ms") or {}).get("p99")
    return f"±{_num(lag)}" if isinstance(lag, (int, float)) else "not measured"


def _meta(data: Mapping[str, Any]) -> str:
    config, env = data.get("config", {}), data.get("environment", {})
    mem = env.get("memory_bytes")
    machine = (f"{env.get('cpu')} · {env.get('cpu_count')} CPUs"
               + (f" · {mem / 2**30:.1f} GiB" if isinstance(mem, (int, float)) else "")
               + f" · {env.get('os')} · {env.get('python')}")
    floors = [((p.get("calibration") or {}).get("lag_ms") or {}).get("p99")
              for p in data.get("points", [])]
    measured = [f for f in floors if isinstance(f, (int, float))]
    floor = (f"timestamps accurate to ±{max(measured):.1f} ms p99 at the heaviest point "
             "(measured against a stamping emulator before each point)"
             if measured else "not measured (--no-calibrate)")
    load = _load_text(config)
    version = env.get("server_version")
    rows = [("streamkit", data.get("streamkit")),
            ("server", f"{env.get('host')}" + (f" (version {version})" if version else "")),
            ("model", config.get("model")), ("dialect", config.get("dialect")),
            ("date", data.get("started_at")), ("machine", machine), ("client floor", floor),
            ("load", load), ("duration", f"{_num(data.get('duration_s'))} s")]
    return _table(["", ""], ([_e(k), _e(v)] for k, v in rows), left=2, cls="meta")


def _load_text(config: Mapping[str, Any]) -> str:
    if config.get("mode") == "open":
        shape = config.get("arrival")
        if shape == "gamma":
            shape = f"gamma (shape {config.get('arrival_shape')})"
        load = f"open loop, rates {config.get('rates')} req/s, {shape} arrivals"
        if config.get("ramp"):
            load = f"open loop, rate ramping {config['rates'][0]} -> {config['rates'][-1]} req/s"
        if config.get("max_concurrency"):
            load += f", at most {config['max_concurrency']} in flight"
    else:
        load = f"closed loop, concurrency {config.get('concurrency')}"
    budget = config.get("num_predict")
    return (f"{load}; {config.get('requests') or 'default'} requests per point; "
            f"num_predict {budget if budget is not None else 'server default'}; "
            + (f"prompts from {config['prompt_file']}" if config.get("prompt_file")
               else f"~{config['input_tokens']} input tokens" if config.get("input_tokens")
               else f"{config.get('prompt_words')}-word generated prompts")
            + f"; warm-up {config.get('warmup')}; processes {config.get('processes') or 'auto'}")


_SUMMARY_HEAD = ("point", "ok / failed", "req/s", "output tok/s", "goodput", "TTFT p50",
                 "TTFT p90", "TTFT p99", "TPOT p50", "TPOT p90", "TPOT p99", "E2E p50",
                 "E2E p99", "E2E p99 from sched", "client floor (ms p99)", "processes")


def _summary_rows(points: Sequence[Mapping[str, Any]]) -> Iterable[List[str]]:
    for p in points:
        s = p.get("summary", {})
        tput = s.get("output_tok_per_s")
        tput_text = (_num(tput) if tput is not None
                     else "~" + _num(s.get("output_tok_per_s_estimated")))
        good = "-"
        if s.get("goodput_req_per_s") is not None:
            good = f"{_num(s['goodput_req_per_s'], 2)} req/s ({s['goodput_frac']:.0%})"
        label = str(s.get("label"))
        if s.get("repeat"):
            label += f" #{s['repeat'] + 1}"
        yield [_e(label), f"{s.get('ok')} / {s.get('failed')}", _num(s.get("req_per_s"), 2),
               tput_text, _e(good), *(_metric(s, m, q) for m in ("ttft_ms", "tpot_ms")
                                      for q in ("p50", "p90", "p99")),
               _metric(s, "e2e_ms", "p50"), _metric(s, "e2e_ms", "p99"),
               _metric(s, "sched_e2e_ms", "p99"), _e(_floor(p)), _e(s.get("processes"))]


def _summary(points: Sequence[Mapping[str, Any]]) -> str:
    rows = list(_summary_rows(points))
    estimated = any(cell.startswith("~") for row in rows for cell in row)
    return _table(list(_SUMMARY_HEAD), rows) + (
        "<p>~ marks an estimate from text chunks (the server sent no token counts).</p>"
        if estimated else "")


def _warnings(points: Sequence[Mapping[str, Any]]) -> str:
    items = [f'<div class="warn"><b>{_e(p.get("summary", {}).get("label"))}</b>: {_e(w)}</div>'
             for p in points for w in p.get("warnings", [])]
    shards = [[_e(p.get("summary", {}).get("label")), _e(s.get("processes")),
               "auto" if s.get("auto") else "--processes", _e(s.get("reason"))]
              for p in points for s in (p.get("sharding"),) if s]
    table = (_table(["point", "client processes", "chosen by", "why"], shards, left=4)
             if shards else "")
    return (table + "".join(items)
            or "<p>No warning: the client kept up with every point.</p>")


def _repeats(data: Mapping[str, Any]) -> str:
    groups = data.get("repeats")
    if not groups:
        return ""
    rows = [[_e(g["label"]), _e(g["n"]),
             *(_e(_interval(g["intervals"].get(k), digits))
               for k, (_, digits) in CI_FIGURES.items())] for g in groups]
    return ("<h2>Repeated points: mean ± 95% confidence interval</h2>"
            "<p>Student's t over the runs; CV = standard deviation / mean.</p>"
            + _table(["point", "runs", *(label for label, _ in CI_FIGURES.values())], rows))


def _interval(ci: Optional[Mapping[str, Any]], digits: int) -> str:
    if not ci:
        return "-"
    if ci.get("half_width") is None:
        return _num(ci.get("mean"), digits)
    cv = ci.get("cv")
    return (f"{ci['mean']:.{digits}f} ± {ci['half_width']:.{digits}f}"
            + (f" (CV {cv:.1%})" if isinstance(cv, (int, float)) else ""))


def _search(data: Mapping[str, Any]) -> str:
    search = data.get("search")
    if not search:
        return ""
    best = search.get("max_rate")
    slo = ", ".join(f"{k} <= {v:g} ms" for k, v in (search.get("slo") or {}).items())
    head = (f"<p><b>Highest rate with goodput >= {search['goodput_target']:.0%}: "
            + (f"{best:.2f} req/s" if isinstance(best, (int, float)) else "none found")
            + f"</b> (SLO {_e(slo)}; {len(search.get('probes', []))} probes; "
            f"{_e(search.get('stopped'))}).</p>")
    rows = [[_e(i), _num(p["rate"], 3), f"{p['goodput_frac']:.1%}",
             "yes" if p.get("passed") else "no", _e(p.get("runs", 1))]
            for i, p in enumerate(search.get("probes", []), 1)]
    return ("<h2>SLO search</h2>" + head
            + _table(["probe", "rate (req/s)", "meet the SLO", "passed", "runs"], rows))


def _input_tokens(data: Mapping[str, Any]) -> str:
    cal = data.get("input_tokens")
    if not cal:
        return ""
    return ("<h2>Prompt size</h2><p>" + _e(cal.get("sentence")) + "</p>")


def _charts(charts: Sequence[Chart], plots: bool) -> str:
    if not charts:
        why = MISSING if plots else "charts were turned off (--no-plot)"
        return f'<div class="note">No charts: {_e(why)}. Every table above is complete.</div>'
    return "".join(
        f'<figure><img alt="{_e(c.caption)}" src="data:image/png;base64,'
        f'{base64.b64encode(c.png).decode("ascii")}"><figcaption>{_e(c.caption)}'
        f" ({_e(c.name)})</figcaption></figure>" for c in charts)


def _formulas(data: Mapping[str, Any]) -> str:
    rows = ([f"<code>{_e(k)}</code>", _e(v)] for k, v in data.get("formulas", {}).items())
    return ("<details><summary>Formulas</summary>"
            + _table(["metric", "formula"], rows, left=2, cls="meta") + "</details>")


def render_html(data: Mapping[str, Any], charts: Sequence[Chart], *, plots: bool = True) -> str:
    """The report as one HTML document (str). ``data`` is the run.json content;
    ``charts`` the rendered PNGs (empty without matplotlib or with ``plots=False``)."""
    config = data.get("config", {})
    env = data.get("environment", {})
    points = data.get("points", [])
    title = f"streamkit bench: {config.get('model')} on {env.get('host')}"
    parts = [
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">",
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1><p class=\"sub\">{_e(data.get('started_at'))} · "
        f"{_e(_load_text(config))}</p>",
        _meta(data), "<h2>Summary (latencies in ms)</h2>",
        _summary(points),
        _repeats(data), _search(data), _input_tokens(data),
        "<h2>Measurement health</h2>", _warnings(points),
        "<h2>Charts</h2>", _charts(charts, plots), "<h2>Definitions</h2>", _formulas(data),
        "</body></html>\n",
    ]
    return "".join(parts)
