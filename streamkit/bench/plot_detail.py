"""Per-request charts: latency ECDFs, one timeline per point, and the SLO search.

- ``ecdf.png``: the empirical CDF of TTFT, TPOT and ICL, one step line per
  point (a sequential palette, so the order of the points reads at a
  glance); ``--slo`` thresholds as vertical lines. Every sample is drawn: no
  binning, no fractional counts.
- ``timeline-<point>.png``: one bar per request of that point: client queue,
  time to first token, decode.
- ``search.png``: each probe of ``--search`` with its goodput, the target
  and the rate found.

Helpers (figure, title, legend) come from :mod:`.plot`.
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from .metrics import NS_PER_MS, derive, icl_gaps_ms
from .plot import SLO_COLOR, Chart, figure, legend_or_note, png_bytes, slo_line

__all__ = ["ecdf_chart", "search_chart", "timeline_charts"]

TIMELINE_MAX_REQUESTS = 300
_ECDF_PANELS = (("ttft_ms", "ttft", "TTFT (ms)"), ("tpot_ms", "tpot", "TPOT (ms/token)"),
                ("icl_ms", None, "ICL: gaps between chunks (ms)"))


def _point_values(point: Any, metric: str) -> Tuple[List[float], bool]:
    """A point's measured values of ``metric``; TPOT falls back to the chunk estimate
    (True when it did)."""
    good = [r for r in point.records if r.ok and not r.warmup]
    if metric == "icl_ms":
        return [g for r in good for g in icl_gaps_ms(r)], False
    derived = [derive(r) for r in good]
    values = [v for v in (d[metric] for d in derived) if v is not None]
    if values or metric != "tpot_ms":
        return values, False
    return [v for v in (d["tpot_ms_estimated"] for d in derived) if v is not None], True


def _palette(n: int) -> List[Any]:
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    return [cmap(0.85 * i / max(1, n - 1)) for i in range(n)]


def ecdf_chart(points: Sequence[Any], slo: Mapping[str, Any], sub: str) -> Chart:
    """The ECDF figure of a run's points."""
    fig = figure(13, 4.4)
    colors = _palette(len(points))
    for i, (metric, key, title) in enumerate(_ECDF_PANELS):
        ax = fig.add_subplot(1, 3, i + 1)
        for point, color in zip(points, colors):
            values, estimated = _point_values(point, metric)
            if not values:
                continue
            data = sorted(values)
            n = len(data)
            label = point.summary.label + (" (estimated)" if estimated else "")
            ax.step(data, [(k + 1) / n for k in range(n)], where="post", color=color,
                    linewidth=1.6, label=f"{label} (n={n})")
        if key is not None:
            slo_line(ax, slo, key, vertical=True)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("ms")
        ax.set_ylabel("share of samples <= x")
        ax.set_ylim(0, 1.02)
        _ecdf_xlim(ax, slo.get(key) if key else None)
        ax.grid(True, alpha=0.3)
        legend_or_note(ax, loc="lower right")
    return Chart("ecdf.png", "Latency distributions (empirical CDF, every sample)",
                 png_bytes(fig, "streamkit bench: latency distributions", sub))


def _ecdf_xlim(ax: Any, limit: Any) -> None:
    """x from just below the smallest sample to past the largest (and the SLO): a
    narrow distribution (TPOT) stays readable instead of hugging one edge."""
    lo, hi = ax.dataLim.x0, ax.dataLim.x1
    if isinstance(limit, (int, float)):
        lo, hi = min(lo, limit), max(hi, limit)
    if not hi > lo:
        return
    pad = 0.05 * (hi - lo)
    ax.set_xlim(max(0.0, lo - pad), hi + pad)


_TIMELINE_PARTS = (("0.7", "waiting in the client (scheduled -> sent)"),
                   ("tab:orange", "to first token"), ("tab:blue", "decode"))


def _slug(label: str) -> str:
    return re.sub(r"[^a-z0-9.]+", "-", label.lower()).strip("-") or "point"


def timeline_charts(points: Sequence[Any], sub: str) -> List[Chart]:
    """One timeline chart per point (names made unique when labels repeat)."""
    out: List[Chart] = []
    seen: Dict[str, int] = {}
    for point in points:
        slug = _slug(point.summary.label)
        seen[slug] = seen.get(slug, 0) + 1
        if seen[slug] > 1:
            slug += f"-{seen[slug]}"
        out.append(Chart(f"timeline-{slug}.png",
                         f"Per-request timeline, {point.summary.label}",
                         _timeline_png(point, sub)))
    return out


def _timeline_png(point: Any, sub: str) -> bytes:
    from matplotlib.ticker import MaxNLocator

    records = sorted((r for r in point.records if not r.warmup and r.sent_ns is not None),
                     key=lambda r: r.scheduled_ns)[:TIMELINE_MAX_REQUESTS]
    fig = figure(11, max(3.4, min(12.0, 0.05 * len(records) + 2.8)))
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
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # no 2.5th request
    ax.set_ylim(max(len(records), 1) - 0.5, -0.5)  # first request on top
    ax.set_xlim(left=0)
    ax.grid(True, axis="x", alpha=0.3)
    return png_bytes(fig, f"streamkit bench: per-request timeline, {point.summary.label}", sub)


def _timeline_legend(ax: Any, failed: bool) -> None:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles: List[Any] = [Patch(color=color, label=label) for color, label in _TIMELINE_PARTS]
    if failed:
        handles.append(Line2D([], [], marker="x", color="red", linestyle="none",
                              label="failed"))
    # above the axes: inside, it would hide some requests' bars
    ax.legend(handles=handles, fontsize=7, loc="lower left", bbox_to_anchor=(0.0, 1.0),
              ncol=len(handles), frameon=False, borderaxespad=0.2)


def _segments(r: Any, base: int) -> List[Tuple[Optional[float], Optional[float]]]:
    def s(ns: Optional[int]) -> Optional[float]:
        return None if ns is None else (ns - base) / NS_PER_MS / 1000.0

    return [(s(r.scheduled_ns), s(r.sent_ns)), (s(r.sent_ns), s(r.first_token_ns)),
            (s(r.first_token_ns), s(r.last_token_ns))]


def search_chart(search: Mapping[str, Any], sub: str) -> Chart:
    """Goodput of every probe against its rate, the target line and the rate found."""
    fig = figure(9, 4.6)
    ax = fig.add_subplot(1, 1, 1)
    probes = list(search.get("probes", []))
    for passed, color, marker, label in ((True, SLO_COLOR, "o", "probe met the target"),
                                         (False, "tab:red", "x", "probe missed it")):
        chosen = [p for p in probes if bool(p.get("passed")) == passed]
        if chosen:
            ax.scatter([p["rate"] for p in chosen], [100 * p["goodput_frac"] for p in chosen],
                       color=color, marker=marker, s=40, zorder=3, label=label)
    by_rate = sorted(range(len(probes)), key=lambda i: probes[i]["rate"])
    for rank, i in enumerate(by_rate):
        # neighbours on the rate axis alternate above and below: bisection bunches them
        ax.annotate(f"#{i + 1}", (probes[i]["rate"], 100 * probes[i]["goodput_frac"]),
                    textcoords="offset points", xytext=(4, 5 if rank % 2 else -12),
                    fontsize=7, color="0.3")
    target = 100 * float(search.get("goodput_target", 0.95))
    ax.axhline(target, color="0.3", linestyle="--", linewidth=1,
               label=f"target {target:g}% meet the SLO")
    best = search.get("max_rate")
    if isinstance(best, (int, float)):
        ax.axvline(best, color=SLO_COLOR, linewidth=1.6,
                   label=f"max rate found {best:.2f} req/s")
    ax.set_xlabel("offered rate (requests/s)")
    ax.set_ylabel("requests meeting the SLO (%)")
    ax.set_ylim(0, 105)
    ax.set_xlim(left=0)
    ax.grid(True, alpha=0.3)
    legend_or_note(ax, loc="lower left")
    slo = ", ".join(f"{k} <= {v:g} ms" for k, v in dict(search.get("slo") or {}).items())
    return Chart("search.png", f"SLO search ({slo})",
                 png_bytes(fig, f"streamkit bench: highest rate with goodput >= {target:g}%"
                           + (f" ({slo})" if slo else ""), sub))
