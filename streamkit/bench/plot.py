"""PNG charts of a bench run (needs matplotlib: ``pip install 'streamkit[plot]'``).

matplotlib is imported lazily, only when a chart is drawn, and only through
its object API (``Figure`` + the Agg canvas): no pyplot, no global backend
switch, so drawing charts never disturbs a host application's GUI.

Charts:

- ``load.png``: latency percentiles (TTFT, TPOT, E2E from send and from the
  scheduled time) and throughput against concurrency or rate.
- ``histograms.png``: TTFT, TPOT and ICL distributions per point.
- ``timeline.png``: one bar per request of the last point: client queue,
  time to first token, decode.
- ``compare.png`` (``streamkit bench compare --out``): the load chart of
  several runs overlaid.

When the server sent no token counts, TPOT and throughput are drawn from the
chunk-based estimates, labelled "estimated"; a panel with nothing to draw
says so instead of showing an empty legend.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ..errors import ConfigError
from .metrics import NS_PER_MS, derive, icl_gaps_ms

__all__ = ["available", "render_compare", "render_run"]

MISSING = "charts need matplotlib: pip install 'streamkit[plot]'"
TIMELINE_MAX_REQUESTS = 300
_DPI = 110

Series = Tuple[str, Sequence[Mapping[str, Any]]]  # (run name, point summary dicts)


def available() -> bool:
    """True when matplotlib can be imported."""
    return importlib.util.find_spec("matplotlib") is not None


def _figure(width: float, height: float) -> Any:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ConfigError(MISSING) from exc
    fig = Figure(figsize=(width, height), dpi=_DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: str) -> str:
    fig.tight_layout()
    fig.savefig(path)
    return path


def _x_of(summary: Mapping[str, Any]) -> Optional[float]:
    value = summary.get("rate") if summary.get("mode") == "open" else summary.get("concurrency")
    return float(value) if value is not None else None


def _stat(summary: Mapping[str, Any], metric: str, stat: str) -> Optional[float]:
    value = summary.get("metrics", {}).get(metric, {}).get(stat)
    return float(value) if isinstance(value, (int, float)) else None


def _line(ax: Any, xs: List[Optional[float]], ys: List[Optional[float]], **style: Any) -> None:
    pairs = [(x, y) for x, y in zip(xs, ys) if x is not None and y is not None]
    if pairs:
        ax.plot([p[0] for p in pairs], [p[1] for p in pairs], marker="o", **style)


def _legend_or_note(ax: Any, note: str = "no data") -> None:
    """A legend when something labelled was drawn, else ``note`` in the panel
    (an empty legend() call only warns)."""
    handles, _ = ax.get_legend_handles_labels()
    if handles:
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, note, transform=ax.transAxes, ha="center", va="center",
                color="0.4", fontsize=9)


def _estimated(summaries: Sequence[Mapping[str, Any]], metric: str, stat: str
               ) -> Tuple[List[Optional[float]], bool]:
    """A stat of ``metric`` per point, falling back to ``metric``_estimated where the
    server sent no token counts; True when any value is an estimate."""
    values, estimated = [], False
    for s in summaries:
        value = _stat(s, metric, stat)
        if value is None:
            value = _stat(s, f"{metric}_estimated", stat)
            estimated = estimated or value is not None
        values.append(value)
    return values, estimated


def _throughputs(summaries: Sequence[Mapping[str, Any]]) -> Tuple[List[Optional[float]], bool]:
    values, estimated = [], False
    for s in summaries:
        value = s.get("output_tok_per_s")
        if value is None:
            value = s.get("output_tok_per_s_estimated")
            estimated = estimated or value is not None
        values.append(float(value) if isinstance(value, (int, float)) else None)
    return values, estimated


def _load_axes(axes: Any, name: str, summaries: Sequence[Mapping[str, Any]],
               color: Optional[str], prefix: str) -> None:
    xs = [_x_of(s) for s in summaries]
    panels = (("ttft_ms", "TTFT (ms)"), ("tpot_ms", "TPOT (ms/token)"),
              ("e2e_ms", "E2E (ms)"))
    for ax, (metric, title) in zip(axes[:3], panels):
        for stat, dash in (("p50", "-"), ("p90", "--"), ("p99", ":")):
            ys, est = _estimated(summaries, metric, stat)
            _line(ax, xs, ys, linestyle=dash, color=color,
                  label=f"{prefix}{stat}" + (" (estimated from chunks)" if est else ""))
        if metric == "e2e_ms":
            _line(ax, xs, [_stat(s, "sched_e2e_ms", "p99") for s in summaries],
                  linestyle="-.", color=color or "crimson", label=f"{prefix}p99 from scheduled")
        ax.set_title(title)
    ax = axes[3]
    ys, est = _throughputs(summaries)
    _line(ax, xs, ys, color=color, label=f"{prefix}output tok/s"
          + (" (estimated from chunks)" if est else ""))
    ax.set_title("throughput (output tokens/s)")


def _load_figure(series: Sequence[Series]) -> Any:
    fig = _figure(11, 7.5)
    axes = [fig.add_subplot(2, 2, i + 1) for i in range(4)]
    colors = [None] if len(series) == 1 else ["C0", "C1", "C2", "C3", "C4", "C5", "C6"]
    for (name, summaries), color in zip(series, colors * len(series)):
        prefix = f"{name} " if len(series) > 1 else ""
        _load_axes(axes, name, summaries, color, prefix)
    first = series[0][1][0] if series and series[0][1] else {}
    xlabel = "offered rate (requests/s)" if first.get("mode") == "open" else "concurrency"
    from matplotlib.ticker import MaxNLocator

    for ax in axes:
        ax.set_xlabel(xlabel)
        if first.get("mode") != "open":  # no concurrency 2.5
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
        # from 0, with headroom: a flat line (TPOT) must not sit on the frame
        top = ax.get_ylim()[1]
        ax.set_ylim(0, top * 1.1 if top > 0 else 1.0)
        _legend_or_note(ax)
    return fig


def render_compare(series: Sequence[Series], path: str) -> str:
    """Overlay the load charts of several runs into ``path`` (PNG). Raises ConfigError
    without matplotlib."""
    return _save(_load_figure(series), path)


def _histograms(points: Sequence[Any], path: str) -> str:
    fig = _figure(12, 3.8)
    panels = (("ttft_ms", "TTFT (ms)"), ("tpot_ms", "TPOT (ms/token)"),
              ("icl_ms", "ICL: gaps between chunks (ms)"))
    for i, (metric, title) in enumerate(panels):
        ax = fig.add_subplot(1, 3, i + 1)
        for point in points:
            good = [r for r in point.records if r.ok and not r.warmup]
            for label, values in _hist_values(good, metric, point.summary.label):
                ax.hist(values, bins=40, alpha=0.55, label=label)
        ax.set_title(title)
        ax.set_ylabel("count")
        _legend_or_note(ax)
    return _save(fig, path)


def _hist_values(good: Sequence[Any], metric: str, label: str
                 ) -> List[Tuple[str, List[float]]]:
    """(label, values) series of one point's panel; TPOT adds the chunk estimate."""
    if metric == "icl_ms":
        series = [(label, [g for r in good for g in icl_gaps_ms(r)])]
    else:
        derived = [derive(r) for r in good]
        series = [(label, [v for v in (d[metric] for d in derived) if v is not None])]
        if metric == "tpot_ms":
            series.append((f"{label} (estimated from chunks)",
                           [v for v in (d["tpot_ms_estimated"] for d in derived)
                            if v is not None]))
    return [(name, values) for name, values in series if values]


_TIMELINE_PARTS = (("0.7", "waiting in the client (scheduled -> sent)"),
                   ("tab:orange", "to first token"), ("tab:blue", "decode"))


def _timeline(point: Any, path: str) -> str:
    records = sorted((r for r in point.records if not r.warmup and r.sent_ns is not None),
                     key=lambda r: r.scheduled_ns)[:TIMELINE_MAX_REQUESTS]
    fig = _figure(11, max(3.0, min(12.0, 0.05 * len(records) + 2.5)))
    ax = fig.add_subplot(1, 1, 1)
    base = point.base_ns
    failed = False
    for y, r in enumerate(records):
        segments = _segments(r, base)
        for (start, end), (color, _) in zip(segments, _TIMELINE_PARTS):
            if start is not None and end is not None and end >= start:
                ax.barh(y, end - start, left=start, height=0.8, color=color, linewidth=0)
        if not r.ok:
            failed = True
            ax.plot([segments[0][1] or 0.0], [y], marker="x", color="red", linestyle="none")
    _timeline_legend(ax, failed)
    ax.set_xlabel("seconds from the start of the point")
    ax.set_ylabel("request (in schedule order)")
    ax.set_title(f"per-request timeline, {point.summary.label}", loc="left")
    # requests are whole numbers: no 2.5th request on the axis
    from matplotlib.ticker import MaxNLocator

    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(len(records) - 0.5, -0.5)  # first request on top
    ax.set_xlim(left=0)
    return _save(fig, path)


def _timeline_legend(ax: Any, failed: bool) -> None:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles: List[Any] = [Patch(color=color, label=label) for color, label in _TIMELINE_PARTS]
    if failed:
        handles.append(Line2D([], [], marker="x", color="red", linestyle="none",
                              label="failed"))
    # above the axes, right of the title: inside, it would hide some requests' bars
    ax.legend(handles=handles, fontsize=7, loc="lower right", bbox_to_anchor=(1.0, 1.0),
              ncol=len(handles), frameon=False, borderaxespad=0.2)


def _segments(r: Any, base: int) -> List[Tuple[Optional[float], Optional[float]]]:
    def s(ns: Optional[int]) -> Optional[float]:
        return None if ns is None else (ns - base) / NS_PER_MS / 1000.0

    return [(s(r.scheduled_ns), s(r.sent_ns)), (s(r.sent_ns), s(r.first_token_ns)),
            (s(r.first_token_ns), s(r.last_token_ns))]


def render_run(run: Any, out_dir: str) -> List[str]:
    """Draw load.png, histograms.png and timeline.png for a BenchRun into ``out_dir``.

    Returns the paths written. Raises ConfigError without matplotlib.
    """
    summaries: List[Dict[str, Any]] = [p.summary.as_dict() for p in run.points]
    if not summaries:
        return []
    paths = [_save(_load_figure([("run", summaries)]), os.path.join(out_dir, "load.png")),
             _histograms(run.points, os.path.join(out_dir, "histograms.png")),
             _timeline(run.points[-1], os.path.join(out_dir, "timeline.png"))]
    return paths
