"""What a line of a batch output says: the records and their one JSON encoding.

Pure: no files, no I/O. :func:`result_record` is the OUT line of a
successful Result, :func:`error_record` the error-file line of a failed
prompt, :func:`timing_record` the client-side durations both carry (the
format is in docs/batch.md). :func:`encode` turns any record into one
complete JSON line and never refuses one; the writers in
:mod:`streamkit.batch.output` append what it returns.
"""

from __future__ import annotations

import json
import math
from typing import Any, Dict, Mapping, Optional

from ..errors import ResponseError
from ..records import Result, Timing

__all__ = ["encode", "error_record", "result_record", "timing_record"]

_NS_PER_MS = 1_000_000


def encode(record: Mapping[str, Any]) -> bytes:
    """One JSON line, UTF-8, newline included; always valid JSON.

    A lone surrogate (which UTF-8 cannot carry) becomes U+FFFD and a NaN or
    infinite float becomes null, so no record is refused or written invalid.
    """
    try:
        text = json.dumps(record, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        return (text + "\n").encode()
    except (ValueError, UnicodeEncodeError):
        text = json.dumps(_sanitized(record), ensure_ascii=False, allow_nan=False,
                          separators=(",", ":"))
        return (text + "\n").encode()


def _sanitized(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8") if _has_surrogate(value) \
            else value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {_sanitized(k): _sanitized(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_sanitized(v) for v in value]
    return value


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _ms(start: Optional[int], end: Optional[int]) -> Optional[float]:
    if start is None or end is None:
        return None
    return round((end - start) / _NS_PER_MS, 3)


def timing_record(timing: Timing) -> Dict[str, Any]:
    """Client-side durations in ms (raw perf_counter stamps mean nothing in a file)."""
    values = {
        "ttft_ms": _ms(timing.sent_ns, timing.first_token_ns),
        "total_ms": _ms(timing.started_ns, timing.done_ns),
        "chunks": timing.chunks,
    }
    return {k: v for k, v in values.items() if v is not None}


def result_record(result: Result, record_id: str,
                  request_hash: Optional[str] = None) -> Dict[str, Any]:
    """The OUT line for a successful Result (the format is in docs/batch.md)."""
    record: Dict[str, Any] = {"id": record_id}
    if request_hash is not None:
        record["request_hash"] = request_hash
    record.update(model=result.model, host=result.host, response=result.text)
    if result.thinking:
        record["thinking"] = result.thinking
    if result.tool_calls:
        record["tool_calls"] = list(result.tool_calls)
    record["done_reason"] = result.done_reason
    record["stats"] = result.stats.as_dict()
    record["timing"] = timing_record(result.timing)
    record["attempts"] = result.attempts
    if result.cached:
        record["cached"] = True
    return record


def error_record(record_id: str, line: int, error: BaseException, *, attempts: int,
                 host: Optional[str]) -> Dict[str, Any]:
    """The error-file line for a failed prompt."""
    record: Dict[str, Any] = {"id": record_id, "line": line, "type": type(error).__name__,
                              "message": str(error), "attempts": attempts, "host": host}
    if isinstance(error, ResponseError):
        record["status_code"] = error.status_code
    return record
