"""PNG charts of a bench run (needs matplotlib: ``pip install 'streamkit[plot]'``).

matplotlib is imported lazily, only when a chart is drawn, and only through
its object API (``Figure`` + the Agg canvas): no pyplot, no global backend
switch, so drawing charts never disturbs a host application's GUI.

Charts (every one names the model, the server and the date under its title):

- ``load.png``: TTFT, TPOT and E2E percentiles (p50, p90, p99 each with its own
  colour, marker and dash), output tok/s, req/s with goodput, and concurrency
  reached, against concurrency (log2 axis, a tick at every tested value) or
  offered rate. ``--slo`` thresholds are drawn as horizontal lines.
- ``latency-throughput.png``: TTFT and TPOT percentiles against output tok/s,
  each point labelled with its load: where the knee is.
- ``ecdf.png``, ``timeline-*.png``: see :mod:`.plot_detail`; :mod:`.charts` draws them all.
- ``compare.png`` (``streamkit bench compare --out``): the load charts of
  several runs overlaid, one colour per run.

When the server sent no token counts, TPOT and throughput are drawn from the
chunk-based estimates, labelled "estimated"; a panel with nothing to draw
says so instead of showing an empty legend. Repeated points (``--repeat``)
are drawn at their mean with the 95% confidence interval as error bars.
"""

from __future__ import annotations

import importlib.util
import io
import math
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ..errors import ConfigError
from .stats import mean_ci

__all__ = ["Chart", "available", "render_compare", "subtitle"]

MISSING = "charts need matplotlib: pip install 'streamkit[plot]'"
DPI = 110
# One style per percentile, so p90 is never hidden under p99 (colour, marker and dash differ).
PERCENTILE_STYLES = (("p50", "tab:blue", "o", "-"), ("p90", "tab:orange", "s", "--"),
                     ("p99", "tab:red", "^", ":"))
# p90 hollow and larger: where p90 and p99 coincide both markers stay visible.
_MARKER_STYLE: Dict[str, Dict[str, Any]] = {
    "p50": {"markersize": 5},
    "p90": {"markersize": 8, "markerfacecolor": "none", "markeredgewidth": 1.5},
    "p99": {"markersize": 5},
}
RUN_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown",
              "tab:pink", "tab:gray")
SLO_COLOR = "tab:green"

Series = Tuple[str, Sequence[Mapping[str, Any]]]  # (run name, point summary dicts)


@dataclass(frozen=True)
class Chart:
    """One rendered chart: its file name, a caption, and the PNG bytes."""

    name: str
    caption: str
    png: bytes


def available() -> bool:
    """True when matplotlib can be imported."""
    return importlib.util.find_spec("matplotlib") is not None


def figure(width: float, height: float) -> Any:
    """A matplotlib Figure on the Agg canvas. Raises ConfigError without matplotlib."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ConfigError(MISSING) from exc
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def png_bytes(fig: Any, title: str, sub: str) -> bytes:
    """Title and subtitle on top, tight layout below them, PNG bytes out."""
    fig.suptitle(f"{title}\n{sub}", fontsize=10, x=0.01, ha="left", y=0.995, va="top")
    fig.tight_layout()  # makes room for the suptitle itself
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def subtitle(config: Mapping[str, Any], env: Mapping[str, Any], started_at: str) -> str:
    """``model · server version (dialect) · date · load`` for a chart's second title line."""
    server = str(env.get("host") or config.get("host") or "?")
    version = env.get("server_version")
    if version:
        server += f" v{version}"
    budget = config.get("num_predict")
    prompt = _prompt_size(config)
    parts = [f"model {config.get('model')}", f"{server} ({config.get('dialect', 'ollama')})",
             started_at[:19].replace("T", " "),
             f"num_predict {budget if budget is not None else 'server default'}", prompt]
    return " · ".join(p for p in parts if p)


def _prompt_size(config: Mapping[str, Any]) -> str:
    if config.get("prompt_file"):
        return f"prompts {os.path.basename(str(config['prompt_file']))}"
    if config.get("replay"):
        return "replayed schedule"
    if config.get("input_tokens"):
        return f"~{config['input_tokens']} input tokens"
    words = config.get("prompt_words")
    return f"{words}-word prompts" if words else ""


def x_of(summary: Mapping[str, Any]) -> Optional[float]:
    value = summary.get("rate") if summary.get("mode") == "open" else summary.get("concurrency")
    return float(value) if value is not None else None


def stat(summary: Mapping[str, Any], metric: str, name: str) -> Optional[float]:
    value = summary.get("metrics", {}).get(metric, {}).get(name)
    return float(value) if isinstance(value, (int, float)) else None


def _field(summary: Mapping[str, Any], key: str) -> Optional[float]:
    value = summary.get(key)
    return float(value) if isinstance(value, (int, float)) else None


def _estimated_stat(summary: Mapping[str, Any], metric: str, name: str
                    ) -> Tuple[Optional[float], bool]:
    value = stat(summary, metric, name)
    if value is None:
        estimate = stat(summary, f"{metric}_estimated", name)
        return estimate, estimate is not None
    return value, False


def _throughput(summary: Mapping[str, Any]) -> Tuple[Optional[float], bool]:
    value = _field(summary, "output_tok_per_s")
    if value is None:
        estimate = _field(summary, "output_tok_per_s_estimated")
        return estimate, estimate is not None
    return value, False


Getter = Any  # Callable[[Mapping], Tuple[Optional[float], bool]]


def grouped(summaries: Sequence[Mapping[str, Any]], get: Getter
            ) -> Tuple[List[float], List[float], List[float], bool]:
    """(xs, means, CI half-widths, estimated) of a value per load point.

    Repeats of one point (same label) are pooled into their mean and 95% CI;
    a point measured once has a zero-width interval.
    """
    by_label: Dict[str, List[Tuple[float, float]]] = {}
    estimated = False
    for s in summaries:
        x = x_of(s)
        value, est = get(s)
        estimated = estimated or est
        if x is not None and value is not None:
            by_label.setdefault(str(s.get("label")), []).append((x, value))
    rows = sorted((pairs[0][0], mean_ci([v for _, v in pairs])) for pairs in by_label.values())
    return ([x for x, _ in rows], [ci.mean for _, ci in rows],
            [ci.half_width or 0.0 for _, ci in rows], estimated)


def draw(ax: Any, xs: Sequence[float], ys: Sequence[float], errs: Sequence[float],
         **style: Any) -> None:
    if not xs:
        return
    if any(errs):
        ax.errorbar(xs, ys, yerr=errs, capsize=3, **style)
    else:
        ax.plot(xs, ys, **style)


def legend_or_note(ax: Any, note: str = "no data", **kw: Any) -> None:
    """A legend when something labelled was drawn, else ``note`` in the panel
    (an empty legend() call only warns)."""
    handles, _ = ax.get_legend_handles_labels()
    if handles:
        ax.legend(fontsize=7, **kw)
    else:
        ax.text(0.5, 0.5, note, transform=ax.transAxes, ha="center", va="center",
                color="0.4", fontsize=9)


def load_axis(ax: Any, xs: Sequence[float], mode: str) -> None:
    """Concurrency: log2 axis with an integer tick at every tested value. Rate: log axis
    with a tick at every tested rate when they span 4x or more, else linear."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    tested = sorted(set(xs))
    if not tested:
        return
    spread = tested[-1] / tested[0] if tested[0] > 0 else 1.0
    if mode == "open":
        ax.set_xlabel("offered rate (requests/s)")
        if spread >= 4:
            ax.set_xscale("log", base=2)
    else:
        ax.set_xlabel("concurrency (streams)")
        ax.set_xscale("log", base=2)
    longest = max(len(tick_label(v)) for v in tested)
    ax.xaxis.set_major_locator(FixedLocator(
        spaced_ticks(tested, ax.get_xscale() == "log", gap=max(0.08, 0.03 * longest))))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: tick_label(v)))
    ax.xaxis.set_minor_locator(NullLocator())
    if len(tested) == 1:
        ax.set_xlim(tested[0] / 1.5, tested[0] * 1.5)
    else:
        pad = 1.15 if ax.get_xscale() == "log" else 1.0
        margin = 0.0 if pad > 1 else 0.05 * (tested[-1] - tested[0])
        ax.set_xlim(tested[0] / pad - margin, tested[-1] * pad + margin)


def tick_label(value: float) -> str:
    """A tested load as a tick label: integers as such, rates to 3 significant digits."""
    return f"{value:.3g}"


def spaced_ticks(values: Sequence[float], log: bool, gap: float = 0.08) -> List[float]:
    """The tested values to label, at least ``gap`` of the axis apart so labels never
    overlap (search probes bunch up near the limit); the first and last always stay."""
    pos = [math.log(v) if log else v for v in values]
    span = (pos[-1] - pos[0]) or 1.0
    kept = [0]
    for i in range(1, len(values)):
        if (pos[i] - pos[kept[-1]]) / span >= gap:
            kept.append(i)
    if kept[-1] != len(values) - 1:
        if len(kept) > 1 and (pos[-1] - pos[kept[-1]]) / span < gap:
            kept.pop()
        kept.append(len(values) - 1)
    return [values[i] for i in kept]


def from_zero(ax: Any) -> None:
    """y from 0 with headroom: a flat line (TPOT) must not sit on the frame."""
    top = ax.get_ylim()[1]
    ax.set_ylim(0, top * 1.12 if top > 0 else 1.0)


def slo_line(ax: Any, slo: Mapping[str, Any], key: str, *, vertical: bool = False) -> None:
    limit = slo.get(key)
    if not isinstance(limit, (int, float)):
        return
    draw_line = ax.axvline if vertical else ax.axhline
    draw_line(limit, color=SLO_COLOR, linewidth=1.6, linestyle=(0, (6, 2)),
              label=f"SLO {key} {limit:g} ms")


_LATENCY_PANELS = (("ttft_ms", "ttft", "TTFT (ms)"), ("tpot_ms", "tpot", "TPOT (ms/token)"),
                   ("e2e_ms", "e2e", "E2E from send (ms)"))


def _latency_panel(ax: Any, summaries: Sequence[Mapping[str, Any]], metric: str,
                   color: Optional[str], prefix: str) -> None:
    for name, pcolor, marker, dash in PERCENTILE_STYLES:
        xs, ys, errs, est = grouped(summaries, lambda s, n=name: _estimated_stat(s, metric, n))
        draw(ax, xs, ys, errs, color=color or pcolor, marker=marker, linestyle=dash,
             label=f"{prefix}{name}" + (" (estimated from chunks)" if est else ""),
             **_MARKER_STYLE[name])
    if metric == "e2e_ms":
        xs, ys, errs, _ = grouped(summaries, lambda s: (stat(s, "sched_e2e_ms", "p99"), False))
        draw(ax, xs, ys, errs, color=color or "tab:purple", marker="v", linestyle="-.",
             markersize=5, label=f"{prefix}p99 from the scheduled time")


def _rate_panels(axes: Sequence[Any], summaries: Sequence[Mapping[str, Any]],
                 color: Optional[str], prefix: str) -> None:
    xs, ys, errs, est = grouped(summaries, _throughput)
    draw(axes[0], xs, ys, errs, color=color or "tab:blue", marker="o",
         label=f"{prefix}output tok/s" + (" (estimated from chunks)" if est else ""))
    xs, ys, errs, _ = grouped(summaries, lambda s: (_field(s, "req_per_s"), False))
    draw(axes[1], xs, ys, errs, color=color or "tab:blue", marker="o", label=f"{prefix}req/s")
    xs, ys, errs, _ = grouped(summaries, lambda s: (_field(s, "goodput_req_per_s"), False))
    draw(axes[1], xs, ys, errs, color=color or SLO_COLOR, marker="D", linestyle="--",
         label=f"{prefix}goodput req/s (meet the SLO)")
    xs, ys, errs, _ = grouped(summaries, lambda s: (_field(s, "concurrency_mean"), False))
    draw(axes[2], xs, ys, errs, color=color or "tab:blue", marker="o",
         label=f"{prefix}mean in flight")
    xs, ys, errs, _ = grouped(summaries, lambda s: (_field(s, "concurrency_peak"), False))
    draw(axes[2], xs, ys, errs, color=color or "tab:orange", marker="s", linestyle="--",
         label=f"{prefix}peak in flight")


def load_figure(series: Sequence[Series], slo: Mapping[str, Any]) -> Any:
    """The 2x3 load chart of one run or several overlaid (one colour per run)."""
    from matplotlib.ticker import MaxNLocator

    fig = figure(13, 7.6)
    axes = [fig.add_subplot(2, 3, i + 1) for i in range(6)]
    many = len(series) > 1
    for i, (name, summaries) in enumerate(series):
        color = RUN_COLORS[i % len(RUN_COLORS)] if many else None
        prefix = f"{name} " if many else ""
        for ax, (metric, _, _) in zip(axes[:3], _LATENCY_PANELS):
            _latency_panel(ax, summaries, metric, color, prefix)
        _rate_panels(axes[3:], summaries, color, prefix)
    first = series[0][1][0] if series and series[0][1] else {}
    mode = str(first.get("mode", "closed"))
    xs = [x for _, summaries in series for x in (x_of(s) for s in summaries) if x is not None]
    titles = [t for _, _, t in _LATENCY_PANELS] + [
        "throughput (output tokens/s)", "requests/s and goodput", "concurrency reached"]
    for ax, title in zip(axes, titles):
        ax.set_title(title, fontsize=10)
        load_axis(ax, xs, mode)
        ax.grid(True, alpha=0.3)
    for ax, (_, key, _) in zip(axes[:3], _LATENCY_PANELS):
        slo_line(ax, slo, key)
    axes[5].yaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in axes:
        from_zero(ax)
        legend_or_note(ax, loc="best")
    return fig


def latency_throughput_figure(summaries: Sequence[Mapping[str, Any]],
                              slo: Mapping[str, Any]) -> Any:
    """TTFT and TPOT percentiles against output tok/s, each point labelled with its load."""
    fig = figure(12, 4.6)
    open_loop = bool(summaries) and summaries[0].get("mode") == "open"
    for i, (metric, key, title) in enumerate(_LATENCY_PANELS[:2]):
        ax = fig.add_subplot(1, 2, i + 1)
        for name, color, marker, dash in PERCENTILE_STYLES:
            pairs = _throughput_pairs(summaries, metric, name)
            if pairs:
                ax.plot([p[0] for p in pairs], [p[1] for p in pairs], color=color,
                        marker=marker, linestyle=dash, label=name, **_MARKER_STYLE[name])
            # loads labelled once, on TTFT: TPOT is flat past the knee, labels would pile up
            if name == "p50" and metric == "ttft_ms":
                for tput, value, x in pairs:
                    text = f"{x:g}/s" if open_loop else f"c={x:g}"
                    ax.annotate(text, (tput, value), textcoords="offset points",
                                xytext=(4, -11), fontsize=7, color="0.25")
        slo_line(ax, slo, key)
        ax.set_xlabel("output tokens/s (all streams)")
        ax.set_ylabel(title)
        ax.set_title(f"{title.split(' ')[0]} against throughput", fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.set_xlim(left=0)
        from_zero(ax)
        legend_or_note(ax, loc="upper left")
    return fig


def _throughput_pairs(summaries: Sequence[Mapping[str, Any]], metric: str, name: str
                      ) -> List[Tuple[float, float, float]]:
    out = []
    for s in summaries:
        tput, _ = _throughput(s)
        value, _ = _estimated_stat(s, metric, name)
        x = x_of(s)
        if tput is not None and value is not None and x is not None:
            out.append((tput, value, x))
    return sorted(out, key=lambda p: p[2])


def render_compare(series: Sequence[Series], path: str, sub: str = "",
                   slo: Optional[Mapping[str, Any]] = None) -> str:
    """Overlay the load charts of several runs into ``path`` (PNG).

    Raises ConfigError without matplotlib, or when the runs mix closed-loop
    concurrency and open-loop rates (they have no common x axis).
    """
    modes = {s.get("mode") for _, summaries in series for s in summaries}
    if len(modes) > 1:
        raise ConfigError("cannot draw closed-loop (concurrency) and open-loop (rate) runs "
                          "on one axis; compare them in two charts")
    data = png_bytes(load_figure(series, slo or {}), "bench compare: "
                     + ", ".join(name for name, _ in series), sub)
    with open(path, "wb") as fh:
        fh.write(data)
    return path
