"""The OpenAI-compatible dialect: ``/v1/chat/completions`` and ``/v1/completions``.

Spoken by llama.cpp's ``llama-server``, vLLM, LM Studio and Ollama's own
``/v1``. Requests keep streamkit's Ollama-style fields and are translated:

- ``options`` use Ollama's names: ``num_predict`` → ``max_tokens`` (a negative
  value, Ollama's "no limit", is left out); ``temperature``, ``top_p``,
  ``top_k``, ``seed``, ``stop``, ``frequency_penalty``, ``presence_penalty``
  keep their names; any other key is copied unchanged to the top level of
  the body (so ``repeat_penalty``, ``min_p`` or ``max_tokens`` itself reach
  servers that know them). A key naming a field streamkit sets itself
  (``model``, ``stream``, ...) is a ConfigError.
- ``format="json"`` → ``response_format: {"type": "json_object"}``; a JSON
  schema → ``{"type": "json_schema", "json_schema": {"name": "response",
  "schema": ...}}``.
- ``think`` as a string (``"low"``, ``"medium"``, ``"high"``) → ``reasoning_effort``;
  ``True``/``False`` have no OpenAI equivalent and are left out.
- ``keep_alive`` and generate's ``raw`` are left out (completions are raw
  already). ``system`` and ``images`` on a *generate* request are a
  ConfigError: ``/v1/completions`` has no place for them, and silently
  dropping a system prompt would change the output unnoticed; use ``chat``.
- Messages and tools are sent as given.

Streaming is SSE: ``data:`` events, ``[DONE]`` at the end. A role-only or
otherwise empty delta yields no chunk; the finish chunk yields a chunk
(``done=False``) and sets ``done_reason``; ``[DONE]`` yields a final empty
chunk with ``done=True``. Tool-call deltas arrive in fragments: they are
merged per call ``index`` and delivered whole (OpenAI shape, ``arguments`` a
JSON string) on the finish chunk, or on the ``[DONE]`` chunk if no finish
chunk came.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Mapping, Optional, Tuple

from .. import _json
from ..errors import (
    ConfigError,
    ProtocolError,
    ResponseError,
    ServerStreamError,
    StreamInterrupted,
)
from ..records import ChatRequest, Chunk, GenerateRequest, Stats
from ._status import map_status
from .lines import DEFAULT_MAX_LINE
from .ollama import decode_json_line, error_message, excerpt
from .sse import SSEFramer

__all__ = ["OPENAI", "OpenAIDecoder", "OpenAIDialect", "map_options"]

RENAMED_OPTIONS = {"num_predict": "max_tokens"}
RESERVED_KEYS = frozenset({"model", "messages", "prompt", "stream", "stream_options"})
DONE_PAYLOAD = b"[DONE]"


def map_options(options: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
    """Ollama-named options → top-level OpenAI body fields (see the module docstring)."""
    mapped: Dict[str, Any] = {}
    for key, value in (options or {}).items():
        if key in RESERVED_KEYS:
            raise ConfigError(f"option {key!r} cannot be set through options; "
                              "streamkit sets it itself")
        if key == "num_predict" and isinstance(value, int) and value < 0:
            continue  # Ollama's -1/-2 mean "no limit"; OpenAI has no such value
        mapped[RENAMED_OPTIONS.get(key, key)] = value
    return mapped


def response_format(format: Any) -> Optional[Dict[str, Any]]:
    """Ollama's ``format`` ("json" or a schema) as an OpenAI ``response_format``."""
    if format is None or format == "":
        return None
    if format == "json":
        return {"type": "json_object"}
    if isinstance(format, Mapping):
        return {"type": "json_schema",
                "json_schema": {"name": "response", "schema": dict(format)}}
    raise ConfigError(f"format must be 'json' or a JSON schema object, got {format!r}")


class OpenAIDecoder:
    """Decodes one SSE body of ``/v1/chat/completions`` or ``/v1/completions``.

    See ``wire.Decoder`` and the module docstring. Raises ServerStreamError for
    an ``{"error": ...}`` event, ProtocolError for undecodable data or an
    oversize line or event, and, from ``close``, StreamInterrupted when
    ``[DONE]`` never came.
    """

    def __init__(self, first_index: int = 0, max_line: int = DEFAULT_MAX_LINE) -> None:
        self._framer = SSEFramer(max_line)
        self._max_event = max_line
        self._index = first_index
        self._active = False
        self._loads = _json.loads  # looked up per decoder so a benchmark can swap it
        self._data: List[bytes] = []  # the data lines of the event being read
        self._data_len = 0
        self._calls: Dict[int, Dict[str, Any]] = {}  # tool-call fragments by index
        # The chunks of the last feed/close so far: the stream layer delivers them
        # when a later record of the same read raises.
        self.completed: List[Chunk] = []
        self.done = False
        self.done_reason: Optional[str] = None
        self.model: Optional[str] = None
        self.stats = Stats()

    def feed(self, data: bytes, received_ns: int) -> List[Chunk]:
        """The chunks completed by ``data``, stamped ``received_ns``."""
        self._active = False
        if self.done:
            return []
        return self._lines(self._framer.feed(data), received_ns)

    def close(self, received_ns: int) -> List[Chunk]:
        """Finish a last line and event without terminator; StreamInterrupted without [DONE]."""
        chunks: List[Chunk] = []
        if not self.done:
            try:
                chunks = self._lines([*self._framer.flush(), b""], received_ns)
            except ProtocolError as exc:  # a last event cut short: a truncation
                raise StreamInterrupted(
                    "the response body ended in the middle of an event; the reply is "
                    "incomplete (the server or a proxy cut it short)") from exc
        if not self.done:
            raise StreamInterrupted(
                "the response body ended before data: [DONE]; the reply is incomplete "
                "(the server stopped or a proxy cut the connection)")
        return chunks

    def activity(self) -> bool:
        """True if the last ``feed`` carried SSE fields (comments/keep-alives do not count)."""
        return self._active

    def _lines(self, lines: List[bytes], received_ns: int) -> List[Chunk]:
        chunks: List[Chunk] = []
        self.completed = chunks
        for line in lines:
            if not line:  # a blank line ends the event
                if self._data:
                    self._dispatch(received_ns, chunks)
                    if self.done:
                        break
            elif line[:5] == b"data:":
                self._active = True
                self._add_data(line[6:] if line[5:6] == b" " else line[5:])
            elif line[:1] != b":":  # ":" starts a comment / keep-alive
                self._active = True
                self._field(line)
        return chunks

    def _field(self, line: bytes) -> None:
        name, _, value = line.partition(b":")
        if value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            self._add_data(value)
        elif name == b"error":  # some servers send "error: {json}" lines
            raise ServerStreamError(_error_field_text(value))
        # event:, id:, retry: and unknown fields carry nothing streamkit uses

    def _add_data(self, value: bytes) -> None:
        self._data_len += len(value) + 1
        if self._data_len > self._max_event:
            raise ProtocolError(f"an SSE event from the server exceeds the "
                                f"{self._max_event}-byte limit")
        self._data.append(value)

    def _dispatch(self, received_ns: int, chunks: List[Chunk]) -> None:
        payload = self._data[0] if len(self._data) == 1 else b"\n".join(self._data)
        self._data = []
        self._data_len = 0
        if payload[:1] == b"[" and payload.strip() == DONE_PAYLOAD:
            self.done = True
            chunks.append(Chunk("", "", self._take_calls(), self._index, received_ns,
                                None, True))
            self._index += 1
            return
        if payload.strip():
            obj = decode_json_line(self._loads, payload)
            try:
                chunk = self._event(obj, received_ns)
            except (AttributeError, TypeError, IndexError) as exc:
                raise ProtocolError(f"the server sent an event of an unexpected shape "
                                    f"({exc}): {excerpt(payload)}") from exc
            if chunk is not None:
                chunks.append(chunk)
                self._index += 1

    def _event(self, obj: Dict[str, Any], received_ns: int) -> Optional[Chunk]:
        if "error" in obj and obj["error"] is not None:
            raise ServerStreamError(error_message(obj["error"]))
        if self.model is None:
            self.model = obj.get("model")
        usage = obj.get("usage")
        if usage:
            self.stats = Stats(prompt_eval_count=usage.get("prompt_tokens"),
                               eval_count=usage.get("completion_tokens"))
        choices = obj.get("choices")
        if not choices:
            return None
        choice = choices[0]
        delta = choice.get("delta")
        thinking = ""
        calls: Tuple[Mapping[str, Any], ...] = ()
        if type(delta) is dict:  # chat/completions
            text = delta.get("content") or ""
            thinking = delta.get("reasoning_content") or delta.get("reasoning") or ""
            if delta.get("tool_calls"):
                self._merge_calls(delta["tool_calls"])
        else:  # completions
            text = choice.get("text") or ""
        finish = choice.get("finish_reason")
        if finish:
            self.done_reason = finish
            calls = self._take_calls()
        elif not text and not thinking:
            return None  # role-only, empty or tool-fragment delta: nothing to show yet
        return Chunk(text, thinking, calls, self._index, received_ns, obj, False)

    def _merge_calls(self, fragments: Any) -> None:
        for fragment in fragments:
            if not isinstance(fragment, dict):
                raise ProtocolError(f"a tool-call delta is not an object: {fragment!r:.80}")
            slot = fragment.get("index", len(self._calls))
            call = self._calls.get(slot)
            if call is None:
                call = self._calls[slot] = {"function": {"name": "", "arguments": ""}}
            for key in ("id", "type"):
                if fragment.get(key) and not call.get(key):
                    call[key] = fragment[key]
            function = fragment.get("function") or {}
            if function.get("name") and not call["function"]["name"]:
                call["function"]["name"] = function["name"]
            arguments = function.get("arguments")
            if arguments:
                call["function"]["arguments"] += (
                    arguments if isinstance(arguments, str) else _json_text(arguments))

    def _take_calls(self) -> Tuple[Mapping[str, Any], ...]:
        if not self._calls:
            return ()
        calls = tuple(self._calls[k] for k in sorted(self._calls))
        self._calls = {}
        return calls


def _message(message: Mapping[str, Any]) -> Dict[str, Any]:
    """A chat message for the wire: Ollama-style ``images`` (base64) become
    OpenAI image content parts (data URLs) after the text."""
    out = dict(message)
    images = out.pop("images", None)
    if not images:
        return out
    parts: List[Dict[str, Any]] = [{"type": "text", "text": out.get("content", "")}]
    parts += [{"type": "image_url", "image_url": {"url": f"data:{_image_type(i)};base64,{i}"}}
              for i in images]
    out["content"] = parts
    return out


def _image_type(data: str) -> str:
    # The first base64 characters of the common formats' magic numbers.
    for prefix, mime in (("iVBOR", "image/png"), ("/9j/", "image/jpeg"), ("R0lGOD", "image/gif"),
                         ("UklGR", "image/webp")):
        if data.startswith(prefix):
            return mime
    return "image/png"


def _json_text(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _error_field_text(value: bytes) -> str:
    try:
        decoded = _json.loads(value)
    except _json.DECODE_ERRORS:
        return value.decode("utf-8", "replace").strip() or excerpt(value)
    if isinstance(decoded, dict) and "error" in decoded:
        decoded = decoded["error"]
    return error_message(decoded)


class OpenAIDialect:
    """The OpenAI-compatible API; paths are relative to a base URL ending in ``/v1``."""

    name = "openai"

    def chat(self, request: ChatRequest) -> Tuple[str, Dict[str, Any]]:
        """``("chat/completions", body)`` with streaming and usage reporting on."""
        body = self._body(request.model, request.options, request.format, request.think)
        body["messages"] = [_message(m) for m in request.messages]
        if request.tools is not None:
            body["tools"] = [dict(t) for t in request.tools]
        return "chat/completions", body

    def generate(self, request: GenerateRequest) -> Tuple[str, Dict[str, Any]]:
        """``("completions", body)``; ConfigError for ``system`` or ``images``."""
        if request.system is not None:
            raise ConfigError("the openai dialect's completions endpoint has no system "
                              "prompt; use chat() with a system message, or put it in "
                              "the prompt")
        if request.images:
            raise ConfigError("the openai dialect's completions endpoint takes no images; "
                              "use chat() with image content parts")
        body = self._body(request.model, request.options, request.format, request.think)
        body["prompt"] = request.prompt
        if request.suffix is not None:
            body["suffix"] = request.suffix
        return "completions", body

    def decoder(self, first_index: int = 0, max_line: int = DEFAULT_MAX_LINE) -> OpenAIDecoder:
        """A fresh decoder for one attempt's SSE body."""
        return OpenAIDecoder(first_index, max_line)

    def error_for_status(self, status: int, body: bytes, headers: Mapping[str, str],
                         model: str) -> ResponseError:
        """ModelNotFound (404 model), ServerBusy (429/503) or ResponseError."""
        return map_status(
            status, body, headers, model,
            missing_model_hint="check the name against GET /v1/models "
                               f"(with Ollama, run `ollama pull {model}`)",
            wrong_path_hint="check the host's base path (it should end in /v1), or use "
                            "dialect=\"ollama\" for Ollama's native API")

    @staticmethod
    def _body(model: str, options: Optional[Mapping[str, Any]], format: Any,
              think: Any) -> Dict[str, Any]:
        body: Dict[str, Any] = {
            "model": model,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        fmt = response_format(format)
        if fmt is not None:
            body["response_format"] = fmt
        if isinstance(think, str):
            body["reasoning_effort"] = think
        body.update(map_options(options))
        return body


OPENAI = OpenAIDialect()
