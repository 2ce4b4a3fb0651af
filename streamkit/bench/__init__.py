"""``streamkit bench``: throughput and latency numbers that say how far to trust them.

Python API::

    from streamkit.bench import BenchConfig, run_bench, write_outputs

    run = run_bench(BenchConfig(model="demo", host="builtin", concurrency=(1, 4)))
    for point in run.points:
        print(point.summary.metrics["ttft_ms"].p50)
    write_outputs(run, "bench-out")          # run.json, requests.jsonl, summary.csv, PNGs

Modules: :mod:`.load` (schedules, closed/open loop, process shards),
:mod:`.metrics` (records → per-request metrics, the formulas),
:mod:`.summary` (a point's statistics), :mod:`.report`
(console, files, compare), :mod:`.plot` (charts, optional matplotlib),
:mod:`.calibrate` (the client's own floor), :mod:`.target` (prompts and the
send function), :mod:`.runner` (the pipeline), :mod:`.arrival` (schedules),
:mod:`.workload` (prompt files, token sizing, replay), :mod:`.search` (the
SLO search), :mod:`.stats` (confidence intervals), :mod:`.health`
(warnings), :mod:`.html` (report.html), :mod:`.compare` (like-for-like checks).
"""

from __future__ import annotations

from .arrival import arrival_offsets
from .calibrate import Calibration, calibrate
from .compare import format_compare
from .load import LoadPlan
from .metrics import FORMULAS, RequestRecord, Slo
from .report import SUMMARY_COLUMNS, format_point, load_run, write_outputs
from .runner import BUILTIN, BenchConfig, BenchRun, PointResult, run_bench
from .search import Probe, SearchResult
from .sharding import ShardDecision
from .stats import Interval, mean_ci
from .summary import Distribution, PointSummary, summarize
from .target import PromptSpec
from .workload import PromptFit, read_prompt_file, read_replay

__all__ = [
    "BUILTIN",
    "FORMULAS",
    "SUMMARY_COLUMNS",
    "BenchConfig",
    "BenchRun",
    "Calibration",
    "Distribution",
    "Interval",
    "LoadPlan",
    "PointResult",
    "PointSummary",
    "Probe",
    "PromptFit",
    "PromptSpec",
    "RequestRecord",
    "SearchResult",
    "ShardDecision",
    "Slo",
    "arrival_offsets",
    "calibrate",
    "format_compare",
    "format_point",
    "load_run",
    "mean_ci",
    "read_prompt_file",
    "read_replay",
    "run_bench",
    "summarize",
    "write_outputs",
]
