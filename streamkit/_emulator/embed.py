"""The embedding endpoints: ``/api/embed``, the legacy ``/api/embeddings``, ``/v1/embeddings``.

Ollama's order of checks and its error texts (see the protocol reference):
the body is decoded, the input validated, the model looked up, loaded,
each input fitted to the context (``truncate``), and only then does the
runner find out whether the model can embed at all. An embed request holds
its model's slot (an embedding model has one) for ``embed_request_cost +
tokens * embed_token_cost`` seconds, so grouping inputs saves the
per-request part. Faults apply as to a non-streaming reply: ``cut``
closes without a reply, ``stall`` holds the connection, ``error`` answers
500; the other mid-body kinds change nothing.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Dict, List, Mapping, Optional, Sequence

from .catalog import CONTEXT_LENGTH
from .faults import Fault, normalize_model
from .gojson import BodyError, decode_body, go_quote, str_field
from .http import Conn, Request, head
from .inference import Inference, ServiceFace
from .render import JSON_UTF8
from .settings import EmulatorConfig
from .slots import BUSY, BUSY_MESSAGE, DISCONNECTED
from .text import go_dumps, go_str
from .vectors import InputError, embedding_values, fit_input, vector_b64, vector_json

__all__ = ["CANNOT_EMBED", "Embedder", "expected_embedding", "tokens_of"]

CANNOT_EMBED = "This server does not support embeddings. Start it with `--embeddings`"
INVALID_INPUT_TYPE = "invalid input type"
RUNNER_ERROR = "an error was encountered while running the model"
_NATIVE, _LEGACY, _V1 = "native", "legacy", "v1"


@dataclass
class _Job:
    """One validated embed request."""

    shape: str            # _NATIVE, _LEGACY or _V1
    model: str            # as sent (echoed back)
    inputs: List[str]
    truncate: bool
    dimensions: int
    options: Mapping[str, Any]
    base64: bool = False


class _Reject(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _inputs(value: Any) -> List[str]:
    """``/api/embed``'s ``input``: a string (empty: none) or a list of strings."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise _Reject(400, INVALID_INPUT_TYPE)


def _context(options: Mapping[str, Any]) -> int:
    num_ctx = options.get("num_ctx")
    if isinstance(num_ctx, int) and not isinstance(num_ctx, bool) and num_ctx > 0:
        return min(num_ctx, CONTEXT_LENGTH)
    return CONTEXT_LENGTH


def _dimensions(body: Mapping[str, Any]) -> int:
    value = body.get("dimensions")
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0


def _options(body: Mapping[str, Any]) -> Mapping[str, Any]:
    options = body.get("options")
    return options if isinstance(options, dict) else {}


def parse_native(body: Dict[str, Any]) -> _Job:
    inputs = _inputs(body.get("input"))
    model = str_field(body, "model")
    if not model.strip():
        raise _Reject(404, f"model '{model}' not found")
    return _Job(_NATIVE, model, inputs, body.get("truncate") is not False, _dimensions(body),
                _options(body))


def parse_legacy(body: Dict[str, Any]) -> _Job:
    model = str_field(body, "model")
    if not model.strip():
        raise _Reject(400, "model is required")
    prompt = body.get("prompt")
    return _Job(_LEGACY, model, [prompt] if isinstance(prompt, str) and prompt else [], True,
                0, _options(body))


def parse_v1(body: Dict[str, Any]) -> _Job:
    fmt = body.get("encoding_format") or ""
    if fmt and fmt.lower() not in ("float", "base64"):
        raise _Reject(400, f"Invalid value for 'encoding_format' = {fmt}. Supported values: "
                           "['float', 'base64'].")
    value = body.get("input")
    if value == "":
        value = [""]
    if value is None or value == []:
        raise _Reject(400, "invalid input")
    job = parse_native({"model": body.get("model"), "input": value,
                        "dimensions": body.get("dimensions")})
    job.shape, job.base64 = _V1, fmt.lower() == "base64"
    return job


_PARSERS = {_NATIVE: ("api.EmbedRequest", parse_native),
            _LEGACY: ("api.EmbeddingRequest", parse_legacy),
            _V1: ("openai.EmbedRequest", parse_v1)}


class Embedder:
    """Serves the three embedding endpoints for a Service (loop thread only)."""

    def __init__(self, service: ServiceFace, native: Inference, v1: Inference) -> None:
        self.service = service
        self.config: EmulatorConfig = service.config
        self._kinds = {_NATIVE: native, _LEGACY: native, _V1: v1}

    def routes(self) -> Dict[str, Dict[str, Callable[[Conn, Request], Awaitable[None]]]]:
        return {"/api/embed": {"POST": self._native}, "/api/embeddings": {"POST": self._legacy},
                "/v1/embeddings": {"POST": self._v1}}

    async def _native(self, conn: Conn, req: Request) -> None:
        await self._serve(conn, req, _NATIVE)

    async def _legacy(self, conn: Conn, req: Request) -> None:
        await self._serve(conn, req, _LEGACY)

    async def _v1(self, conn: Conn, req: Request) -> None:
        await self._serve(conn, req, _V1)

    def _error(self, conn: Conn, req: Request, shape: str, status: int, message: str) -> None:
        self.service._error(conn, req, self._kinds[shape], status, message)

    async def _serve(self, conn: Conn, req: Request, shape: str) -> None:
        request_ns = time.perf_counter_ns()
        service = self.service
        service.counters.add("inference")
        go_type, parse = _PARSERS[shape]
        try:
            job = parse(decode_body(req.body, go_type))
            if not service.models.known(job.model):
                raise _Reject(404, f"model {go_quote(job.model)} not found, try pulling it first")
        except (BodyError, _Reject) as exc:
            self._error(conn, req, shape, exc.status, exc.message)
            return
        fault = service.plan.pick(job.model)
        if fault is not None:
            service.counters.add_to("faults", fault.kind)
            if not await service._pre_fault(conn, req, self._kinds[shape], fault):
                return
        load_ns = await service.models.ensure_loaded(job.model, conn)
        if load_ns is None:
            service._count_disconnect(waiting=True)
            return
        await self._embed(conn, req, job, fault, request_ns, load_ns)

    async def _embed(self, conn: Conn, req: Request, job: _Job, fault: Optional[Fault],
                     request_ns: int, load_ns: int) -> None:
        if not job.inputs:  # Ollama answers before it asks the runner anything
            self._send(conn, req, job, [], 0, 0, 0)
            self.service.counters.add("completed")
            return
        try:
            fitted = [fit_input(text, _context(job.options), job.truncate) for text in job.inputs]
        except InputError as exc:
            self._error(conn, req, job.shape, 400, str(exc))
            return
        if not self.config.embeds(job.model):
            # The runner of a generate-only model has no embedding endpoint; the
            # legacy endpoint reports every runner failure as a 500.
            self._error(conn, req, job.shape, 500 if job.shape == _LEGACY else 501, CANNOT_EMBED)
            return
        tokens = sum(count for _, count in fitted)
        outcome = await self._hold_slot(conn, job.model, tokens)
        if outcome != "ok":
            if outcome == "busy":
                self.service.counters.add("busy_rejections")
                self._error(conn, req, job.shape, 503, BUSY_MESSAGE)
            return
        if fault is not None and not await self._body_fault(conn, req, job, fault):
            return
        total = time.perf_counter_ns() - request_ns
        self._send(conn, req, job, [text for text, _ in fitted], tokens, total, load_ns)
        self.service.counters.add("completed")
        self.service.counters.add("embed_inputs", len(fitted))

    async def _hold_slot(self, conn: Conn, model: str, tokens: int) -> str:
        """Hold a slot for the request's cost: "ok", "busy", or "gone" (client left)."""
        service = self.service
        slot = await service.models.acquire(model, conn)
        if slot == BUSY:
            return "busy"
        if slot == DISCONNECTED:
            service._count_disconnect(waiting=True)
            return "gone"
        service.counters.add("in_flight")
        try:
            cost = self.config.embed_request_cost + tokens * self.config.embed_token_cost
            if cost and not await conn.sleep_until(asyncio.get_running_loop().time() + cost):
                service._count_disconnect(waiting=False)
                return "gone"
        finally:
            service.models.release(model)
            service.counters.add("in_flight", -1)
        return "ok"

    async def _body_fault(self, conn: Conn, req: Request, job: _Job, fault: Fault) -> bool:
        """The mid-body fault kinds on a non-streaming reply; True means reply normally."""
        if fault.kind == "cut":
            conn.close()
        elif fault.kind == "stall":
            await conn.wait_closed()
            self.service._count_disconnect(waiting=False)
        elif fault.kind == "error":
            self._error(conn, req, job.shape, 500, fault.message or RUNNER_ERROR)
        else:
            return True
        return False

    def _send(self, conn: Conn, req: Request, job: _Job, texts: Sequence[str], tokens: int,
              total_ns: int, load_ns: int) -> None:
        body = self._body(job, texts, tokens, total_ns, load_ns)
        ctype = "application/json" if job.shape == _V1 else JSON_UTF8
        conn.write(head(200, [("Content-Type", ctype), ("Content-Length", str(len(body)))])
                   + (b"" if req.method == "HEAD" else body))

    def _body(self, job: _Job, texts: Sequence[str], tokens: int, total_ns: int,
              load_ns: int) -> bytes:
        cfg = self.config
        model = normalize_model(job.model)  # the same model under either name, same vectors
        if job.shape == _LEGACY:
            inner = vector_json(model, texts[0], cfg.embed_dim, cfg.seed) if texts else ""
            return b'{"embedding":[%b]}' % inner.encode()
        if job.shape == _V1:
            return _v1_body(job, model, texts, tokens, cfg)
        vectors = "],[".join(vector_json(model, t, cfg.embed_dim, cfg.seed, job.dimensions)
                             for t in texts)
        out = b'{"model":%b,"embeddings":[%b]' % (go_str(job.model),
                                                   b"[%b]" % vectors.encode() if texts else b"")
        for key, value in (("total_duration", total_ns), ("load_duration", load_ns),
                           ("prompt_eval_count", tokens)):
            if value:  # Go omitempty
                out += b',"%b":%d' % (key.encode(), value)
        return out + b"}"


def _v1_body(job: _Job, model: str, texts: Sequence[str], tokens: int,
             cfg: EmulatorConfig) -> bytes:
    items = []
    for i, text in enumerate(texts):
        if job.base64:
            vector = b'"%b"' % vector_b64(model, text, cfg.embed_dim, cfg.seed,
                                          job.dimensions).encode()
        else:
            vector = b"[%b]" % vector_json(model, text, cfg.embed_dim, cfg.seed,
                                           job.dimensions).encode()
        items.append(b'{"object":"embedding","embedding":%b,"index":%d}' % (vector, i))
    usage = go_dumps({"prompt_tokens": tokens, "total_tokens": tokens})
    return (b'{"object":"list","data":[%b],"model":%b,"usage":%b}\n'
            % (b",".join(items), go_str(job.model), usage))


def expected_embedding(model: str, input: Any, config: Optional[EmulatorConfig] = None, *,
                       dimensions: int = 0,
                       options: Optional[Mapping[str, Any]] = None) -> List[List[float]]:
    """The vectors the emulator returns for ``input`` (a string or a list of strings).

    Pure and deterministic, like :func:`~streamkit.emulator.expected`: what
    a client decodes from ``/api/embed`` (or ``/v1/embeddings``) for this
    model, input, ``dimensions`` and ``num_ctx`` (inputs are truncated).
    Raises ValueError for an input the server would reject.
    """
    cfg = config if config is not None else EmulatorConfig()
    texts = ([input] if input else []) if isinstance(input, str) else list(input)
    context = _context(options or {})
    out = []
    for text in texts:
        try:
            fitted, _ = fit_input(text, context, truncate=True)
        except InputError as exc:
            raise ValueError(str(exc)) from None
        out.append(embedding_values(normalize_model(model), fitted, cfg.embed_dim, cfg.seed,
                                    dimensions))
    return out


def tokens_of(texts: Sequence[str], options: Optional[Mapping[str, Any]] = None) -> int:
    """``prompt_eval_count`` for these inputs (after truncation)."""
    context = _context(options or {})
    return sum(fit_input(t, context, truncate=True)[1] for t in texts)
