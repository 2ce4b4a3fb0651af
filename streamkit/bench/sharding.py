"""How many client processes a load point needs (pure: no I/O, no clock).

One Python process stamps chunks accurately up to a few thousand chunks/s
and about a hundred streams; past that, thread wake-ups under the
interpreter lock delay the stamps, chunks pile up in one socket read, and
at 256 streams one run in three collapsed (see ``docs/bench.md``,
*Headroom*). So by default the bench shards a point over several processes
on one shared schedule, the way ``--processes N`` does:

1. :func:`plan_processes`, before the point: from the expected chunk rate
   (streams x tokens/s, or rate x tokens per request) and the streams, one
   process per :data:`CHUNKS_PER_PROCESS` chunks/s and per
   :data:`STREAMS_PER_PROCESS` streams, at most one per CPU.
2. :func:`recheck_processes`, after the calibration at that load: when the
   client itself was the bottleneck there (its CPU saturated, or its
   timestamps lagged while chunks coalesced and it was busy: lag with an idle
   client is another process's doing), double the processes (still at most
   one per CPU) and calibrate again.

An explicit ``processes`` (``--processes N``, 1 included) is never changed.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Dict, Optional

__all__ = ["CHUNKS_PER_PROCESS", "STREAMS_PER_PROCESS", "ShardDecision", "expected_chunks_per_s",
           "plan_processes", "recheck_processes"]

CHUNKS_PER_PROCESS = 3000.0   # one process stops keeping up around 3-4k chunks/s
STREAMS_PER_PROCESS = 128     # 256 streams in one process was not reproducible
# The calibration evidence that the client, not the server, is the bottleneck.
CPU_LIMIT = 0.85
LAG_P99_LIMIT_MS = 5.0
COALESCED_LIMIT = 0.05
# Lag with a nearly idle client is a busy machine (other processes), which more
# client processes would not fix: lag counts only when the client works this hard.
BUSY_CLIENT_CPU = 0.5


@dataclass(frozen=True)
class ShardDecision:
    """``processes`` to run a point with, whether it was chosen automatically, and why."""

    processes: int
    auto: bool
    reason: str

    def as_dict(self) -> Dict[str, Any]:
        return asdict(self)

    def sentence(self) -> str:
        how = "auto" if self.auto else "forced"
        plural = "es" if self.processes > 1 else ""
        return f"{self.processes} client process{plural} ({how}: {self.reason})"


def expected_chunks_per_s(*, streams: int, tokens_per_second: float, first_token_s: float,
                          tokens_per_request: int, rate: Optional[float] = None
                          ) -> Optional[float]:
    """Chunks/s the client will have to stamp (one token per chunk, as Ollama sends).

    A stream carries ``n / (ttft + n / tokens_per_second)`` chunks/s for
    requests of n tokens. Closed loop: every stream busy. Open loop: the
    offered rate times n, capped by what the streams can carry. None when
    the pace is unknown (``tokens_per_second`` 0: an unpaced server).
    """
    if not tokens_per_second > 0:
        return None
    n = max(1, tokens_per_request)
    carried = streams * n / (max(0.0, first_token_s) + n / tokens_per_second)
    if rate is None:
        return carried
    return min(rate * n, carried)


def plan_processes(requested: Optional[int], *, streams: int,
                   chunks_per_s: Optional[float], cpus: int) -> ShardDecision:
    """The processes for one point before it runs: ``requested`` when given, else
    enough for the expected chunk rate and streams, at most ``cpus``."""
    if requested is not None:
        return ShardDecision(requested, False, "--processes")
    by_chunks = math.ceil(chunks_per_s / CHUNKS_PER_PROCESS) if chunks_per_s else 1
    by_streams = math.ceil(streams / STREAMS_PER_PROCESS)
    wanted = max(1, by_chunks, by_streams)
    cap = max(1, cpus)
    load = (f"{streams} stream{'s' if streams != 1 else ''}"
            + (f", ~{chunks_per_s:,.0f} chunks/s" if chunks_per_s else ""))
    each = (f"each process keeps up with ~{CHUNKS_PER_PROCESS:,.0f} chunks/s and "
            f"{STREAMS_PER_PROCESS} streams")
    if wanted == 1:
        return ShardDecision(1, True, f"{load}: one process is enough; {each}")
    if wanted > cap:
        return ShardDecision(cap, True, f"{load} would need {wanted} processes; {each}; "
                                        f"capped at {cap} CPU{'s' if cap > 1 else ''}")
    return ShardDecision(wanted, True, f"{load}; {each}")


def recheck_processes(decision: ShardDecision, *, client_cpu: Optional[float],
                      lag_p99_ms: Optional[float], coalesced_frac: Optional[float],
                      cpus: int) -> Optional[ShardDecision]:
    """A larger decision when the calibration at ``decision.processes`` shows the
    client as the bottleneck and more processes are allowed; else None."""
    if not decision.auto or decision.processes >= max(1, cpus):
        return None
    busy = client_cpu is not None and client_cpu > CPU_LIMIT
    lagging = (lag_p99_ms is not None and lag_p99_ms > LAG_P99_LIMIT_MS
               and coalesced_frac is not None and coalesced_frac > COALESCED_LIMIT
               and client_cpu is not None and client_cpu >= BUSY_CLIENT_CPU)
    if not (busy or lagging):
        return None
    why = (f"client CPU {client_cpu:.0%} of a core" if busy and client_cpu is not None
           else f"timestamps lagged {lag_p99_ms:.1f} ms p99 with {coalesced_frac:.0%} of "
                "chunks coalesced")
    more = min(max(1, cpus), decision.processes * 2)
    return ShardDecision(more, True, f"the calibration with {decision.processes} showed the "
                                     f"client as the bottleneck ({why})")
