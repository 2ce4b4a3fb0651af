"""Deterministic response text (``expected``) and Go-compatible JSON encoding.

The emulator and the tests share ``expected``: it is pure, so a test can
compute what the server will stream for a request body before sending it.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, List, Mapping, Optional, Sequence, Tuple

from .faults import normalize_model
from .settings import EmulatorConfig

__all__ = ["Expected", "expected", "go_dumps", "go_str", "request_view"]

# Words carry their leading space; a few are non-ASCII (2- to 4-byte UTF-8)
# and one holds characters Go's encoder escapes (<, >, &) so decoders see them.
_WORDS = (
    " the", " a", " stream", " token", " model", " server", " client", " river",
    " quiet", " bright", " lamp", " window", " number", " seven", " blue", " green",
    " runs", " reads", " writes", " waits", " sends", " keeps", " finds", " holds",
    " over", " under", " with", " from", " into", " and", " but", " then",
    " café", " über", " naïve", " 日本語", " 🚀", " Ωmega", " x<y&z>", " done",
    " light", " stone", " paper", " signal", " thread", " queue", " socket", " time",
)
_PUNCT = (",", ".", ";", "!")
# Raw U+0085 splits a line for str.splitlines(); U+2028 is sent escaped by Go.
_EXOTIC = (" next\x85line", " para\u2028graph", " end\u2029sep")
_THINK_WORDS = (" hmm", " let", " me", " think", " about", " this", " first", " maybe")

_GO_ESCAPES = (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
               ("\u2028", "\\u2028"), ("\u2029", "\\u2029"))


def _go_escape(text: str) -> str:
    for raw, escaped in _GO_ESCAPES:
        if raw in text:
            text = text.replace(raw, escaped)
    return text


def go_dumps(obj: Any) -> bytes:
    """Compact JSON the way Go's encoding/json writes it (key order kept)."""
    return _go_escape(json.dumps(obj, ensure_ascii=False, separators=(",", ":"))).encode()


@lru_cache(maxsize=4096)
def go_str(text: str) -> bytes:
    """One JSON string literal (with quotes), Go-escaped, as UTF-8 bytes."""
    return _go_escape(json.dumps(text, ensure_ascii=False)).encode()


@dataclass(frozen=True)
class Expected:
    """What the emulator generates for one request.

    ``tokens``/``thinking_tokens`` are the pieces as streamed (before
    ``tokens_per_chunk`` grouping); ``eval_count`` counts every generated
    token, thinking included.
    """

    text: str
    thinking: str
    done_reason: str
    eval_count: int
    prompt_eval_count: int
    tokens: List[str] = field(default_factory=list)
    thinking_tokens: List[str] = field(default_factory=list)


@dataclass(frozen=True)
class RequestView:
    """The parts of a native or OpenAI request body that shape the text."""

    prompt: str
    messages: Tuple[Tuple[str, str], ...]
    system: str
    seed: Any
    format: Any
    think: bool
    num_predict: Optional[int]
    stop: Tuple[str, ...]


def _content(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):  # OpenAI content parts
        return "".join(str(p.get("text", "")) for p in value if isinstance(p, Mapping))
    return "" if value is None else str(value)


def _format_of(body: Mapping[str, Any]) -> Any:
    fmt = body.get("format")
    if fmt not in (None, ""):
        return fmt
    rf = body.get("response_format")
    if isinstance(rf, Mapping):
        if rf.get("type") == "json_object":
            return "json"
        schema = rf.get("json_schema")
        if rf.get("type") == "json_schema" and isinstance(schema, Mapping):
            return schema.get("schema", {})
    return None


def _think_of(body: Mapping[str, Any]) -> bool:
    think = body.get("think")
    if think is None:
        reasoning = body.get("reasoning")
        think = body.get("reasoning_effort") or (
            reasoning.get("effort") if isinstance(reasoning, Mapping) else None)
    return bool(think) and think != "none"


def _int_or_none(value: Any) -> Optional[int]:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def request_view(body: Mapping[str, Any]) -> RequestView:
    """Normalise a native (``options``) or OpenAI (top-level) request body."""
    options = body.get("options")
    opts: Mapping[str, Any] = options if isinstance(options, Mapping) else {}
    prompt = body.get("prompt", "")
    if isinstance(prompt, list):
        prompt = "".join(str(p) for p in prompt)
    raw_messages = body.get("messages")
    messages = tuple(
        (str(m.get("role", "")).lower(), _content(m.get("content")))
        for m in (raw_messages if isinstance(raw_messages, list) else [])
        if isinstance(m, Mapping))
    num_predict = _int_or_none(opts.get("num_predict"))
    if num_predict is None:
        num_predict = _int_or_none(body.get("max_tokens"))
    if num_predict is None:
        num_predict = _int_or_none(body.get("max_completion_tokens"))
    stop = opts.get("stop", body.get("stop"))
    stops = (stop,) if isinstance(stop, str) else tuple(
        s for s in (stop or ()) if isinstance(s, str))
    return RequestView(
        prompt=_content(prompt), messages=messages, system=_content(body.get("system")),
        seed=opts.get("seed", body.get("seed")), format=_format_of(body),
        think=_think_of(body), num_predict=num_predict,
        stop=tuple(s for s in stops if s))


def _rng_for(model: str, view: RequestView, config: EmulatorConfig) -> random.Random:
    key = json.dumps([normalize_model(model), view.prompt, view.messages, view.system,
                      view.seed, view.format, view.think, config.seed],
                     sort_keys=True, default=str)
    return random.Random(int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big"))


def _words(rng: random.Random, count: int, exotic: bool) -> List[str]:
    """``count`` tokens; one random draw per token, so a shorter run is a prefix."""
    pool = _WORDS + _EXOTIC * 4 if exotic else _WORDS  # exotic: ~20% odd tokens
    draws = [rng.random() for _ in range(count)]
    words = [_PUNCT[int(r * len(_PUNCT))] if i % 7 == 3 else pool[int(r * len(pool))]
             for i, r in enumerate(draws)]
    if words:
        words[0] = words[0].lstrip()
    return words


def _as_json(words: List[str]) -> List[str]:
    return ['{"answer": "'] + [json.dumps(w, ensure_ascii=False)[1:-1] for w in words] + ['"}']


def _cut(pieces: List[str], limit: int) -> List[str]:
    kept: List[str] = []
    pos = 0
    for piece in pieces:
        if pos + len(piece) > limit:
            if limit > pos:
                kept.append(piece[:limit - pos])
            break
        kept.append(piece)
        pos += len(piece)
    return kept


def _apply_stop(pieces: List[str], stops: Sequence[str]) -> Tuple[List[str], int, bool]:
    """Cut the text before the first stop string: (pieces kept, tokens consumed, hit).

    Like Ollama's runner, text that turns out to start a stop string is never
    sent, even when the stop string spans several tokens.
    """
    text = ""
    for i, piece in enumerate(pieces):
        start = len(text)
        text += piece
        hits = [h for h in (text.find(s, max(0, start - len(s) + 1)) for s in stops) if h >= 0]
        if hits:
            return _cut(pieces, min(hits)), i + 1, True
    return pieces, len(pieces), False


def _prompt_tokens(view: RequestView) -> int:
    words = len(view.prompt.split()) + len(view.system.split())
    words += sum(len(content.split()) + 2 for _, content in view.messages)
    return max(1, words + 1)


@lru_cache(maxsize=64)
def _expected_cached(model: str, body_key: str, config: EmulatorConfig) -> Expected:
    view = request_view(json.loads(body_key))
    rng = _rng_for(model, view, config)
    natural = rng.randint(*config.response_tokens)
    thinking = rng.choices(_THINK_WORDS, k=config.think_tokens) if view.think else []
    budget = view.num_predict if view.num_predict is not None and view.num_predict >= 0 else None
    wrap = 2 if view.format is not None else 0  # the JSON object's opening and closing pieces
    reason = "stop"
    if budget is not None and budget < len(thinking) + natural + wrap:
        reason = "length"
    # Draw only the words that can be sent: a capped request is a prefix of the uncapped one.
    content = _words(rng, natural if budget is None else min(natural, budget), config.exotic)
    if wrap:
        content = _as_json(content)
    if budget is not None:
        thinking = thinking[:budget]
        content = content[:max(0, budget - len(thinking))]
    consumed = len(content)
    if view.stop:
        content, consumed, hit = _apply_stop(content, view.stop)
        reason = "stop" if hit else reason
    return Expected(text="".join(content), thinking="".join(thinking), done_reason=reason,
                    eval_count=len(thinking) + consumed,
                    prompt_eval_count=_prompt_tokens(view),
                    tokens=content, thinking_tokens=thinking)


def expected(model: str, body: Mapping[str, Any],
             config: Optional[EmulatorConfig] = None) -> Expected:
    """What the emulator streams for ``body`` sent to ``model`` (pure, deterministic).

    ``body`` may be a native (/api/chat, /api/generate) or an OpenAI (/v1)
    request body: the prompt or messages, system, seed, format, think,
    ``num_predict``/``max_tokens`` and ``stop`` are read from either form.
    The same model, body and config always give the same Expected.
    """
    cfg = config if config is not None else EmulatorConfig()
    return _expected_cached(model, json.dumps(body, sort_keys=True, default=str), cfg)
