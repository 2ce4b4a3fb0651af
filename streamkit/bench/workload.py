"""What the requests carry: prompt files, prompts sized in tokens, replayed schedules.

- :func:`read_prompt_file` reads the batch input formats (.jsonl, .txt,
  .csv); this is the one place the bench imports the batch input reader.
- :func:`fit_prompt_words` sizes generated prompts in *tokens* without a
  tokenizer: two probe prompts of different word counts go to the server,
  whose own ``prompt_eval_count`` (OpenAI: ``usage.prompt_tokens``) gives
  tokens = intercept + slope x words (the intercept is the prompt template);
  the words for N tokens follow. :func:`prompt_size_report` then says how
  close the measured requests came.
- :func:`read_replay` turns a previous run's ``requests.jsonl`` into its
  schedules (per point, the scheduled send times), to run them again open
  loop: the same arrivals against another server, model or setting.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from ..errors import ConfigError
from .target import PromptSpec

__all__ = ["PromptFit", "fit_prompt_words", "prompt_size_report", "read_prompt_file",
           "read_replay"]

# Probe prompt sizes for the fit, in words (the larger scales with the target).
FIT_SMALL_WORDS = 8
FIT_MIN_SPAN_WORDS = 24


def read_prompt_file(path: str, model: str) -> Tuple[PromptSpec, ...]:
    """The prompts of a batch-format file (.jsonl, .txt, .csv).

    Raises:
        ConfigError: the file cannot be read, has a bad line (with its line
            number), or holds no prompt.
    """
    from ..batch.input import detect_format, read_prompts
    from ..batch.promptline import Problem

    specs: List[PromptSpec] = []
    problems: List[str] = []
    for item in read_prompts(path, detect_format(path), default_model=model):
        if isinstance(item, Problem):
            problems.append(str(item))
            continue
        messages = tuple(item.messages) if item.messages is not None else None
        specs.append(PromptSpec(prompt=item.prompt, messages=messages,
                                system=item.system, options=item.options))
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise ConfigError("bad prompt file: " + "; ".join(problems[:3]) + more)
    if not specs:
        raise ConfigError(f"prompt file {path!r} holds no prompt")
    return tuple(specs)


@dataclass
class PromptFit:
    """Generated prompts sized for ``target`` input tokens: ``words`` per prompt from the
    fit tokens = intercept + slope x words; ``achieved_*`` filled in after the run."""

    target: int
    words: int
    slope: Optional[float]
    intercept: Optional[float]
    achieved_mean: Optional[float] = None
    achieved_p50: Optional[float] = None
    error_pct: Optional[float] = None
    sentence: str = ""

    def as_dict(self) -> Dict[str, Any]:
        return asdict(self)


def fit_prompt_words(target: int, prompt_tokens: Callable[[int], Optional[int]]) -> PromptFit:
    """Words per generated prompt so that the server counts ~``target`` prompt tokens.

    ``prompt_tokens(words)`` sends one prompt of that many words and returns
    the server's prompt token count (None when the server does not say).
    Without counts the fit falls back to one token per word, and says so.
    """
    if target < 1:
        raise ConfigError(f"input tokens must be >= 1, got {target!r}")
    small = FIT_SMALL_WORDS
    large = max(small + FIT_MIN_SPAN_WORDS, target)
    a, b = prompt_tokens(small), prompt_tokens(large)
    if a is None or b is None or b <= a:
        fit = PromptFit(target=target, words=target, slope=None, intercept=None)
        fit.sentence = (f"input tokens: the server reported no usable prompt token counts; "
                        f"sent {target}-word prompts (assuming 1 token per word)")
        return fit
    slope = (b - a) / (large - small)
    intercept = a - slope * small
    words = max(1, round((target - intercept) / slope))
    return PromptFit(target=target, words=words, slope=slope, intercept=intercept)


def prompt_size_report(fit: PromptFit, counts: Sequence[Optional[int]]) -> PromptFit:
    """Fill in how close the measured prompts came to the target (server counts)."""
    seen = [c for c in counts if c is not None]
    if fit.slope is None:
        return fit
    if not seen:
        fit.sentence = (f"input tokens: {fit.words}-word prompts for ~{fit.target} tokens "
                        "(the measured requests reported no prompt token counts)")
        return fit
    fit.achieved_mean = statistics.fmean(seen)
    fit.achieved_p50 = float(statistics.median(seen))
    fit.error_pct = 100.0 * (fit.achieved_mean - fit.target) / fit.target
    fit.sentence = (f"input tokens: target {fit.target}, server counted {fit.achieved_mean:.1f} "
                    f"on average (p50 {fit.achieved_p50:.0f}, {fit.error_pct:+.1f}%) with "
                    f"{fit.words}-word prompts (fit: {fit.intercept:.1f} + {fit.slope:.3f} "
                    "tokens per word, from the server's own prompt_eval_count)")
    return fit


def read_replay(path: str) -> Tuple[Tuple[str, Tuple[int, ...], Tuple[float, ...]], ...]:
    """The schedules of a previous run's requests.jsonl: per point (in file order),
    ``(label, request indices, offsets in s from the point's start)``, warm-up left out.

    Raises ConfigError when the file cannot be read or holds no measured request.
    """
    points: Dict[str, List[Tuple[float, int]]] = {}
    try:
        with open(path, encoding="utf-8") as fh:
            for number, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                row = _row(line, path, number)
                if row.get("warmup") or row.get("scheduled_ms") is None:
                    continue
                points.setdefault(str(row.get("point")), []).append(
                    (float(row["scheduled_ms"]) / 1000.0, int(row.get("index", 0))))
    except OSError as exc:
        raise ConfigError(f"cannot read the replay file {path!r}: {exc}") from exc
    if not points:
        raise ConfigError(f"replay file {path!r} holds no measured request")
    out = []
    for label, rows in points.items():
        rows.sort()
        zero = min(0.0, rows[0][0])
        out.append((label, tuple(i for _, i in rows), tuple(t - zero for t, _ in rows)))
    return tuple(out)


def _row(line: str, path: str, number: int) -> Dict[str, Any]:
    try:
        row = json.loads(line)
    except ValueError as exc:
        raise ConfigError(f"{path}:{number}: not a JSON line ({exc})") from exc
    if not isinstance(row, dict):
        raise ConfigError(f"{path}:{number}: not a requests.jsonl row")
    return row
