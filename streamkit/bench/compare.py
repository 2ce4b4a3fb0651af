"""Which runs may be compared: same load shape, same token budgets.

A closed-loop run (concurrency) and an open-loop run (rate) have no common x
axis; runs with different ``num_predict`` or prompt sizes measure different
work, so their TTFT, E2E and tok/s differ for reasons that are not the
server's. :func:`mismatches` names every such difference; ``bench compare``
refuses the runs unless told to go on, and then labels the table.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Sequence, Tuple

__all__ = ["COMPARED_SETTINGS", "mismatches"]

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
