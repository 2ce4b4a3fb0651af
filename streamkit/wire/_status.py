"""Error statuses → the error tree; shared by both dialects. Pure (reads the clock only
to turn a ``Retry-After`` HTTP date into seconds)."""

from __future__ import annotations

import email.utils
import re
import time
from datetime import timezone
from typing import Any, Mapping, Optional

from .. import _json
from ..errors import ModelNotFound, ResponseError, ServerBusy

__all__ = ["error_text", "is_model_not_found", "map_status", "parse_retry_after"]

BUSY_STATUSES = (429, 503)
MAX_TEXT = 500  # characters of the server's error text quoted in a message

# Ollama: "model 'x' not found", before v0.12 on chat: 'model "x" not found, try
# pulling it first'; OpenAI/vLLM: "The model `x` does not exist ...".
_MODEL_MISSING = re.compile(r"\bmodel\b.*\b(not found|does not exist)", re.IGNORECASE | re.DOTALL)


def parse_retry_after(value: Optional[str], now: Optional[float] = None) -> Optional[float]:
    """Seconds to wait from a ``Retry-After`` value: delta seconds or an HTTP date.

    A date in the past gives 0.0; a missing or unparsable value gives None.
    ``now`` (epoch seconds) defaults to the current time.
    """
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        return _seconds_until_date(value, now)
    if seconds != seconds or seconds in (float("inf"), float("-inf")):  # NaN, inf
        return None
    return max(0.0, seconds)


def _seconds_until_date(value: str, now: Optional[float]) -> Optional[float]:
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:  # Python < 3.10 returns None instead of raising
        return None  # type: ignore[unreachable]
    if when.tzinfo is None:  # RFC 9110 dates are GMT; "-0000" parses naive
        when = when.replace(tzinfo=timezone.utc)
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


def error_text(body: bytes) -> str:
    """The server's error message from a reply body.

    Understands Ollama's ``{"error": "..."}``, OpenAI's
    ``{"error": {"message": ...}}``, FastAPI's ``{"detail": ...}`` and plain
    text (gin's ``404 page not found``).
    """
    try:
        decoded: Any = _json.loads(body)
    except _json.DECODE_ERRORS:
        return body.decode("utf-8", "replace").strip()
    if isinstance(decoded, dict):
        err = decoded.get("error", decoded.get("message", decoded.get("detail")))
        if isinstance(err, dict):
            err = err.get("message", err)
        if err is not None:
            return err if isinstance(err, str) else str(err)
    return body.decode("utf-8", "replace").strip()


def is_model_not_found(status: int, body: bytes, text: str) -> bool:
    """True for a 404 that is about a missing model (not a missing path)."""
    if status != 404:
        return False
    if b'"model_not_found"' in body:  # OpenAI's error code
        return True
    return _MODEL_MISSING.search(text) is not None


def _quote(text: str) -> str:
    if len(text) > MAX_TEXT:
        text = text[:MAX_TEXT] + "..."
    return text or "(empty body)"


def map_status(status: int, body: bytes, headers: Mapping[str, str], model: str, *,
               missing_model_hint: str, wrong_path_hint: str) -> ResponseError:
    """The typed error for a non-2xx reply; the hints finish the 404 messages."""
    text = error_text(body)
    raw = body.decode("utf-8", "replace")
    if is_model_not_found(status, body, text):
        # Ollama's text is what this message says already: say it once.
        said = any(f"{q}{model}{q} not found" in text for q in "'\"")
        detail = "" if model and said else f" ({_quote(text)})"
        return ModelNotFound(
            f"model {model!r} not found on the server{detail}; {missing_model_hint}",
            model=model, status_code=status, body=raw)
    if status == 404:
        return ResponseError(
            f"HTTP 404 from the server: {_quote(text)}. The endpoint does not exist there: "
            f"{wrong_path_hint}", status_code=status, body=raw)
    if status in BUSY_STATUSES:
        retry_after = parse_retry_after(headers.get("retry-after"))
        wait = "" if retry_after is None else f"; it asks to retry after {retry_after:g} s"
        return ServerBusy(
            f"the server is busy (HTTP {status}: {_quote(text)}){wait}",
            status_code=status, body=raw, retry_after=retry_after)
    if status in (401, 403):
        return ResponseError(
            f"HTTP {status} from the server: {_quote(text)}. Check the API key "
            "(api_key= or OLLAMA_API_KEY) and that the host allows this client",
            status_code=status, body=raw)
    return ResponseError(f"HTTP {status} from the server: {_quote(text)}",
                         status_code=status, body=raw)
