"""Request routing and the endpoints (native /api/*, OpenAI /v1/*, /_emulator/*)."""

from __future__ import annotations

import asyncio
import logging
import time
from email.utils import formatdate
from typing import Any, Awaitable, Callable, Dict, Optional, Set, Tuple

from .catalog import (
    ps_payload,
    pull_records,
    show_payload,
    tags_payload,
    v1_models_payload,
)
from .counters import Counters
from .embed import Embedder
from .engine import Job, respond_single, run_stream
from .faults import Fault, FaultPlan
from .gojson import BodyError, decode_body, go_quote, str_field
from .http import TERMINATOR, BadRequest, Conn, Request, chunk, head
from .inference import Inference as _Inference
from .render import (
    JSON_UTF8,
    NDJSON,
    ChatCompletionRender,
    CompletionRender,
    NativeRender,
    Render,
    created_at,
    openai_error,
)
from .settings import EmulatorConfig
from .slots import BUSY, BUSY_MESSAGE, DISCONNECTED, Models
from .text import expected, go_dumps

__all__ = ["Service"]

_STATUS_MESSAGES = {
    500: "model runner has unexpectedly stopped, this may be due to resource limitations "
         "or an internal error, check ollama server logs for details",
    503: BUSY_MESSAGE, 502: "bad gateway", 504: "gateway timeout", 429: "too many requests",
}
_KEEP_ALIVE_S = 300.0
_SHUTDOWN_ROUNDS = 20
_log = logging.getLogger("streamkit")

Handler = Callable[[Conn, Request], Awaitable[None]]


def _send(conn: Conn, req: Request, status: int, ctype: str, body: bytes,
          extra: Tuple[Tuple[str, str], ...] = ()) -> None:
    headers = [("Content-Type", ctype), ("Content-Length", str(len(body))), *extra]
    conn.write(head(status, headers) + (b"" if req.method == "HEAD" else body))


def _send_json(conn: Conn, req: Request, status: int, obj: Any) -> None:
    _send(conn, req, status, JSON_UTF8, go_dumps(obj))


_GENERATE = _Inference("api.GenerateRequest", openai=False, chat=False)
_CHAT = _Inference("api.ChatRequest", openai=False, chat=True)
_V1_CHAT = _Inference("openai.ChatCompletionRequest", openai=True, chat=True)
_V1_COMPLETION = _Inference("openai.CompletionRequest", openai=True, chat=False)
_EMBED = _Inference("api.EmbedRequest", openai=False, chat=False)
_V1_EMBED = _Inference("openai.EmbedRequest", openai=True, chat=False)


class Service:
    """All endpoints of one emulator. Runs on the loop thread only."""

    def __init__(self, config: EmulatorConfig, counters: Counters, plan: FaultPlan) -> None:
        self.config = config
        self.counters = counters
        self.plan = plan
        self.models = Models(config, counters)
        self.started = time.time()
        self.conns: Set[Conn] = set()
        self.closing = False
        self.tasks: Set[asyncio.Task[None]] = set()
        self._ids = 0
        self.routes: Dict[str, Dict[str, Handler]] = {
            "/": {"GET": self._root, "HEAD": self._root},
            "/api/version": {"GET": self._version, "HEAD": self._version},
            "/api/tags": {"GET": self._tags, "HEAD": self._tags},
            "/api/ps": {"GET": self._ps},
            "/api/show": {"POST": self._show},
            "/api/pull": {"POST": self._pull},
            "/api/generate": {"POST": self._inference_handler(_GENERATE)},
            "/api/chat": {"POST": self._inference_handler(_CHAT)},
            "/v1/chat/completions": {"POST": self._inference_handler(_V1_CHAT)},
            "/v1/completions": {"POST": self._inference_handler(_V1_COMPLETION)},
            "/v1/models": {"GET": self._v1_models},
            "/_emulator/counters": {"GET": self._counters},
            "/_emulator/reset": {"POST": self._reset},
            **Embedder(self, _EMBED, _V1_EMBED).routes(),
        }

    # -- connections ------------------------------------------------------------------
    def open(self, conn: Conn) -> None:
        self.conns.add(conn)
        if self.closing:
            conn.abort()
            return
        task = asyncio.get_running_loop().create_task(self._serve(conn))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def lost(self, conn: Conn) -> None:
        self.conns.discard(conn)

    async def _serve(self, conn: Conn) -> None:
        try:
            while not conn.closed:
                try:
                    req = await conn.read_request()
                except BadRequest:
                    conn.write(b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; "
                               b"charset=utf-8\r\nConnection: close\r\n\r\n400 Bad Request")
                    break
                if req is None:
                    break
                await self._dispatch(conn, req)
                if not req.keep_alive:
                    break
        except Exception:  # a bug here must not take the server down: log, drop the client
            _log.exception("emulator: error while serving a request")
            conn.abort()
        finally:
            conn.close()

    async def shutdown(self) -> None:
        """Abort every connection and end every task (called once by stop()).

        Repeats until quiet: a connection accepted while shutting down is
        aborted by :meth:`open`, and its transport needs a loop turn to close.
        """
        self.closing = True
        for _ in range(_SHUTDOWN_ROUNDS):
            for conn in list(self.conns):
                conn.abort()
            self.models.cancel_loads()
            current = asyncio.current_task()
            tasks = [t for t in asyncio.all_tasks() if t is not current]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for _ in range(3):  # let transports run their connection_lost callbacks
                await asyncio.sleep(0)
            if not self.conns and not tasks:
                return

    async def _dispatch(self, conn: Conn, req: Request) -> None:
        self.counters.add("requests")
        self.counters.add_to("by_path", req.path)
        methods = self.routes.get(req.path)
        if methods is None:
            _send(conn, req, 404, "text/plain", b"404 page not found")
            return
        handler = methods.get(req.method)
        if handler is None:
            _send(conn, req, 405, "text/plain", b"405 method not allowed")
            return
        await handler(conn, req)

    # -- simple endpoints -------------------------------------------------------------
    async def _root(self, conn: Conn, req: Request) -> None:
        _send(conn, req, 200, "text/plain; charset=utf-8", b"Ollama is running")

    async def _version(self, conn: Conn, req: Request) -> None:
        _send_json(conn, req, 200, {"version": self.config.version})

    async def _tags(self, conn: Conn, req: Request) -> None:
        _send_json(conn, req, 200, tags_payload(self.config.served, self.started))

    async def _ps(self, conn: Conn, req: Request) -> None:
        _send_json(conn, req, 200, ps_payload(self.models.loaded(),
                                              time.time() + _KEEP_ALIVE_S))

    async def _v1_models(self, conn: Conn, req: Request) -> None:
        _send(conn, req, 200, "application/json",
              go_dumps(v1_models_payload(self.config.served, self.started)))

    async def _counters(self, conn: Conn, req: Request) -> None:
        _send_json(conn, req, 200, self.counters.snapshot())

    async def _reset(self, conn: Conn, req: Request) -> None:
        self.counters.reset()
        _send_json(conn, req, 200, self.counters.snapshot())

    async def _show(self, conn: Conn, req: Request) -> None:
        try:
            body = decode_body(req.body, "api.ShowRequest")
        except BodyError as exc:
            _send_json(conn, req, exc.status, {"error": exc.message})
            return
        name = str_field(body, "model", "name")
        if not name:
            _send_json(conn, req, 400, {"error": "model is required"})
        elif not self.models.known(name):
            full = name if ":" in name else f"{name}:latest"
            _send_json(conn, req, 404, {"error": f"model '{full}' not found"})
        else:
            embed_dim = self.config.embed_dim if self.config.embeds(name) else 0
            _send_json(conn, req, 200, show_payload(name, self.started, embed_dim))

    async def _pull(self, conn: Conn, req: Request) -> None:
        try:
            body = decode_body(req.body, "api.PullRequest")
        except BodyError as exc:
            _send_json(conn, req, exc.status, {"error": exc.message})
            return
        name = str_field(body, "model", "name")
        if not name:
            _send_json(conn, req, 400, {"error": "model is required"})
            return
        records = pull_records(name, self.models.known(name))
        if body.get("stream") is False:
            last = records[-1]
            _send_json(conn, req, 500 if "error" in last else 200, last)
            return
        data = b"".join(chunk(go_dumps(r) + b"\n") for r in records)
        conn.write(head(200, [("Content-Type", NDJSON), ("Transfer-Encoding", "chunked")])
                   + data + TERMINATOR)
        self.counters.add("chunks_sent", len(records))

    # -- inference --------------------------------------------------------------------
    def _inference_handler(self, kind: _Inference) -> Handler:
        async def handler(conn: Conn, req: Request) -> None:
            await self._inference(conn, req, kind)
        return handler

    def _render(self, kind: _Inference, model: str, body: Dict[str, Any]) -> Render:
        if not kind.openai:
            context = None if body.get("raw") or kind.chat else [1, 2, 3]
            return NativeRender(model, kind.chat, context)
        self._ids = (self._ids + 1) % 999
        options = body.get("stream_options")
        usage = isinstance(options, dict) and bool(options.get("include_usage"))
        cls = ChatCompletionRender if kind.chat else CompletionRender
        return cls(model, self._ids, usage)

    def _error(self, conn: Conn, req: Request, kind: _Inference, status: int, message: str,
               extra: Tuple[Tuple[str, str], ...] = ()) -> None:
        if kind.openai:
            _send(conn, req, status, "application/json", openai_error(status, message), extra)
        else:
            _send(conn, req, status, JSON_UTF8, go_dumps({"error": message}), extra)

    def _validate(self, kind: _Inference, body: Dict[str, Any]) -> Optional[Tuple[int, str]]:
        model = str_field(body, "model")
        if kind.openai and kind.chat and not body.get("messages"):
            return 400, "[] is too short - 'messages'"
        if not model:
            return (400, "model is required") if kind.chat else (404, "model '' not found")
        if not self.models.known(model):
            return 404, f"model '{model}' not found"
        if self.config.embeds(model):  # Ollama: the model lacks the completion capability
            return 400, f"{go_quote(model)} does not support {'chat' if kind.chat else 'generate'}"
        return None

    async def _inference(self, conn: Conn, req: Request, kind: _Inference) -> None:
        request_ns = time.perf_counter_ns()
        self.counters.add("inference")
        try:
            body = decode_body(req.body, kind.go_type)
        except BodyError as exc:
            self._error(conn, req, kind, exc.status, exc.message)
            return
        problem = self._validate(kind, body)
        if problem is not None:
            self._error(conn, req, kind, *problem)
            return
        model = str_field(body, "model")
        fault = self.plan.pick(model)
        if fault is not None:
            self.counters.add_to("faults", fault.kind)
            if not await self._pre_fault(conn, req, kind, fault):
                return
        if not kind.openai and self._is_load_only(kind, body):
            await self._load_only(conn, req, kind, model, body)
            return
        stream = body.get("stream", not kind.openai) is not False
        job = Job(conn=conn, render=self._render(kind, model, body),
                  exp=expected(model, body, self.config), config=self.config,
                  counters=self.counters, fault=fault, request_ns=request_ns, load_ns=0)
        await self._generate(conn, req, kind, model, job, stream)

    async def _pre_fault(self, conn: Conn, req: Request, kind: _Inference, fault: Fault) -> bool:
        """Run a fault that acts before the response; True means carry on serving."""
        if fault.kind == "refuse":
            conn.close()
        elif fault.kind == "reset":
            conn.reset()
        elif fault.kind == "status":
            extra: Tuple[Tuple[str, str], ...] = ()
            if fault.retry_after is not None:
                extra = (("Retry-After", f"{fault.retry_after:g}"),)
            elif fault.retry_after_date is not None:
                extra = (("Retry-After",
                          formatdate(time.time() + fault.retry_after_date, usegmt=True)),)
            message = fault.message or _STATUS_MESSAGES.get(fault.code, "emulated fault")
            self._error(conn, req, kind, fault.code, message, extra)
        elif fault.kind == "slow_headers":
            if await conn.sleep_until(asyncio.get_running_loop().time() + fault.delay):
                return True
            self._count_disconnect(waiting=False)
        else:
            return True
        return False

    @staticmethod
    def _is_load_only(kind: _Inference, body: Dict[str, Any]) -> bool:
        return not body.get("messages") if kind.chat else not body.get("prompt")

    async def _load_only(self, conn: Conn, req: Request, kind: _Inference, model: str,
                         body: Dict[str, Any]) -> None:
        if await self.models.ensure_loaded(model, conn) is None:
            self._count_disconnect(waiting=True)
            return
        obj: Dict[str, Any] = {"model": model, "created_at": created_at().decode()}
        if kind.chat:
            obj["message"] = {"role": "assistant", "content": ""}
        else:
            obj["response"] = ""
        obj["done"] = True
        obj["done_reason"] = "unload" if body.get("keep_alive") in (0, "0", "0s") else "load"
        _send_json(conn, req, 200, obj)
        self.counters.add("completed")

    async def _generate(self, conn: Conn, req: Request, kind: _Inference, model: str,
                        job: Job, stream: bool) -> None:
        load_ns = await self.models.ensure_loaded(model, conn)
        if load_ns is None:
            self._count_disconnect(waiting=True)
            return
        job.load_ns = load_ns
        slot = await self.models.acquire(model, conn)
        if slot == BUSY:
            self.counters.add("busy_rejections")
            self._error(conn, req, kind, 503, BUSY_MESSAGE)
            return
        if slot == DISCONNECTED:
            self._count_disconnect(waiting=True)
            return
        self.counters.add("in_flight")
        try:
            job.start = asyncio.get_running_loop().time()
            outcome = await (run_stream(job) if stream else respond_single(job))
        finally:
            self.models.release(model)
            self.counters.add("in_flight", -1)
        if outcome == "completed":
            self.counters.add("completed")
        elif outcome == "disconnect":
            self._count_disconnect(waiting=False)

    def _count_disconnect(self, *, waiting: bool) -> None:
        self.counters.add("disconnects")
        if waiting:
            self.counters.add("disconnects_waiting")
