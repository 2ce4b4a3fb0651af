"""Every chart of a bench run: the load charts (:mod:`.plot`) and the details.

The ECDFs, timelines and search chart come from :mod:`.plot_detail`.

Imports matplotlib (through those modules); callers import this lazily.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Sequence

from . import plot_detail
from .plot import Chart, latency_throughput_figure, load_figure, png_bytes, subtitle

__all__ = ["render_run", "run_charts"]


def run_charts(run: Any) -> List[Chart]:
    """Every chart of a BenchRun, rendered to PNG bytes (the HTML report embeds the same).

    Raises ConfigError without matplotlib.
    """
    summaries: List[Dict[str, Any]] = [p.summary.as_dict() for p in run.points]
    if not summaries:
        return []
    config = run.config.as_dict()
    sub = subtitle(config, run.environment, run.started_at)
    slo = config.get("slo") or {}
    charts = [Chart("load.png", "Latency percentiles, throughput and goodput against the load",
                    png_bytes(load_figure([("run", summaries)], slo), "streamkit bench", sub)),
              Chart("latency-throughput.png", "Latency against throughput (the knee)",
                    png_bytes(latency_throughput_figure(summaries, slo),
                              "streamkit bench: latency against throughput", sub))]
    search = getattr(run, "search", None)
    if search is not None:
        charts.append(plot_detail.search_chart(search.as_dict(), sub))
    charts.append(plot_detail.ecdf_chart(run.points, slo, sub))
    charts.extend(plot_detail.timeline_charts(run.points, sub))
    return charts


def render_run(run: Any, out_dir: str, charts: Optional[Sequence[Chart]] = None) -> List[str]:
    """Write the charts of a BenchRun as PNG files into ``out_dir``.

    Returns the paths written. Raises ConfigError without matplotlib.
    """
    paths = []
    for chart in charts if charts is not None else run_charts(run):
        path = os.path.join(out_dir, chart.name)
        with open(path, "wb") as fh:
            fh.write(chart.png)
        paths.append(path)
    return paths
