"""Per-request bench records in, per-request metrics out (pure: no I/O, no clock).

A :class:`RequestRecord` holds what one request did as raw
``time.perf_counter_ns()`` stamps plus the server's own counts.
:func:`derive` turns one record into the metrics of :data:`FORMULAS`;
:mod:`streamkit.bench.summary` aggregates a load point's records into the
statistics the report shows. :data:`FORMULAS` states every formula of both
(it is also written into ``run.json``).

Two rules keep the numbers honest:

- Tokens are counted by the server (Ollama ``eval_count``, OpenAI
  ``usage.completion_tokens``), never by chunks: a chunk may hold several
  tokens. Gaps between chunks are reported as ICL (inter-*chunk* latency).
  When the server sends no count (llama.cpp's server ignores
  ``stream_options.include_usage``), TPOT and output tok/s are None, and
  separate ``*_estimated`` figures count one text chunk as one token.
- Latency is also measured from the *scheduled* send time, so requests that
  waited in the client's queue are not flattered (coordinated omission).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

from ..records import Timing
from .slo import Slo

__all__ = [
    "FORMULAS",
    "LATENCY_METRICS",
    "DERIVED_METRICS",
    "RequestRecord",
    "Slo",
    "derive",
    "icl_gaps_ms",
]

NS_PER_MS = 1_000_000
NS_PER_S = 1_000_000_000

FORMULAS: Dict[str, str] = {
    "ttft_ms": "first_token - sent; first chunk with any generated text "
               "(content, thinking or a tool call)",
    "ttfc_ms": "first_content - sent; first chunk with visible content",
    "ttfb_ms": "headers - sent (status line received)",
    "tpot_ms": "(last_token - first_token) / (eval_count - k), eval_count from the server, "
               "k = eval_count / text chunks (tokens in the first chunk; 1 when each chunk "
               "holds one token, giving the usual eval_count - 1); eval_count <= 1 excluded",
    "tpot_ms_estimated": "ESTIMATE, only for requests without a server token count: "
                         "(last_token - first_token) / (text chunks - 1), counting one "
                         "chunk as one token",
    "client_tps_estimated": "1000 / tpot_ms_estimated (ESTIMATE: chunks/s)",
    "icl_ms": "gaps between consecutive text-bearing chunks, pooled over requests "
              "(inter-CHUNK latency: one chunk may hold several tokens)",
    "e2e_ms": "last_token - sent",
    "queue_ms": "sent - scheduled (client-side wait before the request went out)",
    "sched_e2e_ms": "last_token - scheduled (latency a user arriving on schedule sees; "
                    "coordinated-omission-safe)",
    "dispatch_ms": "client slip: (dispatched - scheduled) + (started - picked up by a worker)",
    "tokens_per_chunk": "eval_count / text-bearing chunks",
    "client_tps": "1000 / tpot_ms (client-measured decode rate per request)",
    "eval_rate": "eval_count / eval_duration (server-reported decode rate, tok/s)",
    "prompt_eval_rate": "prompt_eval_count / prompt_eval_duration (server, tok/s)",
    "server_overhead_ms": "e2e_ms - total_duration (network, HTTP and client time)",
    "window_s": "first scheduled send of the measured phase -> last request done",
    "req_per_s": "successful requests / window_s",
    "output_tok_per_s": "sum(eval_count) of successful requests / window_s; null unless "
                        "the server counted the tokens of every successful request",
    "output_tok_per_s_estimated": "ESTIMATE, only when some counts are missing: "
                                  "(sum(eval_count) + text chunks of the requests "
                                  "without a count) / window_s",
    "token_counts": "'server': every successful request has a server token count; "
                    "'none': no request has one; 'partial': some do",
    "goodput_req_per_s": "successful requests meeting every SLO / window_s",
    "achieved_rate": "(sent requests - 1) / (last sent - first sent)",
    "concurrency_mean": "sum(done - sent) / window_s",
    "lag_ms": "chunk received_ns - server _sent_ns (stamped emulator only): "
              "the client's own timestamp error",
    "client_cpu": "process CPU time / wall time of the measured phase, per process",
}

# Latency distributions every point reports, in display order.
LATENCY_METRICS = ("ttft_ms", "ttfc_ms", "tpot_ms", "icl_ms", "e2e_ms",
                   "queue_ms", "sched_e2e_ms")
# Per-request values derive() returns, each summarized as a distribution.
DERIVED_METRICS = ("ttft_ms", "ttfc_ms", "ttfb_ms", "tpot_ms", "e2e_ms", "queue_ms",
                   "sched_e2e_ms", "dispatch_ms", "tokens_per_chunk", "client_tps",
                   "tpot_ms_estimated", "client_tps_estimated", "eval_rate",
                   "prompt_eval_rate", "load_ms", "server_overhead_ms")


@dataclass
class _Scheduled:
    """The fields every RequestRecord must be given (see RequestRecord)."""

    index: int
    scheduled_ns: int


@dataclass
class RequestRecord(Timing, _Scheduled):
    """What one bench request did. Stamps are ``perf_counter_ns()`` values.

    ``scheduled_ns`` is when the request was meant to go out (open loop: the
    precomputed schedule; closed loop: when a worker became free for it),
    ``dispatched_ns`` when the load generator released it, ``picked_ns`` when
    a worker thread took it up. The rest come from the stream's Timing.
    ``chunk_ns`` are the arrival stamps of text-bearing chunks; ``lags_ns``
    the per-chunk lags against a stamping emulator (empty otherwise).

    The Timing fields (``started_ns`` ... ``done_ns``, ``chunks``) are
    Timing's own, inherited so that one list serves both and they stay flat
    attributes (and flat requests.jsonl columns). ``chunks`` counts the
    chunks this record saw. Fields: ``index``, ``scheduled_ns`` (required),
    then Timing's, then the ones below.
    """

    dispatched_ns: int = 0
    picked_ns: int = 0
    warmup: bool = False
    process: int = 0
    coalesced: int = 0
    chunk_ns: List[int] = field(default_factory=list)
    lags_ns: List[int] = field(default_factory=list)
    eval_count: Optional[int] = None
    eval_duration: Optional[int] = None
    prompt_eval_count: Optional[int] = None
    prompt_eval_duration: Optional[int] = None
    load_duration: Optional[int] = None
    total_duration: Optional[int] = None
    done_reason: Optional[str] = None
    attempts: int = 0
    error_type: Optional[str] = None
    error: Optional[str] = None
    status_code: Optional[int] = None

    @property
    def ok(self) -> bool:
        return self.error_type is None


def _ms(later: Optional[int], earlier: Optional[int]) -> Optional[float]:
    if later is None or earlier is None:
        return None
    return (later - earlier) / NS_PER_MS


def _rate(count: Optional[int], duration_ns: Optional[int]) -> Optional[float]:
    if not count or not duration_ns:
        return None
    return count * NS_PER_S / duration_ns


def icl_gaps_ms(record: RequestRecord) -> List[float]:
    """Gaps between consecutive text-bearing chunk arrivals of one request, in ms."""
    stamps = record.chunk_ns
    return [(b - a) / NS_PER_MS for a, b in zip(stamps, stamps[1:])]


def _tpot_ms(r: RequestRecord) -> Optional[float]:
    """Decode time per output token after the first chunk, from the server's count.

    The first stamp marks the arrival of the whole first chunk, so the span
    first -> last covers ``eval_count - tokens_in_first_chunk`` tokens. The
    tokens in the first chunk are estimated as eval_count / text chunks;
    with one token per chunk this is the usual (eval_count - 1).
    """
    if r.eval_count is None or r.first_token_ns is None or r.last_token_ns is None:
        return None
    per_chunk = r.eval_count / len(r.chunk_ns) if r.chunk_ns else 1.0
    tokens = r.eval_count - max(1.0, per_chunk)
    if tokens <= 0 or r.eval_count <= 1:
        return None
    return (r.last_token_ns - r.first_token_ns) / NS_PER_MS / tokens


def _tpot_estimated_ms(r: RequestRecord) -> Optional[float]:
    """TPOT counting one text chunk as one token: only when the server gave no count."""
    chunks = len(r.chunk_ns)
    if r.eval_count is not None or chunks < 2:
        return None
    if r.first_token_ns is None or r.last_token_ns is None:
        return None
    return (r.last_token_ns - r.first_token_ns) / NS_PER_MS / (chunks - 1)


def derive(record: RequestRecord) -> Dict[str, Optional[float]]:
    """The per-request metrics of :data:`FORMULAS` (None where they do not apply)."""
    r = record
    tpot = _tpot_ms(r)
    tpot_est = _tpot_estimated_ms(r)
    e2e = _ms(r.last_token_ns, r.sent_ns)
    started = r.started_ns if r.started_ns is not None else r.sent_ns
    dispatch = None
    if started is not None:
        slip = max(0, r.dispatched_ns - r.scheduled_ns) if r.dispatched_ns else 0
        dispatch = (slip + max(0, started - (r.picked_ns or started))) / NS_PER_MS
    text_chunks = len(r.chunk_ns)
    total_ms = r.total_duration / NS_PER_MS if r.total_duration else None
    return {
        "ttft_ms": _ms(r.first_token_ns, r.sent_ns),
        "ttfc_ms": _ms(r.first_content_ns, r.sent_ns),
        "ttfb_ms": _ms(r.headers_ns, r.sent_ns),
        "tpot_ms": tpot,
        "e2e_ms": e2e,
        "queue_ms": _ms(r.sent_ns, r.scheduled_ns),
        "sched_e2e_ms": _ms(r.last_token_ns, r.scheduled_ns),
        "dispatch_ms": dispatch,
        "tokens_per_chunk": (r.eval_count / text_chunks
                             if r.eval_count is not None and text_chunks else None),
        "client_tps": 1000.0 / tpot if tpot else None,
        "tpot_ms_estimated": tpot_est,
        "client_tps_estimated": 1000.0 / tpot_est if tpot_est else None,
        "eval_rate": _rate(r.eval_count, r.eval_duration),
        "prompt_eval_rate": _rate(r.prompt_eval_count, r.prompt_eval_duration),
        "load_ms": r.load_duration / NS_PER_MS if r.load_duration is not None else None,
        "server_overhead_ms": e2e - total_ms if e2e is not None and total_ms else None,
    }
