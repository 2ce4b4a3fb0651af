"""``bench compare``: which runs may be compared, and the side-by-side table.

Runs are comparable with the same load shape and the same token budgets.

A closed-loop run (concurrency) and an open-loop run (rate) have no common x
axis; runs with different ``num_predict`` or prompt sizes measure different
work, so their TTFT, E2E and tok/s differ for reasons that are not the
server's. :func:`mismatches` names every such difference; ``bench compare``
refuses the runs unless told to go on, and then labels the table.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from .report import ESTIMATE_NOTE, NO_COUNTS, fmt

__all__ = ["COMPARED_SETTINGS", "compare_rows", "format_compare", "mismatches"]

# (run.json config key, what it means) that must match for a like-for-like comparison.
COMPARED_SETTINGS: Tuple[Tuple[str, str], ...] = (
    ("mode", "load shape (closed-loop concurrency vs open-loop rate)"),
    ("arrival", "arrival process"),
    ("num_predict", "output token budget (num_predict)"),
    ("prompt_words", "generated prompt size (words)"),
    ("input_tokens", "prompt size (input tokens)"),
    ("prompt_file", "prompt file"),
    ("think", "thinking"),
)


def _setting(config: Mapping[str, Any], key: str) -> Any:
    value = config.get(key)
    if key == "arrival" and config.get("mode") != "open":
        return None  # closed loops have no arrival process
    if key == "arrival" and value == "gamma":
        return f"gamma(shape={config.get('arrival_shape')})"
    return value


def mismatches(runs: Sequence[Tuple[str, Mapping[str, Any]]]) -> List[str]:
    """One sentence per setting that differs between the runs (run.json contents);
    empty when they measure the same kind of load."""
    out: List[str] = []
    for key, meaning in COMPARED_SETTINGS:
        values: Dict[str, Any] = {name: _setting(data.get("config", {}), key)
                                  for name, data in runs}
        if len({repr(v) for v in values.values()}) > 1:
            shown = ", ".join(f"{name}: {value}" for name, value in values.items())
            out.append(f"{meaning} differs ({shown})")
    return out


_COMPARE_COLUMNS = (
    ("req/s", ("req_per_s",)), ("tok/s", ("output_tok_per_s",)),
    ("TTFT p50", ("metrics", "ttft_ms", "p50")), ("TTFT p99", ("metrics", "ttft_ms", "p99")),
    ("TPOT p50", ("metrics", "tpot_ms", "p50")), ("TPOT p99", ("metrics", "tpot_ms", "p99")),
    ("E2E p50", ("metrics", "e2e_ms", "p50")),
    ("sched E2E p99", ("metrics", "sched_e2e_ms", "p99")),
    ("eval tok/s", ("metrics", "eval_rate", "mean")), ("failed", ("failed",)),
)


# Where a run has no server token counts, these columns show the chunk estimate.
_ESTIMATES = {"tok/s": ("output_tok_per_s_estimated",),
              "TPOT p50": ("metrics", "tpot_ms_estimated", "p50"),
              "TPOT p99": ("metrics", "tpot_ms_estimated", "p99")}


def _dig(data: Any, keys: Sequence[str]) -> Optional[float]:
    for key in keys:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data if isinstance(data, (int, float)) else None


def compare_rows(runs: Sequence[Tuple[str, Mapping[str, Any]]]) -> List[Dict[str, Any]]:
    """One row per (point, run), points in first-seen order, runs side by side."""
    by_point: Dict[str, List[Dict[str, Any]]] = {}
    for name, data in runs:
        for p in data.get("points", []):
            s = p.get("summary", {})
            row: Dict[str, Any] = {"point": s.get("label"), "run": name,
                                   "model": data.get("config", {}).get("model")}
            row.update({col: _dig(s, keys) for col, keys in _COMPARE_COLUMNS})
            row["estimated"] = sorted(col for col, keys in _ESTIMATES.items()
                                      if row[col] is None and _dig(s, keys) is not None)
            row.update({col: _dig(s, _ESTIMATES[col]) for col in row["estimated"]})
            by_point.setdefault(str(s.get("label")), []).append(row)
    return [row for rows in by_point.values() for row in rows]


def format_compare(runs: Sequence[Tuple[str, Mapping[str, Any]]]) -> str:
    """Runs side by side, one line per (point, run); latencies in ms.

    For the same point in several runs, later runs show their TTFT/TPOT p50
    and tok/s change against the first run. A value marked ``~`` is an
    estimate from text chunks (that run's server sent no token counts).
    """
    rows = compare_rows(runs)
    width = max([len(str(r["run"])) for r in rows] + [3])
    head = f"{'point':<18}{'run':<{width + 2}}" + "".join(f"{c:>14}" for c, _ in _COMPARE_COLUMNS)
    lines = [head]
    first: Dict[str, Dict[str, Any]] = {}
    for row in rows:
        base = first.setdefault(str(row["point"]), row)
        cells = "".join(f"{_cell(row, c):>14}" for c, _ in _COMPARE_COLUMNS)
        lines.append(f"{row['point']!s:<18}{row['run']!s:<{width + 2}}{cells}")
        if base is not row:
            deltas = [_delta(col, row, base) for col in ("tok/s", "TTFT p50", "TPOT p50")]
            lines.append(f"{'':<18}{'':<{width + 2}}  vs {base['run']}: " + ", ".join(deltas))
    if any(row["estimated"] for row in rows):
        lines.append(f"~ = {ESTIMATE_NOTE} ({NO_COUNTS})")
    return "\n".join(lines)


def _cell(row: Mapping[str, Any], col: str) -> str:
    text = fmt(row[col], 2)
    return "~" + text if col in row["estimated"] else text


def _delta(col: str, row: Mapping[str, Any], base: Mapping[str, Any]) -> str:
    a, b = base.get(col), row.get(col)
    if not a or b is None or (col in base["estimated"]) != (col in row["estimated"]):
        return f"{col} -"  # an estimate is not compared with a server count
    return f"{col} {100.0 * (b - a) / a:+.1f}%"

