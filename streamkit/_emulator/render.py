"""Wire renderings of one response: native NDJSON lines and OpenAI SSE events.

Every renderer turns the same generation events (thinking piece, content
piece, done, in-band error) into bytes. Pieces arrive already JSON-encoded
(``go_str``) so the hot path is a single bytes %-format per chunk.
"""

from __future__ import annotations

import time
from typing import Any, Dict, List, Optional

from .text import go_dumps, go_str

__all__ = ["ChatCompletionRender", "CompletionRender", "NativeRender", "Render", "created_at"]

NDJSON = "application/x-ndjson"
SSE = "text/event-stream"
JSON_UTF8 = "application/json; charset=utf-8"


def created_at(now_ns: Optional[int] = None) -> bytes:
    """RFC 3339 UTC with nanoseconds, trailing zeros removed (Go's RFC3339Nano)."""
    ns = time.time_ns() if now_ns is None else now_ns
    secs, frac = divmod(ns, 1_000_000_000)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs))
    digits = f"{frac:09d}".rstrip("0")
    return (stamp + ("." + digits if digits else "") + "Z").encode()


def _stamp_tail(stamp: int) -> bytes:
    return b',"_sent_ns":%d}' % stamp if stamp else b"}"


class Render:
    """Base: what one response looks like on the wire.

    ``piece`` arguments are JSON string literals (bytes, quotes included).
    Line methods return the full line/event bytes, framing included.
    """

    content_type = NDJSON
    error_type = JSON_UTF8

    def __init__(self, model: str) -> None:
        self.model = model
        self.model_json = go_str(model)

    def content(self, created: bytes, piece: bytes, stamp: int) -> bytes:
        raise NotImplementedError

    def thinking(self, created: bytes, piece: bytes, stamp: int) -> bytes:
        raise NotImplementedError

    def done(self, created: bytes, reason: str, metrics: Dict[str, int],
             stamp: int) -> List[bytes]:
        """The record(s) that end a successful stream (before the trailer)."""
        raise NotImplementedError

    def error_line(self, created: bytes, message: str) -> bytes:
        return go_dumps({"error": message}) + b"\n"

    def malformed_line(self) -> bytes:
        return b'{"model":' + self.model_json + b',"created_at":"oops\n'

    def blank_line(self) -> bytes:
        return b"\n"

    def single(self, created: bytes, text: str, thinking: str, reason: str,
               metrics: Dict[str, int]) -> bytes:
        raise NotImplementedError

    def error_body(self, status: int, message: str) -> bytes:
        return go_dumps({"error": message})

    def trailer(self) -> bytes:
        """What follows the done record (OpenAI: ``data: [DONE]``)."""
        return b""


class NativeRender(Render):
    """/api/generate and /api/chat NDJSON (key order per the protocol reference)."""

    def __init__(self, model: str, chat: bool, context: Optional[List[int]]) -> None:
        super().__init__(model)
        self.chat = chat
        self.context = context
        self._head = b'{"model":' + self.model_json + b',"created_at":"'
        if chat:
            self._content = b'","message":{"role":"assistant","content":'
            self._think = b'","message":{"role":"assistant","content":"","thinking":'
            self._mid_end = b'},"done":false'
        else:
            self._content = b'","response":'
            self._think = b'","response":"","thinking":'
            self._mid_end = b',"done":false'

    def content(self, created: bytes, piece: bytes, stamp: int) -> bytes:
        return b"%b%b%b%b%b%b\n" % (self._head, created, self._content, piece,
                                    self._mid_end, _stamp_tail(stamp))

    def thinking(self, created: bytes, piece: bytes, stamp: int) -> bytes:
        return b"%b%b%b%b%b%b\n" % (self._head, created, self._think, piece,
                                    self._mid_end, _stamp_tail(stamp))

    def _final(self, created: bytes, text: str, thinking: str, reason: str,
               metrics: Dict[str, int]) -> Dict[str, Any]:
        obj: Dict[str, Any] = {"model": self.model, "created_at": created.decode()}
        if self.chat:
            message: Dict[str, Any] = {"role": "assistant", "content": text}
            if thinking:
                message["thinking"] = thinking
            obj["message"] = message
        else:
            obj["response"] = text
            if thinking:
                obj["thinking"] = thinking
        obj["done"] = True
        obj["done_reason"] = reason
        if not self.chat and self.context is not None:
            obj["context"] = self.context
        obj.update((k, v) for k, v in metrics.items() if v)  # Go omitempty
        return obj

    def done(self, created: bytes, reason: str, metrics: Dict[str, int],
             stamp: int) -> List[bytes]:
        obj = self._final(created, "", "", reason, metrics)
        if stamp:
            obj["_sent_ns"] = stamp
        return [go_dumps(obj) + b"\n"]

    def single(self, created: bytes, text: str, thinking: str, reason: str,
               metrics: Dict[str, int]) -> bytes:
        return go_dumps(self._final(created, text, thinking, reason, metrics))


def _usage(metrics: Dict[str, int]) -> Dict[str, int]:
    prompt = metrics.get("prompt_eval_count", 0)
    completion = metrics.get("eval_count", 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}


def openai_error(status: int, message: str) -> bytes:
    """The /v1 error body (the type names follow Ollama >= 0.18)."""
    kind = {400: "invalid_request_error", 404: "not_found_error"}.get(status, "api_error")
    return go_dumps({"error": {"message": message, "type": kind, "param": None,
                               "code": None}}) + b"\n"


class _OpenAIRender(Render):
    content_type = SSE
    error_type = "application/json"
    object_name = ""
    id_prefix = ""

    def __init__(self, model: str, request_id: int, include_usage: bool) -> None:
        super().__init__(model)
        self.include_usage = include_usage
        self.created = int(time.time())
        self.id = f"{self.id_prefix}{request_id}"
        self._head = (b'data: {"id":' + go_str(self.id) + b',"object":"'
                      + self.object_name.encode() + b'","created":%d,"model":' % self.created
                      + self.model_json + b',"system_fingerprint":"fp_ollama","choices":')

    def _event(self, body: Dict[str, Any]) -> bytes:
        return b"data: " + go_dumps(body) + b"\n\n"

    def _base(self) -> Dict[str, Any]:
        return {"id": self.id, "object": self.object_name, "created": self.created,
                "model": self.model, "system_fingerprint": "fp_ollama"}

    def malformed_line(self) -> bytes:
        return b'data: {"id":' + go_str(self.id) + b',"object":\n\n'

    def blank_line(self) -> bytes:
        return b"\n"

    def error_body(self, status: int, message: str) -> bytes:
        return openai_error(status, message)

    def trailer(self) -> bytes:
        return b"data: [DONE]\n\n"

    def usage_event(self, metrics: Dict[str, int]) -> bytes:
        return self._event({**self._base(), "choices": [], "usage": _usage(metrics)})


class ChatCompletionRender(_OpenAIRender):
    """/v1/chat/completions SSE, current (>= v0.32.6) chunk format."""

    object_name = "chat.completion.chunk"
    id_prefix = "chatcmpl-"

    def __init__(self, model: str, request_id: int, include_usage: bool) -> None:
        super().__init__(model, request_id, include_usage)
        self._first = True

    def _delta(self, delta: bytes, stamp: int) -> bytes:
        role = b'"role":"assistant",' if self._first else b""
        self._first = False
        return b"%b[{\"index\":0,\"delta\":{%b%b},\"finish_reason\":null}]%b\n\n" % (
            self._head, role, delta, _stamp_tail(stamp))

    def content(self, created: bytes, piece: bytes, stamp: int) -> bytes:
        return self._delta(b'"content":' + piece, stamp)

    def thinking(self, created: bytes, piece: bytes, stamp: int) -> bytes:
        return self._delta(b'"content":"","reasoning":' + piece, stamp)

    def error_line(self, created: bytes, message: str) -> bytes:
        # Ollama's middleware decodes the native error line as an empty
        # message and emits it; the stream then ends with no finish chunk
        # and no [DONE].
        return self._delta(b'"content":""', 0)

    def done(self, created: bytes, reason: str, metrics: Dict[str, int],
             stamp: int) -> List[bytes]:
        finish: Dict[str, Any] = {**self._base(), "choices": [
            {"index": 0, "delta": {}, "finish_reason": reason}]}
        if stamp:
            finish["_sent_ns"] = stamp
        out = [self._event(finish)]
        if self.include_usage:
            out.append(self.usage_event(metrics))
        return out

    def single(self, created: bytes, text: str, thinking: str, reason: str,
               metrics: Dict[str, int]) -> bytes:
        message: Dict[str, Any] = {"role": "assistant", "content": text}
        if thinking:
            message["reasoning"] = thinking
        body = {**self._base(), "object": "chat.completion", "choices": [
            {"index": 0, "message": message, "finish_reason": reason}],
            "usage": _usage(metrics)}
        return go_dumps(body)


class CompletionRender(_OpenAIRender):
    """/v1/completions SSE: finish_reason on the last chunk, no separate finish chunk."""

    object_name = "text_completion"
    id_prefix = "cmpl-"

    def __init__(self, model: str, request_id: int, include_usage: bool) -> None:
        super().__init__(model, request_id, include_usage)
        self._usage0 = (b',"usage":{"prompt_tokens":0,"completion_tokens":0,"total_tokens":0}'
                        if include_usage else b"")

    def _text(self, piece: bytes, finish: bytes, stamp: int) -> bytes:
        return b"%b[{\"text\":%b,\"index\":0,\"finish_reason\":%b}]%b%b\n\n" % (
            self._head, piece, finish, self._usage0, _stamp_tail(stamp))

    def content(self, created: bytes, piece: bytes, stamp: int) -> bytes:
        return self._text(piece, b"null", stamp)

    def thinking(self, created: bytes, piece: bytes, stamp: int) -> bytes:
        return self._text(b'""', b"null", stamp)  # completions carry no reasoning

    def error_line(self, created: bytes, message: str) -> bytes:
        return self._text(b'""', b"null", 0)

    def done(self, created: bytes, reason: str, metrics: Dict[str, int],
             stamp: int) -> List[bytes]:
        out = [self._text(b'""', go_str(reason), stamp)]
        if self.include_usage:
            out.append(self.usage_event(metrics))
        return out

    def single(self, created: bytes, text: str, thinking: str, reason: str,
               metrics: Dict[str, int]) -> bytes:
        body = {**self._base(), "choices": [
            {"text": text, "index": 0, "finish_reason": reason}], "usage": _usage(metrics)}
        return go_dumps(body)
