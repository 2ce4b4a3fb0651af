"""Confidence intervals over repeated runs (pure; no scipy).

A point run K times (``--repeat K``) gives K values of each summary figure.
They are reported as mean ± the half-width of a two-sided 95% confidence
interval from Student's t distribution with K - 1 degrees of freedom, with
the coefficient of variation beside it (how much the runs disagree).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

__all__ = ["CI_FIGURES", "Interval", "format_intervals", "mean_ci", "repeat_intervals",
           "t_critical"]

# Two-sided 95% critical values of Student's t, by degrees of freedom (1..30).
_T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
        2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
        2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)
# Beyond 30: (df, value) anchors, interpolated in 1/df; 1.960 is the normal limit.
_T95_TAIL = ((30, 2.042), (40, 2.021), (60, 2.000), (120, 1.980))
_Z95 = 1.960


def t_critical(df: int) -> float:
    """The two-sided 95% critical value of Student's t with ``df`` >= 1 degrees of freedom.

    Exact to the third decimal for df <= 30 and at 40, 60, 120; interpolated
    in 1/df between those and towards 1.960. Raises ValueError for df < 1.
    """
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df <= 30:
        return _T95[df - 1]
    anchors = (*_T95_TAIL, (math.inf, _Z95))
    for (d0, t0), (d1, t1) in zip(anchors, anchors[1:]):
        if df <= d1:
            w = (1 / d0 - 1 / df) / (1 / d0 - (0.0 if d1 == math.inf else 1 / d1))
            return t0 + (t1 - t0) * w
    return _Z95


@dataclass(frozen=True)
class Interval:
    """Mean of ``n`` values with a 95% confidence interval (None when n < 2)."""

    n: int
    mean: float
    half_width: Optional[float]
    low: Optional[float]
    high: Optional[float]
    cv: Optional[float]

    def as_dict(self) -> Dict[str, Any]:
        return asdict(self)

    def text(self, digits: int = 1) -> str:
        """``12.3 ± 0.4 (n=3, CV 1.2%)``, or just the mean for one value."""
        if self.half_width is None:
            return f"{self.mean:.{digits}f}"
        cv = "" if self.cv is None else f", CV {self.cv:.1%}"
        return f"{self.mean:.{digits}f} ± {self.half_width:.{digits}f} (n={self.n}{cv})"


def mean_ci(values: Sequence[float]) -> Interval:
    """Mean and 95% t-interval of ``values`` (sample standard deviation, n - 1).

    Raises ValueError on no values.
    """
    n = len(values)
    if n == 0:
        raise ValueError("mean of no values")
    mean = math.fsum(values) / n
    if n < 2:
        return Interval(n=n, mean=mean, half_width=None, low=None, high=None, cv=None)
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_critical(n - 1) * sd / math.sqrt(n)
    cv = sd / abs(mean) if mean else None
    return Interval(n=n, mean=mean, half_width=half, low=mean - half, high=mean + half, cv=cv)


# Summary figures given with a confidence interval for a repeated point: key -> (label, digits).
CI_FIGURES: Dict[str, Tuple[str, int]] = {
    "req_per_s": ("req/s", 2), "output_tok_per_s": ("output tok/s", 1),
    "ttft_ms_p50": ("TTFT p50 ms", 1), "ttft_ms_p99": ("TTFT p99 ms", 1),
    "tpot_ms_p50": ("TPOT p50 ms", 2), "goodput_frac": ("goodput share", 3),
}


def _figure(summary: Mapping[str, Any], key: str) -> Optional[float]:
    if key.endswith(("_p50", "_p99")):
        metric, stat = key.rsplit("_", 1)
        value = summary.get("metrics", {}).get(metric, {}).get(stat)
    else:
        value = summary.get(key)
    return float(value) if isinstance(value, (int, float)) else None


def repeat_intervals(summaries: Sequence[Mapping[str, Any]]) -> List[Dict[str, Any]]:
    """For every point measured more than once (same label): ``{"label", "n",
    "intervals": {figure: Interval.as_dict()}}`` over the runs, in first-seen order."""
    by_label: Dict[str, List[Mapping[str, Any]]] = {}
    for s in summaries:
        by_label.setdefault(str(s.get("label")), []).append(s)
    out = []
    for label, runs in by_label.items():
        if len(runs) < 2:
            continue
        intervals = {}
        for key in CI_FIGURES:
            values = [v for v in (_figure(s, key) for s in runs) if v is not None]
            if values:
                intervals[key] = mean_ci(values).as_dict()
        out.append({"label": label, "n": len(runs), "intervals": intervals})
    return out


def format_intervals(groups: Sequence[Mapping[str, Any]]) -> str:
    """The console table of :func:`repeat_intervals`: mean ± 95% CI half-width."""
    head = f"{'point':<18}{'runs':>5}" + "".join(f"{label:>22}" for label, _ in
                                                 CI_FIGURES.values())
    lines = ["repeated points: mean ± 95% confidence interval (Student's t)", head]
    for g in groups:
        cells = []
        for key, (_, digits) in CI_FIGURES.items():
            ci = g["intervals"].get(key)
            if ci is None:
                cells.append(f"{'-':>22}")
                continue
            text = f"{ci['mean']:.{digits}f}"
            if ci["half_width"] is not None:
                text += f" ± {ci['half_width']:.{digits}f}"
            cells.append(f"{text:>22}")
        lines.append(f"{g['label']!s:<18}{g['n']:>5}" + "".join(cells))
    return "\n".join(lines)
