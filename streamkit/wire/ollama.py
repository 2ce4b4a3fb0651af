"""Ollama's native dialect: ``/api/chat`` and ``/api/generate`` bodies, NDJSON → Chunk.

See the protocol reference: every streamed record is one JSON object per
line; the last one has ``done: true`` (and may still carry text) plus the
server's metrics; an ``{"error": ...}`` line can replace any record,
the first included (servers before v0.12.6 report even early errors that way).
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Tuple

from .. import _json
from ..errors import ProtocolError, ResponseError, ServerStreamError, StreamInterrupted
from ..records import ChatRequest, Chunk, GenerateRequest, Stats
from ._status import map_status
from .lines import DEFAULT_MAX_LINE, LineFramer

__all__ = ["OLLAMA", "OllamaDecoder", "OllamaDialect"]

EXCERPT = 80  # bytes of a bad line quoted in a ProtocolError
JSON_KINDS = {list: "array", str: "string", int: "number", float: "number",
              bool: "boolean", type(None): "null"}


def excerpt(line: bytes) -> str:
    """A short, printable quote of a bad record for an error message."""
    if len(line) <= EXCERPT:
        return repr(line)
    return f"{line[:EXCERPT]!r}... ({len(line)} bytes)"


def decode_json_line(loads: Any, line: bytes) -> Dict[str, Any]:
    """One record as a dict; ProtocolError for bad UTF-8, bad JSON or a non-object."""
    try:
        obj = loads(line)
    except _json.DECODE_ERRORS as exc:
        raise ProtocolError(f"the server sent a record that is not valid JSON ({exc}): "
                            f"{excerpt(line)}") from exc
    if type(obj) is not dict:
        kind = JSON_KINDS.get(type(obj), type(obj).__name__)
        raise ProtocolError(f"the server sent a JSON {kind} where an object was expected: "
                            f"{excerpt(line)}")
    return obj


def error_message(err: Any) -> str:
    """The text of an in-band error value (a string, or OpenAI's {"message": ...})."""
    if isinstance(err, dict):
        err = err.get("message", err)
    text = err if isinstance(err, str) else str(err)
    return text or "the server reported an error without a message"


def _put(body: Dict[str, Any], key: str, value: Any) -> None:
    if value is not None:
        body[key] = value


class OllamaDecoder:
    """Decodes one ``/api/chat`` or ``/api/generate`` NDJSON body (see ``wire.Decoder``).

    Every record becomes a Chunk, the done record included (``done=True``,
    text kept). Raises ServerStreamError for an ``error`` record, ProtocolError
    for undecodable data or an oversize line, and, from ``close``,
    StreamInterrupted when no ``done: true`` record came.
    """

    def __init__(self, first_index: int = 0, max_line: int = DEFAULT_MAX_LINE) -> None:
        self._framer = LineFramer(max_line)
        self._max_line = max_line
        self._index = first_index
        self._active = False
        self._loads = _json.loads  # looked up per decoder so a benchmark can swap it
        self.done = False
        # The chunks of the last feed/close so far: the stream layer delivers them
        # when a later record of the same read raises.
        self.completed: List[Chunk] = []
        self.done_reason: Optional[str] = None
        self.model: Optional[str] = None
        self.stats = Stats()

    def feed(self, data: bytes, received_ns: int) -> List[Chunk]:
        """The chunks completed by ``data``, stamped ``received_ns``."""
        if self.done:
            self._active = False
            return []
        if data[-1:] == b"\n" and data.find(b"\n") == len(data) - 1 \
                and not self._framer.buffered and len(data) <= self._max_line:
            # The usual read of a streaming server: exactly one whole record.
            line = data[:-2] if data[-2:-1] == b"\r" else data[:-1]
            self._active = bool(line)
            return self._decode([line], received_ns) if line else []
        lines = self._framer.feed(data)
        self._active = bool(lines)
        return self._decode(lines, received_ns) if lines else []

    def close(self, received_ns: int) -> List[Chunk]:
        """Decode a last line without newline; StreamInterrupted if done never came."""
        chunks: List[Chunk] = []
        if not self.done:
            lines = self._framer.flush()
            if lines:
                try:
                    chunks = self._decode(lines, received_ns)
                except ProtocolError as exc:
                    raise StreamInterrupted(
                        "the response body ended in the middle of a record; the reply "
                        "is incomplete (the server or a proxy cut it short)") from exc
        if not self.done:
            raise StreamInterrupted(
                "the response body ended before the final done record; the reply is "
                "incomplete (the server stopped or a proxy cut the connection)")
        return chunks

    def activity(self) -> bool:
        """True if the last ``feed`` completed at least one record."""
        return self._active

    def _decode(self, lines: List[bytes], received_ns: int) -> List[Chunk]:
        chunks: List[Chunk] = []
        self.completed = chunks
        for line in lines:
            obj = decode_json_line(self._loads, line)
            try:
                chunk = self._record(obj, received_ns)
            except (AttributeError, TypeError) as exc:  # a field of the wrong JSON type
                raise ProtocolError(f"the server sent a record of an unexpected shape "
                                    f"({exc}): {excerpt(line)}") from exc
            chunks.append(chunk)
            if chunk.done:
                break  # records after done are ignored
        return chunks

    def _record(self, obj: Dict[str, Any], received_ns: int) -> Chunk:
        if "error" in obj and obj["error"] is not None:
            raise ServerStreamError(error_message(obj["error"]))
        message = obj.get("message")
        if type(message) is dict:  # /api/chat
            text = message.get("content") or ""
            thinking = message.get("thinking") or ""
            calls = message.get("tool_calls")
        else:  # /api/generate
            text = obj.get("response") or ""
            thinking = obj.get("thinking") or ""
            calls = obj.get("tool_calls")
        done = obj.get("done") is True
        chunk = Chunk(text, thinking, tuple(calls) if calls else (),
                      self._index, received_ns, obj, done)
        self._index += 1
        if self.model is None:
            self.model = obj.get("model")
        if done:
            self._finish(obj)
        return chunk

    def _finish(self, obj: Mapping[str, Any]) -> None:
        self.done = True
        self.done_reason = obj.get("done_reason")
        self.model = obj.get("model", self.model)
        self.stats = Stats(
            total_duration=obj.get("total_duration"),
            load_duration=obj.get("load_duration"),
            prompt_eval_count=obj.get("prompt_eval_count"),
            prompt_eval_duration=obj.get("prompt_eval_duration"),
            eval_count=obj.get("eval_count"),
            eval_duration=obj.get("eval_duration"),
        )


class OllamaDialect:
    """The native Ollama API (``/api/chat``, ``/api/generate``); see ``wire.Dialect``."""

    name = "ollama"

    def chat(self, request: ChatRequest) -> Tuple[str, Dict[str, Any]]:
        """``("api/chat", body)``; fields left None are omitted, ``stream`` is always true."""
        body: Dict[str, Any] = {
            "model": request.model,
            "messages": [dict(m) for m in request.messages],
            "stream": True,
        }
        if request.tools is not None:
            body["tools"] = [dict(t) for t in request.tools]
        _put_common(body, request.format, request.options, request.think, request.keep_alive)
        return "api/chat", body

    def generate(self, request: GenerateRequest) -> Tuple[str, Dict[str, Any]]:
        """``("api/generate", body)``; fields left None are omitted, ``stream`` always true."""
        body: Dict[str, Any] = {"model": request.model, "prompt": request.prompt, "stream": True}
        _put(body, "suffix", request.suffix)
        _put(body, "system", request.system)
        _put(body, "raw", request.raw)
        if request.images is not None:
            body["images"] = list(request.images)
        _put_common(body, request.format, request.options, request.think, request.keep_alive)
        return "api/generate", body

    def decoder(self, first_index: int = 0, max_line: int = DEFAULT_MAX_LINE) -> OllamaDecoder:
        """A fresh decoder for one attempt's NDJSON body."""
        return OllamaDecoder(first_index, max_line)

    def error_for_status(self, status: int, body: bytes, headers: Mapping[str, str],
                         model: str) -> ResponseError:
        """ModelNotFound (404 model), ServerBusy (429/503) or ResponseError."""
        return map_status(
            status, body, headers, model,
            missing_model_hint=f"run `ollama pull {model}` to download it",
            wrong_path_hint="check the host (is it an Ollama server, new enough for this "
                            "endpoint?), or use dialect=\"openai\" for an OpenAI-compatible "
                            "server")


def _put_common(body: Dict[str, Any], format: Any, options: Optional[Mapping[str, Any]],
                think: Any, keep_alive: Any) -> None:
    if format is not None:
        body["format"] = dict(format) if isinstance(format, Mapping) else format
    if options is not None:
        body["options"] = dict(options)
    _put(body, "think", think)
    _put(body, "keep_alive", keep_alive)


OLLAMA = OllamaDialect()
