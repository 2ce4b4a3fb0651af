"""Embedding codecs: an EmbedRequest → (path, body); the reply's bytes → EmbedReply. Pure.

- Ollama: ``api/embed`` with ``model``, ``input``, and ``truncate``,
  ``dimensions``, ``keep_alive``, ``options`` when set; the reply is
  ``{"model", "embeddings": [[...], ...], "total_duration",
  "load_duration", "prompt_eval_count"}`` (zero values left out). A string
  input that is empty gets no vector, as Ollama sends none.
- OpenAI: ``embeddings`` (relative to the ``/v1`` base URL) with ``model``,
  ``input``, ``dimensions`` when set, and ``encoding_format: "base64"``,
  as the official client asks by default: little-endian float32 values
  take a third of the bytes of decimal text and decode without parsing
  numbers. A reply with plain lists (a server that ignores the format) is
  read as well. ``truncate=False`` and ``options`` are a ConfigError here
  (``/v1/embeddings`` has no place for them, and dropping them would change
  the result unnoticed); ``keep_alive`` is left out.

:func:`embed_error` adds what to do next to the errors only embedding has.

``decode`` raises ProtocolError for a reply that is not JSON, has the wrong
shape, or holds a different number of vectors than inputs were sent. The
numbers inside a vector are kept as the JSON decoder made them, not checked
one by one (a reply can hold millions).
"""

from __future__ import annotations

import array
import base64
import binascii
import sys
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, NamedTuple, Optional, Protocol, Tuple

from .. import _json
from ..errors import ConfigError, ProtocolError, ResponseError
from ..records import EmbedRequest
from ._status import error_text
from .ollama import decode_json_line, excerpt

if TYPE_CHECKING:
    from . import Dialect

__all__ = ["EmbedCodec", "EmbedReply", "OllamaEmbed", "OpenAIEmbed", "embed_error",
           "get_embed_codec"]

# Ollama's texts (the first comes from the runner of a model without an embedding head).
_CANNOT_EMBED = "does not support embeddings"
_TOO_LONG = ("input length exceeds the context length",
             "exceeds maximum context length")


class EmbedReply(NamedTuple):
    """What an embed reply says: the vectors (in input order) and the server's counts."""

    vectors: List[List[float]]
    model: Optional[str] = None
    prompt_eval_count: Optional[int] = None
    total_duration: Optional[int] = None
    load_duration: Optional[int] = None


class EmbedCodec(Protocol):
    """One dialect's embedding request body and reply decoding."""

    name: str

    def request(self, request: EmbedRequest) -> Tuple[str, Dict[str, Any]]:
        """(path relative to the base URL, JSON body); ConfigError for what the
        dialect cannot express."""

    def decode(self, data: bytes, request: EmbedRequest) -> EmbedReply:
        """The reply to ``request`` from its complete body; ProtocolError if malformed."""


def expected_count(request: EmbedRequest, *, empty_string_counts: bool) -> int:
    if isinstance(request.input, str):
        return 1 if request.input or empty_string_counts else 0
    return len(request.input)


def _reply_object(data: bytes) -> Dict[str, Any]:
    return decode_json_line(_json.loads, data)


def _floats(vector: Any, where: str) -> List[float]:
    if not isinstance(vector, list):
        raise ProtocolError(f"the server sent {where} that is not a list of numbers")
    return vector  # JSON numbers already; not copied element by element


def _check_count(vectors: List[List[float]], expected: int, data: bytes) -> None:
    if len(vectors) != expected:
        raise ProtocolError(f"the server sent {len(vectors)} vectors for {expected} inputs: "
                            f"{excerpt(data)}")


def _int_or_none(value: Any) -> Optional[int]:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class OllamaEmbed:
    """``/api/embed`` (see the module docstring)."""

    name = "ollama"

    def request(self, request: EmbedRequest) -> Tuple[str, Dict[str, Any]]:
        body: Dict[str, Any] = {"model": request.model, "input": _input(request)}
        for key in ("truncate", "dimensions", "keep_alive"):
            value = getattr(request, key)
            if value is not None:
                body[key] = value
        if request.options is not None:
            body["options"] = dict(request.options)
        return "api/embed", body

    def decode(self, data: bytes, request: EmbedRequest) -> EmbedReply:
        obj = _reply_object(data)
        raw = obj.get("embeddings")
        if not isinstance(raw, list):
            raise ProtocolError(f"the server's embed reply has no 'embeddings' list: "
                                f"{excerpt(data)}")
        vectors = [_floats(v, "an embedding") for v in raw]
        _check_count(vectors, expected_count(request, empty_string_counts=False), data)
        model = obj.get("model")
        return EmbedReply(vectors, model if isinstance(model, str) else None,
                          _int_or_none(obj.get("prompt_eval_count")),
                          _int_or_none(obj.get("total_duration")),
                          _int_or_none(obj.get("load_duration")))


class OpenAIEmbed:
    """``/v1/embeddings`` (see the module docstring)."""

    name = "openai"

    def request(self, request: EmbedRequest) -> Tuple[str, Dict[str, Any]]:
        if request.truncate is False:
            raise ConfigError("truncate=False needs dialect='ollama': /v1/embeddings always "
                              "truncates")
        if request.options:
            raise ConfigError("options need dialect='ollama': /v1/embeddings takes none")
        body: Dict[str, Any] = {"model": request.model, "input": _input(request)}
        if request.dimensions is not None:
            body["dimensions"] = request.dimensions
        body["encoding_format"] = "base64"
        return "embeddings", body

    def decode(self, data: bytes, request: EmbedRequest) -> EmbedReply:
        obj = _reply_object(data)
        items = obj.get("data")
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise ProtocolError(f"the server's embeddings reply has no 'data' list: "
                                f"{excerpt(data)}")
        ordered = sorted(items, key=lambda item: _int_or_none(item.get("index")) or 0)
        vectors = [_vector(item.get("embedding")) for item in ordered]
        _check_count(vectors, expected_count(request, empty_string_counts=True), data)
        usage = obj.get("usage")
        tokens = _int_or_none(usage.get("prompt_tokens")) if isinstance(usage, dict) else None
        model = obj.get("model")
        return EmbedReply(vectors, model if isinstance(model, str) else None, tokens)


def _input(request: EmbedRequest) -> Any:
    return request.input if isinstance(request.input, str) else list(request.input)


def _vector(value: Any) -> List[float]:
    """One ``embedding`` value: base64 little-endian float32, or a list of numbers."""
    if not isinstance(value, str):
        return _floats(value, "an embedding")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ProtocolError(f"the server sent an embedding that is not base64 ({exc})") from exc
    if len(raw) % 4:
        raise ProtocolError(f"the server sent a base64 embedding of {len(raw)} bytes, "
                            "not a whole number of float32 values")
    values = array.array("f", raw)
    if sys.byteorder == "big":  # the wire format is little-endian
        values.byteswap()
    return values.tolist()


OLLAMA_EMBED = OllamaEmbed()
OPENAI_EMBED = OpenAIEmbed()


def get_embed_codec(dialect: str) -> EmbedCodec:
    """The embedding codec of ``"ollama"`` or ``"openai"``; ConfigError otherwise."""
    if dialect == "ollama":
        return OLLAMA_EMBED
    if dialect == "openai":
        return OPENAI_EMBED
    raise ConfigError(f"dialect must be 'ollama' or 'openai', got {dialect!r}")


def embed_error(dialect: Dialect, status: int, body: bytes, headers: Mapping[str, str],
                model: str) -> ResponseError:
    """The typed error for a non-2xx embed reply, with a hint where embedding needs one.

    A model that cannot embed (Ollama answers 501, or 500 on older paths)
    and an input over the context length keep the server's text and say
    what to do; everything else is ``dialect.error_for_status``.
    """
    error = dialect.error_for_status(status, body, headers, model)
    if type(error) is not ResponseError:  # ModelNotFound, ServerBusy: already say it
        return error
    text = error_text(body)
    if _CANNOT_EMBED in text:
        hint = (f"{model!r} is not an embedding model; use one, e.g. nomic-embed-text or "
                "all-minilm (`ollama pull nomic-embed-text`)")
    elif any(marker in text for marker in _TOO_LONG):
        hint = ("an input has more tokens than the model's context; shorten it, raise "
                "options={'num_ctx': N}, or leave truncate unset so the server cuts it")
    else:
        return error
    return ResponseError(f"{error}; {hint}", status_code=status, body=error.body)
