"""Streaming one generation onto a connection: pacing, slabs, mid-body faults.

Pacing follows an absolute schedule: the chunk holding token ``i`` is due
at ``start + first_token_delay + i / tokens_per_second``, so a late write
never shifts later ones (no drift). Everything already due is written in one
transport write ("slab"); unpaced, that is up to ``SLAB`` chunks at a time.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from .counters import Counters
from .faults import Fault
from .http import TERMINATOR, Conn, chunk, head
from .render import Render, created_at
from .settings import EmulatorConfig
from .text import Expected, go_str

__all__ = ["Job", "respond_single", "run_stream"]

SLAB = 512  # chunks per transport write when many are due at once
_NS = 1_000_000_000
_MIDBODY_AT = ("cut", "stall", "error", "malformed")

Piece = Tuple[bool, bytes, int]  # (is thinking, JSON string literal, index of its last token)


@dataclass
class Job:
    """One inference request that holds a slot and is about to generate."""

    conn: Conn
    render: Render
    exp: Expected
    config: EmulatorConfig
    counters: Counters
    fault: Optional[Fault]
    request_ns: int      # perf_counter_ns when the request was parsed
    load_ns: int         # time spent getting the model ("runner")
    start: float = 0.0   # loop time when generation began


def _group(tokens: List[str], per: int, offset: int, thinking: bool) -> List[Piece]:
    return [(thinking, go_str("".join(tokens[i:i + per])),
             offset + min(i + per, len(tokens)) - 1)
            for i in range(0, len(tokens), per)]


def pieces_of(exp: Expected, per: int) -> List[Piece]:
    thinking = _group(exp.thinking_tokens, per, 0, True)
    return thinking + _group(exp.tokens, per, len(exp.thinking_tokens), False)


class _Schedule:
    def __init__(self, job: Job, pieces: List[Piece]) -> None:
        self.base = job.start + job.config.first_token_delay
        self.tps = job.config.tokens_per_second
        self.pieces = pieces

    def due_at(self, j: int) -> float:
        if not self.tps or not self.pieces:
            return self.base
        return self.base + self.pieces[j][2] / self.tps

    def due_until(self, i: int, now: float, limit: int) -> int:
        """Index after the last chunk (from ``i``, below ``limit``) already due at ``now``."""
        if not self.tps:
            return limit if now >= self.base else i
        j = i
        while j < limit and self.due_at(j) <= now:
            j += 1
        return j


def _metrics(job: Job, first_ns: int, last_ns: int, gen_ns: int) -> Dict[str, int]:
    interval = int(_NS / job.config.tokens_per_second) if job.config.tokens_per_second else 0
    # The first token's own generation time (one interval) is carved out of
    # the wait before it, so load + prompt_eval + eval never exceeds total.
    head_ns = max(0, first_ns - gen_ns)
    first_token_ns = min(interval, head_ns)
    eval_ns = (last_ns - first_ns + first_token_ns) if job.exp.eval_count else 0
    return {"total_duration": time.perf_counter_ns() - job.request_ns,
            "load_duration": job.load_ns,
            "prompt_eval_count": job.exp.prompt_eval_count,
            "prompt_eval_duration": max(1, head_ns - first_token_ns),
            "eval_count": job.exp.eval_count,
            "eval_duration": max(1, eval_ns) if job.exp.eval_count else 0}


class _Writer:
    """Frames lines as HTTP chunks; sends the head lazily with the first bytes
    (as Go does: a client sees no status until the first chunk is flushed)."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.head_sent = False

    async def send(self, lines: List[bytes]) -> bool:
        data = b"".join([chunk(line) for line in lines if line])
        if not self.head_sent:
            self.head_sent = True
            data = head(200, [("Content-Type", self.job.render.content_type),
                              ("Transfer-Encoding", "chunked")]) + data
        self.job.conn.write(data)
        self.job.counters.add("chunks_sent", sum(1 for line in lines if line != b"\n"))
        return await self.job.conn.drain()


def _lines(job: Job, pieces: List[Piece], i: int, end: int, stamp: bool) -> List[bytes]:
    render = job.render
    created = created_at()
    sent_ns = time.perf_counter_ns() if stamp else 0
    blank = job.fault is not None and job.fault.kind == "blank"
    out: List[bytes] = []
    for thinking, piece, _ in pieces[i:end]:
        out.append(render.thinking(created, piece, sent_ns) if thinking
                   else render.content(created, piece, sent_ns))
        if blank:
            out.append(render.blank_line())
    return out


async def run_stream(job: Job) -> str:
    """Stream the whole response. Returns ``completed``, ``disconnect`` or the
    fault kind that ended it early (``cut``, ``stall`` ends as ``disconnect``,
    ``error``). Never raises for a client that left."""
    pieces = pieces_of(job.exp, job.config.tokens_per_chunk)
    sched = _Schedule(job, pieces)
    writer = _Writer(job)
    fault = job.fault
    fire_at = min(fault.after, len(pieces)) if fault and fault.kind in _MIDBODY_AT else -1
    slab = 1 if job.config.stamp else SLAB
    loop = asyncio.get_running_loop()
    gen_ns = time.perf_counter_ns()
    first_ns = last_ns = 0
    i = 0
    while True:
        if i == fire_at:
            fire_at = -1
            outcome = await _fire(job, writer)
            if outcome:
                return outcome
        if i >= len(pieces):
            break
        limit = min(len(pieces), i + slab, fire_at if fire_at > i else len(pieces))
        end = sched.due_until(i, loop.time(), limit)
        if end == i:
            if not await job.conn.sleep_until(sched.due_at(i)):
                return "disconnect"
            continue
        lines = _lines(job, pieces, i, end, job.config.stamp)
        last_ns = time.perf_counter_ns()
        first_ns = first_ns or last_ns
        if not await writer.send(lines):
            return "disconnect"
        i = end
    if not pieces and not await job.conn.sleep_until(sched.base):
        return "disconnect"
    return await _finish(job, writer, first_ns or time.perf_counter_ns(), last_ns, gen_ns)


async def _finish(job: Job, writer: _Writer, first_ns: int, last_ns: int, gen_ns: int) -> str:
    metrics = _metrics(job, first_ns, last_ns or first_ns, gen_ns)
    nodone = job.fault is not None and job.fault.kind == "nodone"
    render = job.render
    lines: List[bytes] = []
    trailer = render.trailer()
    stamp = time.perf_counter_ns() if job.config.stamp else 0
    if not (nodone and not trailer):
        lines += render.done(created_at(), job.exp.done_reason, metrics, stamp)
    if trailer and not nodone:
        lines.append(trailer)
    if not await writer.send(lines):
        return "disconnect"
    job.conn.write(TERMINATOR)
    return "completed"


async def _fire(job: Job, writer: _Writer) -> str:
    """Run a mid-body fault at its chunk index; "" means carry on streaming."""
    assert job.fault is not None
    kind = job.fault.kind
    conn = job.conn
    if kind == "malformed":
        return "" if await writer.send([job.render.malformed_line()]) else "disconnect"
    if not writer.head_sent and not await writer.send([]):
        return "disconnect"
    if kind == "cut":
        conn.close()  # flush, then FIN: no chunked terminator
        return "cut"
    if kind == "stall":
        await conn.wait_closed()
        return "disconnect"
    message = job.fault.message or "an error was encountered while running the model: " \
                                   "emulated fault"
    if not await writer.send([job.render.error_line(created_at(), message)]):
        return "disconnect"
    conn.write(TERMINATOR)
    return "error"


async def respond_single(job: Job) -> str:
    """Answer ``stream: false``: wait out the whole schedule, then one JSON object."""
    pieces = pieces_of(job.exp, job.config.tokens_per_chunk)
    sched = _Schedule(job, pieces)
    gen_ns = time.perf_counter_ns()
    first_delay = max(0.0, sched.due_at(0) - asyncio.get_running_loop().time())
    if not await job.conn.sleep_until(sched.due_at(len(pieces) - 1) if pieces else sched.base):
        return "disconnect"
    fault = job.fault.kind if job.fault else ""
    if fault == "cut":
        job.conn.close()
        return "cut"
    if fault == "stall":
        await job.conn.wait_closed()
        return "disconnect"
    if fault == "error":
        body = job.render.error_body(500, job.fault.message if job.fault and job.fault.message
                                     else "an error was encountered while running the model")
        job.conn.write(head(500, [("Content-Type", job.render.error_type),
                                  ("Content-Length", str(len(body)))]) + body)
        return "error"
    now = time.perf_counter_ns()
    first_ns = gen_ns + int(first_delay * _NS)
    metrics = _metrics(job, first_ns, now, gen_ns)
    body = job.render.single(created_at(), job.exp.text, job.exp.thinking,
                             job.exp.done_reason, metrics)
    job.conn.write(head(200, [("Content-Type", "application/json; charset=utf-8"),
                              ("Content-Length", str(len(body)))]) + body)
    return "completed"
